"""One experiment: train the teacher, distill it with every method over seeds, test everything.

All numbers come from the held-out test split; the validation split drives schedulers and early
stopping; the teacher and the preprocessing see only the training split.
"""

from __future__ import annotations

import datetime
import platform
import time
from typing import Callable

import pandas as pd
import torch
from torch import nn

from stepdistill.config import ExperimentConfig
from stepdistill.data import Splits, Table, prepare
from stepdistill.evaluate import classification_metrics, count_parameters, predicted_classes, summarize_runs
from stepdistill.methods import Method
from stepdistill.students import LogisticModel, MLPModel
from stepdistill.teachers import TeacherCache, cache_model_outputs
from stepdistill.train import TrainState, default_device, fit, new_state

ProgressFn = Callable[[str], None]


def n_logits(n_classes: int) -> int:
    return 1 if n_classes == 2 else n_classes


def teacher_factory(config: ExperimentConfig, n_features: int, n_classes: int) -> Callable[[], nn.Module]:
    t = config.teacher
    if t.kind == "logistic":
        return lambda: LogisticModel(n_features, n_logits(n_classes), t.rationale)
    return lambda: MLPModel(n_features, n_logits(n_classes), t.hidden, t.rationale_layer)


def student_factory(config: ExperimentConfig, n_features: int, n_classes: int) -> Callable[[], nn.Module]:
    s = config.student
    if s.kind == "logistic":
        # A logistic student explains itself the way a logistic teacher does; other teachers'
        # rationales are reached through a projection head.
        kind = config.teacher.rationale if config.teacher.kind == "logistic" else "contributions"
        return lambda: LogisticModel(n_features, n_logits(n_classes), kind)
    return lambda: MLPModel(n_features, n_logits(n_classes), s.hidden)


@torch.no_grad()
def test_logits(model: nn.Module, table: Table) -> torch.Tensor:
    """The model's logits on ``table``, on the CPU."""
    model.eval()
    return model(table.X.to(next(model.parameters()).device)).logits.cpu()


def train_teacher(config: ExperimentConfig, splits: Splits) -> tuple[nn.Module, float]:
    method = config.teacher_method()
    make = teacher_factory(config, splits.train.n_features, splits.train.n_classes)
    state = new_state("teacher", method, make, config.teacher.seed, device=default_device())
    fit([state], splits.train, splits.val, cache=None)
    return state.model, state.seconds


def distill(
    config: ExperimentConfig, methods: list[Method], splits: Splits, cache: TeacherCache, rationale_width: int | None
) -> dict[str, list[TrainState]]:
    """Every method over every seed. All students go to ``fit`` together, so the linear engine can
    stack the compatible ones."""
    make = student_factory(config, splits.train.n_features, splits.train.n_classes)
    device = default_device()
    states = {m.name: [new_state(m.name, m, make, seed, rationale_width, device) for seed in config.seeds] for m in methods}
    fit([s for group in states.values() for s in group], splits.train, splits.val, cache)
    return states


def run_experiment(
    config: ExperimentConfig, frame: pd.DataFrame, description: dict | None = None, progress: ProgressFn | None = None
) -> dict:
    """Run the whole comparison on ``frame`` and return the results dict (see report/)."""
    say = progress or (lambda message: None)
    methods = config.build_methods()
    d = config.data
    splits, _ = prepare(frame, d.label, d.id_column, d.val_fraction, d.test_fraction, d.split_seed)
    say(f"data: {len(splits.train)} train / {len(splits.val)} validation / {len(splits.test)} test rows")

    teacher, teacher_seconds = train_teacher(config, splits)
    cache = cache_model_outputs(teacher, [splits.train, splits.val, splits.test])
    teacher_test = test_logits(teacher, splits.test)
    teacher_pred = predicted_classes(teacher_test)
    say(f"teacher ({config.teacher.kind}) trained in {teacher_seconds:.2f}s")

    rationale_width = cache.take(splits.train.ids[:1]).rationale.shape[-1]
    started = time.perf_counter()
    students = distill(config, methods, splits, cache, rationale_width)
    say(f"{sum(len(v) for v in students.values())} students trained in {time.perf_counter() - started:.2f}s")

    results_methods = {}
    for name, states in students.items():
        runs = [classification_metrics(test_logits(s.model, splits.test), splits.test.y, teacher_pred) for s in states]
        results_methods[name] = {
            "test": summarize_runs(runs),
            "params": count_parameters(states[0].model),
            "train_seconds": sum(s.seconds for s in states) / len(states),
            "history": [s.history for s in states],
            "method": states[0].method.describe(),
        }
    return {
        "teacher": {
            "kind": config.teacher.kind,
            "test": summarize_runs([classification_metrics(teacher_test, splits.test.y)]),
            "params": count_parameters(teacher),
            "train_seconds": teacher_seconds,
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
                "classes": list(splits.train.classes),
            },
        },
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}, torch {torch.__version__}",
        "date": datetime.date.today().isoformat(),
    }
