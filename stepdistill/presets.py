"""Built-in demos: data made on the fly or shipped in pip packages, with the configuration that
suits it. Nothing is downloaded."""

from __future__ import annotations

import pandas as pd

from stepdistill.config import DataConfig, ExperimentConfig
from stepdistill.data import linear_binary, nonlinear_binary
from stepdistill.errors import StepDistillError
from stepdistill.students.kinds import LogisticStudent
from stepdistill.teachers.kinds import MLPTeacher

DEMO_ROWS = 100_000
DEMO_FEATURES = 10


def article() -> tuple[ExperimentConfig, pd.DataFrame]:
    """The reference article's setting: logistic teacher and students on 100,000 x 10 linear data,
    batch 512, teacher 5 epochs, students 10, the article's loss weights and optimizers."""
    return ExperimentConfig(), linear_binary(DEMO_ROWS, DEMO_FEATURES, seed=0)


def nonlinear() -> tuple[ExperimentConfig, pd.DataFrame]:
    """An MLP teacher on data a linear model cannot fit, distilled into logistic students whose
    contributions are projected onto the teacher's last hidden layer."""
    config = ExperimentConfig(teacher=MLPTeacher(kind="mlp", hidden=(64, 64)), student=LogisticStudent())
    return config, nonlinear_binary(DEMO_ROWS, DEMO_FEATURES, seed=0)


DEMOS = {"article": article, "nonlinear": nonlinear}


def demo(name: str, n_seeds: int) -> tuple[ExperimentConfig, pd.DataFrame]:
    if name not in DEMOS:
        raise StepDistillError(f"unknown preset '{name}'; choose one of: {', '.join(DEMOS)}")
    if n_seeds < 1:
        raise StepDistillError(f"--seeds must be at least 1 (got {n_seeds})")
    config, frame = DEMOS[name]()
    return config.model_copy(update={"seeds": list(range(n_seeds))}), frame
