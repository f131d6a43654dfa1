"""Reading a data file into a frame, and checking its label, features and ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.types import (
    is_bool_dtype,
    is_complex_dtype,
    is_datetime64_any_dtype,
    is_float_dtype,
    is_integer_dtype,
    is_numeric_dtype,
    is_timedelta64_dtype,
)
from sklearn.preprocessing import LabelEncoder

from stepdistill.errors import StepDistillError

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl",)


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.csv.gz``), Parquet (``.parquet``, ``.pq``) or JSON Lines
    (``.jsonl``: one record per line; lists such as answer choices stay lists) file.

    Raises StepDistillError if the file is missing, has another extension, cannot be parsed,
    or holds no rows or no columns.
    """
    path = Path(path)
    if not path.is_file():
        raise StepDistillError(
            f"data file not found: {path}"
            " — check the path (relative paths start at the current directory)"
        )
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        file_format, read = "CSV", pd.read_csv
    elif name.endswith(PARQUET_SUFFIXES):
        file_format, read = "Parquet", _read_parquet
    elif name.endswith(JSONL_SUFFIXES):
        file_format, read = "JSON Lines", _read_jsonl
    else:
        supported = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES + JSONL_SUFFIXES)
        raise StepDistillError(
            f"unsupported data file type: {path.name} — use one of: {supported}"
        )
    try:
        frame = read(path)
    # Parse failures surface as ValueError subclasses (pandas, unicode), OSError (bad gzip,
    # permissions), EOFError (truncated gzip) or pyarrow's own errors.
    except (ValueError, OSError, EOFError, pa.ArrowException) as err:
        raise StepDistillError(
            f"could not read {path} as {file_format}: {_one_line(str(err)) or type(err).__name__}"
            f" — check that it is a valid {file_format} file"
        ) from err
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise StepDistillError(
            f"data file {path} has no rows — point the data path at a file with data"
        )
    return frame


def frame_parts(
    frame: pd.DataFrame, label: str, id_column: str | None = None
) -> tuple[pd.DataFrame, np.ndarray, list[str], np.ndarray]:
    """Split a frame into its feature columns, encoded labels and sample ids, checking each.

    Returns ``(features, y, classes, ids)``: features, every column except ``label`` and
    ``id_column`` (numeric or categorical; column names as strings); y int64 (N,) indices into
    ``classes`` (the sorted distinct label values, as strings); ids int64 (N,) from
    ``id_column``, or the row positions.
    """
    if len(frame) == 0:
        raise StepDistillError("the data has no rows — point the data path at a file with data")
    _require_column(frame, label, "label", "data.label")
    if id_column is not None:
        _require_column(frame, id_column, "id", "data.id_column")
    y, classes = _encode_labels(frame[label], label)
    features = frame.drop(columns=[c for c in (label, id_column) if c is not None])
    features.columns = [str(c) for c in features.columns]
    _check_features(features, label)
    if id_column is None:
        ids = np.arange(len(frame), dtype=np.int64)
    else:
        ids = _ids(frame[id_column], id_column)
    return features.reset_index(drop=True), y, classes, ids


def _read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path, engine="pyarrow")


def _read_jsonl(path: Path) -> pd.DataFrame:
    # dtype=False: values keep their JSON types (pandas would otherwise guess dates and numbers).
    return pd.read_json(path, lines=True, dtype=False)


def _one_line(text: str) -> str:
    """Collapse a library's multi-line message so the user-facing error stays on one line."""
    return " ".join(text.split())


def _require_column(frame: pd.DataFrame, column: str, role: str, setting: str) -> None:
    if column not in frame.columns:
        columns = ", ".join(str(c) for c in frame.columns)
        raise StepDistillError(
            f"{role} column '{column}' not found; columns are: {columns}"
            f" — set {setting} to one of them"
        )


def _encode_labels(values: pd.Series, label: str) -> tuple[np.ndarray, list[str]]:
    """Encode labels as indices into their sorted distinct values (LabelEncoder order)."""
    n_missing = int(values.isna().sum())
    if n_missing:
        raise StepDistillError(
            f"label column '{label}' has {n_missing} missing values — drop or fill those rows"
        )
    # A label column read with a float dtype but whole values (1.0, 2.0) names classes "1", "2".
    if is_float_dtype(values) and np.all(np.mod(values.to_numpy(), 1) == 0):
        values = values.astype(np.int64)
    encoder = LabelEncoder()
    try:
        y = encoder.fit_transform(values.to_numpy())
    except TypeError as err:
        # Sorting fails when a column mixes numbers and strings.
        raise StepDistillError(
            f"label column '{label}' mixes value types (e.g. numbers and strings)"
            " — make all labels one type"
        ) from err
    classes = [str(c) for c in encoder.classes_]
    if len(classes) < 2:
        raise StepDistillError(
            f"label column '{label}' has a single class ('{classes[0]}');"
            " distillation needs at least two"
        )
    return y.astype(np.int64), classes


# A categorical column with more distinct values than this is almost surely an identifier or
# free text; one-hot encoding it would make a huge, meaningless input.
MAX_CATEGORIES = 1000


def _check_features(features: pd.DataFrame, label: str) -> None:
    """Numeric columns must be finite; categorical ones (strings, categories, booleans) are
    one-hot encoded later; dates and other kinds must be turned into numbers by the user."""
    if features.shape[1] == 0:
        raise StepDistillError(
            f"no feature columns: every column is the label '{label}' or the id column"
            " — add feature columns"
        )
    unsupported = [c for c in features.columns if is_datetime64_any_dtype(features[c]) or is_timedelta64_dtype(features[c]) or is_complex_dtype(features[c])]
    if unsupported:
        raise StepDistillError(
            f"feature columns of unsupported type (dates, durations or complex numbers): {', '.join(unsupported)};"
            " convert them to numbers or drop them"
        )
    numeric = [c for c in features.columns if is_numeric_dtype(features[c]) and not is_bool_dtype(features[c])]
    wide = [f"{c} ({n:,})" for c in features.columns if c not in numeric and (n := features[c].nunique()) > MAX_CATEGORIES]
    if wide:
        raise StepDistillError(
            f"categorical feature columns with over {MAX_CATEGORIES} distinct values: {', '.join(wide)};"
            " drop them or encode them as numbers"
        )
    # Checked as float32, the type students see, so values too large for it count as inf too.
    values = features[numeric].to_numpy(dtype=np.float32, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        bad_columns = ", ".join(str(c) for c, hit in zip(numeric, bad.any(axis=0)) if hit)
        n_bad_rows = int(bad.any(axis=1).sum())
        raise StepDistillError(
            f"NaN or infinite feature values in columns: {bad_columns} ({n_bad_rows} rows)"
            " — drop or fill those rows"
        )


def _ids(values: pd.Series, id_column: str) -> np.ndarray:
    """Sample ids from a column, which must hold unique integers."""
    n_missing = int(values.isna().sum())
    if n_missing:
        raise StepDistillError(
            f"id column '{id_column}' has {n_missing} missing values; ids must be unique integers"
            " — fill them or leave data.id_column unset to number rows"
        )
    if not is_integer_dtype(values):
        raise StepDistillError(
            f"id column '{id_column}' must hold integers, but has dtype {values.dtype}"
            " — use an integer id column or leave data.id_column unset to number rows"
        )
    n_duplicated = int(values.duplicated().sum())
    if n_duplicated:
        raise StepDistillError(
            f"id column '{id_column}' has {n_duplicated} duplicated values; ids must be unique"
            " — deduplicate it or leave data.id_column unset to number rows"
        )
    return values.to_numpy(dtype=np.int64, copy=True)
