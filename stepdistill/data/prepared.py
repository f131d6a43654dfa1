"""A data set made ready for distillation: encoded splits plus what teachers may need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from stepdistill.data.encode import FeatureEncoder
from stepdistill.data.table import Splits

if TYPE_CHECKING:
    from stepdistill.text.inputs import TextInputs


@dataclass(frozen=True)
class PreparedData:
    """splits: encoded tensors, what students see; encoder: fitted on the training split;
    raw: the feature columns as read, indexed by sample id, for teachers fitted outside
    stepdistill; image_shape: (C, H, W) when rows are flattened images. Text records: ``text``,
    how their sentence features were made; ``record_ids``, each sample id's record id (sample id
    i is ``record_ids[i]``); ``choices``, each sample's answer choices (multiple choice)."""

    splits: Splits
    encoder: FeatureEncoder
    raw: pd.DataFrame
    image_shape: tuple[int, int, int] | None = None
    text: TextInputs | None = None
    record_ids: tuple[str, ...] | None = None
    choices: tuple[tuple[str, ...], ...] | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.splits.train.classes
