"""Built-in demos: data made on the fly, shipped in pip packages, or the released
distilling-step-by-step data (found with ``--data-dir``), with the configuration that suits it.
Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stepdistill.config import DataConfig, EvaluationConfig, ExperimentConfig, TransferConfig
from stepdistill.data import bundled
from stepdistill.data.llm_outputs import dsbs_directory, read_dsbs
from stepdistill.data.synthetic import linear_binary, nonlinear_binary
from stepdistill.errors import StepDistillError
from stepdistill.methods import StudentTraining
from stepdistill.students.config import ChoiceScorerStudent, EncoderStudent, LogisticStudent, MLPStudent
from stepdistill.teachers.config import CNNTeacher, LightGBMTeacherConfig, LLMTeacherConfig, LogisticTeacher, MLPTeacher

DEMO_ROWS = 100_000
DEMO_FEATURES = 10
# The tabular demos' teachers stand for one trained on all the labels there are: with
# sweep-data, the students see a share of the labels and the teacher saw every one (sees: all),
# the setting in which a teacher has labels to pass on; the reports say so.
SEES = "all"


def article() -> tuple[ExperimentConfig, pd.DataFrame]:
    """The reference article's setting: logistic teacher and students on 100,000 x 10 linear data,
    batch 512, teacher 5 epochs, students 10, the article's loss weights and its recipes (SGD for
    the simpler methods, Adam with a plateau schedule for enhanced, which therefore gets a
    control trained its way)."""
    return ExperimentConfig(training="article", teacher=LogisticTeacher(sees=SEES)), linear_binary(DEMO_ROWS, DEMO_FEATURES, seed=0)


def nonlinear() -> tuple[ExperimentConfig, pd.DataFrame]:
    """An MLP teacher on data a linear model cannot fit, distilled into logistic students whose
    contributions are projected onto the teacher's last hidden layer."""
    config = ExperimentConfig(teacher=MLPTeacher(kind="mlp", hidden=(64, 64), sees=SEES), student=LogisticStudent())
    return config, nonlinear_binary(DEMO_ROWS, DEMO_FEATURES, seed=0)


def adult_logistic() -> tuple[ExperimentConfig, pd.DataFrame]:
    """UCI Adult (32,561 people, mixed types, income above 50K): a LightGBM teacher trained on the
    raw columns, distilled into logistic students that learn its TreeSHAP explanations (their
    own contributions summed per raw column, plus the bias). Every method trains with the shared
    recipe (Adam, learning rate chosen per method on the validation split, early stopping)."""
    config = ExperimentConfig(
        data=DataConfig(label="income"),
        # 100 trees of 15 leaves: TreeSHAP costs trees x leaves x depth^2 per row, and these
        # explain all 32,561 rows in seconds, not a minute, for a fraction of a point of accuracy.
        teacher=LightGBMTeacherConfig(kind="lightgbm", params={"n_estimators": 100, "learning_rate": 0.1, "num_leaves": 15}, sees=SEES),
        student=LogisticStudent(),
    )
    return config, bundled.adult()


def adult() -> tuple[ExperimentConfig, pd.DataFrame]:
    """Adult's teacher (``adult_logistic``) distilled where distillation can pay: into MLP students
    (two layers of 64) that the teacher also teaches on a MUNGE transfer set five times the
    training rows (made from each run's training rows only, labelled by the teacher; the control
    learns from the labels alone, as it would without one)."""
    config, frame = adult_logistic()
    update = {"student": MLPStudent(kind="mlp", hidden=(64, 64)), "transfer": TransferConfig(kind="munge", size=5.0)}
    return config.model_copy(update=update), frame


def mnist() -> tuple[ExperimentConfig, pd.DataFrame]:
    """5,000 MNIST digits: a CNN teacher distilled into an MLP with one hidden layer of 16 units
    (fewer parameters than the teacher and about 80 times fewer multiply-adds), whose hidden layer
    learns, through a projection, the teacher's pooled feature maps. Every method trains with
    the same recipe (Adam, lr 0.001, batches of 64, at most 30 epochs with early stopping)."""
    config = ExperimentConfig(
        data=DataConfig(label="label", scale_numeric=False, image_shape=bundled.IMAGE_SHAPE_MNIST),
        teacher=CNNTeacher(kind="cnn", channels=(16, 32), sees=SEES),
        student=MLPStudent(kind="mlp", hidden=(16,)),
        training=StudentTraining(lr=0.001, batch_size=64, epochs=30, early_stopping_patience=4),
    )
    return config, bundled.mnist_5k()


# The paper's four settings (Hsieh et al. 2023) as methods: standard fine-tuning on the human
# labels (the control); standard distillation on the teacher's labels alone; distilling step by
# step, the teacher's labels and a pull of the student's hidden layer toward the embedding of
# the teacher's rationale (cosine, half the loss); and the enhanced method on the same two.
# alpha 0: the distilled students learn from the teacher only, as in the paper, where the teacher
# labels data that has no human labels.
LLM_METHODS = {
    "baseline": {},
    "traditional": {"alpha": 0.0, "temperature": 1.0},
    "step_by_step": {"alpha": 0.0, "beta": 0.5, "rationale_distance": "cosine", "temperature": 1.0},
    "enhanced": {"alpha": 0.0, "beta": 0.5, "temperature": 1.0},
}
# Every method trains the same way: Adam, at most 20 epochs with early stopping on validation.
LLM_TRAINING = StudentTraining(lr=0.001, epochs=20, early_stopping_patience=4)
# The fine-tuned students' frozen layers: the embeddings and this many of MiniLM's six.
ENCODER_FROZEN_LAYERS = 3
# The same four settings for students that fine-tune their encoder, the enhanced method fitted to
# 3 epochs: its rationale weight ramped up over the first two, and no consistency term, whose
# second pass (R-Drop) would cost as much as the step itself.
ENCODER_METHODS = LLM_METHODS | {"enhanced": LLM_METHODS["enhanced"] | {"ramp_epochs": 2, "consistency": 0.0}}


# e-SNLI's released files are split by the presets at a size that trains fine-tuned students in
# minutes on a CPU: the first records of the validation file (carved into train and validation
# in each run) and of the test file. --full reads the files whole.
ESNLI_SUBSET = {"valid": 1000, "test": 1000}
ESNLI_DATA = DataConfig(label="label", id_column="id", text=["premise", "hypothesis"], val_fraction=0.1)
# The fine-tuned students' recipe: AdamW, the head at lr 0.001 and the encoder at 1e-4, warmed up
# over the first tenth of the steps and decayed linearly to 0 over 3 epochs of batches of 32, the
# last epoch kept: it ends the schedule, and a validation split this small would choose an earlier
# one by noise (its cross-entropy rises as a student grows surer, before its accuracy falls).
ENCODER_TRAINING = StudentTraining(optimizer="adamw", lr=0.001, epochs=3, batch_size=32, scheduler="warmup_linear", early_stopping_patience=None)


def esnli(data_dir: Path, full: bool = False) -> tuple[ExperimentConfig, pd.DataFrame, pd.DataFrame]:
    """e-SNLI with PaLM's labels and rationales, students that fine-tune their encoder: the
    bundled all-MiniLM-L6-v2 reading premise and hypothesis apart (siamese, ``[u, v, |u - v|,
    u * v]``) under an MLP head of 256 units, its embeddings and lowest ``ENCODER_FROZEN_LAYERS``
    layers frozen (their outputs computed once), the rest trained with ``ENCODER_TRAINING``. The
    release holds validation and test files only: train and validation splits are carved from
    the validation records in each run, and the test records are the fixed test split; by
    default the first records of each (``ESNLI_SUBSET``), with ``full`` all 9,842 and 9,824."""
    student = EncoderStudent(kind="encoder", hidden=(256,), encoder_lr=1e-4, freeze_layers=ENCODER_FROZEN_LAYERS)
    return _esnli(data_dir, full, student, ENCODER_METHODS, ENCODER_TRAINING)


def esnli_frozen(data_dir: Path, full: bool = False) -> tuple[ExperimentConfig, pd.DataFrame, pd.DataFrame]:
    """``esnli``'s data and splits, with the students it is compared with: an MLP (256 hidden
    units) on frozen all-MiniLM-L6-v2 features of premise and hypothesis, ``[u, v, |u - v|, u *
    v]``, the four settings in ``LLM_METHODS`` trained with ``LLM_TRAINING``."""
    return _esnli(data_dir, full, MLPStudent(kind="mlp", hidden=(256,)), LLM_METHODS, LLM_TRAINING)


def _esnli(data_dir: Path, full: bool, student, methods: dict, training: StudentTraining) -> tuple[ExperimentConfig, pd.DataFrame, pd.DataFrame]:
    """The e-SNLI presets' config, ``student`` taught by PaLM's answers, with the released
    validation records (train and validation splits come from them) and test records, whole or
    ``ESNLI_SUBSET``'s first."""
    frame, _ = read_dsbs(data_dir, "esnli", "valid")
    test_frame, _ = read_dsbs(data_dir, "esnli", "test")
    data = ESNLI_DATA
    if not full:
        # A validation split of 150 records rather than 100: the one that tells the methods apart.
        data = ESNLI_DATA.model_copy(update={"val_fraction": 0.15})
        frame, test_frame = frame.iloc[: ESNLI_SUBSET["valid"]], test_frame.iloc[: ESNLI_SUBSET["test"]]
    teacher = LLMTeacherConfig(kind="llm", outputs=data_dir, format="dsbs", task="esnli")
    return ExperimentConfig(data=data, teacher=teacher, student=student, methods=methods, training=training), frame, test_frame


def cqa(data_dir: Path) -> tuple[ExperimentConfig, pd.DataFrame, pd.DataFrame]:
    """CommonsenseQA with PaLM's answers and rationales: train and validation splits carved from
    the 9,741 training records, the 1,221 test records (CommonsenseQA's own validation set) the
    fixed test split. Students: one MLP scorer (256 hidden units) shared by the five (question,
    choice) pairs, on frozen all-MiniLM-L6-v2 features."""
    frame, _ = read_dsbs(data_dir, "cqa", "train")
    test_frame, _ = read_dsbs(data_dir, "cqa", "test")
    config = ExperimentConfig(
        data=DataConfig(label="label", id_column="id", text="question", choices="choices", val_fraction=0.1),
        teacher=LLMTeacherConfig(kind="llm", outputs=data_dir, format="dsbs", task="cqa"),
        student=ChoiceScorerStudent(kind="choice_scorer", hidden=(256,)),
        methods=LLM_METHODS,
        training=LLM_TRAINING,
    )
    return config, frame, test_frame


DEMOS = {
    "article": article,
    "nonlinear": nonlinear,
    "adult": adult,
    "adult_logistic": adult_logistic,
    "mnist": mnist,
    "esnli": esnli,
    "esnli_frozen": esnli_frozen,
    "cqa": cqa,
}
# Presets of released data, found with --data-dir.
DATA_DIR_PRESETS = ("esnli", "esnli_frozen", "cqa")
# Presets that read a subset of their data unless told --full.
SUBSET_PRESETS = ("esnli", "esnli_frozen")


def demo(name: str, repeats: int, data_dir: Path | None = None, full: bool = False) -> tuple[ExperimentConfig, pd.DataFrame, pd.DataFrame | None]:
    """The preset's config (with ``repeats`` runs), data and fixed test rows (None: carved per
    run); ``full``: a subset preset's data whole."""
    if name not in DEMOS:
        raise StepDistillError(f"unknown preset '{name}'; choose one of: {', '.join(DEMOS)}")
    if repeats < 1:
        raise StepDistillError(f"--repeats must be at least 1 (got {repeats})")
    if full and name not in SUBSET_PRESETS:
        raise StepDistillError(f"preset '{name}' always reads its data whole; --full is for {', '.join(SUBSET_PRESETS)}")
    if name in SUBSET_PRESETS:
        config, frame, test_frame = DEMOS[name](dsbs_directory(data_dir), full)
    elif name in DATA_DIR_PRESETS:
        config, frame, test_frame = DEMOS[name](dsbs_directory(data_dir))
    else:
        if data_dir is not None:
            raise StepDistillError(f"preset '{name}' reads no data folder; --data-dir is for {', '.join(DATA_DIR_PRESETS)}")
        (config, frame), test_frame = DEMOS[name](), None
    return config.model_copy(update={"evaluation": EvaluationConfig(repeats=repeats)}), frame, test_frame
