"""One experiment: data, teacher, students, evaluation, repeated over runs that vary the data.

Each run (``evaluation.scheme``: repeated holdout or repeated k-fold) has its own split, encoder
and labelled subset, a teacher refit on its training rows (teachers trained here), and students
initialized and shuffled from its seed. Within a run the validation split (only its labelled rows
when students see a fraction of the labels) chooses each method's settings, drives the LR
scheduler and early stopping; the test split is read once, after training, by ``test_run``.
Every method is compared, run by run, with a control trained the same way (config.py,
``with_matched_controls``); stats.py turns the paired differences into intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from stepdistill.config import ExperimentConfig
from stepdistill.data import Table, encode_splits, frame_parts
from stepdistill.data.prepared import PreparedData
from stepdistill.data.repeats import RunRows, cv_runs, fixed_test_runs, holdout_runs, labelled_mask, labelled_order
from stepdistill.errors import StepDistillError
from stepdistill.evaluate import class_probabilities, classification_metrics, count_parameters, predicted_classes
from stepdistill.methods import Method
from stepdistill.run_dir import RunStudents
from stepdistill.summary import COMPARED_METRICS, summarize_experiment
from stepdistill.teachers import cache_teacher
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.cache import TeacherCache
from stepdistill.teachers.kinds import BuiltTeacher
from stepdistill.train import TrainState, default_device, fit, new_state

ProgressFn = Callable[[str], None]
RunHook = Callable[[RunStudents], None]


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """The checked rows of an experiment: raw feature columns, label indices, class names and
    sample ids; the last ``n_fixed_test`` rows are a user's fixed test file."""

    features: pd.DataFrame
    y: np.ndarray
    classes: list[str]
    ids: np.ndarray
    n_fixed_test: int = 0


def load_data(config: ExperimentConfig, frame: pd.DataFrame, test_frame: pd.DataFrame | None = None) -> Dataset:
    """Check ``frame`` (and the fixed test file's rows, appended after it) once."""
    d = config.data
    n_test = 0
    if test_frame is not None:
        if list(test_frame.columns) != list(frame.columns):
            raise StepDistillError(
                f"data.test_path has columns {list(test_frame.columns)}, the data {list(frame.columns)}; give the test file the data's columns"
            )
        n_test = len(test_frame)
        frame = pd.concat([frame, test_frame], ignore_index=True)
    features, y, classes, ids = frame_parts(frame, d.label, d.id_column)
    if n_test and (missing := sorted(set(range(len(classes))) - set(y[-n_test:].tolist()))):
        raise StepDistillError(f"the test file has no rows of class {classes[missing[0]]!r}; give it rows of every class")
    return Dataset(features, y, classes, ids, n_test)


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
    splits, encoder = encode_splits(data.features, data.y, data.classes, data.ids, rows, config.data.scale_numeric)
    shape = config.data.image_shape
    if shape is not None and splits.train.n_features != (n := shape[0] * shape[1] * shape[2]):
        raise StepDistillError(f"data.image_shape {list(shape)} needs {n} feature columns, the data has {splits.train.n_features}; fix data.image_shape")
    return PreparedData(splits, encoder, data.features.set_index(pd.Index(data.ids, name="id")), shape)


# --- teacher ---------------------------------------------------------------------------------


def build_teacher(config: ExperimentConfig, data: PreparedData, run: RunRows, loaded: BuiltTeacher | None) -> tuple[BuiltTeacher, TeacherCache]:
    """The run's teacher and its outputs on every split by sample id: refit with the run's seed
    on its training rows when trained here, else ``loaded`` (built once) reused."""
    if loaded is not None:
        built = loaded
    else:
        teacher = config.teacher
        teacher_config = teacher.model_copy(update={"seed": teacher.seed + run.seed}) if teacher.trains_here else teacher
        built = teacher_config.build(data, default_device())
    splits = data.splits
    built.teacher.fit_background(Samples.of(splits.train, data.raw))
    cache = cache_teacher(built.teacher, [Samples.of(t, data.raw) for t in (splits.train, splits.val, splits.test)], data.classes)
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
) -> dict[str, Trained]:
    """Every method's candidates (its settings times its tuning grid), trained together with
    ``seed`` on the run's training rows; per method, the candidate with the best metric on
    ``val`` (the validation rows whose labels students may see) is kept. The test split plays
    no part."""
    n_train = len(data.splits.train)
    candidates = {name: config.candidates(name, n_train) for name in config.methods}
    methods = [config.build_method(name, c) for name, cs in candidates.items() for c in cs]
    states = [group[0] for group in student_states(config, methods, data, teacher, rationale_width(cache, data), [seed])]
    fit(states, data.splits.train, val, cache, labelled=labelled)
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


def solo_seconds(config: ExperimentConfig, data: PreparedData, teacher: Teacher, cache: TeacherCache, trained: Trained, seed: int, labelled, val: Table) -> float:
    """Seconds to train the method's chosen student alone (what the method costs), measured
    anew for students that trained stacked with others (whose shared time is not theirs)."""
    if trained.state.seconds is not None:
        return trained.state.seconds
    method = config.build_method(trained.state.name, trained.settings)
    [[state]] = student_states(config, [method], data, teacher, rationale_width(cache, data), [seed])
    fit([state], data.splits.train, val, cache, labelled=labelled)
    return state.seconds


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
    result = RunResult(
        teacher={"test": classification_metrics(teacher_logits, test.y), "logits": teacher_logits},
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


# --- the whole experiment --------------------------------------------------------------------


def run_experiment(
    config: ExperimentConfig,
    frame: pd.DataFrame,
    description: dict | None = None,
    progress: ProgressFn | None = None,
    test_frame: pd.DataFrame | None = None,
    compare_with: str | None = None,
    compared_metrics: tuple[str, ...] = COMPARED_METRICS,
    on_run: RunHook | None = None,
) -> dict:
    """Run the whole comparison on ``frame`` and return the results dict (see report/).
    ``compare_with`` names the method every other is compared with instead of its control;
    ``on_run`` is handed each run's trained students (to save them, say)."""
    fractions = [config.data.labelled_fraction]
    [results] = run_fractions(config, frame, fractions, description, progress, test_frame, compare_with, compared_metrics, on_run).values()
    return results


def run_fractions(
    config: ExperimentConfig,
    frame: pd.DataFrame,
    fractions: list[float],
    description: dict | None = None,
    progress: ProgressFn | None = None,
    test_frame: pd.DataFrame | None = None,
    compare_with: str | None = None,
    compared_metrics: tuple[str, ...] = COMPARED_METRICS,
    on_run: RunHook | None = None,
) -> dict[float, dict]:
    """The experiment at each labelled fraction, on the same runs: per run, one teacher (trained
    on every training label) serves every fraction, and the labelled rows are nested across
    fractions, in the training and the validation split alike. Returns results dicts by fraction."""
    say = progress or (lambda message: None)
    config.check()
    control_of: dict[str, str | None] = {}
    data = load_data(config, frame, test_frame)
    runs = runs_of(config, data)
    refit = config.teacher.trains_here
    per_fraction: dict[float, list[RunResult]] = {f: [] for f in fractions}
    teacher_seconds, teacher_params, loaded, seconds = [], None, None, {}
    warnings: list[str] = []
    for run in runs:
        prepared = prepare_run(config, data, run)
        splits = prepared.splits
        built, cache = build_teacher(config, prepared, run, loaded)
        loaded = None if refit else built
        teacher_params = built.params
        if built.train_seconds is not None:
            teacher_seconds.append(built.train_seconds)
        if run.index == 0:
            say(f"{len(runs)} runs ({config.evaluation.scheme}); run 0: {len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} test rows, {splits.train.n_features} encoded features")
            config, skipped = _drop_rationale_methods(config, rationale_width(cache, prepared), built.teacher)
            warnings += skipped
            if compare_with is None:
                config, control_of = config.with_matched_controls()
            else:
                control_of = {name: None if name == compare_with else compare_with for name in config.methods}
        train_rank = labelled_order(splits.train.y.numpy(), run.seed)
        val_rank = labelled_order(splits.val.y.numpy(), run.seed + 1)
        for fraction in fractions:
            labelled = _mask(splits.train.y.numpy(), train_rank, fraction)
            val_labelled = _mask(splits.val.y.numpy(), val_rank, fraction)
            val = splits.val if val_labelled is None else splits.val.take(val_labelled)
            trained = train_students(config, prepared, built.teacher, cache, run.seed, labelled, val)
            if run.index == 0 and fraction == fractions[-1]:
                seconds = {name: solo_seconds(config, prepared, built.teacher, cache, t, run.seed, labelled, val) for name, t in trained.items()}
            per_fraction[fraction].append(test_run(prepared, cache, trained, labelled, val))
            if on_run is not None and fraction == fractions[-1]:
                on_run(RunStudents(run.index, prepared.encoder, {name: t.state.model.cpu().eval() for name, t in trained.items()}))
        say(f"run {run.index + 1}/{len(runs)} done (teacher test accuracy {per_fraction[fractions[-1]][-1].teacher['test']['accuracy']:.3f})")
    warnings += _teacher_warnings(config, refit, per_fraction[fractions[-1]])
    for message in warnings:
        say(f"warning: {message}")
    context = {
        "config": config,
        "control_of": control_of,
        "compared_metrics": compared_metrics,
        "teacher_params": teacher_params,
        "teacher_seconds": float(np.mean(teacher_seconds)) if teacher_seconds else None,
        "refit": refit,
        "seconds": seconds,
        "warnings": warnings,
        "description": description,
        "data": data,
    }
    return {f: summarize_experiment(per_fraction[f], fraction=f, **context) for f in fractions}


def _mask(y: np.ndarray, rank: np.ndarray, fraction: float) -> torch.Tensor | None:
    return None if fraction >= 1 else torch.from_numpy(labelled_mask(y, rank, fraction))


def _drop_rationale_methods(config: ExperimentConfig, width: int | None, teacher: Teacher) -> tuple[ExperimentConfig, list[str]]:
    """When the teacher gives no rationale (``width`` None): the methods that need one are
    skipped with a line saying why if the methods are the default ones; methods the user chose
    are an error."""
    if width is not None:
        return config, []
    needing = [name for name in config.methods if config.build_method(name, config.candidates(name, 10_000)[0]).needs_rationale]
    if not needing:
        return config, []
    reason = getattr(teacher, "rationale_unavailable", None) or "the teacher gives no rationale"
    if "methods" in config.model_fields_set:
        raise StepDistillError(f"{', '.join(needing)} need a rationale, but {reason}; remove those methods or use a teacher that explains its predictions")
    kept = {name: settings for name, settings in config.methods.items() if name not in needing}
    return config.model_copy(update={"methods": kept}), [f"skipped {', '.join(needing)}: {reason}"]


def _teacher_warnings(config: ExperimentConfig, refit: bool, results: list[RunResult]) -> list[str]:
    warnings = []
    if not refit:
        warnings.append(
            "the teacher was loaded, so it is the same in every run and its training rows are unknown here:"
            " if it saw rows of a test split, its and its students' test numbers are optimistic; fit it on rows kept apart"
        )
    perfect = sum(r.teacher["test"]["accuracy"] == 1.0 for r in results)
    if perfect and not refit:
        warnings.append(f"the loaded teacher is perfect on the test split in {perfect} of {len(results)} runs: it was probably trained on those rows")
    return warnings
