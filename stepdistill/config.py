"""``stepdistill run``'s config (``ExperimentConfig``): tables, or text records read through
sentence features; its teacher and student kinds, methods, shared training, runs and tuning.
Validated by pydantic; importing or validating it imports no torch. What it shares with
lm-train's config (lm/config.py), its methods and their training, is ``methods.MethodsConfig``."""

from __future__ import annotations

import codecs
import typing
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from stepdistill.errors import StepDistillError
from stepdistill.files import StrictModel, read_yaml_config
from stepdistill.methods import PRESETS, MethodsConfig, StudentTraining, TuneConfig
from stepdistill.students.config import LogisticStudent, StudentConfig
from stepdistill.teachers.config import LogisticTeacher, TeacherConfig, TrainedHereTeacher


def _union_tags(union) -> frozenset[str]:
    """The ``kind`` values of a discriminated union of configs."""
    members = typing.get_args(typing.get_args(union)[0])
    return frozenset(tag for m in members for tag in typing.get_args(m.model_fields["kind"].annotation))


KIND_TAGS = _union_tags(TeacherConfig) | _union_tags(StudentConfig)


class DataConfig(StrictModel):
    path: Path | None = None
    label: str = "label"
    id_column: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_path: Path | None = Field(
        None, description="a fixed test file with the same columns: every repeat tests on it, and only train/validation vary"
    )
    unlabelled_path: Path | None = Field(
        None,
        description="an unlabelled pool: rows with the data's feature columns (with data.text, records with its text, choices and id columns; CSV,"
        " Parquet or JSONL; a label column is ignored) that the teacher labels (an LLM teacher: by its answers for their ids) and the students"
        " that learn from it train on; never validation or test rows",
    )
    stream_unlabelled: bool | Literal["auto"] = Field(
        "auto",
        description="keep the unlabelled pool and transfer set on disk and stream them through the teacher and every epoch (true), hold them in"
        " memory (false), or stream them when they would take more than 1 GB in memory (auto)",
    )
    shuffle_buffer: int = Field(
        1_048_576, ge=1, description="streamed rows shuffled together in an epoch; rows that fit in one buffer are shuffled as a whole, as in memory"
    )
    scale_numeric: bool = Field(True, description="standardize numeric columns (off for pixels already in [0, 1])")
    image_shape: tuple[int, int, int] | None = Field(None, description="(C, H, W) when each row is a flattened image")
    labelled_fraction: float = Field(
        1.0, gt=0, le=1, description="share of training rows whose labels students see (stratified); the teacher annotates all"
    )
    text: str | list[str] | None = Field(
        None, description="text records: the text field (or two, a pair such as [premise, hypothesis]; the question with choices)"
    )
    choices: str | None = Field(None, description="multiple choice: the column holding each row's answer choices (a list of strings)")
    text_encoder: Path | None = Field(None, description="a sentence-transformers model directory; default the bundled all-MiniLM-L6-v2")
    sep: str = Field(",", min_length=1, description="the field delimiter of CSV files (';', '\\t', '|', ...)")
    decimal: str = Field(".", min_length=1, max_length=1, description="the decimal mark of a CSV's numbers (',' for 39,1)")
    thousands: str | None = Field(
        None, min_length=1, max_length=1, description="the thousands separator of a CSV's numbers (',' for \"3,800\", '.' for 1.234,5)"
    )
    encoding: str = Field("utf-8", min_length=1, description="the text encoding of CSV and JSON Lines files (latin-1, cp1252, ...)")
    categorical: list[str] = Field(
        default_factory=list, description="feature columns to one-hot encode whatever their values (numeric codes, say)"
    )
    missing: Literal["error", "impute"] = Field(
        "error", description="missing feature values: an error, or imputed (numbers: the training mean; categories: a level of their own)"
    )
    long_texts: Literal["cut", "refuse"] = Field(
        "cut", description="texts longer than the sentence encoder's window: encoded from their beginning (and counted in a warning), or refused"
    )

    def read_options(self) -> dict:
        """The keyword options of ``data.io.read_frame`` that read the data files as configured."""
        return {"sep": self.sep, "decimal": self.decimal, "thousands": self.thousands, "encoding": self.encoding}

    def check(self) -> None:
        """Refuse reading options pandas would take without a word and misread with."""
        if self.thousands == self.decimal:
            raise StepDistillError(f"data.decimal and data.thousands are both {self.decimal!r}; a number needs two different marks — fix one of them")
        try:
            codecs.lookup(self.encoding)
        except LookupError as err:
            raise StepDistillError(f"data.encoding {self.encoding!r} is not an encoding Python knows; use e.g. utf-8, latin-1 or cp1252") from err

    def text_inputs(self):
        """How text fields become features (text/inputs.py), or None for tabular data."""
        if self.text is None:
            return None
        from stepdistill.text.inputs import TextInputs

        columns = (self.text,) if isinstance(self.text, str) else tuple(self.text)
        return TextInputs(columns, self.choices, None if self.text_encoder is None else str(self.text_encoder))


class TransferConfig(StrictModel):
    """A synthetic transfer set (Hinton et al. 2015; Bucilua et al. 2006): rows made from each
    run's training rows only, ``size`` times as many, which the teacher labels and every term
    that reads the teacher learns from (the hard term never: they have no label).

    ``munge``: MUNGE as published (Bucilua, Caruana & Niculescu-Mizil 2006, "Model compression"):
    each row's nearest neighbour in the encoded space; per attribute, with probability ``p``, a
    category is taken from the neighbour and a number drawn from a normal centred on the
    neighbour's value with standard deviation |difference| / ``spread``. ``gaussian``: each
    numeric column plus normal noise of ``noise`` times its standard deviation, categories kept."""

    kind: Literal["munge", "gaussian"] = "munge"
    size: float = Field(5.0, gt=0, le=1000, description="synthetic rows per training row")
    p: float = Field(0.5, gt=0, le=1, description="munge: the chance each attribute is swapped or redrawn")
    spread: float = Field(1.0, gt=0, description="munge: s, the local spread divisor (sd = |a - b| / s)")
    noise: float = Field(0.1, gt=0, description="gaussian: the noise's standard deviation in each numeric column's own")


class EvaluationConfig(StrictModel):
    """How results are repeated. Each repeat is a full rerun on other data: its own stratified
    train/validation/test split (``holdout``) or one fold of repeated stratified k-fold (``cv``:
    ``repeats`` x ``folds`` runs, each fold the test split once per repetition), its own labelled
    subset, a teacher refit on its training rows (teachers trained here) and its own student
    initialization and batch order. Intervals over repeats therefore cover what a user would see
    on other data, not only batch-order noise."""

    scheme: Literal["holdout", "cv"] = "holdout"
    repeats: int = Field(3, ge=1)
    folds: int = Field(5, ge=2, le=20, description="cv: folds per repetition")
    seed: int = Field(0, description="the first repeat's seed; repeat r uses seed + r")

    @property
    def runs(self) -> int:
        """How many train/test runs the scheme makes."""
        return self.repeats * (self.folds if self.scheme == "cv" else 1)


class ExperimentConfig(MethodsConfig):
    """``stepdistill run``'s config: the data (a table, or text records read through sentence
    features), the teacher, the student, the methods and their shared training, how results are
    repeated, and tuning."""

    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=LogisticTeacher)
    student: StudentConfig = Field(default_factory=LogisticStudent)
    methods: dict[str, dict] = Field(default_factory=lambda: {name: {} for name in PRESETS})
    training: StudentTraining | Literal["article"] = Field(
        default_factory=StudentTraining,
        description="the students' shared recipe, or 'article': each preset's own (the reference article's, for reproduction)",
    )
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tune: TuneConfig | None = None
    transfer: TransferConfig | None = Field(None, description="a synthetic transfer set the teacher labels for the distilled students")

    @model_validator(mode="before")
    @classmethod
    def _logistic_by_default(cls, raw):
        """A teacher or student section without ``kind`` means the logistic one."""
        if isinstance(raw, dict):
            for section in ("teacher", "student"):
                if isinstance(raw.get(section), dict) and "kind" not in raw[section]:
                    raw = {**raw, section: {**raw[section], "kind": "logistic"}}
        return raw

    def shared_training(self) -> dict:
        """The shared student training, or nothing with ``training: article`` (each preset's own)."""
        return {} if self.training == "article" else super().shared_training()

    def check(self) -> None:
        """Validate every method's settings now, before any data is read or anything runs."""
        self.check_methods()
        self.data.check()
        if isinstance(self.teacher, TrainedHereTeacher):
            self.teacher.method()
        if self.data.choices is not None and self.data.text is None:
            raise StepDistillError("data.choices needs data.text, the question column; set both")
        if self.data.text is not None and (self.data.image_shape is not None or not self.data.scale_numeric):
            raise StepDistillError("data.text makes sentence features, which are neither images nor pixels; drop data.image_shape and data.scale_numeric")
        if self.student.kind == "encoder":
            self._check_encoder_student()
        if self.transfer is not None or self.data.unlabelled_path is not None:
            self._check_unlabelled()
        if self.data.test_path is not None and self.evaluation.scheme == "cv":
            raise StepDistillError("evaluation.scheme cv moves the test split, but data.test_path fixes it; use scheme holdout with a test file")

    def _check_encoder_student(self) -> None:
        """A student that fine-tunes its encoder reads text records (data.text), in memory."""
        if self.data.text is None:
            raise StepDistillError("student.kind encoder fine-tunes a text encoder, and the data has no text; set data.text, or choose student.kind mlp")
        if self.data.unlabelled_path is not None:
            raise StepDistillError("student.kind encoder reads token ids, and an unlabelled pool of text records is read as sentence features; drop one of them")
        if self.teacher.kind not in ("llm", "file"):
            raise StepDistillError(
                f"student.kind encoder reads token ids, which a teacher of kind {self.teacher.kind!r} would read as numbers;"
                " teach it with an LLM's answers (teacher.kind llm) or a file of outputs (teacher.kind file)"
            )

    def _check_unlabelled(self) -> None:
        """An unlabelled pool or transfer set: rows for a teacher that labels new rows; a transfer
        set is made of a table's rows, and a pool of text records may go to a teacher that
        answered them by record id (an LLM's answers), which matches them by data.id_column."""
        pool = self.data.unlabelled_path is not None
        what, drop = ("an unlabelled pool (data.unlabelled_path)", "data.unlabelled_path") if pool else ("a transfer set", "transfer")
        if self.data.text is not None and self.transfer is not None:
            raise StepDistillError("a transfer set is made of a table's rows, and data.text records are read through sentence features; drop transfer")
        if self.data.text is not None and self.data.stream_unlabelled is True:
            raise StepDistillError("a pool of text records is held in memory (its texts are encoded whole); set data.stream_unlabelled: auto or false")
        if self.data.text is not None and self.teacher.answers_by_record_id:
            if self.data.id_column is None:
                raise StepDistillError(
                    f"an unlabelled pool of text records is matched to the teacher's answers (teacher.kind: {self.teacher.kind}) by record id, and the data has no id column;"
                    " set data.id_column, and give the pool's records that column too"
                )
            return
        if not self.teacher.labels_new_rows:
            raise StepDistillError(
                f"{what} needs a teacher that labels new rows, and a teacher of kind {self.teacher.kind!r} gives outputs for the data's rows only;"
                f" drop {drop} or use a teacher model"
            )

    def relative_paths(self) -> list[Path]:
        """The config's file paths that are relative to the working directory."""
        paths = [self.data.path, self.data.test_path, self.data.unlabelled_path, *self.teacher.files()]
        return [path for path in paths if path is not None and not path.is_absolute()]


def _data_file(config_path: Path, value: Path, setting: str) -> Path:
    """``value`` of ``setting`` resolved against the config file's folder, where relative paths
    start; a missing file is named with both, since users expect the current directory."""
    resolved = config_path.parent / value
    if not resolved.exists():
        raise StepDistillError(
            f"{setting} {value} not found: looked for {resolved} (relative paths start at the folder of the config file,"
            f" {config_path.parent}) — fix {setting}"
        )
    return resolved


def load_config(path: Path) -> ExperimentConfig:
    keys = "data, teacher, student, methods, training, evaluation, tune, transfer"
    config = read_yaml_config(path, ExperimentConfig, keys, union_tags=KIND_TAGS, model=ExperimentConfig)
    if config.data.path is None:
        raise StepDistillError(f"config {path} has no data.path; set it to a CSV, Parquet or JSONL file")
    # Files named in the config are relative to the config file, like any other include.
    config.data.path = _data_file(path, config.data.path, "data.path")
    if config.data.test_path is not None:
        config.data.test_path = _data_file(path, config.data.test_path, "data.test_path")
    if config.data.unlabelled_path is not None:
        config.data.unlabelled_path = _data_file(path, config.data.unlabelled_path, "data.unlabelled_path")
    if config.data.text_encoder is not None:
        config.data.text_encoder = path.parent / config.data.text_encoder
    for field in ("path", "weights", "outputs"):
        if getattr(config.teacher, field, None) is not None:
            setattr(config.teacher, field, path.parent / getattr(config.teacher, field))
    if getattr(config.student, "model", None) is not None:
        config.student.model = str(path.parent / config.student.model)
    config.check()
    return config
