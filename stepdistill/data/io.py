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
    is_object_dtype,
    is_string_dtype,
    is_timedelta64_dtype,
)
from sklearn.preprocessing import LabelEncoder

from stepdistill.errors import StepDistillError

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl",)


# Delimiters a CSV read with another one gives away: they stay inside its single column's name.
OTHER_DELIMITERS = (";", "\t", "|")


def read_frame(path: str | Path, sep: str = ",") -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.csv.gz``; fields separated by ``sep``), Parquet (``.parquet``,
    ``.pq``) or JSON Lines (``.jsonl``: one record per line; lists such as answer choices stay
    lists) file.

    Raises StepDistillError if the file is missing or a directory, has another extension, cannot
    be parsed, repeats a column name, holds no rows or no columns, or is a CSV that reads as a
    single column because its fields are separated by another delimiter.
    """
    path = Path(path)
    if path.is_dir():
        raise StepDistillError(f"data file {path} is a directory — point the path at a CSV, Parquet or JSONL file")
    if not path.is_file():
        raise StepDistillError(f"data file not found: {path} — check the path")
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        file_format, read = "CSV", lambda p: _read_csv(p, sep)
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
    _refuse_duplicate_columns(frame.columns, path)
    return frame


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    """A CSV file as a frame, its header checked as written: pandas renames a repeated column
    name (``a``, ``a.1``) while reading, which would hide the repetition."""
    header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str).iloc[0]
    _refuse_duplicate_columns([name for name in header if isinstance(name, str)], path)
    frame = pd.read_csv(path, sep=sep)
    if frame.shape[1] == 1:
        column = str(frame.columns[0])
        for delimiter in OTHER_DELIMITERS:
            if delimiter != sep and delimiter in column:
                raise StepDistillError(
                    f"{path} reads as a single column {column!r}: its fields look separated by {delimiter!r}"
                    f" — set data.sep: {delimiter!r} in the config"
                )
    return frame


def _refuse_duplicate_columns(names, path: Path) -> None:
    """Refuse a file whose column ``names`` repeat one: which of the two a setting means is unknowable."""
    repeated = sorted({str(name) for name in pd.Index(names)[pd.Index(names).duplicated()]})
    if repeated:
        raise StepDistillError(
            f"{path} has more than one column named {', '.join(map(repr, repeated))}"
            " — rename or drop the repeated columns"
        )


def frame_parts(
    frame: pd.DataFrame,
    label: str,
    id_column: str | None = None,
    categorical: tuple[str, ...] = (),
    missing: str = "error",
) -> tuple[pd.DataFrame, np.ndarray, list[str], np.ndarray]:
    """Split a frame into its feature columns, encoded labels and sample ids, checking each.

    ``categorical`` names feature columns to treat as categories whatever their values (numeric
    codes, say); a text column whose values are mostly numbers is otherwise refused as a numeric
    column with stray text. ``missing`` (``data.missing``): "error" refuses a missing feature
    value in any column; "impute" lets them through to the encoder, which fills them.

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
    if unknown := [c for c in categorical if c not in features.columns]:
        raise StepDistillError(
            f"data.categorical names columns that are not features: {', '.join(unknown)}"
            f" — choose among {', '.join(features.columns)}"
        )
    _check_features(features, label, categorical, missing)
    # Missing values stay missing (not the text "<NA>"), so the encoder treats them as it does any.
    features = features.astype({c: "string" for c in categorical})
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
    if is_float_dtype(values) and values.nunique() > MAX_FLOAT_CLASSES and (fractional := values[np.mod(values, 1) != 0]).size:
        raise StepDistillError(
            f"label column '{label}' holds {values.nunique():,} distinct numbers such as"
            f" {', '.join(f'{v:g}' for v in fractional.unique()[:3])}: it looks like a regression target,"
            " and stepdistill trains classifiers — bin it into classes or set data.label to a class column"
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
            f"label column {label!r} mixes value types (e.g. numbers and strings)"
            " — make all labels one type"
        ) from err
    classes = [str(c) for c in encoder.classes_]
    _refuse_classes_spelt_two_ways(classes, label)
    if len(classes) < 2:
        raise StepDistillError(
            f"label column {label!r} has a single class ({classes[0]!r});"
            " distillation needs at least two"
        )
    return y.astype(np.int64), classes


def spelling_key(name: str) -> str:
    """A class name without its case and surrounding spaces: two names with the same key are one
    class spelt two ways ('Yes', 'yes '), not two classes."""
    return name.strip().casefold()


def _refuse_classes_spelt_two_ways(classes: list[str], label: str) -> None:
    """Labels such as 'Yes' and 'yes ' are a typing slip, not two classes: refused here, naming
    both, rather than later as a rare class (or silently learned as two)."""
    spellings: dict[str, list[str]] = {}
    for name in classes:
        spellings.setdefault(spelling_key(name), []).append(name)
    twins = next((names for names in spellings.values() if len(names) > 1), None)
    if twins:
        raise StepDistillError(
            f"label column {label!r} spells one class {len(twins)} ways, {' and '.join(map(repr, twins))},"
            " which differ only by case or surrounding spaces — write each class one way"
        )


# A float label with more distinct values than this, some not whole, is a measurement, not classes.
MAX_FLOAT_CLASSES = 20
# A text column counts as numeric with stray text when at least this share of its values are numbers.
NUMERIC_SHARE = 0.5
# The largest magnitude float32, the type students see, holds.
FLOAT32_MAX = float(np.finfo(np.float32).max)

# A categorical column with more distinct values than this is almost surely an identifier or
# free text; one-hot encoding it would make a huge, meaningless input.
MAX_CATEGORIES = 1000


def _check_features(features: pd.DataFrame, label: str, categorical: tuple[str, ...], missing: str) -> None:
    """Numeric columns must be finite; categorical ones (strings, categories, booleans, and the
    ``categorical`` columns) are one-hot encoded later; dates and other kinds must be turned into
    numbers by the user. Missing values, in either kind of column, follow the ``missing`` policy."""
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
    for column in features.columns:
        if column not in categorical:
            _refuse_numbers_with_text(features[column], column)
    numeric = [c for c in features.columns if c not in categorical and is_numeric_dtype(features[c]) and not is_bool_dtype(features[c])]
    wide = [f"{c} ({n:,})" for c in features.columns if c not in numeric and (n := features[c].nunique()) > MAX_CATEGORIES]
    if wide:
        raise StepDistillError(
            f"categorical feature columns with over {MAX_CATEGORIES} distinct values: {', '.join(wide)};"
            " drop them or encode them as numbers"
        )
    # Checked in float64, where every number a file holds is exact enough to judge.
    values = features[numeric].to_numpy(dtype=np.float64, na_value=np.nan)
    infinite = np.isinf(values)
    absent = features.isna().to_numpy() if missing == "error" else np.zeros(features.shape, dtype=bool)
    bad = pd.DataFrame(absent, columns=features.columns)
    bad[numeric] = bad[numeric].to_numpy() | infinite
    if bad.to_numpy().any():
        what = "NaN, missing or infinite" if missing == "error" else "infinite"
        fix = "drop or fill those rows, or set data.missing: impute" if missing == "error" else "drop or fix those rows"
        raise StepDistillError(f"{what} feature values in columns: {_where(bad)} — {fix}")
    huge = pd.DataFrame(np.abs(np.nan_to_num(values)) > FLOAT32_MAX, columns=numeric)
    if huge.to_numpy().any():
        raise StepDistillError(
            f"feature values beyond ±{FLOAT32_MAX:.3g}, too large for the float32 numbers students compute with,"
            f" in columns: {_where(huge)} — rescale those columns (a logarithm, say) or drop those rows"
        )


def _where(bad: pd.DataFrame) -> str:
    """``"a, b (3 rows), e.g. data rows 1, 4, 5"`` for a frame of flags: the columns holding a
    flagged value, and the rows (counted from 1, as the data lines under a header)."""
    rows = np.flatnonzero(bad.to_numpy().any(axis=1))
    columns = ", ".join(str(c) for c in bad.columns[bad.to_numpy().any(axis=0)])
    return f"{columns} ({len(rows)} rows), e.g. data rows {', '.join(str(r + 1) for r in rows[:5])}"


def _refuse_numbers_with_text(values: pd.Series, column: str) -> None:
    """A text column whose values are mostly numbers is a numeric column with stray text (a typo,
    a placeholder such as "n/a"): refused with the first offending values, rather than silently
    one-hot encoded."""
    if not (is_object_dtype(values) or is_string_dtype(values)):
        return
    present = values.dropna()
    if present.empty or not all(isinstance(v, (str, int, float)) for v in present):
        return
    numbers = pd.to_numeric(present.astype(str), errors="coerce")
    if numbers.notna().mean() < NUMERIC_SHARE or numbers.notna().all():
        return
    is_text = numbers.isna().to_numpy()
    rows = np.flatnonzero(values.notna().to_numpy())[is_text]
    examples = ", ".join(f"{v!r} (data row {r + 1})" for v, r in zip(present[is_text][:3], rows))
    raise StepDistillError(
        f"column '{column}' holds numbers but also text in {len(rows)} rows: {examples}"
        f" — fix those cells, or list '{column}' in data.categorical to treat its values as categories"
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
