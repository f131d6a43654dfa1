"""Reading a data file into a frame, and checking its label, features and ids."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset
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


def read_frame(
    path: str | Path, *, sep: str = ",", decimal: str = ".", thousands: str | None = None, encoding: str = "utf-8"
) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.csv.gz``), Parquet (``.parquet``, ``.pq``) or JSON Lines
    (``.jsonl``: one record per line; lists such as answer choices stay lists) file.

    The keyword options are the config's ``data.sep``, ``data.decimal``, ``data.thousands`` and
    ``data.encoding`` (``DataConfig.read_options``), passed to pandas as they are: the fields'
    delimiter, the decimal mark and the thousands separator of a CSV's numbers, and the text
    encoding of a CSV or JSON Lines file. Parquet stores its types and encoding itself.

    Raises StepDistillError if the file is missing or a directory, has another extension, is not
    text in ``encoding``, cannot be parsed, repeats a column name, holds no rows or no columns, is
    a CSV that reads as a single column because its fields are separated by another delimiter, or
    holds a number whose ``thousands`` separator does not stand between groups of three digits.
    """
    path = Path(path)
    file_format = _file_format(path)
    with _reading(path, file_format, encoding):
        if file_format == "CSV":
            frame = _read_csv(path, sep=sep, decimal=decimal, thousands=thousands, encoding=encoding)
        elif file_format == "Parquet":
            frame = _read_parquet(path)
        else:
            frame = _read_jsonl(path, encoding)
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise StepDistillError(
            f"data file {path} has no rows — point the data path at a file with data"
        )
    _refuse_duplicate_columns(frame.columns, path)
    return frame


def read_chunks(
    path: str | Path, rows: int, *, sep: str = ",", decimal: str = ".", thousands: str | None = None, encoding: str = "utf-8"
) -> Iterator[pd.DataFrame]:
    """The file of ``read_frame`` as frames of at most ``rows`` rows each, read one at a time, so
    that a file larger than memory never is: Parquet through a pyarrow dataset's record batches,
    CSV and JSON Lines through pandas' chunked readers with the same options as ``read_frame``.
    A chunk's columns take the types of its own values (as ``read_frame``'s take the file's)."""
    path = Path(path)
    file_format = _file_format(path)
    with _reading(path, file_format, encoding):
        if file_format == "Parquet":
            # One row group decoded at a time, no batches read ahead: what is held stays near a
            # row group's size whatever the file's (pyarrow's defaults buffer several).
            scan = {"batch_readahead": 0, "fragment_readahead": 1, "fragment_scan_options": pyarrow.dataset.ParquetFragmentScanOptions(pre_buffer=False)}
            for batch in pyarrow.dataset.dataset(path, format="parquet").to_batches(batch_size=rows, **scan):
                if batch.num_rows:
                    yield batch.to_pandas()
            return
        if file_format == "CSV":
            reader = pd.read_csv(path, chunksize=rows, sep=sep, decimal=decimal, thousands=thousands, encoding=encoding)
        else:
            reader = pd.read_json(path, lines=True, dtype=False, encoding=encoding, chunksize=rows)
        with reader:
            yield from reader


def count_rows(path: str | Path, encoding: str = "utf-8") -> int:
    """The rows of a data file, without reading its values: Parquet's metadata, else its lines
    (less a CSV's header; a CSV field that spans lines counts each)."""
    path = Path(path)
    file_format = _file_format(path)
    with _reading(path, file_format, encoding):
        if file_format == "Parquet":
            return pyarrow.dataset.dataset(path, format="parquet").count_rows()
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        lines, last = 0, b"\n"
        with opener(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                lines, last = lines + block.count(b"\n"), block[-1:]
        lines += last != b"\n"  # a last line without its newline
        return max(0, lines - (file_format == "CSV"))


def _file_format(path: Path) -> str:
    """"CSV", "Parquet" or "JSON Lines" by the file's extension; a missing file, a directory or
    another extension is a one-line error."""
    if path.is_dir():
        raise StepDistillError(f"data file {path} is a directory — point the path at a CSV, Parquet or JSONL file")
    if not path.is_file():
        raise StepDistillError(f"data file not found: {path} — check the path")
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "CSV"
    if name.endswith(PARQUET_SUFFIXES):
        return "Parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "JSON Lines"
    raise StepDistillError(f"unsupported data file type: {path.name} — use one of: {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES + JSONL_SUFFIXES)}")


@contextmanager
def _reading(path: Path, file_format: str, encoding: str) -> Iterator[None]:
    """Turn what reading ``path`` raises into one line naming the problem and the fix."""
    try:
        yield
    # A reader's own refusals (a wrong delimiter, a misplaced thousands separator) say the fix already.
    except StepDistillError:
        raise
    except UnicodeDecodeError as err:
        raise StepDistillError(
            f"{path} is not {encoding} text (it holds the byte {err.object[err.start]:#04x}, which {encoding} does not allow)"
            " — set data.encoding to the file's encoding, e.g. latin-1"
        ) from err
    # Parse failures surface as ValueError subclasses (pandas), OSError (bad gzip, permissions),
    # EOFError (truncated gzip) or pyarrow's own errors.
    except (ValueError, OSError, EOFError, pa.ArrowException) as err:
        raise StepDistillError(
            f"could not read {path} as {file_format}: {_one_line(str(err)) or type(err).__name__}"
            f" — check that it is a valid {file_format} file"
        ) from err


def _read_csv(path: Path, **options) -> pd.DataFrame:
    """A CSV file as a frame, read with pandas' ``options``, its header checked as written:
    pandas renames a repeated column name (``a``, ``a.1``) while reading, which would hide the
    repetition."""
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, **options).iloc[0]
    _refuse_duplicate_columns([name for name in header if isinstance(name, str)], path)
    frame = pd.read_csv(path, **options)
    if frame.shape[1] == 1:
        column = str(frame.columns[0])
        for delimiter in OTHER_DELIMITERS:
            if delimiter != options["sep"] and delimiter in column:
                raise StepDistillError(
                    f"{path} reads as a single column {column!r}: its fields look separated by {delimiter!r}"
                    f" — set data.sep: {delimiter!r} in the config"
                )
    if options["thousands"] is not None:
        _refuse_misplaced_thousands(frame, pd.read_csv(path, dtype=str, **options), options["thousands"], options["decimal"])
    return frame


def _refuse_misplaced_thousands(frame: pd.DataFrame, cells: pd.DataFrame, thousands: str, decimal: str) -> None:
    """pandas drops a thousands separator wherever it stands: with ``data.thousands: ','`` the
    decimal comma of "39,1" reads as 391. Every number ``frame`` read from ``cells`` (the same
    file as text) that holds the separator must hold it between groups of three digits."""
    grouped = rf"[+-]?\d{{1,3}}(?:{re.escape(thousands)}\d{{3}})+(?:{re.escape(decimal)}\d*)?(?:[eE][+-]?\d+)?"
    for column in frame.columns:
        if not is_numeric_dtype(frame[column]):
            continue
        text = cells[column].dropna().str.strip()
        misplaced = text[text.str.contains(thousands, regex=False) & ~text.str.fullmatch(grouped)]
        if len(misplaced):
            row = misplaced.index[0]
            raise StepDistillError(
                f"column {str(column)!r} holds {misplaced.iloc[0]!r} (data row {row + 1}), which data.thousands: {thousands!r}"
                f" reads as {frame[column].iloc[row]}: the separator does not stand between groups of three digits"
                f" — if {thousands!r} is the decimal mark, set data.decimal: {thousands!r} instead; else fix those cells"
            )


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


def _read_jsonl(path: Path, encoding: str) -> pd.DataFrame:
    try:
        # dtype=False: values keep their JSON types (pandas would otherwise guess dates and numbers).
        return pd.read_json(path, lines=True, dtype=False, encoding=encoding)
    # pandas names a broken line by its offset in characters (ValueError), and a line that holds
    # no object (a list, a number) not at all (TypeError); users find lines by their number.
    except (ValueError, TypeError) as err:
        raise ValueError(_first_bad_line(path, encoding) or str(err)) from err


def _first_bad_line(path: Path, encoding: str) -> str | None:
    """What is wrong with the first line of a JSON Lines file that holds no JSON object, numbered
    from 1 (blank lines count, as editors count them, and are skipped, as pandas skips them)."""
    with path.open(encoding=encoding) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                return f"line {number} is not valid JSON ({err.msg} at column {err.colno})"
            if not isinstance(record, dict):
                return f"line {number} holds a JSON {type(record).__name__}, not an object"
    return None


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
# A whole cell holding a number with a decimal comma (39,1; 1.234,5 with dots between thousands),
# and one with commas between thousands (3,800; 1,234,567.5). "3,800" fits both.
DECIMAL_COMMA = re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d*),\d+")
THOUSANDS_COMMA = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
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
            _refuse_numbers_with_separators(features[column], column)
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
    # As booleans even with no numeric column, whose empty selection pandas gives as floats.
    bad[numeric] = bad[numeric].to_numpy(dtype=bool) | infinite
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


def _present_text(values: pd.Series) -> pd.Series | None:
    """The non-missing values of a text column as strings; None for a column of another kind, or
    whose values are not all scalars (lists of answer choices, say)."""
    if not (is_object_dtype(values) or is_string_dtype(values)):
        return None
    present = values.dropna()
    if present.empty or not all(isinstance(v, (str, int, float)) for v in present):
        return None
    return present.astype(str)


def _refuse_numbers_with_separators(values: pd.Series, column: str) -> None:
    """A text column whose values are mostly numbers once a decimal comma ("39,1", "1.234,5") or
    commas between thousands ("3,800") are taken into account is a numeric column that pandas read
    with the default conventions (a decimal point, no thousands separator): refused naming the
    settings that read it, rather than silently one-hot encoded. A reading that would misread
    the column's plain numbers (a decimal comma beside "1.5") is not offered; such a column is
    left to the check for numbers with text."""
    text = _present_text(values)
    if text is None:
        return
    text = text.str.strip()
    decimal, thousands = text.str.fullmatch(DECIMAL_COMMA), text.str.fullmatch(THOUSANDS_COMMA)
    written = decimal | thousands
    plain = pd.to_numeric(text, errors="coerce").notna()
    if not written.any() or (written | plain).mean() < NUMERIC_SHARE:
        return
    dotted = text[written].str.contains(".", regex=False).any()
    readings = []
    if thousands[written].all():
        readings.append("data.thousands: ',' if they separate thousands")
    if decimal[written].all() and (dotted or not text[plain].str.contains(".", regex=False).any()):
        readings.append("data.decimal: ','" + (" and data.thousands: '.'" if dotted else "") + " if they are decimal commas")
    if not readings:
        return
    rows = np.flatnonzero(values.notna().to_numpy())[written.to_numpy()]
    examples = ", ".join(f"{v!r} (data row {r + 1})" for v, r in zip(text[written].iloc[:3], rows))
    raise StepDistillError(
        f"column '{column}' holds numbers written with commas, which pandas' defaults read as text: {examples}"
        f" — set {' or '.join(readings)}; or list '{column}' in data.categorical to treat its values as categories"
    )


def _refuse_numbers_with_text(values: pd.Series, column: str) -> None:
    """A text column whose values are mostly numbers is a numeric column with stray text (a typo,
    a placeholder such as "n/a"): refused with the first offending values, rather than silently
    one-hot encoded."""
    present = _present_text(values)
    if present is None:
        return
    numbers = pd.to_numeric(present, errors="coerce")
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
