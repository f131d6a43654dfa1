"""What an experiment's runs produce, as the loop, the summary and the checkpoints pass it on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stepdistill.engines.base import TrainState
from stepdistill.run_dir import RunStudents


@dataclass
class TeacherFacts:
    """What a run's teacher tells the experiment: its training time (None: trained elsewhere),
    parameter count (None: not a parameter count), and rationale width (None: it gives none,
    and ``rationale_unavailable`` may say why; a written rationale has no width). Run 0's decide
    which methods run."""

    train_seconds: float | None
    params: int | None
    rationale_width: int | None
    rationale_unavailable: str | None
    notes: tuple[str, ...] = ()


@dataclass
class Trained:
    """A method's student in one run: the one whose settings scored best on validation."""

    state: TrainState
    settings: dict
    validation: list[dict]  # every candidate's settings and validation metric


@dataclass(frozen=True)
class Labelled:
    """Which training and validation rows' human labels the students of a run see at a labelled
    fraction: (N,) bool masks of the run's training and validation rows, None when all."""

    train: np.ndarray | None
    val: np.ndarray | None


@dataclass
class RunResult:
    """What one run measured on its test split at one labelled fraction: metrics of the teacher,
    of the majority-class rule (None where labels are free text) and of each method (its test
    and validation metrics, flags and history); for comparisons within one split, whether each
    method got each test row right (``correct``) and, for classifiers, its class probabilities
    and the rows' labels; and what every model predicted for each test row (``test_rows``:
    columns ``id``, ``label``, ``teacher`` and one per method, as strings, "" where a model gave
    no answer), what the run directory's test_predictions.csv holds."""

    teacher: dict
    majority: dict | None
    methods: dict[str, dict] = field(default_factory=dict)
    correct: dict[str, np.ndarray] = field(default_factory=dict)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    y_test: np.ndarray | None = None
    test_rows: dict[str, list[str]] = field(default_factory=dict)
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    n_unlabelled: int = 0  # rows without labels (pool, transfer set) the distilled students learned from besides n_train
    unlabelled_seconds: float = 0.0  # making, encoding and labelling them (and, streamed, writing them to disk)
    n_features: int | None = None
    speed: dict[str, dict] | None = None  # measured in run 0 only (speed.py)


@dataclass
class FinishedRun:
    """What a run leaves for the summary: its results at each labelled fraction (in order), the
    students of the last fraction, its teacher's facts, in run 0 only the seconds each method's
    student takes to train alone, and its rows (``split``: the ids of its ``train``,
    ``validation`` and ``test`` rows, and of the rows whose labels students see at each
    fraction, ``labelled``), what the run directory's splits.json holds."""

    index: int
    results: list[RunResult]
    students: RunStudents
    teacher: TeacherFacts
    seconds: dict[str, float]
    split: dict
