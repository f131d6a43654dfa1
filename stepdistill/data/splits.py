"""Stratified train/validation/test splits, and standardization fitted on train only."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from stepdistill.data.table import Splits, Table
from stepdistill.errors import StepDistillError

# Fewest rows of each class that the smallest split should expect. Below this, stratification
# cannot place the class in every split, and per-split metrics for it would be noise.
MIN_CLASS_ROWS_PER_SPLIT = 2


def split_rows(
    y: np.ndarray, classes: Sequence[str], val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row positions of train / validation / test, with the class ratios of ``y`` in each.

    ``val_fraction`` and ``test_fraction`` are shares of all rows; train gets the rest.
    Raises StepDistillError if the fractions are invalid or a class has too few rows.
    """
    _check_fractions(val_fraction, test_fraction)
    _check_class_sizes(y, classes, val_fraction, test_fraction)
    holdout_fraction = val_fraction + test_fraction
    positions = np.arange(len(y))
    # Two stratified cuts: train vs. holdout, then the holdout into validation vs. test.
    train_rows, holdout_rows = train_test_split(
        positions, test_size=holdout_fraction, stratify=y, random_state=seed
    )
    val_rows, test_rows = train_test_split(
        holdout_rows,
        test_size=test_fraction / holdout_fraction,
        stratify=y[holdout_rows],
        random_state=seed,
    )
    return train_rows, val_rows, test_rows


def split_stratified(
    ids: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    feature_names: Sequence[str],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Splits:
    """Numeric arrays split by ``split_rows`` into ``Table``s."""
    rows = split_rows(y, classes, val_fraction, test_fraction, seed)
    table = Table(
        ids=_tensor(ids, np.int64),
        X=_tensor(X, np.float32),
        y=_tensor(y, np.int64),
        classes=tuple(classes),
        feature_names=tuple(feature_names),
    )
    return Splits(*(table.take(torch.as_tensor(r)) for r in rows))


def standardize(splits: Splits) -> tuple[Splits, StandardScaler]:
    """Scale features to zero mean and unit variance, with statistics from train only.

    Fitting on train alone keeps validation and test unseen, as they will be in use.
    Returns the scaled splits (float32) and the fitted scaler, to apply to new data.
    """
    scaler = StandardScaler().fit(splits.train.X.numpy())

    def scaled(table: Table) -> Table:
        X = scaler.transform(table.X.numpy()).astype(np.float32)
        return table.with_features(torch.from_numpy(X))

    scaled_splits = Splits(
        train=scaled(splits.train), val=scaled(splits.val), test=scaled(splits.test)
    )
    return scaled_splits, scaler


def _tensor(values: np.ndarray, dtype: type) -> torch.Tensor:
    """A tensor sharing memory with ``values`` where possible; read-only arrays (views into a
    pandas frame) are copied, since torch assumes it may write to what it wraps."""
    return torch.from_numpy(np.require(values, dtype=dtype, requirements="W"))


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise StepDistillError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must each be"
            " between 0 and 1 and sum to less than 1 — e.g. use 0.1 and 0.1"
        )


def _check_class_sizes(
    y: np.ndarray, classes: Sequence[str], val_fraction: float, test_fraction: float
) -> None:
    """Fail clearly, before sklearn does, when a class is too rare to appear in every split."""
    smallest_fraction = min(val_fraction, test_fraction, 1 - val_fraction - test_fraction)
    # Rounded before ceil so float noise (2 / 0.1 = 20.000000000000004) does not add a row.
    needed = math.ceil(round(MIN_CLASS_ROWS_PER_SPLIT / smallest_fraction, 9))
    counts = np.bincount(y, minlength=len(classes))
    for name, count in zip(classes, counts):
        if count < needed:
            raise StepDistillError(
                f"class '{name}' has only {count} rows; with val_fraction={val_fraction} and"
                f" test_fraction={test_fraction} each class needs at least {needed}"
                f" ({MIN_CLASS_ROWS_PER_SPLIT} in the smallest split)"
                " — add rows of it or merge it with another class"
            )
