"""The experiment configuration (the YAML file of ``stepdistill run``), validated by pydantic."""

from __future__ import annotations

import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stepdistill.errors import StepDistillError, validation_message
from stepdistill.methods import PRESETS, Method, build_method
from stepdistill.students.kinds import LogisticStudent, StudentConfig
from stepdistill.teachers.kinds import LogisticTeacher, TeacherConfig, TrainedHereTeacher


def _union_tags(union) -> frozenset[str]:
    """The ``kind`` values of a discriminated union of configs."""
    members = typing.get_args(typing.get_args(union)[0])
    return frozenset(tag for m in members for tag in typing.get_args(m.model_fields["kind"].annotation))


KIND_TAGS = _union_tags(TeacherConfig) | _union_tags(StudentConfig)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    path: Path | None = None
    label: str = "label"
    id_column: str | None = None
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    split_seed: int = 0
    scale_numeric: bool = Field(True, description="standardize numeric columns (off for pixels already in [0, 1])")
    image_shape: tuple[int, int, int] | None = Field(None, description="(C, H, W) when each row is a flattened image")


class ExperimentConfig(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=LogisticTeacher)
    student: StudentConfig = Field(default_factory=LogisticStudent)
    methods: dict[str, dict] = Field(default_factory=lambda: {name: {} for name in PRESETS})
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)

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
        for name in methods:
            if name not in PRESETS:
                raise ValueError(f"unknown method '{name}'; choose from {', '.join(PRESETS)}")
        if not methods:
            raise ValueError(f"no methods; choose from {', '.join(PRESETS)}")
        return {name: overrides or {} for name, overrides in methods.items()}

    def check(self) -> None:
        """Validate every override now, before any data is read or anything runs."""
        self.build_methods()
        if isinstance(self.teacher, TrainedHereTeacher):
            self.teacher.method()

    def build_methods(self) -> list[Method]:
        methods = []
        for name, overrides in self.methods.items():
            try:
                methods.append(build_method(name, overrides))
            except ValidationError as err:
                raise StepDistillError(validation_message(err, prefix=f"methods.{name}")) from err
        return methods


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
        raise StepDistillError(validation_message(err, union_tags=KIND_TAGS)) from err
    if config.data.path is None:
        raise StepDistillError(f"config {path} has no data.path; set it to a CSV or Parquet file")
    # Files named in the config are relative to the config file, like any other include.
    config.data.path = path.parent / config.data.path
    for field in ("path", "weights"):
        if getattr(config.teacher, field, None) is not None:
            setattr(config.teacher, field, path.parent / getattr(config.teacher, field))
    config.check()
    return config
