"""Sample curriculum: train on the samples the teacher finds easy first, then pace in the rest.

Difficulty is measured from the teacher's outputs on each training sample (p: the teacher's
class probabilities, y: the true label):

    confidence     1 - max_c p_c            how unsure the teacher is
    entropy        -sum_c p_c log p_c       the same, over all classes
    disagreement   1 - p_y                  how far the teacher is from the true label

Labels are read only on the rows whose labels students may see (``labelled``; all rows when it is
None). On a hidden row, disagreement is measured against the teacher's own predicted class, which
makes it 1 - max_c p_c, the confidence measure, and the row is never down-weighted as a mistake:
otherwise the hidden labels would steer which rows the student sees first and how much they count,
and a student trained on "5% of the labels" would in fact use them all.

At epoch t the student sees the easiest ``g(t)`` share of the training rows, with the pacing
function ``g`` rising from ``start_fraction`` to 1 over ``ramp_epochs`` (Platanios et al. 2019,
competence-based curriculum):

    linear   g(t) = s + (1 - s) * min(1, t / ramp)
    root     g(t) = sqrt(s^2 + (1 - s^2) * min(1, t / ramp))   (more new samples early on)

Optionally, samples the teacher gets wrong with probability above ``mistake_confidence`` count
``mistake_weight`` times in the teacher's terms (soft targets, rationale): a confidently wrong
teacher is then not imitated on them, while their hard label still counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from stepdistill.losses import log_probs


@dataclass(frozen=True)
class Curriculum:
    difficulty: Literal["confidence", "entropy", "disagreement"] = "disagreement"
    start_fraction: float = 0.3
    ramp_epochs: int = 5
    pacing: Literal["linear", "root"] = "linear"
    mistake_confidence: float = 0.9
    mistake_weight: float = 1.0

    def fraction(self, epoch: int) -> float:
        progress = 1.0 if self.ramp_epochs <= 0 else min(1.0, epoch / self.ramp_epochs)
        s = self.start_fraction
        if self.pacing == "linear":
            return s + (1.0 - s) * progress
        return math.sqrt(s * s + (1.0 - s * s) * progress)

    def difficulty_of(self, teacher_logits: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) difficulty of each sample, higher is harder. ``labelled`` (N,) bool: the rows
        whose label may be read (default: all)."""
        log_p = log_probs(teacher_logits)
        if self.difficulty == "confidence":
            return 1.0 - log_p.max(-1).values.exp()
        if self.difficulty == "entropy":
            return -(log_p.exp() * log_p).sum(-1)
        target = y if labelled is None else torch.where(labelled, y, log_p.argmax(-1))
        return 1.0 - log_p.gather(-1, target.unsqueeze(-1)).squeeze(-1).exp()

    def easiest_first(self, teacher_logits: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) row positions from easiest to hardest (ties keep row order, so it is deterministic)."""
        return torch.sort(self.difficulty_of(teacher_logits, y, labelled), stable=True).indices

    def rows_at(self, order: torch.Tensor, epoch: int) -> torch.Tensor:
        """The rows seen at ``epoch``: the easiest ``ceil(g(t) * N)``."""
        return order[: math.ceil(self.fraction(epoch) * order.shape[0])]

    def teacher_weights(
        self, teacher_logits: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """(N,) weight of each sample in the teacher's terms, or None when nothing is down-weighted.
        Only ``labelled`` rows (default: all) can be found wrong; hidden ones weigh 1."""
        if self.mistake_weight == 1.0:
            return None
        p = log_probs(teacher_logits).exp()
        confidently_wrong = (p.argmax(-1) != y) & (p.max(-1).values > self.mistake_confidence)
        if labelled is not None:
            confidently_wrong &= labelled
        return torch.where(confidently_wrong, self.mistake_weight, 1.0)
