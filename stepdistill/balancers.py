"""Balancers: the weights of several terms decided jointly, from what training shows.

A schedule (weights.py) fixes each term's weight in advance. A balancer watches the terms' values
and rescales the scheduled weights so that no term drowns the others, e.g. a soft-target term a
thousand times smaller than the hard-label term, whose weight then seems to have no effect. The
weight used for term k is ``scheduled_k * w_k``, where ``w_k`` is the balancer's own factor;
terms a balancer does not handle keep their scheduled weight.

The trainer drives a balancer through three calls:

    weights(scheduled)              the weights to use now, from the scheduled ones (by term name)
    observe_epoch(raw)              after each epoch: the mean raw (unweighted) value of each term
    observe_step(raw, grad_norms)   after each optimizer step: the batch's raw values, and for
                                    GradNorm the gradient norms of the balanced terms

Epoch-level balancers (DynamicWeightAverage, LossRatioBalancer) learn only in ``observe_epoch``,
step-level ones (UncertaintyWeighting, GradNorm) only in ``observe_step``; ``observes_steps`` and
``needs_grad_norms`` say which, so that a trainer measures per-batch values and gradient norms only
for balancers that use them. Asking for weights changes nothing, so they can be asked any number
of times.
"""

from __future__ import annotations

import copy
import math

import torch


class Balancer:
    """The interface (see the module's docstring); subclasses give ``factors``."""

    observes_steps = False
    needs_grad_norms = False

    def factors(self, scheduled: dict[str, float]) -> dict[str, float]:
        """``w_k`` of each term the balancer handles now."""
        raise NotImplementedError

    def weights(self, scheduled: dict[str, float]) -> dict[str, float]:
        """The weight to use for each term of ``scheduled``: ``scheduled_k * w_k``."""
        factors = self.factors(scheduled)
        return {name: weight * factors.get(name, 1.0) for name, weight in scheduled.items()}

    def observe_epoch(self, raw: dict[str, float]) -> None:
        """The mean raw value of each term over the last epoch."""

    def observe_step(self, raw: dict[str, torch.Tensor], grad_norms: dict[str, float] | None = None) -> None:
        """The raw value of each term on the last batch (0-dim tensors, possibly attached to the
        model's graph: balancers read them detached), and the norms GradNorm needs."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def describe(self) -> dict:
        return {"kind": type(self).__name__}


class DynamicWeightAverage(Balancer):
    """Dynamic Weight Average (Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with
    Attention"): a term whose value fell more slowly over the last epoch gets more weight.

    Observes the mean raw value L_k(t) of each term at each epoch t (``observe_epoch``). Over the
    K terms observed in both of the last two epochs::

        r_k = L_k(t-1) / L_k(t-2)
        w_k = K * exp(r_k / T) / sum_i exp(r_i / T)

    and w_k = 1 until two epochs have been observed. The factors sum to K, as K factors of 1 would;
    a higher temperature T makes them more even. A term whose older value
    is 0 has r_k = 1: it has no rate of change to measure.
    """

    def __init__(self, temperature: float = 2.0):
        if not temperature > 0:
            raise ValueError(f"temperature must be positive (got {temperature})")
        self.temperature = temperature
        self.last_two: list[dict[str, float]] = []  # older first

    def factors(self, scheduled: dict[str, float]) -> dict[str, float]:
        if len(self.last_two) < 2:
            return {}
        older, newer = self.last_two
        ratios = {name: newer[name] / older[name] if older[name] != 0 else 1.0 for name in newer if name in older}
        if not ratios:
            return {}
        # Shifting every exponent by the largest one leaves the softmax as it is and keeps exp finite.
        top = max(ratios.values()) / self.temperature
        exps = {name: math.exp(r / self.temperature - top) for name, r in ratios.items()}
        total = sum(exps.values())
        return {name: len(exps) * e / total for name, e in exps.items()}

    def observe_epoch(self, raw: dict[str, float]) -> None:
        self.last_two = [*self.last_two[-1:], {name: float(v) for name, v in raw.items()}]

    def state_dict(self) -> dict:
        return {"last_two": [dict(values) for values in self.last_two]}

    def load_state_dict(self, state: dict) -> None:
        self.last_two = [dict(values) for values in state["last_two"]]

    def describe(self) -> dict:
        return {**super().describe(), "temperature": self.temperature}


class LossRatioBalancer(Balancer):
    """Scales terms so that each one's weighted value is a set share of their total, from the
    terms' magnitudes alone (no gradients). For terms that differ by orders of magnitude: a
    soft-target term a thousand times smaller than the hard-label term barely moves the student
    whatever its weight in [0, 1].

    Observes the mean raw value L_k of each term per epoch (``observe_epoch``), smoothed over
    epochs with ``momentum`` m (0 keeps the last epoch only)::

        Lbar_k <- m * Lbar_k + (1 - m) * L_k        (Lbar_k = L_k when first observed)

    The balanced terms B are those in ``targets`` with a positive scheduled weight and a positive
    Lbar_k. With shares p_k = target_k / sum_{i in B} target_i::

        S   = sum_{i in B} scheduled_i * Lbar_i
        w_k = p_k * S / (scheduled_k * Lbar_k)

    so the weighted value scheduled_k * w_k * Lbar_k is the share p_k of S, and the balanced terms
    keep their total S. Other terms keep their scheduled weight: one the schedule has switched off
    stays off, and one whose value is 0 has nothing to scale.
    """

    def __init__(self, targets: dict[str, float], momentum: float = 0.0):
        if not targets:
            raise ValueError("targets must name at least one term")
        if any(not share > 0 for share in targets.values()):
            raise ValueError(f"every target share must be positive (got {targets})")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1) (got {momentum})")
        self.targets = dict(targets)
        self.momentum = momentum
        self.magnitudes: dict[str, float] = {}

    def factors(self, scheduled: dict[str, float]) -> dict[str, float]:
        magnitudes = self.magnitudes
        balanced = [name for name in self.targets if scheduled.get(name, 0.0) > 0 and magnitudes.get(name, 0.0) > 0]
        total = sum(scheduled[name] * magnitudes[name] for name in balanced)
        shares = {name: self.targets[name] / sum(self.targets[i] for i in balanced) for name in balanced}
        return {name: shares[name] * total / (scheduled[name] * magnitudes[name]) for name in balanced}

    def observe_epoch(self, raw: dict[str, float]) -> None:
        for name in self.targets:
            if name in raw:
                value = float(raw[name])
                self.magnitudes[name] = self.momentum * self.magnitudes.get(name, value) + (1 - self.momentum) * value

    def state_dict(self) -> dict:
        return {"magnitudes": dict(self.magnitudes)}

    def load_state_dict(self, state: dict) -> None:
        self.magnitudes = dict(state["magnitudes"])

    def describe(self) -> dict:
        return {**super().describe(), "targets": dict(self.targets), "momentum": self.momentum}


class UncertaintyWeighting(Balancer):
    """Uncertainty weighting (Kendall, Gal & Cipolla 2018, "Multi-Task Learning Using Uncertainty
    to Weigh Losses for Scene Geometry and Semantics"): each term k has a learned log-variance s_k
    in the objective::

        total = sum_k exp(-s_k) * L_k + s_k

    A term is weighed by the inverse of its learned scale; the s_k summand keeps the scales from
    growing without bound (at the optimum, exp(-s_k) = 1 / L_k). The factor is w_k = exp(-s_k).

    Observes each batch's raw values (``observe_step``). s starts at 0 (w_k = 1) and takes one
    step of its own Adam optimizer after each training step, with the gradient::

        d total / d s_k = 1 - exp(-s_k) * L_k

    computed from the observed values, detached from the model's graph. s enters the total only
    through this formula, so this is the gradient backpropagation would give it, without the
    model's optimizer or backward pass having to know about s.

    After each step s_k is clamped to [-log(max_factor), log(max_factor)], so every factor stays
    within [1 / max_factor, max_factor]. Unbounded, a term that sits at 0 (a margin cosine inside
    its margin) has its optimum at s_k = -inf: its gradient is 1 at every step, the factor grows
    exponentially (to 7e9 within 1,000 steps), and the first time the term is above 0 again it
    swamps every other term. A clamp, unlike a softplus, leaves the method exactly as published
    wherever the bound is not reached.
    """

    observes_steps = True

    def __init__(self, terms: tuple[str, ...], lr: float = 0.01, max_factor: float = 10.0):
        if not lr > 0:
            raise ValueError(f"lr must be positive (got {lr})")
        if not max_factor > 1:
            raise ValueError(f"max_factor must be above 1 (got {max_factor})")
        self.terms = _term_names(terms)
        self.lr = lr
        self.max_factor = max_factor
        self.log_variances = torch.zeros(len(self.terms), dtype=torch.float64)
        self.optimizer = torch.optim.Adam([self.log_variances], lr=lr)

    def factors(self, scheduled: dict[str, float]) -> dict[str, float]:
        return dict(zip(self.terms, torch.exp(-self.log_variances).tolist()))

    def observe_step(self, raw: dict[str, torch.Tensor], grad_norms: dict[str, float] | None = None) -> None:
        values = torch.tensor([_detached(raw[name]) for name in self.terms], dtype=torch.float64)
        self.log_variances.grad = 1 - torch.exp(-self.log_variances) * values
        self.optimizer.step()
        bound = math.log(self.max_factor)
        with torch.no_grad():
            self.log_variances.clamp_(-bound, bound)

    def state_dict(self) -> dict:
        # Copies: the optimizer's state dict holds its live tensors, which later steps update in place.
        return {"log_variances": self.log_variances.clone(), "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        self.log_variances.copy_(state["log_variances"])
        # The optimizer adopts the given tensors as its state; a copy keeps later steps out of ``state``.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))

    def describe(self) -> dict:
        return {**super().describe(), "terms": list(self.terms), "lr": self.lr, "max_factor": self.max_factor}


# GradNorm keeps every factor at least this large: at 0 a term would have no gradient to measure
# (G_k = 0) and could never come back.
MIN_GRADNORM_FACTOR = 1e-3


class GradNorm(Balancer):
    """GradNorm (Chen, Badrinarayanan, Lee & Rabinovich 2018, "GradNorm: Gradient Normalization for
    Adaptive Loss Balancing in Deep Multitask Networks"): learns the factors so that each term
    pulls on a shared layer W as hard as its slowness to train calls for.

    Observes, after each step (``observe_step``), each term's raw value L_k and the norm of the
    gradient of its balanced value with respect to W, G_k = ||grad_W (w_k * L_k)||, with w_k the
    balancer's factor (``factors``; the schedule is left out: it multiplies the learned factors,
    it is not learned). With L_k(0) the first values observed::

        Gbar     = mean_k G_k
        L~_k     = L_k / L_k(0)                 (1 if L_k(0) = 0)
        r_k      = L~_k / mean_i L~_i           (relative inverse training rate)
        target_k = Gbar * r_k ** alpha          (held constant in the update)
        w_k     <- w_k - lr * sign(G_k - target_k) * G_k / w_k

    The last line is gradient descent on sum_k |G_k - target_k|: G_k is proportional to w_k, so
    dG_k/dw_k = G_k / w_k. The factors are then kept at least ``MIN_GRADNORM_FACTOR`` and
    renormalized to sum_k w_k = K. They start at 1. ``alpha`` sets how hard terms that train
    slowly are pulled up; at 0 every term gets the same gradient norm.
    """

    observes_steps = True
    needs_grad_norms = True

    def __init__(self, terms: tuple[str, ...], alpha: float = 1.5, lr: float = 0.025):
        if not alpha >= 0:
            raise ValueError(f"alpha must be at least 0 (got {alpha})")
        if not lr > 0:
            raise ValueError(f"lr must be positive (got {lr})")
        self.terms = _term_names(terms)
        self.alpha = alpha
        self.lr = lr
        self.learned = {name: 1.0 for name in self.terms}
        self.initial_values: dict[str, float] | None = None

    def factors(self, scheduled: dict[str, float]) -> dict[str, float]:
        return dict(self.learned)

    def observe_step(self, raw: dict[str, torch.Tensor], grad_norms: dict[str, float] | None = None) -> None:
        if grad_norms is None:
            raise ValueError("GradNorm needs the gradient norm of each balanced term on the shared layer")
        values = {name: _detached(raw[name]) for name in self.terms}
        if self.initial_values is None:
            self.initial_values = values
        initial = self.initial_values
        progress = {name: values[name] / initial[name] if initial[name] != 0 else 1.0 for name in self.terms}
        mean_progress = sum(progress.values()) / len(self.terms)
        if mean_progress == 0:  # every term is at 0: nothing to balance
            return
        norms = {name: float(grad_norms[name]) for name in self.terms}
        mean_norm = sum(norms.values()) / len(self.terms)
        for name in self.terms:
            target = mean_norm * (progress[name] / mean_progress) ** self.alpha
            slope = _sign(norms[name] - target) * norms[name] / self.learned[name]
            self.learned[name] = max(MIN_GRADNORM_FACTOR, self.learned[name] - self.lr * slope)
        scale = len(self.terms) / sum(self.learned.values())
        self.learned = {name: w * scale for name, w in self.learned.items()}

    def state_dict(self) -> dict:
        initial = self.initial_values
        return {"learned": dict(self.learned), "initial_values": None if initial is None else dict(initial)}

    def load_state_dict(self, state: dict) -> None:
        self.learned = dict(state["learned"])
        self.initial_values = None if state["initial_values"] is None else dict(state["initial_values"])

    def describe(self) -> dict:
        return {**super().describe(), "terms": list(self.terms), "alpha": self.alpha, "lr": self.lr}


def _term_names(terms: tuple[str, ...]) -> tuple[str, ...]:
    terms = tuple(terms)
    if not terms or len(set(terms)) != len(terms):
        raise ValueError(f"terms must name at least one term, each once (got {terms})")
    return terms


def _detached(value: torch.Tensor | float) -> float:
    """A term's value as a number, cut from the model's graph."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def _sign(x: float) -> float:
    """-1, 0 or 1: the subgradient of |x| that is 0 at 0, so a term already on target stays put."""
    return float((x > 0) - (x < 0))
