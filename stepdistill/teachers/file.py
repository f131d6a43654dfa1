"""A teacher whose outputs were computed elsewhere (say, a language model behind an API) and
stored in a file, one row per sample id."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from stepdistill.data.io import PARQUET_SUFFIXES
from stepdistill.errors import StepDistillError
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.cache import InMemoryTeacherCache, TeacherOutputs
from stepdistill.teachers.common import as_rows, logits_from_probabilities, nonfinite_rows

NPZ_SUFFIX = ".npz"
# The stored arrays, and the prefix of their numbered Parquet columns (logit_0, logit_1, ...).
STORED_ARRAYS = {"logits": "logit", "probs": "prob", "rationale": "rationale"}
# Stored probabilities are clipped to [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR] (per row, then
# renormalized), so that a probability of exactly 0 or 1 has a finite logit (within about +-13.8).
PROBABILITY_FLOOR = 1e-6


class FileTeacher(Teacher):
    """Outputs read once from ``path`` and looked up by sample id; rows for ids the samples do
    not ask for are not read (the builder warns of those the whole data lacks, ``ids_beyond``).

    Parquet (``.parquet``, ``.pq``): the ``id_column``; logits as a list column ``logits`` or
    columns ``logit_0..logit_{K-1}``, or probabilities as ``probs`` or ``prob_0..`` (logits win
    when both are there); optionally a rationale as ``rationale`` or ``rationale_0..``, and the
    class names as a JSON list under the schema metadata key ``classes``. NPZ (``.npz``): arrays
    named ``id_column``, ``logits`` or ``probs`` ((N,) or (N, K)), optionally ``rationale`` and
    ``classes``. Probabilities, clipped per row to ``[PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR]``
    (1e-6) and renormalized, become log-probabilities; a single column of them is p1. Two columns
    are a binary teacher and become one logit, class 1 against class 0.

    It holds outputs for the rows it holds and no model, so it cannot predict others
    (``can_predict`` is False); it is identified by its file's contents, wherever that lies.
    """

    can_predict = False

    def __init__(self, path: str | Path, id_column: str = "id"):
        self.path = Path(path)
        if not self.path.is_file():
            raise StepDistillError(f"teacher file not found: {self.path}; check the path (relative paths start at the current directory)")
        self.id_column = id_column
        with self.path.open("rb") as file:
            self._content_sha256 = hashlib.file_digest(file, "sha256").hexdigest()
        name = self.path.name.lower()
        if name.endswith(PARQUET_SUFFIXES):
            arrays, self.classes = _read_parquet(self.path, id_column)
        elif name.endswith(NPZ_SUFFIX):
            arrays, self.classes = _read_npz(self.path, id_column)
        else:
            raise StepDistillError(f"unsupported teacher file type: {self.path.name}; use one of: {', '.join((*PARQUET_SUFFIXES, NPZ_SUFFIX))}")
        self._ids = torch.as_tensor(_checked_ids(arrays["id"], self.path))
        logits = _logits(arrays, self.path)
        rationale = None if arrays["rationale"] is None else as_rows(_finite(_as_columns(arrays["rationale"]), "rationale values", self.path))
        if rationale is None:
            self.rationale_unavailable = f"teacher file {self.path} holds no rationale; store one as 'rationale' (or rationale_0, rationale_1, ...)"
        self._outputs = InMemoryTeacherCache(self._ids, logits, rationale)

    def outputs(self, samples: Samples) -> TeacherOutputs:
        ids = samples.ids.cpu()
        missing = ids[~torch.isin(ids, self._ids)]
        if len(missing):
            examples = ", ".join(str(int(i)) for i in missing[:3])
            raise StepDistillError(f"teacher file {self.path} lacks {len(missing)} of the data's sample ids (e.g. {examples}); it must hold one row per sample id")
        return self._outputs.take(ids)

    @property
    def n_ids(self) -> int:
        return len(self._ids)

    def ids_beyond(self, data_ids: np.ndarray) -> list[int]:
        """The sample ids the file holds and ``data_ids`` (the data's) lack, sorted."""
        ids = self._ids.numpy()
        return np.sort(ids[~np.isin(ids, data_ids)]).tolist()

    def predict_logits(self, samples: Samples) -> torch.Tensor:
        raise StepDistillError(f"teacher file {self.path} holds outputs computed elsewhere, and a file of outputs cannot predict new rows; predict with the model that wrote it")

    def identity(self) -> tuple:
        return self._content_sha256, self.id_column


def _read_parquet(path: Path, id_column: str) -> tuple[dict[str, np.ndarray | None], tuple[str, ...] | None]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise StepDistillError(f"could not read {path} as Parquet: {' '.join(str(err).split())}; check that it is a valid Parquet file") from err
    if id_column not in table.column_names:
        raise StepDistillError(f"teacher file {path} has no id column '{id_column}'; columns are: {', '.join(table.column_names)}; name the id column")
    if table.column(id_column).null_count:
        raise StepDistillError(f"teacher file {path} has {table.column(id_column).null_count} rows without an id; give every row its sample id")
    arrays = {"id": table.column(id_column).to_numpy()}
    arrays |= {name: _parquet_matrix(table, name, prefix, path) for name, prefix in STORED_ARRAYS.items()}
    raw_classes = (table.schema.metadata or {}).get(b"classes")
    if raw_classes is None:
        return arrays, None
    try:
        classes = json.loads(raw_classes)
    except ValueError:
        classes = None
    if not isinstance(classes, list):
        raise StepDistillError(f"teacher file {path} has 'classes' metadata that is not a JSON list; store the class names as a JSON list")
    return arrays, tuple(str(c) for c in classes)


def _parquet_matrix(table: pa.Table, name: str, prefix: str, path: Path) -> np.ndarray | None:
    """The list column ``name`` or the numbered columns ``{prefix}_0..``, as (N, width) floats;
    None when the file has neither. Null values become NaN."""
    if name in table.column_names:
        column = table.column(name).combine_chunks()
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type)):
            raise StepDistillError(f"teacher file {path} column '{name}' holds {column.type}, not a list of numbers per row; store one list per row")
        if column.null_count:
            raise StepDistillError(f"teacher file {path} has no {name} for {column.null_count} rows; give every row its values")
        lengths = np.unique(pc.list_value_length(column).to_numpy())
        if len(lengths) > 1:
            raise StepDistillError(f"teacher file {path} has {name} lists of different lengths ({lengths[0]} and {lengths[-1]}); give every row the same number of values")
        values = column.flatten().to_numpy(zero_copy_only=False)
        return _numeric(values, name, path).reshape(len(column), int(lengths[0]) if len(lengths) else 0)
    numbered = {int(match[1]): column for column in table.column_names if (match := re.fullmatch(rf"{prefix}_(\d+)", column))}
    if not numbered:
        return None
    if sorted(numbered) != list(range(len(numbered))):
        raise StepDistillError(f"teacher file {path} numbers its {prefix} columns {sorted(numbered)}; name them {prefix}_0 to {prefix}_{len(numbered) - 1}")
    columns = [_numeric(table.column(numbered[i]).to_numpy(), numbered[i], path) for i in range(len(numbered))]
    return np.column_stack(columns)


def _read_npz(path: Path, id_column: str) -> tuple[dict[str, np.ndarray | None], tuple[str, ...] | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError) as err:
        raise StepDistillError(f"could not read {path} as NPZ: {' '.join(str(err).split())}; save it with numpy.savez, without object arrays") from err
    if id_column not in arrays:
        raise StepDistillError(f"teacher file {path} has no '{id_column}' array; arrays are: {', '.join(arrays)}; store the sample ids under '{id_column}'")
    stored = {"id": arrays[id_column]} | {name: _numeric(arrays[name], name, path) if name in arrays else None for name in STORED_ARRAYS}
    for name, values in stored.items():
        if values is not None and len(values) != len(stored["id"]):
            raise StepDistillError(f"teacher file {path} holds {len(stored['id'])} ids but {len(values)} rows of {name}; store one row per id in every array")
    classes = tuple(str(c) for c in arrays["classes"]) if "classes" in arrays else None
    return stored, classes


def _numeric(values: np.ndarray, name: str, path: Path) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.number):
        raise StepDistillError(f"teacher file {path} holds {values.dtype} values in '{name}'; store numbers")
    return values.astype(np.float64)


def _checked_ids(ids: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(ids.dtype, np.integer):
        raise StepDistillError(f"teacher file {path} holds {ids.dtype} sample ids; store the data's integer sample ids")
    unique, counts = np.unique(ids, return_counts=True)
    repeated = unique[counts > 1]
    if len(repeated):
        examples = ", ".join(str(i) for i in repeated[:3])
        raise StepDistillError(f"teacher file {path} holds {len(repeated)} duplicate sample ids (e.g. {examples}); it must hold one row per sample id")
    return ids.astype(np.int64)


def _logits(arrays: dict[str, np.ndarray | None], path: Path) -> torch.Tensor:
    """(N, K) float32 logits from the stored logits or probabilities; a binary pair becomes one."""
    if arrays["logits"] is not None:
        logits = _finite(_as_columns(arrays["logits"]), "logits", path)
        return as_rows(logits[:, 1:] - logits[:, :1] if logits.shape[1] == 2 else logits)
    if arrays["probs"] is not None:
        return as_rows(logits_from_probabilities(_checked_probabilities(_as_columns(arrays["probs"]), path), PROBABILITY_FLOOR))
    raise StepDistillError(f"teacher file {path} holds neither logits nor probabilities; store 'logits' (or logit_0, logit_1, ...) or 'probs'")


def _as_columns(values: np.ndarray) -> np.ndarray:
    return values[:, None] if values.ndim == 1 else values.reshape(len(values), -1)


def _checked_probabilities(probs: np.ndarray, path: Path) -> np.ndarray:
    """(N, K) probabilities, each in [0, 1]; a single column is p1, so it becomes (p0, p1)."""
    _finite(probs, "probabilities", path)
    outside = int(((probs < 0) | (probs > 1)).any(1).sum())
    if outside:
        raise StepDistillError(f"teacher file {path} has probabilities outside [0, 1] in {outside} rows; store probabilities, or logits under 'logits'")
    return np.column_stack([1 - probs[:, 0], probs[:, 0]]) if probs.shape[1] == 1 else probs


def _finite(values: np.ndarray, what: str, path: Path) -> np.ndarray:
    bad = nonfinite_rows(torch.as_tensor(values))
    if bad:
        raise StepDistillError(f"teacher file {path} has NaN or infinite {what} in {bad} rows; fix or drop those rows")
    return values
