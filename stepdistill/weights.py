"""Weights of loss terms: how much each term counts at a given epoch.

A weight is an object with ``value(epoch) -> float`` (epochs count from 0). Keeping weights apart
from the losses (what is compared) makes schedules swappable: any term can take any weight.
Weights carry no mutable state yet; ``state_dict`` / ``load_state_dict`` are there so that adaptive
controllers, which do, checkpoint through the same path as the model and optimizer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


class Weight:
    def value(self, epoch: int) -> float:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": type(self).__name__, **asdict(self)}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass(frozen=True)
class Constant(Weight):
    weight: float

    def value(self, epoch: int) -> float:
        return self.weight


@dataclass(frozen=True)
class LinearRamp(Weight):
    """``maximum * min(1, epoch / ramp_epochs)``: 0 at the first epoch, ``maximum`` from
    ``ramp_epochs`` on (the curriculum of the enhanced method)."""

    maximum: float
    ramp_epochs: int

    def value(self, epoch: int) -> float:
        if self.ramp_epochs <= 0:
            return self.maximum
        return self.maximum * min(1.0, epoch / self.ramp_epochs)


@dataclass(frozen=True)
class Remainder(Weight):
    """``total - sum(others)``: what the other weights leave, e.g. the soft-target weight
    ``1 - a - b(t)`` that shrinks while the rationale weight ramps up."""

    others: tuple[Weight, ...]
    total: float = 1.0

    def value(self, epoch: int) -> float:
        return self.total - sum(w.value(epoch) for w in self.others)

    def describe(self) -> dict:
        return {"kind": "Remainder", "total": self.total, "others": [w.describe() for w in self.others]}
