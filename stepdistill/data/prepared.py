"""A data set made ready for distillation: encoded splits plus what teachers may need."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from stepdistill.data.encode import FeatureEncoder
from stepdistill.data.table import Splits


@dataclass(frozen=True)
class PreparedData:
    """splits: encoded tensors, what students see; encoder: fitted on the training split;
    raw: the feature columns as read, indexed by sample id, for teachers fitted outside
    stepdistill; image_shape: (C, H, W) when rows are flattened images."""

    splits: Splits
    encoder: FeatureEncoder
    raw: pd.DataFrame
    image_shape: tuple[int, int, int] | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.splits.train.classes
