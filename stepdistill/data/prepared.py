"""A data set made ready for distillation: encoded splits plus what teachers may need, and the
functions that encode a checked frame's splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from stepdistill.data.encode import FeatureEncoder
from stepdistill.data.io import frame_parts
from stepdistill.data.splits import split_rows
from stepdistill.data.table import Splits, Table

if TYPE_CHECKING:
    from stepdistill.text.inputs import TextInputs


@dataclass(frozen=True)
class PreparedData:
    """splits: encoded tensors, what students see; encoder: fitted on the training split;
    raw: the feature columns as read, indexed by sample id, for teachers fitted outside
    stepdistill; image_shape: (C, H, W) when rows are flattened images. Text records: ``text``,
    how their sentence features were made; ``record_ids``, each sample id's record id (sample id
    i is ``record_ids[i]``; past ``raw``'s rows, an unlabelled pool's records); ``choices``, each
    sample's answer choices (multiple choice)."""

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

    @property
    def pool_record_ids(self) -> tuple[str, ...]:
        """The record ids of an unlabelled pool of text records, whose sample ids follow the data's."""
        return () if self.record_ids is None else self.record_ids[len(self.raw) :]


def prepare(
    frame: pd.DataFrame,
    label: str,
    id_column: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    scale_numeric: bool = True,
) -> tuple[Splits, FeatureEncoder]:
    """Check a frame, split it stratified by label, and encode its features with an encoder
    fitted on the training split (one-hot categories, standardized numbers).

    Returns the encoded splits and the fitted encoder, to apply to new data.
    """
    features, y, classes, ids = frame_parts(frame, label, id_column)
    rows = split_rows(y, classes, val_fraction, test_fraction, seed)
    return encode_splits(features, y, classes, ids, rows, scale_numeric)


def encode_splits(
    features: pd.DataFrame,
    y: np.ndarray,
    classes: list[str],
    ids: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    scale_numeric: bool = True,
    missing: str = "error",
) -> tuple[Splits, FeatureEncoder]:
    """Checked parts of a frame (``frame_parts``) as encoded train / validation / test tables at
    the row positions ``rows``, with the encoder fitted on the training rows only (``missing``:
    the data's policy for missing values, ``FeatureEncoder``)."""
    encoder = FeatureEncoder(scale_numeric, missing).fit(features.iloc[rows[0]])
    table = Table(
        torch.from_numpy(ids), torch.from_numpy(encoder.transform(features)), torch.from_numpy(y), tuple(classes), encoder.feature_names
    )
    return Splits(*(table.take(torch.from_numpy(r)) for r in rows)), encoder
