"""The experiment configuration (the YAML file of ``stepdistill run``), validated by pydantic."""

from __future__ import annotations

import itertools
import typing
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stepdistill.errors import StepDistillError, validation_message
from stepdistill.files import read_yaml_config
from stepdistill.methods import PRESETS, Method, TrainingConfig, build_method
from stepdistill.students.kinds import LogisticStudent, StudentConfig
from stepdistill.teachers.kinds import LogisticTeacher, TeacherConfig, TrainedHereTeacher


def _union_tags(union) -> frozenset[str]:
    """The ``kind`` values of a discriminated union of configs."""
    members = typing.get_args(typing.get_args(union)[0])
    return frozenset(tag for m in members for tag in typing.get_args(m.model_fields["kind"].annotation))


KIND_TAGS = _union_tags(TeacherConfig) | _union_tags(StudentConfig)
# The method every other is compared with: the same student on the labels alone.
CONTROL = "baseline"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    path: Path | None = None
    label: str = "label"
    id_column: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_path: Path | None = Field(
        None, description="a fixed test file with the same columns: every repeat tests on it, and only train/validation vary"
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
    categorical: list[str] = Field(
        default_factory=list, description="feature columns to one-hot encode whatever their values (numeric codes, say)"
    )
    missing: Literal["error", "impute"] = Field(
        "error", description="missing feature values: an error, or imputed (numbers: the training mean; categories: a level of their own)"
    )

    def text_inputs(self):
        """How text fields become features (text/inputs.py), or None for tabular data."""
        if self.text is None:
            if self.choices is not None:
                raise StepDistillError("data.choices needs data.text, the question column; set both")
            return None
        from stepdistill.text.inputs import TextInputs

        columns = (self.text,) if isinstance(self.text, str) else tuple(self.text)
        return TextInputs(columns, self.choices, None if self.text_encoder is None else str(self.text_encoder))


class EvaluationConfig(_Strict):
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


AUTO = "auto"
# Learning rates tried on the validation split when the student training's lr is "auto":
# wide enough for SGD-sized and Adam-sized steps on standardized features.
LR_CANDIDATES = (0.003, 0.01, 0.03)
# Batch sizes chosen by "auto" keep at least this many optimizer steps per epoch.
MIN_STEPS_PER_EPOCH = 32


class StudentTraining(TrainingConfig):
    """One training recipe for the students of every method, so that a method is compared with a
    control trained the same way (optimizer, schedule, budget). ``lr: auto`` tries
    ``LR_CANDIDATES`` per method on the validation split; ``batch_size: auto`` keeps at least
    ``MIN_STEPS_PER_EPOCH`` steps per epoch (between 32 and 512 rows). ``epochs`` is a cap:
    training stops when the validation loss has not improved for ``early_stopping_patience``
    epochs, and keeps the best weights. A method that overrides any of these gets a control of
    its own trained with its recipe (``baseline@<method>``)."""

    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float | Literal["auto"] = Field(AUTO, description="a learning rate, or auto: chosen on validation")
    epochs: int = Field(100, ge=1, description="most epochs; early stopping usually ends training sooner")
    batch_size: int | Literal["auto"] = AUTO
    scheduler: Literal["none", "plateau", "cosine", "step"] = "plateau"
    plateau_patience: int = Field(3, ge=0)
    early_stopping_patience: int | None = Field(8, ge=1)

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, lr):
        if lr != AUTO and not lr > 0:
            raise ValueError("lr must be positive or auto")
        return lr

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, batch_size):
        if batch_size != AUTO and batch_size < 1:
            raise ValueError("batch_size must be at least 1 or auto")
        return batch_size


def auto_batch_size(n_train: int) -> int:
    """The largest power of two from 32 to 512 that leaves ``MIN_STEPS_PER_EPOCH`` steps per epoch."""
    size = 512
    while size > 32 and n_train / size < MIN_STEPS_PER_EPOCH:
        size //= 2
    return size


class TuneConfig(_Strict):
    """Hyper-parameters chosen per method on the validation split (never the test split): every
    combination of ``grid`` values that the method accepts is trained with the first seed, and
    the one with the best validation ``metric`` is then trained with every seed."""

    grid: dict[str, list] = Field(default_factory=dict, description="method setting -> candidate values")
    metric: Literal["log_loss", "accuracy"] = "log_loss"

    @field_validator("grid")
    @classmethod
    def _known_settings(cls, grid: dict[str, list]) -> dict[str, list]:
        known = set().union(*(preset.model_fields for preset in PRESETS.values()))
        for name, values in grid.items():
            if name not in known:
                raise ValueError(f"unknown setting '{name}'; methods take: {', '.join(sorted(known))}")
            if not values:
                raise ValueError(f"no candidate values for '{name}'")
        return grid


class ExperimentConfig(_Strict):
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

    @model_validator(mode="before")
    @classmethod
    def _logistic_by_default(cls, raw):
        """A teacher or student section without ``kind`` means the logistic one."""
        if isinstance(raw, dict):
            for section in ("teacher", "student"):
                if isinstance(raw.get(section), dict) and "kind" not in raw[section]:
                    raw = {**raw, section: {**raw[section], "kind": "logistic"}}
        return raw

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: dict[str, dict]) -> dict[str, dict]:
        """Each method is a preset by name, or any name with ``preset:`` among its overrides
        (e.g. ``no_curriculum: {preset: enhanced, ramp_epochs: 0}``)."""
        methods = {name: overrides or {} for name, overrides in methods.items()}
        for name, overrides in methods.items():
            preset = overrides.get("preset", name)
            if preset not in PRESETS:
                raise ValueError(f"unknown method '{preset}'; choose from {', '.join(PRESETS)} (or give a preset: key)")
        if not methods:
            raise ValueError(f"no methods; choose from {', '.join(PRESETS)}")
        return methods

    def preset_of(self, name: str) -> str:
        return self.methods[name].get("preset", name)

    def check(self) -> None:
        """Validate every method's settings now, before any data is read or anything runs."""
        for name in self.methods:
            for candidate in self.candidates(name, n_train=10_000):
                self.build_method(name, candidate)
        if isinstance(self.teacher, TrainedHereTeacher):
            self.teacher.method()
        text = self.data.text_inputs()
        if text is not None and (self.data.image_shape is not None or not self.data.scale_numeric):
            raise StepDistillError("data.text makes sentence features, which are neither images nor pixels; drop data.image_shape and data.scale_numeric")
        if self.data.test_path is not None and self.evaluation.scheme == "cv":
            raise StepDistillError("evaluation.scheme cv moves the test split, but data.test_path fixes it; use scheme holdout with a test file")

    def build_method(self, name: str, settings: dict) -> Method:
        """Method ``name`` with ``settings`` (one of ``candidates``)."""
        try:
            return build_method(self.preset_of(name), settings, name=name)
        except ValidationError as err:
            raise StepDistillError(validation_message(err, prefix=f"methods.{name}", model=PRESETS.get(self.preset_of(name)))) from err
        except ValueError as err:  # a balancer or weights naming terms the method lacks
            raise StepDistillError(f"invalid config at methods.{name}: {err}; fix it and run again") from err

    def base_settings(self, name: str, n_train: int | None) -> dict:
        """Method ``name``'s settings before tuning: the shared student training (unless
        ``training: article``), under the method's own overrides; an auto batch size resolved
        for ``n_train`` training rows (kept "auto" when None)."""
        shared = {} if self.training == "article" else self.training.model_dump()
        settings = {**shared, **{k: v for k, v in self.methods[name].items() if k != "preset"}}
        if settings.get("batch_size") == AUTO and n_train is not None:
            settings["batch_size"] = auto_batch_size(n_train)
        return settings

    def tuning_grid(self, name: str) -> dict[str, list]:
        """The settings tried on the validation split for method ``name``: ``tune.grid``'s that
        the method accepts, and the learning-rate candidates when its lr is auto."""
        accepted = PRESETS[self.preset_of(name)].model_fields
        grid = {k: list(v) for k, v in (self.tune.grid if self.tune else {}).items() if k in accepted}
        if self.base_settings(name, None).get("lr") == AUTO:
            grid.setdefault("lr", list(LR_CANDIDATES))
        return grid

    def candidates(self, name: str, n_train: int) -> list[dict]:
        """Every combination of settings method ``name`` trains with on ``n_train`` training
        rows; the one with the best validation metric is kept."""
        base = {k: v for k, v in self.base_settings(name, n_train).items() if v != AUTO}
        grid = self.tuning_grid(name)
        return [{**base, **dict(zip(grid, values))} for values in itertools.product(*grid.values())]

    def recipe(self, name: str) -> dict:
        """How method ``name``'s students are optimized, as compared between a method and its
        control: each training setting's value before tuning (``auto`` kept), or its candidates
        where it is tuned."""
        grid = self.tuning_grid(name)
        return {field: grid.get(field, value) for field, value in self.training_settings(name).items()}

    def training_settings(self, name: str) -> dict:
        """Method ``name``'s training settings before tuning (``auto`` kept), its preset's
        defaults filled in: what another method needs to train the same way."""
        preset_defaults = PRESETS[self.preset_of(name)]().model_dump()
        base = self.base_settings(name, None)
        return {field: base.get(field, preset_defaults[field]) for field in TrainingConfig.model_fields}

    def with_matched_controls(self) -> tuple[ExperimentConfig, dict[str, str | None]]:
        """This config with a control added for every training recipe that differs from the
        baseline's (``baseline@<method>``: the baseline method trained with that method's
        recipe), and the control each method is compared with (None for the controls, and for
        every method when no baseline is configured)."""
        if CONTROL not in self.methods:
            return self, {name: None for name in self.methods}
        methods, control_of, by_recipe = dict(self.methods), {CONTROL: None}, {}
        control_recipe = self.recipe(CONTROL)
        own = {k: v for k, v in self.methods[CONTROL].items() if k not in TrainingConfig.model_fields}
        for name in self.methods:
            if name == CONTROL:
                continue
            recipe = self.recipe(name)
            if recipe == control_recipe:
                control_of[name] = CONTROL
                continue
            key = repr(sorted(recipe.items()))
            if key not in by_recipe:
                by_recipe[key] = f"{CONTROL}@{name}"
                methods[by_recipe[key]] = {**own, **self.training_settings(name), "preset": CONTROL}
            control_of[name] = by_recipe[key]
        for name in set(methods) - set(control_of):
            control_of[name] = None
        return self.model_copy(update={"methods": methods}), control_of


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
    keys = "data, teacher, student, methods, training, evaluation"
    config = read_yaml_config(path, ExperimentConfig, keys, union_tags=KIND_TAGS, model=ExperimentConfig)
    if config.data.path is None:
        raise StepDistillError(f"config {path} has no data.path; set it to a CSV, Parquet or JSONL file")
    # Files named in the config are relative to the config file, like any other include.
    config.data.path = _data_file(path, config.data.path, "data.path")
    if config.data.test_path is not None:
        config.data.test_path = _data_file(path, config.data.test_path, "data.test_path")
    if config.data.text_encoder is not None:
        config.data.text_encoder = path.parent / config.data.text_encoder
    for field in ("path", "weights", "outputs"):
        if getattr(config.teacher, field, None) is not None:
            setattr(config.teacher, field, path.parent / getattr(config.teacher, field))
    config.check()
    return config
