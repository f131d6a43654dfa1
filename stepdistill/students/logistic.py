"""Logistic regression whose rationale is its own per-feature evidence."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from stepdistill.terms import Outputs


class LogisticModel(nn.Module):
    """``z = x W^T + b``, K logits (K = 1 for a binary task).

    rationale="contributions": the per-feature terms ``W[k, j] * x[j]`` whose sum (plus bias) is
    the score, flattened to ``(B, K*d)``; two linear models agree on these only if they weigh
    every feature alike on every sample. rationale="score": the logits themselves, the scalar
    "intermediate score" of the reference article, kept for faithful reproduction.
    """

    def __init__(self, n_features: int, n_logits: int, rationale: Literal["contributions", "score"] = "contributions"):
        super().__init__()
        self.linear = nn.Linear(n_features, n_logits)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.rationale_kind = rationale

    @property
    def rationale_width(self) -> int:
        k, d = self.linear.weight.shape
        return k * d if self.rationale_kind == "contributions" else k

    def forward(self, x: torch.Tensor) -> Outputs:
        logits = self.linear(x)
        return Outputs(logits, self.rationale(x, self.linear.weight, logits))

    def rationale(self, x: torch.Tensor, weight: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Works on a batch ``x (B, d), weight (K, d)`` and on a stack ``x (S, B, d), weight (S, K, d)``."""
        if self.rationale_kind == "score":
            return logits
        contributions = x.unsqueeze(-2) * weight.unsqueeze(-3)  # (..., B, K, d)
        return contributions.flatten(-2)
