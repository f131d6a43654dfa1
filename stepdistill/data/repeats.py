"""The runs of an evaluation: which rows train, validate and test in each, and which labels the
students may see.

A run is one repetition of the whole experiment on other rows: repeated stratified holdout (a new
train/validation/test split per repeat), or repeated stratified k-fold (each fold the test split
once per repetition, validation carved from the other folds). With a fixed test file, only the
train/validation split of the other rows varies.

Labelled subsets are drawn without reading any label, and nested: per run, the rows are put in a
random order once, and a fraction ``f`` labels the first ``ceil(f * n)`` of them, so a smaller
fraction's labelled rows are always among a larger one's. The runs of an experiment with hidden
labels are drawn without reading labels too (every row in one stratum): a hidden label decides
nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from stepdistill.data.splits import split_rows
from stepdistill.errors import StepDistillError


@dataclass(frozen=True)
class RunRows:
    """Row positions of one run. ``index`` numbers the runs from 0; ``seed`` seeds everything
    random in the run (teacher refit, labelled subset, student initialization, batch order)."""

    index: int
    seed: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def holdout_runs(
    y: np.ndarray, classes: list[str], repeats: int, val_fraction: float, test_fraction: float, seed: int
) -> list[RunRows]:
    """``repeats`` stratified train/validation/test splits, split ``r`` drawn with ``seed + r``."""
    return [RunRows(r, seed + r, *split_rows(y, classes, val_fraction, test_fraction, seed + r)) for r in range(repeats)]


def cv_runs(y: np.ndarray, classes: list[str], repeats: int, folds: int, val_fraction: float, seed: int) -> list[RunRows]:
    """``repeats`` x ``folds`` runs of repeated stratified k-fold: in repetition r the rows are cut
    into ``folds`` stratified folds (shuffled with ``seed + r``); each fold tests once, and
    ``val_fraction`` of all rows is drawn, stratified, from the other folds for validation."""
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < folds:
        raise StepDistillError(
            f"class '{classes[int(counts.argmin())]}' has {counts.min()} rows, fewer than evaluation.folds {folds}; lower folds or use scheme holdout"
        )
    runs = []
    for r in range(repeats):
        folder = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + r)
        for f, (rest, test) in enumerate(folder.split(np.zeros(len(y)), y)):
            index = r * folds + f
            val_share = val_fraction / (1 - 1 / folds)
            train, val = train_test_split(rest, test_size=val_share, stratify=y[rest], random_state=seed + index)
            runs.append(RunRows(index, seed + index, train, val, test))
    return runs


def fixed_test_runs(
    y: np.ndarray, classes: list[str], n_test: int, repeats: int, val_fraction: float, seed: int
) -> list[RunRows]:
    """Runs whose test rows are always the last ``n_test`` rows (a user's test file appended to
    the data); the other rows are split, stratified, into train and ``val_fraction`` of them for
    validation, anew in each repeat."""
    rest = np.arange(len(y) - n_test)
    test = np.arange(len(y) - n_test, len(y))
    counts = np.bincount(y[rest], minlength=len(classes))
    if (counts * val_fraction < 1).any():
        small = classes[int(counts.argmin())]
        raise StepDistillError(f"class '{small}' has {counts.min()} rows besides the test file, too few for a validation split; add rows of it")
    runs = []
    for r in range(repeats):
        train, val = train_test_split(rest, test_size=val_fraction, stratify=y[rest], random_state=seed + r)
        runs.append(RunRows(r, seed + r, train, val, test))
    return runs


def labelled_order(n_rows: int, seed: int) -> np.ndarray:
    """(n_rows,) a rank for every row, random for ``seed``: the order in which rows become
    labelled as the fraction grows."""
    rank = np.empty(n_rows, dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(n_rows)] = np.arange(n_rows)
    return rank


def labelled_mask(rank: np.ndarray, fraction: float) -> np.ndarray:
    """(N,) bool: the first ``ceil(fraction * N)`` rows by ``rank`` (at least one)."""
    return rank < max(1, math.ceil(round(fraction * len(rank), 9)))


def fraction_key(fraction: float) -> str:
    """The fraction as written in decimal, without a trailing ``.0``: 0.05 -> "0.05", 1.0 -> "1"."""
    return np.format_float_positional(fraction, trim="-")
