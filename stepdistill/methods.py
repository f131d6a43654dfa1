"""Methods: a method is a list of terms (name, objective, weight) plus how to optimize them.

Presets carry the reference article's values as defaults; every value can be overridden, and is
validated when the method is built:

    baseline      hard                                         (the control: no teacher)
    traditional   a*hard + (1-a)*soft                          (Hinton et al. 2015)
    step_by_step  a*hard + b*rationale + (1-a-b)*soft
    enhanced      a*hard + b(t)*rationale + (1-a-b(t))*soft + lambda*consistency,
                  b(t) = b_max*min(1, t/ramp), cosine rationale distance with a margin,
                  Adam with ReduceLROnPlateau on the validation loss

where ``soft = T^2 * KL(teacher^T || student^T)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stepdistill.balancers import Balancer, DynamicWeightAverage, GradNorm, LossRatioBalancer, UncertaintyWeighting
from stepdistill.curriculum import Curriculum
from stepdistill.terms import Consistency, HardLabel, Objective, Rationale, SoftTarget
from stepdistill.weights import Constant, CosineRamp, LinearRamp, Phases, Remainder, StepSchedule, Weight


class TrainingConfig(BaseModel):
    """How a student is optimized."""

    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (sgd, adam) or decoupled decay (adamw)")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(512, ge=1)
    scheduler: Literal["none", "plateau", "cosine", "step"] = "none"
    lr_factor: float = Field(0.5, gt=0, lt=1, description="plateau and step: the factor applied to the learning rate")
    plateau_patience: int = Field(2, ge=0)
    step_epochs: int = Field(5, ge=1, description="step: epochs between learning-rate cuts")
    early_stopping_patience: int | None = Field(None, ge=1)


class BaselineConfig(TrainingConfig):
    pass


class BalancerConfig(BaseModel):
    """An adaptive balancer of the method's terms (balancers.py): ``dwa`` (dynamic weight
    average), ``loss_ratio`` (targets: term -> share of the total), ``uncertainty`` (learned
    log-variances), ``gradnorm``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["dwa", "loss_ratio", "uncertainty", "gradnorm"]
    temperature: float = Field(2.0, gt=0, description="dwa")
    targets: dict[str, float] = Field(default_factory=dict, description="loss_ratio: term -> target share")
    momentum: float = Field(0.0, ge=0, lt=1, description="loss_ratio")
    lr: float = Field(0.025, gt=0, description="uncertainty and gradnorm")
    alpha: float = Field(1.5, ge=0, description="gradnorm")

    def build(self, term_names: tuple[str, ...]) -> Balancer:
        if self.kind == "dwa":
            return DynamicWeightAverage(self.temperature)
        if self.kind == "loss_ratio":
            unknown = set(self.targets) - set(term_names)
            if unknown or not self.targets:
                raise ValueError(f"balancer targets must name the method's terms ({', '.join(term_names)}); got {sorted(self.targets)}")
            return LossRatioBalancer(self.targets, self.momentum)
        if self.kind == "uncertainty":
            return UncertaintyWeighting(term_names, self.lr)
        return GradNorm(term_names, self.alpha, self.lr)


class ScheduleConfig(BaseModel):
    """A weight schedule for one term (weights.py), replacing the preset's: ``constant``
    (value), ``linear`` or ``cosine`` (maximum, ramp_epochs, cosine also minimum), ``step``
    (values, step_epochs), ``phases`` (boundaries, values)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["constant", "linear", "cosine", "step", "phases"]
    value: float = 0.0
    maximum: float = 0.0
    minimum: float = 0.0
    ramp_epochs: int = Field(0, ge=0)
    values: tuple[float, ...] = ()
    step_epochs: int = Field(1, ge=1)
    boundaries: tuple[int, ...] = ()

    def build(self) -> Weight:
        if self.kind == "constant":
            return Constant(self.value)
        if self.kind == "linear":
            return LinearRamp(self.maximum, self.ramp_epochs)
        if self.kind == "cosine":
            return CosineRamp(self.maximum, self.ramp_epochs, self.minimum)
        if self.kind == "step":
            return StepSchedule(self.values, self.step_epochs)
        return Phases(self.boundaries, self.values)


class CurriculumConfig(BaseModel):
    """A sample curriculum paced by the teacher's view of each sample's difficulty (curriculum.py)."""

    model_config = ConfigDict(extra="forbid")

    difficulty: Literal["confidence", "entropy", "disagreement"] = "disagreement"
    start_fraction: float = Field(0.3, gt=0, le=1)
    ramp_epochs: int = Field(5, ge=0)
    pacing: Literal["linear", "root"] = "linear"
    mistake_confidence: float = Field(0.9, ge=0.5, lt=1)
    mistake_weight: float = Field(1.0, ge=0, le=1, description="weight, in the teacher's terms, of samples it gets confidently wrong")


class TraditionalConfig(TrainingConfig):
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the hard-label term")
    temperature: float = Field(2.0, gt=0)
    balancer: BalancerConfig | None = None
    curriculum: CurriculumConfig | None = None
    weights: dict[str, ScheduleConfig] = Field(default_factory=dict, description="term name -> schedule, replacing the preset's weight")


class StepByStepConfig(TraditionalConfig):
    beta: float = Field(0.3, ge=0, le=1, description="weight of the rationale term (its maximum when ramped)")
    rationale_distance: Literal["mse", "cosine"] = "mse"
    margin: float = Field(0.0, ge=0, lt=2)

    @model_validator(mode="after")
    def _weights_sum_to_at_most_one(self):
        if self.alpha + self.beta > 1 + 1e-12:
            raise ValueError(f"alpha + beta must be at most 1 (got {self.alpha} + {self.beta})")
        return self


class EnhancedConfig(StepByStepConfig):
    beta: float = Field(0.1, ge=0, le=1, description="maximum rationale weight, reached after ramp_epochs")
    ramp_epochs: int = Field(8, ge=0)
    rationale_distance: Literal["mse", "cosine"] = "cosine"
    margin: float = Field(0.1, ge=0, lt=2)
    consistency: float = Field(0.25, ge=0, description="weight lambda of the consistency term")
    perturbation: Literal["gaussian", "dropout"] = "gaussian"
    noise_std: float = Field(0.04, gt=0, description="gaussian perturbation")
    feature_dropout: float = Field(0.1, gt=0, lt=1, description="dropout perturbation: the chance a feature is zeroed")
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(0.005, gt=0)
    scheduler: Literal["none", "plateau", "cosine", "step"] = "plateau"


PRESETS: dict[str, type[TrainingConfig]] = {
    "baseline": BaselineConfig,
    "traditional": TraditionalConfig,
    "step_by_step": StepByStepConfig,
    "enhanced": EnhancedConfig,
}


@dataclass(frozen=True)
class Term:
    name: str
    objective: Objective
    weight: Weight


@dataclass(frozen=True)
class Method:
    name: str
    terms: tuple[Term, ...]
    training: TrainingConfig
    balancer: Balancer | None = None  # a template: each student trains with its own copy
    curriculum: Curriculum | None = None

    @property
    def uses_teacher(self) -> bool:
        return any(not isinstance(t.objective, HardLabel) for t in self.terms)

    @property
    def needs_rationale(self) -> bool:
        return any(t.objective.needs_rationale for t in self.terms)

    def describe(self) -> dict:
        return {
            "preset": self.name,
            "terms": [{"name": t.name, "objective": t.objective.describe(), "weight": t.weight.describe()} for t in self.terms],
            "training": self.training.model_dump(),
            "balancer": None if self.balancer is None else self.balancer.describe(),
            "curriculum": None if self.curriculum is None else vars(self.curriculum),
        }


def build_method(preset: str, overrides: dict | None = None, name: str | None = None) -> Method:
    """The preset's method with ``overrides`` applied. Raises pydantic's ValidationError on bad
    values and KeyError on an unknown preset."""
    config = PRESETS[preset].model_validate(overrides or {})
    terms = _terms(config)
    check_weights_are_not_negative(terms, config)
    balancer_config = getattr(config, "balancer", None)
    balancer = None if balancer_config is None else balancer_config.build(tuple(t.name for t in terms))
    curriculum_config = getattr(config, "curriculum", None)
    curriculum = None if curriculum_config is None else Curriculum(**curriculum_config.model_dump())
    return Method(name or preset, terms, TrainingConfig.model_validate(_training_fields(config)), balancer, curriculum)


def _training_fields(config: TrainingConfig) -> dict:
    return {k: getattr(config, k) for k in TrainingConfig.model_fields}


def _terms(config: TrainingConfig) -> tuple[Term, ...]:
    if not isinstance(config, TraditionalConfig):
        return (Term("hard", HardLabel(), Constant(1.0)),)
    custom = {name: spec.build() for name, spec in config.weights.items()}
    hard = custom.get("hard", Constant(config.alpha))
    if not isinstance(config, StepByStepConfig):
        terms = (
            Term("hard", HardLabel(), hard),
            Term("soft", SoftTarget(config.temperature), custom.get("soft", Remainder((hard,)))),
        )
        return _check_weight_names(terms, custom)
    ramped = isinstance(config, EnhancedConfig)
    rationale_weight = custom.get("rationale", LinearRamp(config.beta, config.ramp_epochs) if ramped else Constant(config.beta))
    terms = (
        Term("hard", HardLabel(), hard),
        Term("rationale", Rationale(config.rationale_distance, config.margin), rationale_weight),
        Term("soft", SoftTarget(config.temperature), custom.get("soft", Remainder((hard, rationale_weight)))),
    )
    if isinstance(config, EnhancedConfig) and config.consistency > 0:
        consistency = Consistency(config.noise_std, config.perturbation, config.feature_dropout)
        terms += (Term("consistency", consistency, custom.get("consistency", Constant(config.consistency))),)
    return _check_weight_names(terms, custom)


def _check_weight_names(terms: tuple[Term, ...], custom: dict) -> tuple[Term, ...]:
    names = [t.name for t in terms]
    unknown = sorted(set(custom) - set(names))
    if unknown:
        raise ValueError(f"weights for unknown terms {unknown}; this method's terms are {', '.join(names)}")
    return terms


def trainable_epochs(training: TrainingConfig) -> range:
    """Every epoch a student of this method can train."""
    return range(training.epochs)


def check_weights_are_not_negative(terms: tuple[Term, ...], training: TrainingConfig) -> None:
    """Raise ValueError when a term's weight is below 0 at an epoch the student can train: training
    would then push that term up, e.g. away from the teacher, and nothing would say so."""
    for epoch in trainable_epochs(training):
        for term in terms:
            value = term.weight.value(epoch)
            if value < -1e-12:  # float rounding: 1 - 0.9 - 0.1 is -2.8e-17
                raise ValueError(_negative_weight_message(term, terms, epoch, value))


def _negative_weight_message(term: Term, terms: tuple[Term, ...], epoch: int, value: float) -> str:
    weight = term.weight
    if isinstance(weight, Remainder):
        others = [next((t.name for t in terms if t.weight is other), type(other).__name__) for other in weight.others]
        formula = " - ".join([f"{weight.total:g}", *others])
        return (
            f"{term.name}'s weight is {formula} = {value:.4g} at epoch {epoch}, below 0;"
            f" lower the other weights or give {term.name} a schedule of its own"
        )
    return f"{term.name}'s weight is {value:.4g} at epoch {epoch}, below 0; give {term.name} a schedule that stays at or above 0"
