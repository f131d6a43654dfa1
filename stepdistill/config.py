"""The experiment configuration (the YAML file of ``stepdistill run``), validated by pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stepdistill.errors import StepDistillError
from stepdistill.methods import PRESETS, Method, build_method


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    path: Path | None = None
    label: str = "label"
    id_column: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    split_seed: int = 0


class TeacherConfig(_Strict):
    kind: Literal["logistic", "mlp"] = "logistic"
    hidden: tuple[int, ...] = Field((64, 64), min_length=1)
    rationale_layer: int = Field(-1, description="mlp: which hidden layer's activations are the rationale (0 = first, -1 = last)")
    rationale: Literal["contributions", "score"] = Field(
        "contributions", description="logistic teachers: per-feature contributions, or the article's scalar score"
    )
    seed: int = 0
    training: dict = Field(default_factory=dict, description="overrides of the teacher's training settings")

    def training_overrides(self) -> dict:
        """The reference article trains a logistic teacher for 5 epochs of SGD; an MLP needs Adam."""
        defaults = {"epochs": 5} if self.kind == "logistic" else {"epochs": 10, "optimizer": "adam", "lr": 0.003}
        return {**defaults, **self.training}

    @model_validator(mode="after")
    def _rationale_layer_exists(self):
        if not -len(self.hidden) <= self.rationale_layer < len(self.hidden):
            raise ValueError(
                f"rationale_layer {self.rationale_layer} does not exist: the teacher has {len(self.hidden)} hidden layers"
                f" (0..{len(self.hidden) - 1}, or -1 for the last)"
            )
        return self


class StudentConfig(_Strict):
    kind: Literal["logistic", "mlp"] = "logistic"
    hidden: tuple[int, ...] = Field((32,), min_length=1)


class ExperimentConfig(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    methods: dict[str, dict] = Field(default_factory=lambda: {name: {} for name in PRESETS})
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: dict[str, dict]) -> dict[str, dict]:
        for name in methods:
            if name not in PRESETS:
                raise ValueError(f"unknown method '{name}'; choose from {', '.join(PRESETS)}")
        if not methods:
            raise ValueError(f"no methods; choose from {', '.join(PRESETS)}")
        return {name: overrides or {} for name, overrides in methods.items()}

    def build_methods(self) -> list[Method]:
        methods = []
        for name, overrides in self.methods.items():
            try:
                methods.append(build_method(name, overrides))
            except ValidationError as err:
                raise StepDistillError(one_line(err, prefix=f"methods.{name}")) from err
        return methods

    def teacher_method(self) -> Method:
        try:
            return build_method("baseline", self.teacher.training_overrides(), name="teacher")
        except ValidationError as err:
            raise StepDistillError(one_line(err, prefix="teacher.training")) from err


def one_line(err: ValidationError, prefix: str = "") -> str:
    """The first validation problem as ``where: what (got value)``, with a hint to fix it."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    message = first["msg"].removeprefix("Value error, ")
    got = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
    return f"invalid config at {where or 'top level'}: {message}{got}; fix that value and run again"


def load_config(path: Path) -> ExperimentConfig:
    if not path.is_file():
        raise StepDistillError(f"config file not found: {path}; pass the path of a YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise StepDistillError(f"config {path} is not valid YAML ({str(err).splitlines()[0]}); fix its syntax") from err
    if not isinstance(raw, dict):
        raise StepDistillError(f"config {path} must be a YAML mapping with keys data, teacher, student, methods, seeds")
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise StepDistillError(one_line(err)) from err
    if config.data.path is None:
        raise StepDistillError(f"config {path} has no data.path; set it to a CSV or Parquet file")
    if not config.data.path.is_absolute():  # relative to the config file, like any other include
        config.data.path = path.parent / config.data.path
    config.build_methods()  # validate overrides now, before anything runs
    config.teacher_method()
    return config
