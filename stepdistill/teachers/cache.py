"""Teacher outputs stored by sample id.

The teacher runs once, in eval mode, over every sample; its outputs are then looked up by sample
id. Nothing depends on the order the teacher saw the samples in, nor on batch positions, so a
shuffled training pass gets each sample's own soft label and rationale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stepdistill.data.table import Table


@dataclass(frozen=True)
class TeacherOutputs:
    """logits: (N, K); rationale: (N, R) or None; row i belongs to the i-th requested id."""

    logits: torch.Tensor
    rationale: torch.Tensor | None


class TeacherCache:
    """Teacher outputs by sample id. Implementations may keep them in memory or on disk."""

    def take(self, ids: torch.Tensor) -> TeacherOutputs:
        """The outputs for ``ids`` (M,), in that order. Raises KeyError on an unknown id."""
        raise NotImplementedError


class InMemoryTeacherCache(TeacherCache):
    def __init__(self, ids: torch.Tensor, logits: torch.Tensor, rationale: torch.Tensor | None):
        order = torch.argsort(ids)
        self._sorted_ids = ids[order]
        if torch.any(self._sorted_ids[1:] == self._sorted_ids[:-1]):
            raise ValueError("teacher outputs hold duplicate sample ids")
        self._logits = logits[order]
        self._rationale = None if rationale is None else rationale[order]

    def __len__(self) -> int:
        return self._sorted_ids.shape[0]

    def take(self, ids: torch.Tensor) -> TeacherOutputs:
        rows = torch.searchsorted(self._sorted_ids, ids).clamp_max(len(self) - 1)
        missing = self._sorted_ids[rows] != ids
        if torch.any(missing):
            raise KeyError(f"no teacher output for sample id {int(ids[missing][0])}")
        return TeacherOutputs(self._logits[rows], None if self._rationale is None else self._rationale[rows])


@torch.no_grad()
def cache_model_outputs(model: nn.Module, tables: list[Table], batch_size: int = 8192) -> InMemoryTeacherCache:
    """Run ``model`` once in eval mode over ``tables`` and store its (logits, rationale) by id.
    The cache lives on the CPU whatever the model's device; the trainer moves what it needs."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids, logits, rationale = [], [], []
    for table in tables:
        for start in range(0, len(table), batch_size):
            out = model(table.X[start : start + batch_size].to(device))
            ids.append(table.ids[start : start + batch_size].cpu())
            logits.append(out.logits.cpu())
            rationale.append(None if out.rationale is None else out.rationale.cpu())
    model.train(was_training)
    has_rationale = all(r is not None for r in rationale)
    return InMemoryTeacherCache(torch.cat(ids), torch.cat(logits), torch.cat(rationale) if has_rationale else None)
