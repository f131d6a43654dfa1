"""Small convolutional network for image rows, whose rationale is a conv block's feature map."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from stepdistill.terms import Outputs

RATIONALE_KINDS = ("pooled", "spatial")


class CNNModel(nn.Module):
    """Conv blocks (3x3 conv with padding 1, ReLU, 2x2 max pool) in ``blocks``, then a Linear
    from the last block's flattened feature map to K logits.

    The head reads the whole map rather than its spatial average: after two small blocks,
    global average pooling throws away where the strokes are, and on 4,000 MNIST digits such a
    network stays under 50% test accuracy after 8 epochs where this one reaches about 96%.

    Rows arrive flat, ``(N, C*H*W)`` in ``image_shape = (C, H, W)`` order, and are reshaped here:
    tables stay 2-D everywhere else in the project.

    The rationale is the feature map of block ``rationale_layer`` (default: the last):
    rationale="pooled" averages it over space to ``(N, C')``, which says which features are
    present; rationale="spatial" flattens it to ``(N, C'*H'*W')``, which also says where.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        n_logits: int,
        channels: tuple[int, ...] = (16, 32),
        rationale: Literal["pooled", "spatial"] = "pooled",
        rationale_layer: int = -1,
    ):
        super().__init__()
        if not channels:
            raise ValueError("a CNN needs at least one conv block")
        # The constructor's arguments: what rebuilds this model around saved weights (saved.py).
        self.spec = {
            "kind": "cnn",
            "image_shape": list(image_shape),
            "n_logits": n_logits,
            "channels": list(channels),
            "rationale": rationale,
            "rationale_layer": rationale_layer,
        }
        if rationale not in RATIONALE_KINDS:
            raise ValueError(f"unknown CNN rationale {rationale!r}; use one of {RATIONALE_KINDS}")
        in_channels, height, width = image_shape
        if min(height, width) < 2 ** len(channels):
            raise ValueError(f"a {height}x{width} image is too small for {len(channels)} conv blocks, each halving its side")
        self.image_shape = (in_channels, height, width)
        widths = (in_channels, *channels)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            for a, b in zip(widths[:-1], widths[1:])
        )
        self.head = nn.Linear(channels[-1] * _positions_after(len(channels), height, width), n_logits)
        self.rationale_kind = rationale
        self.rationale_index = range(len(channels))[rationale_layer]
        positions = _positions_after(self.rationale_index + 1, height, width) if rationale == "spatial" else 1
        self.rationale_width = channels[self.rationale_index] * positions

    @property
    def shared_layer(self) -> torch.Tensor:
        """The weight every loss term's gradient passes through (the rationale block's conv),
        where GradNorm compares the terms' gradient norms."""
        return self.blocks[self.rationale_index][0].weight

    def forward(self, x: torch.Tensor) -> Outputs:
        x = x.unflatten(-1, self.image_shape)
        rationale = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.rationale_index:
                rationale = x.mean(dim=(-2, -1)) if self.rationale_kind == "pooled" else x.flatten(-3)
        return Outputs(self.head(x.flatten(-3)), rationale)


def _positions_after(n_blocks: int, height: int, width: int) -> int:
    """Spatial positions of the feature map after ``n_blocks`` blocks: each max pool halves both
    sides, rounding down (an odd last row or column is dropped)."""
    return (height // 2**n_blocks) * (width // 2**n_blocks)
