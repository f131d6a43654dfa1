"""Multi-layer perceptron whose rationale is a hidden layer's activations."""

from __future__ import annotations

import torch
from torch import nn

from stepdistill.terms import Outputs


class MLPModel(nn.Module):
    """``net``: Linear-ReLU blocks then a Linear to K logits. The rationale is the output of the
    last hidden block (its ReLU), the representation the prediction is read from."""

    def __init__(self, n_features: int, n_logits: int, hidden: tuple[int, ...] = (64, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_logits)
        self.rationale_width = width

    def forward(self, x: torch.Tensor) -> Outputs:
        hidden = self.body(x)
        return Outputs(self.head(hidden), hidden)
