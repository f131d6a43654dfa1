"""One experiment: data, teacher, students, evaluation, repeated over runs that vary the data.

Each run (``evaluation.scheme``: repeated holdout or repeated k-fold) has its own split, encoder
and labelled subset, a teacher refit on its training rows (teachers trained here), and students
initialized and shuffled from its seed. Within a run the validation split (only its labelled rows
when students see a fraction of the labels) chooses each method's settings, drives the LR
scheduler and early stopping; the test split is read once, after training, by ``test_run``.
Every method is compared, run by run, with a control trained the same way (config.py,
``with_matched_controls``); stats.py turns the paired differences into intervals.

Given checkpoints (checkpoints.py), the students of the run under way are saved after every epoch
and each run once it is finished, so that an interrupted experiment resumes: finished runs are
read back, the interrupted one continues from its last epoch (its teacher rebuilt as before), and
the results are those of an uninterrupted experiment.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from stepdistill.config import ExperimentConfig
from stepdistill.data import Table, encode_splits, frame_parts
from stepdistill.data.prepared import PreparedData
from stepdistill.data.repeats import RunRows, cv_runs, fixed_test_runs, holdout_runs, labelled_mask, labelled_order
from stepdistill.engines.base import TrainState, default_device, epochs_left, fit, new_state
from stepdistill.engines.tabular import TabularData
from stepdistill.errors import StepDistillError
from stepdistill.evaluate import class_probabilities, classification_metrics, count_parameters, predicted_classes
from stepdistill.methods import Method
from stepdistill.progress import SILENT, Progress
from stepdistill.run_dir import RunStudents
from stepdistill.speed import measure_speed
from stepdistill.summary import COMPARED_METRICS, summarize_experiment
from stepdistill.teachers import cache_teacher
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.cache import TeacherCache
from stepdistill.teachers.kinds import BuiltTeacher
from stepdistill.teachers.store import TeacherStore
from stepdistill.text.inputs import TextInputs, choice_labels

if TYPE_CHECKING:
    from stepdistill.checkpoints import Checkpoints

RunHook = Callable[[RunStudents], None]


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """The checked rows of an experiment: feature columns (raw, or a text record's sentence
    features), label indices, class names and sample ids; the last ``n_fixed_test`` rows are a
    user's fixed test file. Text records also keep how their features were made (``text``),
    each row's record id (``record_ids``, what an LLM teacher's outputs are keyed by) and, for
    multiple choice, its choices (``choices``)."""

    features: pd.DataFrame
    y: np.ndarray
    classes: list[str]
    ids: np.ndarray
    n_fixed_test: int = 0
    text: TextInputs | None = None
    record_ids: tuple[str, ...] | None = None
    choices: tuple[tuple[str, ...], ...] | None = None


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
        features, y, classes, ids, extra = _text_parts(frame, d.label, d.id_column, text, say)
    if n_test and (missing := sorted(set(range(len(classes))) - set(y[-n_test:].tolist()))):
        raise StepDistillError(f"the test file has no rows of class {classes[missing[0]]!r}; give it rows of every class")
    return Dataset(features, y, classes, ids, n_test, text, **extra)


def _text_parts(frame: pd.DataFrame, label: str, id_column: str | None, text: TextInputs, say) -> tuple:
    """``frame_parts`` of text records: the sentence features, labels (for multiple choice the
    letter of the right choice), classes and sample ids (row positions), and the record ids and
    choices an LLM teacher is matched by."""
    expected = {*text.input_columns, label, *([id_column] if id_column else [])}
    for column in sorted(expected - set(map(str, frame.columns))):
        raise StepDistillError(f"column {column!r} named in data is not in the file (columns: {', '.join(map(str, frame.columns))}); fix data.text, data.choices, data.label or data.id_column")
    if extra := [str(c) for c in frame.columns if c not in expected]:
        raise StepDistillError(f"columns {', '.join(extra)} are neither text, choices, label nor id, and text students read only data.text; drop them or name them")
    if id_column is None:
        record_ids = tuple(str(i) for i in range(len(frame)))
    else:
        record_ids = tuple(str(v) for v in frame[id_column])
        if len(set(record_ids)) != len(record_ids):
            raise StepDistillError(f"id column {id_column!r} has duplicated values; give every record its own id")
    labels = frame[label]
    choices = None
    if text.choices is not None:
        labels, letters = choice_labels(frame, label, text.choices)
        if unused := sorted(set(letters) - set(labels)):
            raise StepDistillError(f"no record's answer is choice {unused[0]}; a multiple-choice student needs every position to be right sometimes")
        choices = tuple(tuple(str(c) for c in row) for row in frame[text.choices])
    features = text.features(frame, text.sentence_encoder(say))
    checked, y, classes, ids = frame_parts(features.assign(**{label: labels}), label)
    return checked, y, classes, ids, {"record_ids": record_ids, "choices": choices}


def runs_of(config: ExperimentConfig, data: Dataset) -> list[RunRows]:
    """The runs of ``config.evaluation`` on ``data``."""
    e, d = config.evaluation, config.data
    if data.n_fixed_test:
        return fixed_test_runs(data.y, data.classes, data.n_fixed_test, e.repeats, d.val_fraction, e.seed)
    if e.scheme == "cv":
        return cv_runs(data.y, data.classes, e.repeats, e.folds, d.val_fraction, e.seed)
    return holdout_runs(data.y, data.classes, e.repeats, d.val_fraction, d.test_fraction, e.seed)


def prepare_run(config: ExperimentConfig, data: Dataset, run: RunRows) -> PreparedData:
    """The run's encoded splits, with the encoder fitted on its training rows only."""
    rows = (run.train, run.val, run.test)
    splits, encoder = encode_splits(data.features, data.y, data.classes, data.ids, rows, config.data.scale_numeric, config.data.missing)
    shape = config.data.image_shape
    if shape is not None and splits.train.n_features != (n := shape[0] * shape[1] * shape[2]):
        raise StepDistillError(f"data.image_shape {list(shape)} needs {n} feature columns, the data has {splits.train.n_features}; fix data.image_shape")
    raw = data.features.set_index(pd.Index(data.ids, name="id"))
    return PreparedData(splits, encoder, raw, shape, data.text, data.record_ids, data.choices)


# --- teacher ---------------------------------------------------------------------------------


def build_teacher(
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
            built = teacher_config.build(fit_on or data, default_device())
    splits = data.splits
    with progress.task("teacher outputs and explanations"):
        built.teacher.fit_background(Samples.of(splits.train, data.raw))
        samples = [Samples.of(t, data.raw) for t in (splits.train, splits.val, splits.test)]
        cache = cache_teacher(built.teacher, samples, data.classes, store=teacher_store, say=progress.note)
    return built, cache


def rationale_width(cache: TeacherCache, data: PreparedData) -> int | None:
    """The width of the teacher's rationale, or None when it gives none."""
    rationale = cache.take(data.splits.train.ids[:1]).rationale
    return None if rationale is None else rationale.shape[-1]


# --- students --------------------------------------------------------------------------------


def student_states(
    config: ExperimentConfig,
    methods: list[Method],
    data: PreparedData,
    teacher: Teacher,
    rationale_width: int | None,
    seeds: list[int],
) -> list[list[TrainState]]:
    """A fresh student for every method (a list of seeds each), checked against what the teacher offers."""
    train = data.splits.train
    make = config.student.factory(train.n_features, train.n_classes, teacher, data.encoder.feature_groups, data.image_shape)
    needs_rationale = [m.name for m in methods if m.needs_rationale]
    if needs_rationale and rationale_width is None:
        raise StepDistillError(
            f"the teacher gives no rationale, which {', '.join(needs_rationale)} need;"
            " remove those methods or use a teacher that explains its predictions"
        )
    if needs_rationale and not config.student.projection:
        width = make().rationale_width
        if width != rationale_width:
            raise StepDistillError(
                f"the student's rationale has width {width} and the teacher's {rationale_width}, and student.projection is off;"
                " turn it on to learn a projection, or choose a student whose rationale matches"
            )
    device = default_device()
    return [[new_state(m.name, m, make, seed, rationale_width, device) for seed in seeds] for m in methods]


@dataclass
class Trained:
    """A method's student in one run: the one whose settings scored best on validation."""

    state: TrainState
    settings: dict
    validation: list[dict]  # every candidate's settings and validation metric


@torch.no_grad()
def split_logits(model: nn.Module, table: Table) -> torch.Tensor:
    """The model's logits on ``table``, on the CPU."""
    model.eval()
    return model(table.X.to(next(model.parameters()).device)).logits.cpu()


def train_students(
    config: ExperimentConfig,
    data: PreparedData,
    teacher: Teacher,
    cache: TeacherCache,
    seed: int,
    labelled: torch.Tensor | None,
    val: Table,
    progress: Progress = SILENT,
    saved: list[dict] | None = None,
    checkpoint: Callable[[list[TrainState]], None] | None = None,
) -> dict[str, Trained]:
    """Every method's candidates (its settings times its tuning grid), trained together with
    ``seed`` on the run's training rows; per method, the candidate with the best metric on
    ``val`` (the validation rows whose labels students may see) is kept. The test split plays
    no part. ``saved``: the candidates' states (``TrainState.state_dict``, in order) to resume
    from; ``checkpoint(states)`` is called after every epoch."""
    n_train = len(data.splits.train)
    candidates = {name: config.candidates(name, n_train) for name in config.methods}
    methods = [config.build_method(name, c) for name, cs in candidates.items() for c in cs]
    states = [group[0] for group in student_states(config, methods, data, teacher, rationale_width(cache, data), [seed])]
    if saved is not None:
        for state, state_dict in zip(states, saved, strict=True):
            state.load_state_dict(state_dict)
    _fit(states, data.splits.train, val, cache, labelled, progress, f"training {len(states)} students", checkpoint)
    metric = config.tune.metric if config.tune else "log_loss"
    sign = 1 if metric == "log_loss" else -1  # the best candidate has the lowest sign * metric
    scores = iter(classification_metrics(split_logits(s.model, val), val.y)[metric] for s in states)
    states_left = iter(states)
    trained = {}
    for name, settings in candidates.items():
        trials = [{"settings": c, "state": next(states_left), metric: next(scores)} for c in settings]
        # A diverged candidate is never chosen while another finished.
        best = min(trials, key=lambda t: (t["state"].diverged is not None, sign * t[metric]))
        trained[name] = Trained(best["state"], best["settings"], [{"settings": t["settings"], metric: t[metric]} for t in trials])
    return trained


def solo_seconds(
    config: ExperimentConfig, data: PreparedData, teacher: Teacher, cache: TeacherCache, trained: Trained, seed: int, labelled, val: Table, progress: Progress = SILENT
) -> float:
    """Seconds to train the method's chosen student alone (what the method costs), measured
    anew for students that trained stacked with others (whose shared time is not theirs)."""
    if trained.state.seconds is not None:
        return trained.state.seconds
    method = config.build_method(trained.state.name, trained.settings)
    [[state]] = student_states(config, [method], data, teacher, rationale_width(cache, data), [seed])
    _fit([state], data.splits.train, val, cache, labelled, progress, f"timing {state.name} alone")
    return state.seconds


def _fit(
    states: list[TrainState],
    train: Table,
    val: Table,
    cache: TeacherCache,
    labelled: torch.Tensor | None,
    progress: Progress,
    description: str,
    checkpoint: Callable[[list[TrainState]], None] | None = None,
) -> None:
    """``fit``, its epochs shown as a task of ``progress``, with ``checkpoint(states)`` after each."""
    left = epochs_left(states)
    with progress.task(description, left) as advance:

        def on_epoch_end(states: list[TrainState]) -> None:
            nonlocal left
            now = epochs_left(states)
            advance(left - now)
            left = now
            if checkpoint is not None:
                checkpoint(states)

        fit(states, TabularData(train, val, cache, labelled), on_epoch_end=on_epoch_end)


# --- evaluation ------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What one run measured on its test split: metrics of the teacher, the majority-class rule
    and each method; each method's test probabilities (for comparisons within one split),
    validation metrics, flags and history."""

    teacher: dict
    majority: dict
    methods: dict[str, dict] = field(default_factory=dict)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    y_test: np.ndarray | None = None
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    n_features: int = 0
    speed: dict[str, dict] | None = None  # measured in run 0 only (speed.py)


def majority_logits(y_labelled: torch.Tensor, n_classes: int, n_rows: int) -> torch.Tensor:
    """Logits of the constant-prior rule: every row gets the class frequencies of the labelled
    training rows (so it predicts the majority class); classes absent there get a tiny share."""
    counts = torch.bincount(y_labelled, minlength=n_classes).double() + 1e-3
    log_prior = torch.log(counts / counts.sum())
    logits = (log_prior[1:] - log_prior[:1]) if n_classes == 2 else log_prior
    return logits.float().expand(n_rows, -1).clone()


def test_run(data: PreparedData, cache: TeacherCache, trained: dict[str, Trained], labelled: torch.Tensor | None, val: Table) -> RunResult:
    """The test split, read once: every model's metrics on it."""
    train, test = data.splits.train, data.splits.test
    teacher_logits = cache.take(test.ids).logits
    teacher_pred = predicted_classes(teacher_logits)
    y_labelled = train.y if labelled is None else train.y[labelled]
    # The teacher's accuracy against the human labels of the other splits too: for a teacher that
    # did not train on them (an LLM), a check of its labels where students learn from them.
    accuracy_on = {name: _accuracy(cache.take(table.ids).logits, table.y) for name, table in (("train", train), ("validation", data.splits.val))}
    result = RunResult(
        teacher={"test": classification_metrics(teacher_logits, test.y), "logits": teacher_logits, "accuracy_on": accuracy_on},
        majority={"test": classification_metrics(majority_logits(y_labelled, train.n_classes, len(test)), test.y)},
        y_test=test.y.numpy(),
        n_train=len(train),
        n_val=len(data.splits.val),
        n_test=len(test),
        n_features=train.n_features,
    )
    for name, t in trained.items():
        logits = split_logits(t.state.model, test)
        predicted = set(predicted_classes(logits).tolist())
        result.methods[name] = {
            "test": classification_metrics(logits, test.y, teacher_pred),
            "validation": classification_metrics(split_logits(t.state.model, val), val.y),
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
    return result


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((predicted_classes(logits) == y).double().mean())


# --- the whole experiment --------------------------------------------------------------------


def run_experiment(
    config: ExperimentConfig,
    frame: pd.DataFrame,
    description: dict | None = None,
    progress: Progress | None = None,
    test_frame: pd.DataFrame | None = None,
    compare_with: str | None = None,
    compared_metrics: tuple[str, ...] = COMPARED_METRICS,
    on_run: RunHook | None = None,
    teacher_store: TeacherStore | None = None,
    checkpoints: Checkpoints | None = None,
) -> dict:
    """Run the whole comparison on ``frame`` and return the results dict (see report/).
    ``compare_with`` names the method every other is compared with instead of its control;
    ``on_run`` is handed each run's trained students (to save them, say)."""
    fractions = [config.data.labelled_fraction]
    by_fraction = run_fractions(
        config, frame, fractions, description, progress, test_frame, compare_with, compared_metrics, on_run, teacher_store, checkpoints
    )
    [results] = by_fraction.values()
    return results


@dataclass
class TeacherFacts:
    """What a run's teacher tells the experiment: its training time (None: trained elsewhere),
    parameter count (None: not a parameter count), and rationale width (None: it gives none,
    and ``rationale_unavailable`` may say why). Run 0's decide which methods run."""

    train_seconds: float | None
    params: int | None
    rationale_width: int | None
    rationale_unavailable: str | None
    notes: tuple[str, ...] = ()


@dataclass
class FinishedRun:
    """What a run leaves for the summary: its results at each labelled fraction (in order), the
    students of the last fraction, its teacher's facts, and, in run 0 only, the seconds each
    method's student takes to train alone."""

    index: int
    results: list[RunResult]
    students: RunStudents
    teacher: TeacherFacts
    seconds: dict[str, float]


def run_fractions(
    config: ExperimentConfig,
    frame: pd.DataFrame,
    fractions: list[float],
    description: dict | None = None,
    progress: Progress | None = None,
    test_frame: pd.DataFrame | None = None,
    compare_with: str | None = None,
    compared_metrics: tuple[str, ...] = COMPARED_METRICS,
    on_run: RunHook | None = None,
    teacher_store: TeacherStore | None = None,
    checkpoints: Checkpoints | None = None,
) -> dict[float, dict]:
    """The experiment at each labelled fraction, on the same runs: per run, one teacher (trained
    on every training label) serves every fraction, and the labelled rows are nested across
    fractions, in the training and the validation split alike. Returns results dicts by fraction.
    With ``checkpoints``, runs finished there are read back instead of run again, and the one
    under way resumes from its last epoch (see the module's docstring)."""
    progress = progress or SILENT
    config.check()
    asked = config  # run 0's teacher decides which methods (and controls) run
    with progress.task("reading the data" if config.data.text is None else "reading the data and encoding its texts (cached)"):
        data = load_data(config, frame, test_frame, progress.note)
    runs = runs_of(config, data)
    refit = config.teacher.trains_here
    finished_runs: list[FinishedRun] = []
    loaded = None
    with progress.task(f"{len(runs)} runs ({config.evaluation.scheme})", len(runs)) as advance:
        for run in runs:
            finished = None if checkpoints is None else checkpoints.finished_run(run.index)
            if finished is None:
                prepared = prepare_run(config, data, run)
                built, cache = build_teacher(config, prepared, run, loaded, progress, teacher_store)
                loaded = None if refit else built
                teacher = TeacherFacts(
                    built.train_seconds, built.params, rationale_width(cache, prepared), built.teacher.rationale_unavailable, built.notes
                )
            else:
                teacher = finished.teacher
            if run.index == 0:  # before any student trains, from run 0's teacher whether live or read back
                config, control_of, warnings = _settle_methods(asked, teacher, compare_with)
            if finished is None:
                finished = _train_and_test(config, prepared, built, cache, run, fractions, teacher, progress, checkpoints, teacher_store)
                if checkpoints is not None:
                    checkpoints.save_run(finished)
            if on_run is not None:
                on_run(finished.students)
            finished_runs.append(finished)
            progress.note(f"run {run.index + 1}/{len(runs)} done (teacher test accuracy {finished.results[-1].teacher['test']['accuracy']:.3f})")
            advance()
    warnings += list(finished_runs[0].teacher.notes) + _teacher_warnings(config, refit, [f.results[-1] for f in finished_runs])
    if config.data.text is not None:
        warnings.append("students' latency is measured from sentence features: the frozen sentence encoder's own time per text comes on top")
    for message in warnings:
        progress.note(f"warning: {message}")
    teacher_seconds = [f.teacher.train_seconds for f in finished_runs if f.teacher.train_seconds is not None]
    context = {
        "config": config,
        "control_of": control_of,
        "compared_metrics": compared_metrics,
        "teacher_params": finished_runs[-1].teacher.params,
        "teacher_seconds": float(np.mean(teacher_seconds)) if teacher_seconds else None,
        "refit": refit,
        "seconds": finished_runs[0].seconds,
        "warnings": warnings,
        "description": description,
        "data": data,
    }
    return {f: summarize_experiment([run.results[i] for run in finished_runs], fraction=f, **context) for i, f in enumerate(fractions)}


def _train_and_test(
    config: ExperimentConfig,
    prepared: PreparedData,
    built: BuiltTeacher,
    cache: TeacherCache,
    run: RunRows,
    fractions: list[float],
    teacher: TeacherFacts,
    progress: Progress,
    checkpoints: Checkpoints | None,
    teacher_store: TeacherStore | None = None,
) -> FinishedRun:
    """The run's students at each fraction, trained (or resumed from ``checkpoints``) and tested;
    in run 0, also what a method costs and buys: its student's training time alone, and the
    speed of every model."""
    splits = prepared.splits
    if run.index == 0:
        progress.note(
            f"run 1: {len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} test rows, {splits.train.n_features} encoded features"
        )
    train_rank = labelled_order(splits.train.y.numpy(), run.seed)
    val_rank = labelled_order(splits.val.y.numpy(), run.seed + 1)
    results, seconds = [], {}
    for fraction in fractions:
        labelled = _mask(splits.train.y.numpy(), train_rank, fraction)
        val_labelled = _mask(splits.val.y.numpy(), val_rank, fraction)
        val = splits.val if val_labelled is None else splits.val.take(val_labelled)
        if labelled is not None and config.teacher.learns_from_labels:
            # A teacher that learns from the human labels (a privileged-information model) sees
            # those the students see, no more: else it would pass them the hidden labels.
            seen = replace(prepared, splits=replace(splits, train=splits.train.take(labelled), val=val))
            fraction_built, fraction_cache = build_teacher(config, prepared, run, None, progress, teacher_store, fit_on=seen)
        else:
            fraction_built, fraction_cache = built, cache
        saved = None if checkpoints is None else checkpoints.epoch_states(run.index, fraction)
        checkpoint = None if checkpoints is None else partial(checkpoints.save_epoch, run.index, fraction)
        trained = train_students(config, prepared, fraction_built.teacher, fraction_cache, run.seed, labelled, val, progress, saved, checkpoint)
        measured = run.index == 0 and fraction == fractions[-1]  # what a method costs and buys, measured once
        if measured:  # training ends before the test split is read
            seconds = {name: solo_seconds(config, prepared, fraction_built.teacher, fraction_cache, t, run.seed, labelled, val, progress) for name, t in trained.items()}
        result = test_run(prepared, fraction_cache, trained, labelled, val)
        if measured:
            students = {name: t.state.model for name, t in trained.items()}
            result.speed = measure_speed(fraction_built.teacher, fraction_built.params, students, prepared.encoder, prepared.raw.loc[splits.test.ids.numpy()])
        results.append(result)
    students = RunStudents(run.index, prepared.encoder, {name: t.state.model.cpu().eval() for name, t in trained.items()})
    return FinishedRun(run.index, results, students, teacher, seconds)


def _mask(y: np.ndarray, rank: np.ndarray, fraction: float) -> torch.Tensor | None:
    return None if fraction >= 1 else torch.from_numpy(labelled_mask(y, rank, fraction))


def _settle_methods(config: ExperimentConfig, teacher: TeacherFacts, compare_with: str | None) -> tuple[ExperimentConfig, dict[str, str | None], list[str]]:
    """The methods that run, given run 0's teacher (see ``_drop_rationale_methods``), with the
    control each is compared with: its matched control, or ``compare_with``; and the warnings."""
    config, warnings = _drop_rationale_methods(config, teacher)
    if compare_with is None:
        config, control_of = config.with_matched_controls()
    else:
        control_of = {name: None if name == compare_with else compare_with for name in config.methods}
    return config, control_of, warnings


def _drop_rationale_methods(config: ExperimentConfig, teacher: TeacherFacts) -> tuple[ExperimentConfig, list[str]]:
    """When the teacher gives no rationale: the methods that need one are skipped with a line
    saying why if the methods are the default ones; methods the user chose are an error."""
    if teacher.rationale_width is not None:
        return config, []
    needing = [name for name in config.methods if config.build_method(name, config.candidates(name, 10_000)[0]).needs_rationale]
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
    return warnings
