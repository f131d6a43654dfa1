"""Loss terms: what a student is compared with. How much each counts is a weight (weights.py).

An objective turns a batch and the student's outputs into a per-sample loss ``(...)``, and gives
its derivative with respect to the student's outputs for the linear engine (engines/tabular.py).
Objectives are frozen dataclasses: two terms with equal objectives compute the same thing, which is what
lets students with different weights share one batched computation.

A ``Method`` is what a student trains with: its terms (name, objective, weight), how it is
optimized, and the balancer and sample curriculum it may have; ``build_method`` makes one from the
validated configuration of methods.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

import torch

from stepdistill import losses
from stepdistill.balancers import Balancer, DynamicWeightAverage, GradNorm, LossRatioBalancer, UncertaintyWeighting
from stepdistill.curriculum import Curriculum
from stepdistill.methods import BalancerConfig, MethodSpec, TrainingConfig, method_spec
from stepdistill.weights import Weight


@dataclass
class Batch:
    """A batch of training rows, gathered by the same row index for every field.

    x: (..., d); y: (...); teacher_logits: (..., K); teacher_rationale: (..., R) or None;
    labelled: (...) bool or None (all labelled): rows whose label the student may use, when
    only some are (the teacher still annotates every row).
    teacher_weight: (...) or None (all 1): how much each row counts in the teacher's terms.
    """

    x: torch.Tensor
    y: torch.Tensor
    teacher_logits: torch.Tensor
    teacher_rationale: torch.Tensor | None
    labelled: torch.Tensor | None = None
    teacher_weight: torch.Tensor | None = None

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """The same rows of every field, e.g. ``batch.map(lambda t: t[rows])``."""
        return Batch(**{name: None if t is None else fn(t) for name, t in vars(self).items()})

    @staticmethod
    def concat(batches: list[Batch]) -> Batch:
        """The rows of ``batches``, one after the other (every batch has the same fields)."""
        first = vars(batches[0])
        return Batch(**{name: None if t is None else torch.cat([getattr(b, name) for b in batches]) for name, t in first.items()})

    def split(self, size: int, dim: int) -> list[Batch]:
        """Consecutive batches of ``size`` rows along ``dim`` (views, one split per field)."""
        pieces = {name: None if t is None else t.split(size, dim) for name, t in vars(self).items()}
        n = len(pieces["x"])
        return [Batch(**{name: None if p is None else p[k] for name, p in pieces.items()}) for k in range(n)]


@dataclass
class Outputs:
    """What a student produced on a batch. ``rationale`` is already projected to the teacher's
    width where a projection head is used; ``perturbed_logits`` exists only when a consistency
    term asked for a pass on perturbed inputs."""

    logits: torch.Tensor
    rationale: torch.Tensor | None = None
    perturbed_logits: torch.Tensor | None = None


@dataclass
class Grads:
    """Derivatives of a per-sample loss with respect to the student's outputs (same shapes)."""

    logits: torch.Tensor | None = None
    rationale: torch.Tensor | None = None
    perturbed_logits: torch.Tensor | None = None


class Objective:
    needs_rationale = False
    perturbs_inputs = False  # True: the engines pass ``perturb(x)``'s logits as out.perturbed_logits

    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, out: Outputs, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def grads(self, out: Outputs, batch: Batch) -> Grads:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": type(self).__name__, **asdict(self)}


def _weighted(values: torch.Tensor, batch: Batch, trailing: int = 0) -> torch.Tensor:
    """Per-sample values (with ``trailing`` extra dimensions) times the rows' teacher weights."""
    if batch.teacher_weight is None:
        return values
    return values * batch.teacher_weight.reshape(*batch.teacher_weight.shape, *(1,) * trailing)


@dataclass(frozen=True)
class HardLabel(Objective):
    """Cross-entropy with the true labels. When only some rows are labelled, unlabelled rows
    count zero and labelled ones are scaled so that the batch mean is the mean over the
    labelled rows."""

    def loss(self, out: Outputs, batch: Batch) -> torch.Tensor:
        loss = losses.hard_label_loss(out.logits, batch.y)
        return loss if batch.labelled is None else loss * self._row_scale(batch.labelled)

    def grads(self, out: Outputs, batch: Batch) -> Grads:
        grad = losses.hard_label_loss_grad(out.logits, batch.y)
        return Grads(logits=grad if batch.labelled is None else grad * self._row_scale(batch.labelled).unsqueeze(-1))

    @staticmethod
    def _row_scale(labelled: torch.Tensor) -> torch.Tensor:
        mask = labelled.to(torch.float32)
        return mask * (mask.shape[-1] / mask.sum(-1, keepdim=True).clamp_min(1.0))


@dataclass(frozen=True)
class SoftTarget(Objective):
    """``T^2 * KL`` to the teacher's temperature-softened distribution."""

    temperature: float

    def loss(self, out: Outputs, batch: Batch) -> torch.Tensor:
        return _weighted(losses.soft_target_kl(out.logits, batch.teacher_logits, self.temperature), batch)

    def grads(self, out: Outputs, batch: Batch) -> Grads:
        return Grads(logits=_weighted(losses.soft_target_kl_grad(out.logits, batch.teacher_logits, self.temperature), batch, 1))


@dataclass(frozen=True)
class Rationale(Objective):
    """Distance between the student's rationale vector and the teacher's: mean squared error, or
    ``max(0, 1 - cos - margin)``."""

    distance: Literal["mse", "cosine"] = "mse"
    margin: float = 0.0
    needs_rationale = True

    def loss(self, out: Outputs, batch: Batch) -> torch.Tensor:
        if self.distance == "mse":
            return _weighted(losses.rationale_mse(out.rationale, batch.teacher_rationale), batch)
        return _weighted(losses.rationale_cosine(out.rationale, batch.teacher_rationale, self.margin), batch)

    def grads(self, out: Outputs, batch: Batch) -> Grads:
        if self.distance == "mse":
            return Grads(rationale=_weighted(losses.rationale_mse_grad(out.rationale, batch.teacher_rationale), batch, 1))
        return Grads(rationale=_weighted(losses.rationale_cosine_grad(out.rationale, batch.teacher_rationale, self.margin), batch, 1))


@dataclass(frozen=True)
class Consistency(Objective):
    """``KL(p(x) || p(x'))``: the prediction should not change under a small perturbation x' of
    the input: Gaussian noise ``x + e, e ~ N(0, noise_std^2)`` per feature, or feature dropout
    (each feature zeroed with probability ``dropout``, the rest scaled by 1/(1-dropout))."""

    noise_std: float = 0.04
    kind: Literal["gaussian", "dropout"] = "gaussian"
    dropout: float = 0.1
    perturbs_inputs = True

    def perturb(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Drawn on the CPU from the student's generator, so the same draws on any device."""
        if self.kind == "gaussian":
            return x + self.noise_std * torch.randn(x.shape, generator=generator).to(x.device)
        keep = (torch.rand(x.shape, generator=generator) >= self.dropout).to(x.device)
        return x * keep / (1.0 - self.dropout)

    def loss(self, out: Outputs, batch: Batch) -> torch.Tensor:
        return losses.consistency_kl(out.logits, out.perturbed_logits)

    def grads(self, out: Outputs, batch: Batch) -> Grads:
        return Grads(perturbed_logits=losses.consistency_kl_grad(out.logits, out.perturbed_logits))


# --- a method: its terms and how they are optimized --------------------------------------------


@dataclass(frozen=True)
class Term:
    name: str
    objective: Objective
    weight: Weight


@dataclass(frozen=True)
class Method:
    """A method built from its ``spec``: the terms with their objectives, the training settings,
    the balancer (a template: each student trains with its own copy) and the sample curriculum."""

    name: str
    terms: tuple[Term, ...]
    training: TrainingConfig
    balancer: Balancer | None = None
    curriculum: Curriculum | None = None
    spec: MethodSpec | None = field(default=None, compare=False)  # settings, not part of what a method computes

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
    """The preset's method with ``overrides`` applied (``methods.method_spec``, which validates
    them: pydantic's ValidationError on bad values, ValueError on weights or balancer targets that
    do not fit the terms, KeyError on an unknown preset), built."""
    return method_of(method_spec(preset, overrides, name))


def method_of(spec: MethodSpec) -> Method:
    """The method ``spec`` describes, with its objectives, balancer and curriculum built."""
    config = spec.config
    terms = tuple(Term(t.name, _objective(t.name, config), t.weight) for t in spec.terms)
    balancer_config = getattr(config, "balancer", None)
    balancer = None if balancer_config is None else _balancer(balancer_config, tuple(t.name for t in terms))
    curriculum_config = getattr(config, "curriculum", None)
    curriculum = None if curriculum_config is None else Curriculum(**curriculum_config.model_dump())
    return Method(spec.name, terms, spec.training, balancer, curriculum, spec)


def _objective(name: str, config) -> Objective:
    """What the term ``name`` of a method with the preset settings ``config`` compares."""
    if name == "hard":
        return HardLabel()
    if name == "soft":
        return SoftTarget(config.temperature)
    if name == "rationale":
        return Rationale(config.rationale_distance, config.margin)
    return Consistency(config.noise_std, config.perturbation, config.feature_dropout)


def _balancer(config: BalancerConfig, term_names: tuple[str, ...]) -> Balancer:
    if config.kind == "dwa":
        return DynamicWeightAverage(config.temperature)
    if config.kind == "loss_ratio":
        return LossRatioBalancer(config.targets, config.momentum)
    if config.kind == "uncertainty":
        return UncertaintyWeighting(term_names, config.lr)
    return GradNorm(term_names, config.alpha, config.lr)
