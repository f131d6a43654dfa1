"""A labelled table held as tensors, and its train/validation/test splits."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Table:
    """Rows of a classification data set.

    ids:      (N,) int64, unique sample ids. Teacher outputs are stored and looked up by these,
              never by row position, so any shuffling or subsetting keeps them aligned.
    X:        (N, d) float32 features.
    y:        (N,) int64 class indices into ``classes``.
    classes:  class names, in index order.
    feature_names: d column names.
    """

    ids: torch.Tensor
    X: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    def take(self, rows: torch.Tensor) -> Table:
        """The rows at positions ``rows`` (not ids), as a new table."""
        return Table(self.ids[rows], self.X[rows], self.y[rows], self.classes, self.feature_names)

    def to(self, device: torch.device | str) -> Table:
        return Table(self.ids.to(device), self.X.to(device), self.y.to(device), self.classes, self.feature_names)

    def with_features(self, X: torch.Tensor) -> Table:
        return Table(self.ids, X, self.y, self.classes, self.feature_names)


@dataclass(frozen=True)
class Splits:
    train: Table
    val: Table
    test: Table
