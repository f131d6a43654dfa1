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

This module is the methods' configuration, and imports no torch: a method's settings are
validated here, into a ``MethodSpec`` (its terms by name, each with its weight schedule); the
terms' objectives, balancers and curricula it names are built by ``terms.build_method``. Every
experiment's config (config.py, lm/config.py) is a ``MethodsConfig``: its methods, the training
recipe they share (``StudentTraining``), what is tuned on the validation split, and the control
each method is compared with.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from stepdistill.errors import StepDistillError, validation_message
from stepdistill.files import StrictModel
from stepdistill.weights import Constant, CosineRamp, LinearRamp, Phases, Remainder, StepSchedule, Weight


class TrainingConfig(StrictModel):
    """How a student is optimized."""

    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (sgd, adam) or decoupled decay (adamw)")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(512, ge=1)
    scheduler: Literal["none", "plateau", "cosine", "step", "warmup_linear"] = "none"
    lr_factor: float = Field(0.5, gt=0, lt=1, description="plateau and step: the factor applied to the learning rate")
    plateau_patience: int = Field(2, ge=0)
    step_epochs: int = Field(5, ge=1, description="step: epochs between learning-rate cuts")
    warmup_fraction: float = Field(
        0.1, ge=0, lt=1, description="warmup_linear: the share of the run's steps over which the learning rate rises from 0, before it falls linearly to 0"
    )
    early_stopping_patience: int | None = Field(None, ge=1)


class BaselineConfig(TrainingConfig):
    pass


class BalancerConfig(StrictModel):
    """An adaptive balancer of the method's terms (balancers.py): ``dwa`` (dynamic weight
    average), ``loss_ratio`` (targets: term -> share of the total), ``uncertainty`` (learned
    log-variances), ``gradnorm``."""

    kind: Literal["dwa", "loss_ratio", "uncertainty", "gradnorm"]
    temperature: float = Field(2.0, gt=0, description="dwa")
    targets: dict[str, float] = Field(default_factory=dict, description="loss_ratio: term -> target share")
    momentum: float = Field(0.0, ge=0, lt=1, description="loss_ratio")
    lr: float = Field(0.025, gt=0, description="uncertainty and gradnorm")
    alpha: float = Field(1.5, ge=0, description="gradnorm")

    def check(self, term_names: tuple[str, ...]) -> None:
        """Raise ValueError unless the balancer's settings fit a method with ``term_names``."""
        if self.kind == "loss_ratio":
            unknown = set(self.targets) - set(term_names)
            if unknown or not self.targets:
                raise ValueError(f"balancer targets must name the method's terms ({', '.join(term_names)}); got {sorted(self.targets)}")


class ScheduleConfig(StrictModel):
    """A weight schedule for one term (weights.py), replacing the preset's: ``constant``
    (value), ``linear`` or ``cosine`` (maximum, ramp_epochs, cosine also minimum), ``step``
    (values, step_epochs), ``phases`` (boundaries, values)."""

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


class CurriculumConfig(StrictModel):
    """A sample curriculum paced by the teacher's view of each sample's difficulty (curriculum.py)."""

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
    scheduler: Literal["none", "plateau", "cosine", "step", "warmup_linear"] = "plateau"


PRESETS: dict[str, type[TrainingConfig]] = {
    "baseline": BaselineConfig,
    "traditional": TraditionalConfig,
    "step_by_step": StepByStepConfig,
    "enhanced": EnhancedConfig,
}


@dataclass(frozen=True)
class TermSpec:
    """One term of a method: its name (``hard``, ``soft``, ``rationale`` or ``consistency``, which
    says what it compares) and its weight schedule."""

    name: str
    weight: Weight


@dataclass(frozen=True)
class MethodSpec:
    """A method as configured and validated: its name, its preset's settings (``config``) and its
    terms. ``terms.build_method`` turns it into what a student trains with."""

    name: str
    config: TrainingConfig
    terms: tuple[TermSpec, ...]

    @property
    def training(self) -> TrainingConfig:
        """How its students are optimized (the training settings alone)."""
        return TrainingConfig.model_validate(_training_fields(self.config))

    @property
    def uses_teacher(self) -> bool:
        return any(t.name != "hard" for t in self.terms)

    @property
    def needs_rationale(self) -> bool:
        return any(t.name == "rationale" for t in self.terms)

    def generative_problem(self) -> str | None:
        """Why a generative (language-model) student cannot train with this method, as a one-line
        message naming the fix; None when it can."""
        for term in self.terms:
            if term.name == "consistency":
                return (
                    f"method {self.name!r} has a consistency term, which perturbs numeric inputs "
                    f"and is not defined for generative students; set consistency: 0 for {self.name}"
                )
        if getattr(self.config, "curriculum", None) is not None:
            return f"method {self.name!r} has a curriculum, which generative students do not support; remove its curriculum"
        if self.config.scheduler == "warmup_linear":
            return f"method {self.name!r} schedules its learning rate by the step (warmup_linear), which generative students do not; choose another scheduler"
        balancer = getattr(self.config, "balancer", None)
        if balancer is not None and balancer.kind == "gradnorm":
            return (
                f"method {self.name!r} balances its terms with gradnorm, which needs a shared layer generative students do not name; "
                "choose balancer kind dwa, loss_ratio or uncertainty"
            )
        return None


def method_spec(preset: str, overrides: dict | None = None, name: str | None = None) -> MethodSpec:
    """The preset's method with ``overrides`` applied, validated. Raises pydantic's
    ValidationError on bad values, ValueError on weights or balancer targets that do not fit the
    method's terms, and KeyError on an unknown preset."""
    config = PRESETS[preset].model_validate(overrides or {})
    terms = _terms(config)
    check_weights_are_not_negative(terms, config)
    balancer = getattr(config, "balancer", None)
    if balancer is not None:
        balancer.check(tuple(t.name for t in terms))
    return MethodSpec(name or preset, config, terms)


def _training_fields(config: TrainingConfig) -> dict:
    return {k: getattr(config, k) for k in TrainingConfig.model_fields}


def _terms(config: TrainingConfig) -> tuple[TermSpec, ...]:
    if not isinstance(config, TraditionalConfig):
        return (TermSpec("hard", Constant(1.0)),)
    custom = {name: spec.build() for name, spec in config.weights.items()}
    hard = custom.get("hard", Constant(config.alpha))
    if not isinstance(config, StepByStepConfig):
        terms = (TermSpec("hard", hard), TermSpec("soft", custom.get("soft", Remainder((hard,)))))
        return _check_weight_names(terms, custom)
    ramped = isinstance(config, EnhancedConfig)
    rationale_weight = custom.get("rationale", LinearRamp(config.beta, config.ramp_epochs) if ramped else Constant(config.beta))
    terms = (
        TermSpec("hard", hard),
        TermSpec("rationale", rationale_weight),
        TermSpec("soft", custom.get("soft", Remainder((hard, rationale_weight)))),
    )
    if isinstance(config, EnhancedConfig) and config.consistency > 0:
        terms += (TermSpec("consistency", custom.get("consistency", Constant(config.consistency))),)
    return _check_weight_names(terms, custom)


def _check_weight_names(terms: tuple[TermSpec, ...], custom: dict) -> tuple[TermSpec, ...]:
    names = [t.name for t in terms]
    unknown = sorted(set(custom) - set(names))
    if unknown:
        raise ValueError(f"weights for unknown terms {unknown}; this method's terms are {', '.join(names)}")
    return terms


def trainable_epochs(training: TrainingConfig) -> range:
    """Every epoch a student of this method can train."""
    return range(training.epochs)


def check_weights_are_not_negative(terms: tuple[TermSpec, ...], training: TrainingConfig) -> None:
    """Raise ValueError when a term's weight is below 0 at an epoch the student can train: training
    would then push that term up, e.g. away from the teacher, and nothing would say so."""
    for epoch in trainable_epochs(training):
        for term in terms:
            value = term.weight.value(epoch)
            if value < -1e-12:  # float rounding: 1 - 0.9 - 0.1 is -2.8e-17
                raise ValueError(_negative_weight_message(term, terms, epoch, value))


def _negative_weight_message(term: TermSpec, terms: tuple[TermSpec, ...], epoch: int, value: float) -> str:
    weight = term.weight
    if isinstance(weight, Remainder):
        others = [next((t.name for t in terms if t.weight is other), type(other).__name__) for other in weight.others]
        formula = " - ".join([f"{weight.total:g}", *others])
        return (
            f"{term.name}'s weight is {formula} = {value:.4g} at epoch {epoch}, below 0;"
            f" lower the other weights or give {term.name} a schedule of its own"
        )
    return f"{term.name}'s weight is {value:.4g} at epoch {epoch}, below 0; give {term.name} a schedule that stays at or above 0"


# --- a config's methods: their shared training, tuning and controls --------------------------

# The method every other is compared with: the same student on the labels alone.
CONTROL = "baseline"

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
    scheduler: Literal["none", "plateau", "cosine", "step", "warmup_linear"] = "plateau"
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

    def method_settings(self) -> dict:
        """The settings every method's training takes from this recipe (a subclass's settings
        of other kinds, such as a language model's token budgets, are not a method's)."""
        return self.model_dump(include=set(TrainingConfig.model_fields))


def auto_batch_size(n_train: int) -> int:
    """The largest power of two from 32 to 512 that leaves ``MIN_STEPS_PER_EPOCH`` steps per epoch."""
    size = 512
    while size > 32 and n_train / size < MIN_STEPS_PER_EPOCH:
        size //= 2
    return size


class TuneConfig(StrictModel):
    """Hyper-parameters chosen per method on the validation split (never the test split): in
    each run, every combination of ``grid`` values that the method accepts is trained with the
    run's seed, and the one with the best validation ``metric`` is that run's student. A method
    compared with another gets as many candidates as it (``MethodsConfig.tuning_draws``)."""

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


class MethodsConfig(StrictModel):
    """What every experiment's config has: its ``methods`` by name (a preset, or any name with a
    ``preset:`` key among its settings), the ``training`` recipe they share, and ``tune``:
    settings tried on the validation split. Each kind of config declares these fields, with its
    defaults, in the order its YAML sections come."""

    @field_validator("methods", mode="before", check_fields=False)
    @classmethod
    def _known_methods(cls, methods):
        """Each method is a preset by name, or any name with ``preset:`` among its overrides
        (e.g. ``no_curriculum: {preset: enhanced, ramp_epochs: 0}``)."""
        if not isinstance(methods, dict):
            return methods
        methods = {name: overrides or {} for name, overrides in methods.items()}
        for name, overrides in methods.items():
            preset = overrides.get("preset", name) if isinstance(overrides, dict) else name
            if preset not in PRESETS:
                raise ValueError(f"unknown method '{preset}'; choose from {', '.join(PRESETS)} (or give a preset: key)")
        if not methods:
            raise ValueError(f"no methods; choose from {', '.join(PRESETS)}")
        return methods

    def shared_training(self) -> dict:
        """The training settings every method takes before its own overrides."""
        return self.training.method_settings()

    def preset_of(self, name: str) -> str:
        return self.methods[name].get("preset", name)

    def check_methods(self) -> None:
        """Validate every method's settings (each candidate of its tuning grid) now, before any
        data is read or anything runs."""
        for name in self.methods:
            for candidate in self.candidates(name, n_train=10_000):
                self.method_spec(name, candidate)

    def method_spec(self, name: str, settings: dict) -> MethodSpec:
        """Method ``name`` with ``settings`` (one of ``candidates``), validated; a bad setting is
        a one-line error naming the method."""
        try:
            return method_spec(self.preset_of(name), settings, name=name)
        except ValidationError as err:
            raise StepDistillError(validation_message(err, prefix=f"methods.{name}", model=PRESETS.get(self.preset_of(name)))) from err
        except ValueError as err:  # a balancer or weights naming terms the method lacks
            raise StepDistillError(f"invalid config at methods.{name}: {err}; fix it and run again") from err

    def base_settings(self, name: str, n_train: int | None) -> dict:
        """Method ``name``'s settings before tuning: the shared training, under the method's own
        overrides; an auto batch size resolved for ``n_train`` training rows (kept "auto" when
        None)."""
        settings = {**self.shared_training(), **{k: v for k, v in self.methods[name].items() if k != "preset"}}
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

    def tuning_draws(self, control_of: dict[str, str | None]) -> dict[str, int]:
        """How many candidates each method trains so that every method and the one it is compared
        with (``control_of``) choose from as many validation draws: the most that any method
        compared with it, directly or through others, has (its grid's candidates repeated with
        other seeds where it has fewer). Choosing the best of more draws is an advantage of its
        own, which a comparison must not credit to the method."""
        draws = {name: len(self.candidates(name, None)) for name in self.methods}
        pairs = [(name, control) for name, control in control_of.items() if control is not None]
        changed = True
        while changed:
            changed = False
            for a, b in pairs:
                if draws[a] != draws[b]:
                    draws[a] = draws[b] = max(draws[a], draws[b])
                    changed = True
        return draws

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

    def with_matched_controls(self):
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
