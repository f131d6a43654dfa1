"""Weights of loss terms: how much each term counts at a given epoch.

A weight is an object with ``value(epoch) -> float`` (epochs count from 0). Keeping weights apart
from the losses (what is compared) makes schedules swappable: any term can take any weight.
Weights carry no mutable state yet; ``state_dict`` / ``load_state_dict`` are there so that adaptive
controllers, which do, checkpoint through the same path as the model and optimizer. Weights decided
jointly for several terms, from values observed during training, are balancers (balancers.py);
they multiply the weights scheduled here.
"""

from __future__ import annotations

import math
from bisect import bisect_right
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


@dataclass(frozen=True)
class CosineRamp(Weight):
    """Rises from ``minimum`` at epoch 0 to ``maximum`` at ``ramp_epochs`` along half a cosine,
    flat after::

        w(t) = minimum + (maximum - minimum) * (1 - cos(pi * min(1, t / ramp_epochs))) / 2

    Unlike ``LinearRamp`` it starts and ends with zero slope: the term creeps in while the
    student is still fitting the labels, and settles into its maximum without a kink.
    """

    maximum: float
    ramp_epochs: int
    minimum: float = 0.0

    def __post_init__(self):
        if self.ramp_epochs < 0:
            raise ValueError(f"ramp_epochs must be at least 0 (got {self.ramp_epochs})")
        if self.minimum > self.maximum:
            raise ValueError(f"minimum must be at most maximum (got {self.minimum} > {self.maximum})")

    def value(self, epoch: int) -> float:
        progress = 1.0 if self.ramp_epochs == 0 else min(1.0, epoch / self.ramp_epochs)
        return self.minimum + (self.maximum - self.minimum) * (1 - math.cos(math.pi * progress)) / 2


@dataclass(frozen=True)
class StepSchedule(Weight):
    """The next of ``values`` every ``step_epochs`` epochs, holding the last one::

        w(t) = values[min(t // step_epochs, len(values) - 1)]
    """

    values: tuple[float, ...]
    step_epochs: int

    def __post_init__(self):
        # Configurations arrive as JSON lists; a tuple keeps the frozen weight hashable.
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values:
            raise ValueError("values must not be empty")
        if self.step_epochs < 1:
            raise ValueError(f"step_epochs must be at least 1 (got {self.step_epochs})")

    def value(self, epoch: int) -> float:
        return self.values[min(epoch // self.step_epochs, len(self.values) - 1)]


@dataclass(frozen=True)
class Phases(Weight):
    """Piecewise constant: ``values[0]`` before ``boundaries[0]``, ``values[i]`` from
    ``boundaries[i-1]`` until ``boundaries[i]``, ``values[-1]`` from ``boundaries[-1]`` on::

        w(t) = values[i],  i = number of boundaries b with b <= t

    A curriculum in stages, e.g. the rationale weight of a task-structured curriculum: prediction
    only until epoch 3, joint until epoch 6, rationale-heavy after,
    ``Phases((3, 6), (0.0, 0.3, 0.6))``.
    """

    boundaries: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self):
        # Configurations arrive as JSON lists; tuples keep the frozen weight hashable.
        object.__setattr__(self, "boundaries", tuple(self.boundaries))
        object.__setattr__(self, "values", tuple(self.values))
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                "values needs one more entry than boundaries"
                f" (got {len(self.values)} values, {len(self.boundaries)} boundaries)"
            )
        increasing = all(a < b for a, b in zip(self.boundaries, self.boundaries[1:]))
        # A first boundary at epoch 0 would leave values[0] unused.
        if not increasing or (self.boundaries and self.boundaries[0] < 1):
            raise ValueError(f"boundaries must be positive and strictly increasing (got {self.boundaries})")

    def value(self, epoch: int) -> float:
        return self.values[bisect_right(self.boundaries, epoch)]
