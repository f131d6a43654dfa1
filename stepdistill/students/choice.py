"""Multiple-choice student: one scorer shared by every (question, choice) pair."""

from __future__ import annotations

import torch
from torch import nn

from stepdistill.students.mlp import MLPModel
from stepdistill.terms import Outputs


class ChoiceScorerModel(nn.Module):
    """An MLP scorer (Linear-ReLU blocks ``hidden``, then a Linear to one score) applied alike to
    each of the K (question, choice) pairs of a row: the K scores are the logits ``(N, K)`` of a K-way softmax.

    Rows arrive flat, ``(N, K*F)`` choice-major (what ``choice_features(...).flatten(1)`` gives;
    tables stay 2-D everywhere else in the project), or already paired ``(N, K, F)``. As the
    scorer is shared, its parameters do not depend on K, and permuting the choices permutes the
    logits alike.

    The rationale is the activations ``(N, K, H)`` of hidden block ``rationale_layer`` (default:
    the last) pooled over the choices with the softmax of the logits as weights, giving ``(N, H)``.
    A teacher explains the answer it picks, so the student's rationale is the representation of
    the answers it believes in; a plain mean over the choices would be the same whichever choice
    is right, and an argmax would pass no gradient to the other choices' scores. Being one
    ``(N, H)`` vector per row, it is what a projection head maps to the teacher's rationale.
    """

    def __init__(self, n_features: int, n_choices: int, hidden: tuple[int, ...] = (64,), rationale_layer: int = -1):
        super().__init__()
        if not hidden:
            raise ValueError("a choice scorer needs at least one hidden layer")
        if n_choices < 2:
            raise ValueError(f"a multiple-choice question needs at least 2 choices, got {n_choices}")
        # The constructor's arguments: what rebuilds this model around saved weights (saved.py).
        self.spec = {
            "kind": "choice_scorer",
            "n_features": n_features,
            "n_choices": n_choices,
            "hidden": list(hidden),
            "rationale_layer": rationale_layer,
        }
        self.n_features = n_features
        self.n_choices = n_choices
        # One MLP with a single output unit, applied to each pair along the choices dimension.
        self.scorer = MLPModel(n_features, 1, hidden, rationale_layer)
        self.rationale_width = self.scorer.rationale_width

    @property
    def shared_layer(self) -> torch.Tensor:
        """The weight every loss term's gradient passes through (the scorer's rationale layer's),
        where GradNorm compares the terms' gradient norms."""
        return self.scorer.shared_layer

    def forward(self, x: torch.Tensor) -> Outputs:
        """x: (N, K*F) or (N, K, F) -> logits (N, K), rationale (N, H)."""
        pairs = x.unflatten(-1, (self.n_choices, self.n_features)) if x.ndim == 2 else x
        if pairs.ndim != 3 or pairs.shape[1:] != (self.n_choices, self.n_features):
            raise ValueError(
                f"expected rows of {self.n_choices} choices x {self.n_features} features, (N, K*F) or (N, K, F); got {tuple(x.shape)}"
            )
        scored = self.scorer(pairs)  # logits (N, K, 1), hidden (N, K, H)
        logits = scored.logits.squeeze(-1)
        belief = torch.softmax(logits, dim=-1)
        rationale = (belief.unsqueeze(-1) * scored.rationale).sum(-2)
        return Outputs(logits, rationale)
