"""Multi-layer perceptron whose rationale is a hidden layer's activations."""

from __future__ import annotations

import torch
from torch import nn

from stepdistill.terms import Outputs


class MLPModel(nn.Module):
    """Linear-ReLU blocks (``hidden``) then a Linear to K logits.

    The rationale is the output (after ReLU) of hidden block ``rationale_layer`` (default: the
    last, the representation the prediction is read from).
    """

    def __init__(self, n_features: int, n_logits: int, hidden: tuple[int, ...] = (64, 64), rationale_layer: int = -1):
        super().__init__()
        if not hidden:
            raise ValueError("an MLP needs at least one hidden layer")
        # The constructor's arguments: what rebuilds this model around saved weights (saved.py).
        self.spec = {"kind": "mlp", "n_features": n_features, "n_logits": n_logits, "hidden": list(hidden), "rationale_layer": rationale_layer}
        widths = (n_features, *hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Linear(hidden[-1], n_logits)
        self.rationale_index = range(len(hidden))[rationale_layer]
        self.rationale_width = hidden[self.rationale_index]

    @property
    def shared_layer(self) -> torch.Tensor:
        """The weight every loss term's gradient passes through (the rationale layer's), where
        GradNorm compares the terms' gradient norms."""
        return self.blocks[self.rationale_index][0].weight

    def forward(self, x: torch.Tensor) -> Outputs:
        rationale = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.rationale_index:
                rationale = x
        return Outputs(self.head(x), rationale)
