"""The experiment's track for tables, and for text records read through frozen sentence features:
classifier students (logistic, MLP, CNN, multiple-choice scorer) and a teacher of any kind.

Each run (``evaluation.scheme``: repeated holdout or repeated k-fold; or a fixed test file) has
its own split and encoder, fitted on its training rows, and a teacher refit on its training rows
(teachers trained here); a loaded teacher is built once and serves every run. The teacher's
outputs on every split are computed once per run (and kept on disk by ``TeacherStore``). A
teacher that learns from the human labels (a privileged-information model) is refit, at a
labelled fraction, on the labels the students see. The test split is scored once per run,
after training; in run 0 every model's size and prediction latency are measured too (speed.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from stepdistill.config import ExperimentConfig
from stepdistill.data.encode import FeatureEncoder
from stepdistill.data.io import frame_parts
from stepdistill.data.pool_file import PoolFile
from stepdistill.data.prepared import PreparedData, encode_splits
from stepdistill.data.repeats import RunRows, cv_runs, fixed_test_runs, holdout_runs
from stepdistill.data.row_files import RowFiles
from stepdistill.data.table import Table
from stepdistill.device import default_device
from stepdistill.engines.base import TrainingData, TrainState, new_state
from stepdistill.engines.tabular import TabularData
from stepdistill.errors import StepDistillError
from stepdistill.evaluate import NO_ANSWER, class_probabilities, classification_metrics, count_parameters, predicted_classes, predictions, selection_metrics
from stepdistill.experiment.loop import Experiment, Track, run_fractions, settle_controls
from stepdistill.experiment.records import Labelled, RunResult, TeacherFacts, Trained
from stepdistill.experiment.summary import Setup
from stepdistill.experiment.unlabelled import STREAM_READ_ROWS, UnlabelledRows, annotate_unlabelled, checked_pool, stream_unlabelled, streams, unlabelled_rows
from stepdistill.progress import SILENT, Progress
from stepdistill.run_dir import RunStudents, fingerprint, model_from_spec, write_students
from stepdistill.speed import measure_speed
from stepdistill.students.build import StudentShape, check_student_rationale, student_factory
from stepdistill.students.config import EncoderStudent
from stepdistill.teachers.base import Samples
from stepdistill.teachers.build import BuiltTeacher, build_teacher
from stepdistill.teachers.cache import TeacherCache, TeacherOutputs
from stepdistill.teachers.collect import cache_teacher
from stepdistill.teachers.config import LoadedTeacher
from stepdistill.teachers.store import TeacherStore
from stepdistill.terms import Method
from stepdistill.text.inputs import TextInputs, choice_labels, long_text_notes
from stepdistill.text.pool import read_text_pool
from stepdistill.text.tokens import encoder_directory, load_encoder_files, token_features, token_mode

# The metrics on which a method is compared with its control, and claims are made; Holm's
# correction covers these comparisons of every method in a table.
COMPARED_METRICS = ("accuracy", "log_loss")


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """The checked rows of an experiment: feature columns (raw, or a text record's sentence
    features), label indices, class names and sample ids; the last ``n_fixed_test`` rows are a
    user's fixed test file. Text records also keep how their features were made (``text``),
    each row's record id (``record_ids``, what an LLM teacher's outputs are keyed by), for
    multiple choice its choices (``choices``), both followed by those of an unlabelled pool's
    records (``with_text_pool``; their sample ids follow the rows'), and which rows have a text
    longer than the ``window`` tokens read of it (``cut``: their features saw its beginning),
    the sentence encoder's window or, for a student that fine-tunes its encoder
    (``student_budget``), its own token budget.
    ``named``: whether the ids come from the data's id column (else they are row positions)."""

    features: pd.DataFrame
    y: np.ndarray
    classes: list[str]
    ids: np.ndarray
    n_fixed_test: int = 0
    text: TextInputs | None = None
    record_ids: tuple[str, ...] | None = None
    choices: tuple[tuple[str, ...], ...] | None = None
    cut: np.ndarray | None = None
    window: int | None = None
    student_budget: bool = False
    named: bool = False

    def row_names(self, ids: np.ndarray) -> list[str]:
        """What the run directory calls the rows of sample ``ids``: their value in the id column,
        else their row number from 0 in their file (the data's, or the test file's)."""
        if self.named:
            return [self.record_ids[i] for i in ids] if self.record_ids is not None else [str(i) for i in ids]
        n_data = len(self.y) - self.n_fixed_test
        return [str(i - n_data if i >= n_data else i) for i in ids]

    def long_text_notes(self, refuse: bool) -> list[str]:
        """What the user should know of texts cut to the encoder's window (one line, the data's
        rows and the test file's apart), or, with ``refuse``, a one-line error instead."""
        if self.cut is None or not self.cut.any():
            return []
        n_data = len(self.cut) - self.n_fixed_test
        counts = f"{int(self.cut[:n_data].sum())} of {n_data} records"
        if self.n_fixed_test:
            counts += f" (and {int(self.cut[n_data:].sum())} of {self.n_fixed_test} of the test file)"
        return long_text_notes(counts, self.record_ids[int(np.flatnonzero(self.cut)[0])], self.window, refuse, self.student_budget)


def load_data(config: ExperimentConfig, frame: pd.DataFrame, test_frame: pd.DataFrame | None = None, say=None) -> Dataset:
    """Check ``frame`` (and the fixed test file's rows, appended after it) once; text records
    are turned into sentence features here (``say`` hears about the encoder's cache)."""
    d = config.data
    n_test = 0
    if test_frame is not None:
        if list(test_frame.columns) != list(frame.columns):
            raise StepDistillError(
                f"data.test_path has columns {list(test_frame.columns)}, the data {list(frame.columns)}; give the test file the data's columns"
            )
        n_test = len(test_frame)
        frame = pd.concat([frame, test_frame], ignore_index=True)
    text = d.text_inputs()
    if text is None:
        features, y, classes, ids = frame_parts(frame, d.label, d.id_column, tuple(d.categorical), d.missing)
        extra = {}
    else:
        tokens = config.student if isinstance(config.student, EncoderStudent) else None
        features, y, classes, ids, extra = _text_parts(frame, d.label, d.id_column, text, say, tokens)
    if n_test and (missing := sorted(set(range(len(classes))) - set(y[-n_test:].tolist()))):
        raise StepDistillError(f"the test file has no rows of class {classes[missing[0]]!r}; give it rows of every class")
    return Dataset(features, y, classes, ids, n_test, text, **extra, named=d.id_column is not None)


def _text_parts(frame: pd.DataFrame, label: str, id_column: str | None, text: TextInputs, say, tokens: EncoderStudent | None = None) -> tuple:
    """``frame_parts`` of text records: the sentence features (for a student that fine-tunes its
    encoder, ``tokens``, the texts' token ids instead), labels (for multiple choice the letter of
    the right choice), classes and sample ids (row positions), and the record ids and choices an
    LLM teacher is matched by."""
    expected = {*text.input_columns, label, *([id_column] if id_column else [])}
    for column in sorted(expected - set(map(str, frame.columns))):
        raise StepDistillError(f"column {column!r} named in data is not in the file (columns: {', '.join(map(str, frame.columns))}); fix data.text, data.choices, data.label or data.id_column")
    if extra := [str(c) for c in frame.columns if c not in expected]:
        raise StepDistillError(f"columns {', '.join(extra)} are neither text, choices, label nor id, and text students read only data.text; drop them or name them")
    # Errors name a record by its position from 1, and by its id where the data has an id column.
    named_ids = None
    if id_column is None:
        record_ids = tuple(str(i) for i in range(len(frame)))
    else:
        record_ids = named_ids = tuple(str(v) for v in frame[id_column])
        if len(set(record_ids)) != len(record_ids):
            raise StepDistillError(f"id column {id_column!r} has duplicated values; give every record its own id")
    labels = frame[label]
    choices = None
    if text.choices is not None:
        labels, letters = choice_labels(frame, label, text.choices, named_ids)
        if unused := sorted(set(letters) - set(labels)):
            raise StepDistillError(f"no record's answer is choice {unused[0]}; a multiple-choice student needs every position to be right sometimes")
        choices = tuple(tuple(str(c) for c in row) for row in frame[text.choices])
    if tokens is not None:
        tokenizer, _ = load_encoder_files(encoder_directory(tokens.model))
        features, cut = token_features(frame, text.columns, tokenizer, token_mode(text.layout, tokens.pair), tokens.max_tokens, text.choices)
        window = tokens.max_tokens
    else:
        encoder = text.sentence_encoder(say)
        features, cut, window = text.features(frame, encoder, named_ids), text.cut_rows(frame, encoder), encoder.window
    checked, y, classes, ids = frame_parts(features.assign(**{label: labels}), label)
    return checked, y, classes, ids, {"record_ids": record_ids, "choices": choices, "cut": cut, "window": window, "student_budget": tokens is not None}


def runs_of(config: ExperimentConfig, data: Dataset, hidden_labels: bool = False) -> list[RunRows]:
    """The runs of ``config.evaluation`` on ``data``, stratified by class unless some labels are
    ``hidden_labels`` (then every row is in one stratum, so that no label decides a split)."""
    e, d = config.evaluation, config.data
    y, classes = (np.zeros_like(data.y), ["rows"]) if hidden_labels else (data.y, data.classes)
    if data.n_fixed_test:
        return fixed_test_runs(y, classes, data.n_fixed_test, e.repeats, d.val_fraction, e.seed)
    if e.scheme == "cv":
        return cv_runs(y, classes, e.repeats, e.folds, d.val_fraction, e.seed)
    return holdout_runs(y, classes, e.repeats, d.val_fraction, d.test_fraction, e.seed)


def prepare_run(config: ExperimentConfig, data: Dataset, run: RunRows) -> PreparedData:
    """The run's encoded splits, with the encoder fitted on its training rows only."""
    rows = (run.train, run.val, run.test)
    # Token ids are read as they are; anything else as configured.
    scale = config.data.scale_numeric and not isinstance(config.student, EncoderStudent)
    splits, encoder = encode_splits(data.features, data.y, data.classes, data.ids, rows, scale, config.data.missing)
    shape = config.data.image_shape
    if shape is not None and splits.train.n_features != (n := shape[0] * shape[1] * shape[2]):
        raise StepDistillError(f"data.image_shape {list(shape)} needs {n} feature columns, the data has {splits.train.n_features}; fix data.image_shape")
    raw = data.features.set_index(pd.Index(data.ids, name="id"))
    return PreparedData(splits, encoder, raw, shape, data.text, data.record_ids, data.choices)


def with_text_pool(config: ExperimentConfig, data: Dataset, pool: pd.DataFrame, say=None) -> tuple[Dataset, pd.DataFrame, list[str]]:
    """``data`` of text records with the record ids and choices of its unlabelled ``pool``'s
    records after its own (so that a teacher finds their answers by sample id), the pool's
    sentence features (text/pool.py) and what to say of it."""
    d = config.data
    n_choices = None if data.choices is None else len(data.choices[0])
    text_pool = read_text_pool(pool, data.text, d.label, d.id_column, data.record_ids, n_choices, d.long_texts == "refuse", say)
    choices = None if data.choices is None else data.choices + text_pool.choices
    return replace(data, record_ids=data.record_ids + text_pool.record_ids, choices=choices), text_pool.features, list(text_pool.notes)


# --- teacher ---------------------------------------------------------------------------------


def run_teacher(
    config: ExperimentConfig,
    data: PreparedData,
    run: RunRows,
    loaded: BuiltTeacher | None,
    progress: Progress = SILENT,
    teacher_store: TeacherStore | None = None,
    fit_on: PreparedData | None = None,
) -> tuple[BuiltTeacher, TeacherCache]:
    """The run's teacher and its outputs on every split by sample id: refit with the run's seed
    on its training rows (``fit_on``'s, by default ``data``'s) when trained here, else ``loaded``
    (built once) reused. Outputs that ``teacher_store`` holds for this teacher and data are read
    from it rather than recomputed."""
    if loaded is not None:
        built = loaded
    else:
        teacher = config.teacher
        teacher_config = teacher.model_copy(update={"seed": teacher.seed + run.seed}) if teacher.trains_here else teacher
        with progress.task("fitting the teacher" if teacher.trains_here else "loading the teacher"):
            built = build_teacher(teacher_config, fit_on or data, default_device())
    splits = data.splits
    with progress.task("teacher outputs and explanations"):
        built.teacher.fit_background(Samples.of(splits.train, data.raw))
        samples = [Samples.of(t, data.raw) for t in (splits.train, splits.val, splits.test)]
        cache = cache_teacher(built.teacher, samples, data.classes, store=teacher_store, say=progress.note)
    return built, cache


def _row_values(cache: TeacherCache, data: PreparedData) -> int:
    """How many numbers the teacher's outputs hold per row: its logits and its rationale."""
    outputs = cache.take(data.splits.train.ids[:1])
    return outputs.logits.shape[-1] + (0 if outputs.rationale is None else outputs.rationale[0].numel())


def rationale_width(cache: TeacherCache, data: PreparedData) -> int | None:
    """The width of the teacher's rationale, or None when it gives none."""
    rationale = cache.take(data.splits.train.ids[:1]).rationale
    return None if rationale is None else rationale.shape[-1]


# --- students --------------------------------------------------------------------------------


@dataclass
class TabularRun:
    """A run's encoded data, its teacher and the teacher's outputs, and the rows whose labels
    that teacher may have learned from (``labelled``, those of the largest fraction)."""

    data: PreparedData
    teacher: BuiltTeacher
    cache: TeacherCache
    labelled: Labelled
    unlabelled: UnlabelledRows | RowFiles | None = None  # in memory, or streamed from disk with the teacher's outputs
    unlabelled_outputs: TeacherOutputs | None = None
    unlabelled_seconds: float = 0.0


@dataclass
class TabularFraction:
    """What students train on at a labelled fraction: the run's data, the teacher and its outputs
    (refit on the labelled rows for a teacher that learns from them), which training rows are
    labelled (None: all), and the validation rows whose labels students see; the run's unlabelled
    rows with this teacher's outputs on them, if any."""

    data: PreparedData
    teacher: BuiltTeacher
    cache: TeacherCache
    labelled: torch.Tensor | None
    val: Table
    unlabelled: Table | RowFiles | None = None
    unlabelled_outputs: TeacherOutputs | None = None
    unlabelled_seconds: float = 0.0


def student_states(
    config: ExperimentConfig, methods: list[Method], data: PreparedData, teacher: BuiltTeacher, cache: TeacherCache, seeds: list[int]
) -> list[TrainState]:
    """A fresh student for every method, from its seed, checked against what the teacher offers."""
    train, width = data.splits.train, rationale_width(cache, data)
    shape = StudentShape(
        train.n_features,
        train.n_classes,
        data.encoder.feature_groups,
        data.image_shape,
        teacher.teacher.rationale_style,
        teacher.teacher.reads_raw_columns,
        None if data.text is None else data.text.layout,
    )
    make = student_factory(config.student, shape)
    check_student_rationale(config.student, make, [m.name for m in methods if m.needs_rationale], width)
    device = default_device()
    return [new_state(m.name, m, make, seed, width, device) for m, seed in zip(methods, seeds, strict=True)]


@torch.no_grad()
def split_logits(model: nn.Module, table: Table) -> torch.Tensor:
    """The model's logits on ``table``, on the CPU."""
    model.eval()
    return model(table.X.to(next(model.parameters()).device)).logits.cpu()


def majority_logits(y_labelled: torch.Tensor, n_classes: int, n_rows: int) -> torch.Tensor:
    """Logits of the constant-prior rule: every row gets the class frequencies of the labelled
    training rows (so it predicts the majority class); classes absent there get a tiny share."""
    counts = torch.bincount(y_labelled, minlength=n_classes).double() + 1e-3
    log_prior = torch.log(counts / counts.sum())
    logits = (log_prior[1:] - log_prior[:1]) if n_classes == 2 else log_prior
    return logits.float().expand(n_rows, -1).clone()


def test_run(at: TabularFraction, trained: dict[str, Trained]) -> RunResult:
    """The test split, read once: every model's metrics on it."""
    data, cache, labelled, val = at.data, at.cache, at.labelled, at.val
    train, test = data.splits.train, data.splits.test
    teacher = at.teacher.teacher
    teacher_logits = cache.take(test.ids).logits
    answered = teacher.answered(Samples(test.ids, test.X))  # an LLM's unparsed answers are wrong ones
    teacher_pred = predictions(teacher_logits, answered)
    seen = train if labelled is None else train.take(labelled)  # the labels students see, no others
    # The teacher's accuracy against the human labels of the other splits too: for a teacher that
    # did not train on them (an LLM), a check of its labels where students learn from them. The
    # majority rule's on the same validation rows tells a teacher that is worse than no model
    # (one whose classes are not what they seem) before any student learns from it.
    accuracy_on = {name: _teacher_accuracy(teacher, cache, table) for name, table in (("train", seen), ("validation", val))}
    majority_on_validation = float((predicted_classes(majority_logits(seen.y, train.n_classes, len(val))) == val.y).double().mean())
    result = RunResult(
        teacher={
            "test": classification_metrics(teacher_logits, test.y, answered=answered),
            "logits": teacher_logits,
            "answered": None if answered is None else answered.numpy(),
            "accuracy_on": accuracy_on,
        },
        majority={
            "test": classification_metrics(majority_logits(seen.y, train.n_classes, len(test)), test.y),
            "accuracy_on": {"validation": majority_on_validation},
        },
        y_test=test.y.numpy(),
        n_train=len(train),
        n_val=len(data.splits.val),
        n_test=len(test),
        n_unlabelled=0 if at.unlabelled is None else len(at.unlabelled),
        unlabelled_seconds=at.unlabelled_seconds,
        n_features=train.n_features,
    )
    for name, t in trained.items():
        logits = split_logits(t.state.model, test)
        predicted = set(predicted_classes(logits).tolist())
        result.methods[name] = {
            "test": classification_metrics(logits, test.y, teacher_pred),
            "validation": selection_metrics(split_logits(t.state.model, val), val.y),
            "logits": logits,
            "params": count_parameters(t.state.model),
            "method": t.state.method.describe(),
            "never_predicts": [c for i, c in enumerate(train.classes) if i not in predicted],
            "diverged": t.state.diverged,
            "settings": t.settings,
            "tuning": t.validation,
            "history": t.state.history,
        }
        result.probabilities[name] = class_probabilities(logits)
        result.correct[name] = result.probabilities[name].argmax(1) == result.y_test
    return result


def _teacher_accuracy(teacher, cache: TeacherCache, table: Table) -> float:
    """The teacher's accuracy on ``table``'s rows, an unanswered row wrong."""
    predicted = predictions(cache.take(table.ids).logits, teacher.answered(Samples(table.ids, table.X)))
    return float(np.mean(predicted == table.y.numpy()))


# --- the track -------------------------------------------------------------------------------


class TabularTrack(Track):
    """Tables and text records (``ExperimentConfig``) on ``frame``, with the fixed test file's
    rows ``test_frame`` (None: each run draws its test split); teacher outputs kept in
    ``teacher_store``; each method compared with its control on ``compared_metrics``."""

    kind = "tabular"

    def __init__(
        self,
        config: ExperimentConfig,
        frame: pd.DataFrame,
        test_frame: pd.DataFrame | None = None,
        teacher_store: TeacherStore | None = None,
        compared_metrics: tuple[str, ...] = COMPARED_METRICS,
        pool: PoolFile | None = None,
    ):
        self.config = config
        self.frame = frame
        self.test_frame = test_frame
        self.pool = pool  # the unlabelled pool's file (data.unlabelled_path)
        self.pool_features: pd.DataFrame | None = None  # its feature columns, read and checked, when held in memory
        self.streamed = False  # whether the runs' unlabelled rows are streamed from disk (data.stream_unlabelled)
        self.teacher_store = teacher_store
        self.compared_metrics = compared_metrics
        self.data: Dataset | None = None
        self.data_notes: list[str] = []  # what reading the data found worth a warning
        self.loaded: BuiltTeacher | None = None  # a teacher not trained here, built once for every run

    def read(self, progress: Progress) -> None:
        with progress.task("reading the data" if self.config.data.text is None else "reading the data and encoding its texts (cached)"):
            self.data = load_data(self.config, self.frame, self.test_frame, progress.note)
        self.data_notes = self.data.long_text_notes(self.config.data.long_texts == "refuse")
        if self.pool is not None or self.config.transfer is not None:
            pool_rows = 0 if self.pool is None else self.pool.n_rows
            # A text pool is held in memory: its records are encoded into sentence features whole.
            self.streamed = self.data.text is None and streams(self.config, pool_rows, len(self.data.y), self.data.features.shape[1])
        if self.pool is not None:
            if self.data.text is not None:
                self.data, self.pool_features, notes = with_text_pool(self.config, self.data, self.pool.frame(), progress.note)
            elif self.streamed:  # its first rows are checked now, the others as they are read
                chunks = self.pool.chunks(STREAM_READ_ROWS)
                first = next(chunks, None)
                chunks.close()
                _, notes = checked_pool(self.config, self.data.features.iloc[:0] if first is None else first, self.data.features)
            else:
                self.pool_features, notes = checked_pool(self.config, self.pool.frame(), self.data.features)
            self.data_notes += notes

    def fingerprints(self) -> dict:
        return data_fingerprints(self.frame, self.test_frame) | ({} if self.pool is None else {"unlabelled": self.pool.fingerprint})

    def runs(self, hidden_labels: bool) -> list[RunRows]:
        return runs_of(self.config, self.data, hidden_labels)

    def start_run(self, run: RunRows, labelled: Labelled, progress: Progress) -> TabularRun:
        prepared = prepare_run(self.config, self.data, run)
        built, cache = run_teacher(self.config, prepared, run, self.loaded, progress, self.teacher_store, fit_on=self._teacher_rows(prepared, run, labelled))
        self.loaded = None if self.config.teacher.trains_here else built
        started = time.perf_counter()
        unlabelled, outputs = self._unlabelled(prepared, run, built, cache, progress)
        seconds = time.perf_counter() - started
        if run.index == 0:
            splits = prepared.splits
            progress.note(
                f"run 1: {len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} test rows, "
                + (f"{splits.train.n_features} token ids a row" if self.data.student_budget else f"{splits.train.n_features} encoded features")
                + ("" if unlabelled is None else f", {len(unlabelled.table if isinstance(unlabelled, UnlabelledRows) else unlabelled)} unlabelled rows")
                + (", streamed from disk" if self.streamed else "")
            )
        return TabularRun(prepared, built, cache, labelled, unlabelled, outputs, seconds)

    def _unlabelled(
        self, data: PreparedData, run: RunRows, built: BuiltTeacher, cache: TeacherCache, progress: Progress
    ) -> tuple[UnlabelledRows | RowFiles | None, TeacherOutputs | None]:
        """The run's unlabelled rows (None: there are none) labelled by ``built``: in memory, with
        the teacher's outputs on them, or on disk with them (then the outputs are None)."""
        if self.pool is None and self.config.transfer is None:
            return None, None
        first_id, row_values = int(self.data.ids.max()) + 1, _row_values(cache, data)
        if self.streamed:
            return stream_unlabelled(self.config, data, run, self.pool, first_id, built, self.teacher_store, progress, row_values), None
        rows = unlabelled_rows(self.config, data, run, self.pool_features, first_id)
        return rows, annotate_unlabelled(built, rows, data.classes, self.teacher_store, progress, row_values)

    def _teacher_rows(self, data: PreparedData, run: RunRows, labelled: Labelled) -> PreparedData | None:
        """The rows a teacher trained here learns from: those whose labels the students see,
        unless it sees every one (``teacher.sees: all``); None: all of ``data``'s."""
        if labelled.train is None or not self.config.teacher.learns_from_labels:
            return None
        splits = data.splits
        seen = replace(data, splits=replace(splits, train=splits.train.take(torch.from_numpy(labelled.train)), val=splits.val.take(torch.from_numpy(labelled.val))))
        if missing := sorted(set(range(len(data.classes))) - set(seen.splits.train.y.tolist())):
            raise StepDistillError(
                f"run {run.index + 1}'s {len(seen.splits.train)} labelled training rows (drawn at random, without reading labels) hold no row of class"
                f" {data.classes[missing[0]]!r} for the teacher to learn; raise data.labelled_fraction, or set teacher.sees: all"
            )
        return seen

    def teacher_facts(self, context: TabularRun) -> TeacherFacts:
        built = context.teacher
        return TeacherFacts(built.train_seconds, built.params, rationale_width(context.cache, context.data), built.teacher.rationale_unavailable, built.notes)

    def settle(self, config: ExperimentConfig, teacher: TeacherFacts, compare_with: str | None) -> tuple[ExperimentConfig, dict, list[str]]:
        """The methods that run (``_drop_rationale_methods``), with their controls."""
        config, warnings = _drop_rationale_methods(config, teacher)
        config, control_of = settle_controls(config, compare_with)
        return config, control_of, warnings

    def at_fraction(self, context: TabularRun, run: RunRows, labelled: Labelled, progress: Progress) -> TabularFraction:
        splits = context.data.splits
        train_mask = None if labelled.train is None else torch.from_numpy(labelled.train)
        val = splits.val if labelled.val is None else splits.val.take(torch.from_numpy(labelled.val))
        built, cache, unlabelled, outputs, seconds = context.teacher, context.cache, context.unlabelled, context.unlabelled_outputs, context.unlabelled_seconds
        if labelled is not context.labelled and (seen := self._teacher_rows(context.data, run, labelled)) is not None:
            # A teacher that learns from labels here sees those the students see, no more: else
            # it would pass them the hidden labels. The run's teacher learned the largest fraction's.
            built, cache = run_teacher(self.config, context.data, run, None, progress, self.teacher_store, fit_on=seen)
            started = time.perf_counter()
            unlabelled, outputs = self._unlabelled(context.data, run, built, cache, progress)
            seconds = time.perf_counter() - started
        table = unlabelled.table if isinstance(unlabelled, UnlabelledRows) else unlabelled
        return TabularFraction(context.data, built, cache, train_mask, val, table, outputs, seconds)

    def n_train(self, at: TabularFraction) -> int:
        return len(at.data.splits.train)

    def new_states(self, at: TabularFraction, methods: list[Method], seeds: list[int]) -> list[TrainState]:
        return student_states(self.config, methods, at.data, at.teacher, at.cache, seeds)

    def training_data(self, at: TabularFraction) -> TrainingData:
        train = at.data.splits.train
        files = at.unlabelled if isinstance(at.unlabelled, RowFiles) else None
        table = None if files is not None else at.unlabelled
        return TabularData(train, at.val, at.cache.take(train.ids), at.labelled, table, at.unlabelled_outputs, files, self.config.data.shuffle_buffer)

    def validation_metrics(self, at: TabularFraction, state: TrainState) -> dict[str, float]:
        return selection_metrics(split_logits(state.model, at.val), at.val.y)

    def split_ids(self, context: TabularRun) -> tuple[list[str], list[str], list[str]]:
        splits = context.data.splits
        return tuple(self.data.row_names(table.ids.numpy()) for table in (splits.train, splits.val, splits.test))

    def test(self, at: TabularFraction, trained: dict[str, Trained], measure: bool) -> RunResult:
        result = test_run(at, trained)
        classes, test = self.data.classes, at.data.splits.test
        predicted = {"teacher": predictions(result.teacher["logits"], result.teacher["answered"])} | {name: p.argmax(1) for name, p in result.probabilities.items()}
        result.test_rows = {
            "id": self.data.row_names(test.ids.numpy()),
            "label": [classes[i] for i in test.y.tolist()],
            **{name: [classes[i] if i != NO_ANSWER else "" for i in indices.tolist()] for name, indices in predicted.items()},
        }
        if measure:
            for t in trained.values():
                # Timed as it serves predictions: frozen layers computed, not read from what training kept.
                if hasattr(t.state.model, "frozen_states"):
                    t.state.model.frozen_states = None
            students = {name: t.state.model for name, t in trained.items()}
            test_ids = at.data.splits.test.ids.numpy()
            result.speed = measure_speed(at.teacher.teacher, at.teacher.params, students, at.data.encoder, at.data.raw.loc[test_ids])
        return result

    def kept(self, context: TabularRun, trained: dict[str, Trained], run: RunRows) -> RunStudents:
        return RunStudents(run.index, context.data.encoder, {name: t.state.model.cpu().eval() for name, t in trained.items()})

    def warnings(self, results: list[RunResult]) -> list[str]:
        warnings = self.data_notes + _teacher_warnings(self.config, self.config.teacher.trains_here, results)
        if self.config.data.text is not None and not self.data.student_budget:
            warnings.append("students' latency is measured from sentence features: the frozen sentence encoder's own time per text comes on top")
        return warnings

    def setup(self) -> Setup:
        fixed = bool(self.data is not None and self.data.n_fixed_test) or self.test_frame is not None
        return Setup(
            teacher_kind=self.config.teacher.kind,
            refit=self.config.teacher.trains_here,
            scheme="fixed test file" if fixed else self.config.evaluation.scheme,
            fixed_test=fixed,
            classes=None if self.data is None else self.data.classes,
        )

    def saved_students(self, students: RunStudents) -> dict:
        models = {name: {"spec": model.spec, "weights": model.state_dict()} for name, model in students.models.items()}
        return {"encoder": students.encoder.to_json(), "models": models}

    def students_from(self, saved: dict, index: int) -> RunStudents:
        models = {}
        for name, student in saved["models"].items():
            models[name] = model_from_spec(student["spec"], f"checkpoint of run {index}")
            models[name].load_state_dict(student["weights"])
            models[name].eval()
        return RunStudents(index, FeatureEncoder.from_json(saved["encoder"]), models)


    def write_students(self, staging_dir, results: dict, students: list[RunStudents]) -> list[str]:
        return write_students(staging_dir, results, students, fingerprint(self.frame), self.config.data.read_options())


def data_fingerprints(frame: pd.DataFrame, test_frame: pd.DataFrame | None) -> dict:
    return {"data": fingerprint(frame), "test": None if test_frame is None else fingerprint(test_frame)}


def run_tabular(
    config: ExperimentConfig,
    frame: pd.DataFrame,
    test_frame: pd.DataFrame | None = None,
    progress: Progress = SILENT,
    teacher_store: TeacherStore | None = None,
    fractions: list[float] | None = None,
    compare_with: str | None = None,
    compared_metrics: tuple[str, ...] = COMPARED_METRICS,
) -> Experiment:
    """The experiment of ``config`` on ``frame`` (and the fixed test rows ``test_frame``), at
    ``fractions`` (default: ``data.labelled_fraction``), without checkpoints: for library use."""
    track = TabularTrack(config, frame, test_frame, teacher_store, compared_metrics)
    return run_fractions(track, fractions or [config.data.labelled_fraction], progress, compare_with=compare_with)


def _drop_rationale_methods(config: ExperimentConfig, teacher: TeacherFacts) -> tuple[ExperimentConfig, list[str]]:
    """When the teacher gives no rationale: the methods that need one are skipped with a line
    saying why if the methods are the default ones; methods the user chose are an error."""
    if teacher.rationale_width is not None:
        return config, []
    needing = [name for name in config.methods if config.method_spec(name, config.candidates(name, 10_000)[0]).needs_rationale]
    if not needing:
        return config, []
    reason = teacher.rationale_unavailable or "the teacher gives no rationale"
    if "methods" in config.model_fields_set:
        raise StepDistillError(f"{', '.join(needing)} need a rationale, but {reason}; remove those methods or use a teacher that explains its predictions")
    kept = {name: settings for name, settings in config.methods.items() if name not in needing}
    return config.model_copy(update={"methods": kept}), [f"skipped {', '.join(needing)}: {reason}"]


def _teacher_warnings(config: ExperimentConfig, refit: bool, results: list[RunResult]) -> list[str]:
    warnings = []
    if config.teacher.kind == "llm" and not refit:
        warnings.append(
            "the LLM teacher's answers were written before this run, so they are the same in every run:"
            " if its model saw these records (or their labels) in training, its and its students' test numbers are optimistic"
        )
    elif not refit:
        warnings.append(
            "the teacher was loaded, so it is the same in every run and its training rows are unknown here:"
            " if it saw rows of a test split, its and its students' test numbers are optimistic; fit it on rows kept apart"
        )
    perfect = sum(r.teacher["test"]["accuracy"] == 1.0 for r in results)
    if perfect and not refit:
        warnings.append(f"the loaded teacher is perfect on the test split in {perfect} of {len(results)} runs: it was probably trained on those rows")
    if below := _below_majority(results):
        teacher, majority = np.mean([t for t, _ in below]), np.mean([m for _, m in below])
        if refit:
            check = "how it is trained"
        elif isinstance(config.teacher, LoadedTeacher):
            check = "its classes (teacher.classes maps them to the data's) and its input"
        else:
            check = "its outputs"
        warnings.append(
            f"the teacher is below the majority-class rule on validation in {len(below)} of {len(results)} runs"
            f" ({teacher:.3f} against {majority:.3f}), worse than always predicting the commonest class: check {check}"
        )
    return warnings


def _below_majority(results: list[RunResult]) -> list[tuple[float, float]]:
    """The teacher's and the majority-class rule's validation accuracy in each run where the
    teacher's is the lower."""
    pairs = [(r.teacher["accuracy_on"]["validation"], r.majority["accuracy_on"]["validation"]) for r in results]
    return [(teacher, majority) for teacher, majority in pairs if teacher < majority]
