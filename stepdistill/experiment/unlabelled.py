"""Rows without a label that the teacher labels for the students that learn from it: an unlabelled
pool (``data.unlabelled_path``) and a synthetic transfer set (``transfer``, made from each run's
training rows only). A run's rows are held in memory (``UnlabelledRows``) or, when they would not
fit (``data.stream_unlabelled``), read, encoded and labelled a chunk at a time and written to disk
(``RowFiles``), from where every epoch streams them: resident memory stays bounded whatever the
pool's size. Either way they get sample ids after every id of the data, and are never validation
or test rows.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stepdistill.config import ExperimentConfig
from stepdistill.data.pool_file import PoolFile
from stepdistill.data.prepared import PreparedData
from stepdistill.data.repeats import RunRows
from stepdistill.data.row_files import RowFiles, RowFilesWriter
from stepdistill.data.table import Table
from stepdistill.data.transfer import gaussian_noise, munge
from stepdistill.errors import StepDistillError
from stepdistill.progress import Progress
from stepdistill.teachers.base import Samples
from stepdistill.teachers.build import BuiltTeacher
from stepdistill.teachers.cache import TeacherOutputs
from stepdistill.teachers.collect import cache_teacher, checked_outputs
from stepdistill.teachers.digest import digest
from stepdistill.teachers.store import TeacherStore

# Apart from the runs' own seeds, so that transfer rows are not drawn from the students' streams.
TRANSFER_SEED = 104_729
# data.stream_unlabelled: auto streams unlabelled rows whose raw columns would take more than this
# in memory (8 bytes a value, as pandas holds numbers).
STREAM_ABOVE_BYTES = 1 << 30
# Streamed rows are read, encoded and labelled by the teacher this many at a time.
STREAM_READ_ROWS = 65_536
# A transfer set is made this many rows at a time, in memory as when streamed (so both hold the
# same rows): a set of up to this many draws exactly what one made at once draws.
TRANSFER_CHUNK_ROWS = 1 << 20
# Part of every key of streamed rows kept on disk: raise it when what they hold, or how, changes.
ROWS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class UnlabelledRows:
    """A run's unlabelled rows in memory. ``table``: encoded as students see them (sample ids
    after every id of the data, labels 0 and never read); ``raw``: as read, indexed by sample id,
    for the teacher; ``text_records``: whether they are a text pool's records, which a teacher that
    labels no new rows may have answered by record id (an LLM's answers, written beforehand)."""

    table: Table
    raw: pd.DataFrame
    text_records: bool = False


def streams(config: ExperimentConfig, pool_rows: int, data_rows: int, n_columns: int) -> bool:
    """Whether a run's unlabelled rows (``pool_rows``, and a transfer set's about ``size`` per row
    of the data's ``data_rows``) are streamed from disk: as ``data.stream_unlabelled`` says, or for
    ``auto`` when their ``n_columns`` raw columns would take more than ``STREAM_ABOVE_BYTES``."""
    setting = config.data.stream_unlabelled
    if setting != "auto":
        return setting
    transfer_rows = 0 if config.transfer is None else config.transfer.size * data_rows
    return (pool_rows + transfer_rows) * n_columns * 8 > STREAM_ABOVE_BYTES


def transfer_frames(config: ExperimentConfig, data: PreparedData, run: RunRows) -> Iterator[pd.DataFrame]:
    """``config.transfer``'s rows in the raw columns, ``TRANSFER_CHUNK_ROWS`` at a time, made from
    the run's training rows only (never its validation or test rows), seeded by the run."""
    t, train = config.transfer, data.splits.train
    raw = data.raw.loc[train.ids.numpy()]
    rng = np.random.default_rng(TRANSFER_SEED + run.seed)
    numeric = data.encoder.numeric_
    if t.kind == "munge":
        return munge(raw, train.X.numpy(), numeric, t.size, t.p, t.spread, rng, TRANSFER_CHUNK_ROWS)
    return gaussian_noise(raw, numeric, t.size, t.noise, rng, TRANSFER_CHUNK_ROWS)


def unlabelled_rows(config: ExperimentConfig, data: PreparedData, run: RunRows, pool: pd.DataFrame | None, first_id: int) -> UnlabelledRows | None:
    """The run's unlabelled rows in memory: the ``pool``'s (checked feature columns), then its
    transfer set's, encoded by the run's encoder, with sample ids from ``first_id``; None without
    either."""
    parts = ([] if pool is None else [pool]) + ([] if config.transfer is None else list(transfer_frames(config, data, run)))
    if not parts:
        return None
    made = pd.concat(parts, ignore_index=True)
    ids = torch.arange(first_id, first_id + len(made))
    train = data.splits.train
    table = Table(ids, torch.from_numpy(data.encoder.transform(made)), torch.zeros(len(made), dtype=torch.int64), train.classes, train.feature_names)
    return UnlabelledRows(table, made.set_index(pd.Index(ids.numpy(), name="id")), text_records=data.text is not None)


def annotate_unlabelled(
    built: BuiltTeacher, rows: UnlabelledRows, classes: tuple[str, ...], store: TeacherStore | None, progress: Progress, row_values: int
) -> TeacherOutputs:
    """The teacher's outputs on the unlabelled rows (kept in ``store`` like its other outputs,
    ``row_values`` numbers a row: logits and rationale)."""
    if not rows.text_records:
        _check_teacher(built)
    if store is not None:
        needed = len(rows.table) * (row_values + 1) * 4  # float32 values and an int64 id, roughly
        _check_room(store.directory, needed, "the teacher's outputs on the unlabelled rows", "point --cache-dir elsewhere, or pass --no-cache")
    with progress.task(f"teacher outputs on {len(rows.table)} unlabelled rows"):
        cache = cache_teacher(built.teacher, [Samples.of(rows.table, rows.raw)], classes, store=store, say=progress.note)
    return cache.take(rows.table.ids)


def stream_unlabelled(
    config: ExperimentConfig,
    data: PreparedData,
    run: RunRows,
    pool: PoolFile | None,
    first_id: int,
    built: BuiltTeacher,
    store: TeacherStore | None,
    progress: Progress,
    row_values: int,
) -> RowFiles:
    """The run's unlabelled rows (the ``pool``'s, then its transfer set's), encoded and labelled
    by the teacher ``STREAM_READ_ROWS`` at a time, written to disk: under ``store``'s directory,
    keyed like other teacher outputs (then found there by a later run of the same teacher, pool,
    encoder and transfer set), or, without a store or for a teacher without a fingerprint, in a
    temporary directory removed with the returned files."""
    _check_teacher(built)
    fingerprint = built.teacher.fingerprint()
    if store is not None and fingerprint is not None:
        transfer = None if config.transfer is None else config.transfer.model_dump()
        key = digest(
            ROWS_FORMAT_VERSION, fingerprint, list(data.classes), None if pool is None else pool.fingerprint, data.encoder.to_json(), transfer,
            TRANSFER_SEED + run.seed, first_id,
        )
        directory = store.directory / "unlabelled" / key
        if (found := RowFiles.open(directory)) is not None:
            progress.note(f"teacher outputs on {len(found)} unlabelled rows read from {directory}")
            return found
        temporary = False
    else:
        directory, temporary = Path(tempfile.mkdtemp(prefix="stepdistill-unlabelled-")), True
    n_rows = (0 if pool is None else pool.n_rows) + (0 if config.transfer is None else round(config.transfer.size * len(data.splits.train)))
    fix = "point --cache-dir elsewhere, or pass --no-cache" if not temporary else "or point TMPDIR elsewhere"
    _check_room(directory, n_rows * (data.splits.train.n_features + row_values) * 4, "the encoded unlabelled rows and the teacher's outputs on them", fix)
    pool_frames = () if pool is None else (checked_pool(config, chunk, data.raw)[0] for chunk in pool.chunks(STREAM_READ_ROWS))
    transfer = () if config.transfer is None else transfer_frames(config, data, run)
    frames = (made.iloc[start : start + STREAM_READ_ROWS] for made in chain(pool_frames, transfer) for start in range(0, len(made), STREAM_READ_ROWS))
    writer = RowFilesWriter(directory)
    try:
        with progress.task(f"teacher outputs on about {n_rows:,} unlabelled rows, streamed to disk"):
            for frame in frames:
                ids = np.arange(first_id + writer.n_rows, first_id + writer.n_rows + len(frame))
                X = data.encoder.transform(frame)
                samples = Samples(torch.from_numpy(ids), torch.from_numpy(X), frame.set_index(pd.Index(ids, name="id")))
                outputs = checked_outputs(built.teacher, [samples], data.classes)
                rationale = {} if outputs.rationale is None else {"rationale": outputs.rationale.numpy()}
                writer.append(x=X, logits=outputs.logits.numpy(), **rationale)
            files = writer.close()
    except BaseException:
        writer.abandon()
        raise
    if temporary:
        weakref.finalize(files, shutil.rmtree, directory, True)
    return files


def _check_teacher(built: BuiltTeacher) -> None:
    if not built.teacher.can_predict:
        raise StepDistillError(
            "an unlabelled pool or transfer set needs a teacher that labels new rows, and this teacher gives outputs for the data's rows only;"
            " drop data.unlabelled_path and transfer"
        )


def _check_room(directory: Path, needed: int, what: str, fix: str) -> None:
    """Refuse, before any work, ``what`` takes ``needed`` bytes that ``directory``'s disk has no
    room for; ``fix``: where else they could go."""
    where = next((p for p in (directory, *directory.parents) if p.exists()), None)
    free = shutil.disk_usage(where).free if where is not None else needed
    if needed > free:
        raise StepDistillError(f"{what} need about {needed / 1e6:,.1f} MB in {directory}, which has {free / 1e6:,.1f} MB free; free space, {fix}")


def checked_pool(config: ExperimentConfig, pool: pd.DataFrame, features: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The unlabelled pool's feature columns in the data's order, and what to say of it (its
    label column, if it has one, is ignored); a pool that is empty, whose columns differ from the
    data's features, or that holds text where the data has numbers is refused in one line."""
    d, notes = config.data, []
    if d.label in pool.columns:
        notes.append(f"the unlabelled pool's label column {d.label!r} is ignored: its rows teach through the teacher's outputs only")
        pool = pool.drop(columns=d.label)
    if d.id_column is not None and d.id_column in pool.columns:
        pool = pool.drop(columns=d.id_column)
    if pool.empty:
        raise StepDistillError(f"data.unlabelled_path {d.unlabelled_path} has no rows; point it at a file of rows, or drop it")
    wanted, given = [str(c) for c in features.columns], [str(c) for c in pool.columns]
    if set(wanted) != set(given):
        missing, extra = sorted(set(wanted) - set(given)), sorted(set(given) - set(wanted))
        said = "; ".join(part for part in (f"lacks {', '.join(missing)}" if missing else "", f"has {', '.join(extra)} besides" if extra else "") if part)
        raise StepDistillError(f"the unlabelled pool's columns differ from the data's features: it {said}; give it the data's feature columns")
    pool = pool[wanted]
    for column in wanted:
        if pd.api.types.is_numeric_dtype(features[column]) and not pd.api.types.is_numeric_dtype(pool[column]):
            text = pool[column][pd.to_numeric(pool[column], errors="coerce").isna() & pool[column].notna()]
            raise StepDistillError(f"the unlabelled pool's column {column!r} holds text where the data has numbers (e.g. {text.iloc[0]!r}); fix those rows")
    if d.missing == "error" and (gaps := [c for c in wanted if pool[c].isna().any()]):
        raise StepDistillError(f"the unlabelled pool has missing values in columns: {', '.join(gaps)}; fill or drop them, or set data.missing: impute")
    return pool, notes
