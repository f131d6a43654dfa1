"""The experiment configuration (the YAML file of ``stepdistill run``), validated by pydantic."""

from __future__ import annotations

import itertools
import typing
from pathlib import Path
from typing import Literal

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
    labelled_fraction: float = Field(
        1.0, gt=0, le=1, description="share of training rows whose labels students see (stratified); the teacher annotates all"
    )


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
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
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
        """Validate every override now, before any data is read or anything runs."""
        for name in self.methods:
            for candidate in self.tuning_candidates(name):
                self.build_method(name, candidate)
        if isinstance(self.teacher, TrainedHereTeacher):
            self.teacher.method()

    def build_methods(self) -> list[Method]:
        return [self.build_method(name) for name in self.methods]

    def build_method(self, name: str, extra: dict | None = None) -> Method:
        """Method ``name`` with its configured overrides, and ``extra`` ones on top."""
        overrides = {k: v for k, v in self.methods[name].items() if k != "preset"}
        try:
            return build_method(self.preset_of(name), {**overrides, **(extra or {})}, name=name)
        except ValidationError as err:
            raise StepDistillError(validation_message(err, prefix=f"methods.{name}")) from err
        except ValueError as err:  # a balancer or weights naming terms the method lacks
            raise StepDistillError(f"invalid config at methods.{name}: {err}; fix it and run again") from err

    def tuning_candidates(self, name: str) -> list[dict]:
        """The grid points that method ``name`` accepts (settings it lacks are left out)."""
        if self.tune is None:
            return [{}]
        accepted = {k: v for k, v in self.tune.grid.items() if k in PRESETS[self.preset_of(name)].model_fields}
        return [dict(zip(accepted, values)) for values in itertools.product(*accepted.values())]


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
