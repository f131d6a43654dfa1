"""One experiment: build the teacher, distill it with every method over seeds, test everything.

All numbers come from the held-out test split; the validation split drives schedulers and early
stopping; the teacher and the feature encoding see only the training split.
"""

from __future__ import annotations

import datetime
import platform
import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from stepdistill.config import ExperimentConfig
from stepdistill.data import Table, prepare_with_raw
from stepdistill.data.prepared import PreparedData
from stepdistill.errors import StepDistillError
from stepdistill.evaluate import classification_metrics, count_parameters, per_class_metrics, predicted_classes, summarize_runs
from stepdistill.methods import Method
from stepdistill.teachers import cache_teacher
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.cache import TeacherCache
from stepdistill.train import TrainState, default_device, fit, new_state

ProgressFn = Callable[[str], None]


def prepare_data(config: ExperimentConfig, frame: pd.DataFrame) -> PreparedData:
    d = config.data
    splits, encoder, raw = prepare_with_raw(frame, d.label, d.id_column, d.val_fraction, d.test_fraction, d.split_seed, d.scale_numeric)
    if d.image_shape is not None and splits.train.n_features != (n := d.image_shape[0] * d.image_shape[1] * d.image_shape[2]):
        raise StepDistillError(
            f"data.image_shape {list(d.image_shape)} needs {n} feature columns, the data has {splits.train.n_features}; fix data.image_shape"
        )
    return PreparedData(splits, encoder, raw, d.image_shape)


def labelled_rows(config: ExperimentConfig, data: PreparedData) -> torch.Tensor | None:
    """(N,) bool over the training rows: a stratified ``data.labelled_fraction`` of them, the same
    for every method and seed (None when all are labelled). The teacher is not limited by it."""
    fraction = config.data.labelled_fraction
    if fraction >= 1.0:
        return None
    y = data.splits.train.y.numpy()
    per_class = np.bincount(y, minlength=len(data.classes))
    if (fraction * per_class < 1).any():
        raise StepDistillError(
            f"data.labelled_fraction {fraction} leaves some class without a labelled row; use at least {1 / per_class.min():.4f}"
        )
    rows, _ = train_test_split(np.arange(len(y)), train_size=fraction, stratify=y, random_state=config.data.split_seed)
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[torch.from_numpy(rows)] = True
    return mask


def cache_all_splits(teacher: Teacher, data: PreparedData) -> TeacherCache:
    splits = data.splits
    teacher.fit_background(Samples.of(splits.train, data.raw))
    return cache_teacher(teacher, [Samples.of(t, data.raw) for t in (splits.train, splits.val, splits.test)], data.classes)


@torch.no_grad()
def test_logits(model: nn.Module, table: Table) -> torch.Tensor:
    """The model's logits on ``table``, on the CPU."""
    model.eval()
    return model(table.X.to(next(model.parameters()).device)).logits.cpu()


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


def choose_on_validation(
    config: ExperimentConfig,
    data: PreparedData,
    teacher: Teacher,
    cache: TeacherCache,
    rationale_width: int | None,
    labelled: torch.Tensor | None,
) -> dict[str, dict]:
    """Per method, the tuning grid point with the best validation metric, and every point's score.

    All candidates train together with the first seed (compatible ones stacked). The test split
    plays no part."""
    if config.tune is None:
        return {name: {"chosen": {}} for name in config.methods}
    candidates = {name: config.tuning_candidates(name) for name in config.methods}
    methods = [config.build_method(name, c) for name, cs in candidates.items() for c in cs]
    states = [group[0] for group in student_states(config, methods, data, teacher, rationale_width, config.seeds[:1])]
    val = data.splits.val
    fit(states, data.splits.train, val, cache, labelled=labelled)
    scores = iter(classification_metrics(test_logits(s.model, val), val.y)[config.tune.metric] for s in states)
    better = min if config.tune.metric == "log_loss" else max
    tuning = {}
    for name, cs in candidates.items():
        trials = [{"settings": c, config.tune.metric: next(scores)} for c in cs]
        best = better(trials, key=lambda t: t[config.tune.metric])
        tuning[name] = {"chosen": best["settings"], "metric": config.tune.metric, "validation": trials}
    return tuning


def run_experiment(
    config: ExperimentConfig, frame: pd.DataFrame, description: dict | None = None, progress: ProgressFn | None = None
) -> dict:
    """Run the whole comparison on ``frame`` and return the results dict (see report/)."""
    say = progress or (lambda message: None)
    config.check()
    data = prepare_data(config, frame)
    splits = data.splits
    say(f"data: {len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} test rows, {splits.train.n_features} encoded features")

    built = config.teacher.build(data, default_device())
    cache = cache_all_splits(built.teacher, data)
    teacher_test = cache.take(splits.test.ids)
    teacher_pred = predicted_classes(teacher_test.logits)
    rationale_width = None if teacher_test.rationale is None else teacher_test.rationale.shape[-1]
    say(f"teacher ({config.teacher.kind}) ready" + ("" if built.train_seconds is None else f", trained in {built.train_seconds:.2f}s"))

    labelled = labelled_rows(config, data)
    tuning = choose_on_validation(config, data, built.teacher, cache, rationale_width, labelled)
    if config.tune is not None:
        say("chosen on validation: " + "; ".join(f"{name} {t['chosen']}" for name, t in tuning.items()))
    methods = [config.build_method(name, tuning[name]["chosen"]) for name in config.methods]
    students = dict(zip(config.methods, student_states(config, methods, data, built.teacher, rationale_width, config.seeds)))
    started = time.perf_counter()
    fit([s for group in students.values() for s in group], splits.train, splits.val, cache, labelled=labelled)
    say(f"{sum(len(v) for v in students.values())} students trained in {time.perf_counter() - started:.2f}s")

    classes = splits.train.classes
    results_methods = {}
    for name, states in students.items():
        logits = [test_logits(s.model, splits.test) for s in states]
        results_methods[name] = {
            "test": summarize_runs([classification_metrics(z, splits.test.y, teacher_pred) for z in logits]),
            "per_class": per_class_metrics(logits, splits.test.y, classes),
            "params": count_parameters(states[0].model),
            "train_seconds": sum(s.seconds for s in states) / len(states),
            "history": [s.history for s in states],
            "method": states[0].method.describe(),
            "tuning": tuning[name],
        }
    return {
        "teacher": {
            "kind": config.teacher.kind,
            "test": summarize_runs([classification_metrics(teacher_test.logits, splits.test.y)]),
            "per_class": per_class_metrics([teacher_test.logits], splits.test.y, classes),
            "params": built.params,
            "train_seconds": built.train_seconds,
        },
        "methods": results_methods,
        "config": {
            **(description or {}),
            **config.model_dump(mode="json"),
            "data": {
                **config.model_dump(mode="json")["data"],
                "n_train": len(splits.train),
                "n_val": len(splits.val),
                "n_test": len(splits.test),
                "n_features": splits.train.n_features,
                "classes": list(classes),
            },
        },
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}, torch {torch.__version__}",
        "date": datetime.date.today().isoformat(),
    }
