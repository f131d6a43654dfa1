"""Synthetic transfer sets: new rows made from a run's training rows, in the raw columns (so a
teacher that reads raw columns can label them as well as one that reads the encoded ones).

Both generators draw ``round(size * n)`` rows from ``n`` training rows: every row once per whole
multiple of ``size``, then a random share of them without repeats, each source row changed by
the generator. Nothing but the rows given is read: pass a run's training rows only. They make
their rows ``chunk_rows`` at a time (a set larger than memory is written out as it is made); one
chunk of every row draws exactly what the whole set made at once draws.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from stepdistill.errors import StepDistillError


def source_rows(n: int, size: float, rng: np.random.Generator) -> np.ndarray:
    """Positions of the rows each synthetic row starts from: ``floor(size)`` passes over all
    ``n``, then ``round(size * n) - floor(size) * n`` distinct rows at random."""
    total, whole = round(size * n), int(size)
    rest = rng.choice(n, size=total - whole * n, replace=False) if total > whole * n else np.empty(0, dtype=np.int64)
    return np.concatenate([np.tile(np.arange(n), whole), rest])


def nearest_neighbours(encoded: np.ndarray) -> np.ndarray:
    """(N,) each row's nearest other row by Euclidean distance in the encoded space (a duplicate
    row counts as a neighbour at distance 0)."""
    if len(encoded) < 2:
        raise StepDistillError("a MUNGE transfer set needs at least 2 training rows to pair each with its nearest neighbour")
    _, index = NearestNeighbors(n_neighbors=2, n_jobs=1).fit(encoded).kneighbors(encoded)
    own = np.arange(len(encoded))
    return np.where(index[:, 0] == own, index[:, 1], index[:, 0])


def munge(
    raw: pd.DataFrame, encoded: np.ndarray, numeric: list[str], size: float, p: float, spread: float, rng: np.random.Generator, chunk_rows: int | None = None
) -> Iterator[pd.DataFrame]:
    """MUNGE (Bucilua, Caruana & Niculescu-Mizil 2006): each synthetic row is a training row
    whose attributes, each with probability ``p``, come from its nearest neighbour ``b`` in the
    ``encoded`` space: a category as ``b``'s, a number drawn from N(b, |a - b| / spread). The
    published loop also changes the neighbour in the same step; drawing each source row's copy
    on its own gives the same distribution of rows, vectorized. A missing number stays missing.

    raw: (N, columns) the training rows as read; encoded: (N, d) the same rows encoded;
    numeric: the columns read as numbers. Yields frames of (up to ``chunk_rows``, columns), in
    all round(size * N) rows."""
    sources = source_rows(len(raw), size, rng)
    partners = nearest_neighbours(encoded)
    for chunk in _chunks(sources, chunk_rows):
        rows = raw.iloc[chunk].reset_index(drop=True)
        neighbours = raw.iloc[partners[chunk]].reset_index(drop=True)
        made = {}
        for column in raw.columns:
            changed = rng.random(len(rows)) < p
            if column in numeric:
                a, b = rows[column].to_numpy(np.float64), neighbours[column].to_numpy(np.float64)
                both = ~np.isnan(a) & ~np.isnan(b)
                drawn = rng.normal(np.where(both, b, 0.0), np.where(both, np.abs(a - b) / spread, 0.0))
                made[column] = np.where(changed & both, drawn, a)
            else:
                made[column] = rows[column].where(~changed, neighbours[column])
        yield pd.DataFrame(made, columns=raw.columns)


def gaussian_noise(
    raw: pd.DataFrame, numeric: list[str], size: float, noise: float, rng: np.random.Generator, chunk_rows: int | None = None
) -> Iterator[pd.DataFrame]:
    """Training rows with normal noise added to each numeric column (standard deviation ``noise``
    times the column's own over ``raw``), categories kept. Yields frames of (up to ``chunk_rows``,
    columns), in all round(size * N) rows."""
    if not numeric:
        raise StepDistillError("transfer kind gaussian adds noise to numeric columns, and the data has none; use transfer kind munge")
    scales = {column: noise * np.nan_to_num(raw[column].std()) for column in numeric}
    for chunk in _chunks(source_rows(len(raw), size, rng), chunk_rows):
        rows = raw.iloc[chunk].reset_index(drop=True)
        made = {column: rows[column] for column in raw.columns}
        for column in numeric:
            values = rows[column].to_numpy(np.float64)
            made[column] = values + rng.normal(0.0, scales[column], len(values))
        yield pd.DataFrame(made, columns=raw.columns)


def _chunks(sources: np.ndarray, chunk_rows: int | None) -> list[np.ndarray]:
    """``sources`` cut into pieces of ``chunk_rows`` (None: one piece)."""
    step = chunk_rows or max(1, len(sources))
    return [sources[start : start + step] for start in range(0, len(sources), step)]
