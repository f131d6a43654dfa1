"""Loading, checking, splitting and scaling tabular classification data."""

from __future__ import annotations

import pandas as pd
from sklearn.preprocessing import StandardScaler

from stepdistill.data.io import frame_to_xy, read_frame
from stepdistill.data.splits import split_stratified, standardize
from stepdistill.data.synthetic import linear_binary, linear_weights, nonlinear_binary
from stepdistill.data.table import Splits, Table

__all__ = [
    "Splits",
    "Table",
    "frame_to_xy",
    "linear_binary",
    "linear_weights",
    "nonlinear_binary",
    "prepare",
    "read_frame",
    "split_stratified",
    "standardize",
]


def prepare(
    frame: pd.DataFrame,
    label: str,
    id_column: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[Splits, StandardScaler]:
    """Check a frame, split it stratified by label and standardize it on train statistics.

    Returns the standardized splits and the scaler fitted on train.
    """
    X, y, classes, feature_names, ids = frame_to_xy(frame, label, id_column)
    splits = split_stratified(ids, X, y, classes, feature_names, val_fraction, test_fraction, seed)
    return standardize(splits)
