"""Logistic regression whose rationale is its own per-feature evidence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from stepdistill.terms import Outputs


class LogisticModel(nn.Module):
    """``z = x W^T + b``, K logits (K = 1 for a binary task).

    rationale="contributions": the per-feature terms ``W[k, j] * x[j]`` whose sum (plus bias) is
    the score, flattened class-major to ``(B, K*d)``; two linear models agree on these only if
    they weigh every feature alike on every sample. With ``feature_groups`` (for each input
    column, the index of the raw column it encodes, e.g. the one-hot columns of one category),
    contributions are summed per raw column, and with ``include_bias`` the bias is appended per
    class: ``(B, K*(G+1))``, the layout of tree-ensemble TreeSHAP explanations (per-feature
    contributions in logit space plus the expected value).
    rationale="score": the logits themselves, the scalar "intermediate score" of the reference
    article, kept for faithful reproduction.

    ``rationale`` and ``rationale_backward`` work on a batch ``x (B, d), weight (K, d)`` and on a
    stack of students ``x (S, B, d), weight (S, K, d)``.
    """

    def __init__(
        self,
        n_features: int,
        n_logits: int,
        rationale: Literal["contributions", "score"] = "contributions",
        feature_groups: Sequence[int] | None = None,
        include_bias: bool = False,
    ):
        super().__init__()
        # The constructor's arguments: what rebuilds this model around saved weights (saved.py).
        self.spec = {
            "kind": "logistic",
            "n_features": n_features,
            "n_logits": n_logits,
            "rationale": rationale,
            "feature_groups": None if feature_groups is None else [int(g) for g in feature_groups],
            "include_bias": include_bias,
        }
        self.linear = nn.Linear(n_features, n_logits)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.rationale_kind = rationale
        self.include_bias = include_bias
        groups = torch.as_tensor(feature_groups if feature_groups is not None else range(n_features), dtype=torch.long)
        if groups.shape != (n_features,):
            raise ValueError(f"feature_groups needs one group per input column ({n_features}), got {groups.shape[0]}")
        self.register_buffer("groups", groups, persistent=False)
        self.n_groups = int(groups.max()) + 1 if n_features else 0
        self.grouped = feature_groups is not None
        # (d, G) one-hot: summing contributions per group is a matrix product, which is fast.
        self.register_buffer("group_matrix", torch.nn.functional.one_hot(groups, self.n_groups).float(), persistent=False)

    @property
    def rationale_width(self) -> int:
        k = self.linear.weight.shape[0]
        return k if self.rationale_kind == "score" else k * (self.n_groups + self.include_bias)

    @property
    def shared_layer(self) -> torch.Tensor:
        """The weight every loss term's gradient passes through, where GradNorm compares them."""
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> Outputs:
        logits = self.linear(x)
        return Outputs(logits, self.rationale(x, self.linear.weight, self.linear.bias, logits))

    def rationale(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.rationale_kind == "score":
            return logits
        contributions = x.unsqueeze(-2) * weight.unsqueeze(-3)  # (..., B, K, d)
        if self.grouped:
            contributions = contributions @ self.group_matrix
        if self.include_bias:
            contributions = torch.cat([contributions, bias.unsqueeze(-2).unsqueeze(-1).expand(*contributions.shape[:-1], 1)], -1)
        return contributions.flatten(-2)

    def rationale_backward(self, grad: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The chain rule for the stacked engine: gradient of the rationale ``(S, B, R)`` to the
        gradient of the weight ``(S, K, d)`` and bias ``(S, K)``, summed over the batch."""
        if self.rationale_kind == "score":
            return torch.bmm(grad.transpose(1, 2), x), grad.sum(1)
        k = self.linear.weight.shape[0]
        grad = grad.unflatten(-1, (k, -1))  # (S, B, K, G[+1])
        grad_bias = grad[..., -1].sum(1) if self.include_bias else torch.zeros_like(grad[:, 0, :, 0])
        if self.include_bias:
            grad = grad[..., :-1]
        if self.grouped:
            grad = grad @ self.group_matrix.T
        return (grad * x.unsqueeze(2)).sum(1), grad_bias
