"""Training: the state of one student, and the loop that trains several at once.

Tabular data lives in memory as tensors; an epoch is a permutation of the training rows, cut into
batches by slicing, so there is no per-sample Python work. Each batch row carries its own sample's
teacher outputs, gathered by the same row index (the cache aligned them to the training rows by
sample id before the loop).

Two engines compute the updates:
- the linear engine trains a group of logistic students as one stacked model, with the closed-form
  gradients of the loss terms (losses.py), several times faster than autograd for such small models;
- the autograd engine trains any other student (MLPs, students with a projection head).
Each student keeps its own optimizer, scheduler and random generator, so its trajectory does not
depend on which students it was trained with: an engine holds only the students still training
(one that is done draws nothing from its generator and costs nothing), and under a curriculum,
whose rows depend on the epoch, only students at the same epoch train together (see _next_round).

A student is marked diverged, and stops, when an epoch leaves its training or validation loss not
finite, or its validation loss above ``DIVERGENCE_FACTOR`` times that of the class-prior rule.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import nn

from stepdistill.balancers import Balancer
from stepdistill.data import Table
from stepdistill.losses import hard_label_loss
from stepdistill.methods import Method, TrainingConfig
from stepdistill.students import LogisticModel
from stepdistill.teachers.cache import TeacherCache
from stepdistill.terms import Batch, Outputs


# Rows per forward pass when measuring a split, and the size of the training sample on which
# loss terms are measured each epoch: bounds the memory of activations and the time spent.
EVAL_CHUNK = 8192
# A validation loss this many times the class-prior rule's (predicting the training label shares
# for every row) is no model of the data: training has blown up, usually from too high a
# learning rate. A poor but working student stays within a small multiple of the prior.
DIVERGENCE_FACTOR = 10.0


@dataclass(eq=False)  # a student is itself, not its values: engines compare students by identity
class TrainState:
    """Everything needed to continue training one student: model, projection head, optimizer,
    scheduler, weight controllers (in ``method``), random generator, progress and history.

    Time spent training:
    - ``seconds``: measured for this student alone (its own batches and end-of-epoch
      measurements), or None once it has trained stacked with other students in the linear
      engine, where one step updates them all and its share cannot be measured;
    - ``stacked_seconds``: wall time of its epochs, counting a stack's whole time for each of its
      members (equal to ``seconds`` for a student that always trained alone);
    - ``stacked_with``: the most students, itself included, it trained with in one stack (1: alone).

    ``diverged``: None, or why training blew up (then training stopped, and nothing was restored).
    """

    name: str
    method: Method
    model: nn.Module
    head: nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None
    generator: torch.Generator
    balancer: Balancer | None = None
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    seconds: float | None = 0.0
    stacked_seconds: float = 0.0
    stacked_with: int = 1
    best_val_loss: float = math.inf
    best_model: dict | None = None
    bad_epochs: int = 0
    stopped: bool = False
    diverged: str | None = None

    @property
    def done(self) -> bool:
        return self.stopped or self.diverged is not None or self.epoch >= self.method.training.epochs

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "head": None if self.head is None else self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "weights": [t.weight.state_dict() for t in self.method.terms],
            "balancer": None if self.balancer is None else self.balancer.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "history": copy.deepcopy(self.history),
            "seconds": self.seconds,
            "stacked_seconds": self.stacked_seconds,
            "stacked_with": self.stacked_with,
            "best_val_loss": self.best_val_loss,
            "best_model": self.best_model,
            "bad_epochs": self.bad_epochs,
            "stopped": self.stopped,
            "diverged": self.diverged,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.head is not None:
            self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for term, weight_state in zip(self.method.terms, state["weights"]):
            term.weight.load_state_dict(weight_state)
        if self.balancer is not None:
            self.balancer.load_state_dict(state["balancer"])
        self.generator.set_state(state["generator"])
        self.epoch = state["epoch"]
        self.history = copy.deepcopy(state["history"])
        self.seconds = state["seconds"]
        self.stacked_seconds = state["stacked_seconds"]
        self.stacked_with = state["stacked_with"]
        self.best_val_loss = state["best_val_loss"]
        self.best_model = state["best_model"]
        self.bad_epochs = state["bad_epochs"]
        self.stopped = state["stopped"]
        self.diverged = state["diverged"]


def default_device() -> torch.device:
    """``STEPDISTILL_DEVICE`` if set (e.g. ``cpu`` to keep off a GPU), else CUDA when available."""
    chosen = os.environ.get("STEPDISTILL_DEVICE")
    if chosen:
        return torch.device(chosen)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def new_state(
    name: str,
    method: Method,
    make_model: Callable[[], nn.Module],
    seed: int,
    teacher_rationale_width: int | None = None,
    device: torch.device | str = "cpu",
) -> TrainState:
    """A fresh student: the model and projection head initialized from ``seed``, on ``device``.

    A projection head (a linear map, used in training only) is added when the method compares
    rationales and the student's rationale width differs from the teacher's. Initialization runs
    on the CPU, so a seed gives the same starting point on any device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model()
        head = None
        if method.needs_rationale and teacher_rationale_width is not None:
            if model.rationale_width != teacher_rationale_width:
                head = nn.Linear(model.rationale_width, teacher_rationale_width)
    model.to(device)
    params = list(model.parameters())
    if head is not None:
        params += list(head.to(device).parameters())
    training = method.training
    optimizer = (
        torch.optim.SGD(params, lr=training.lr) if training.optimizer == "sgd" else torch.optim.Adam(params, lr=training.lr)
    )
    balancer = None if method.balancer is None else copy.deepcopy(method.balancer)
    return TrainState(
        name, method, model, head, optimizer, _scheduler(optimizer, training), torch.Generator().manual_seed(seed), balancer
    )


def scheduled_weights(state: TrainState) -> dict[str, float]:
    """Each term's weight from its schedule at the state's epoch."""
    return {t.name: t.weight.value(state.epoch) for t in state.method.terms}


def current_weights(state: TrainState) -> dict[str, float]:
    """Each term's weight now: its schedule, rescaled by the student's balancer if any."""
    scheduled = scheduled_weights(state)
    return scheduled if state.balancer is None else state.balancer.weights(scheduled)


def _scheduler(optimizer: torch.optim.Optimizer, training: TrainingConfig):
    """The learning-rate schedule, stepped once per epoch (plateau: on the validation loss)."""
    lr_scheduler = torch.optim.lr_scheduler
    if training.scheduler == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, factor=training.lr_factor, patience=training.plateau_patience)
    if training.scheduler == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=training.epochs)
    if training.scheduler == "step":
        return lr_scheduler.StepLR(optimizer, step_size=training.step_epochs, gamma=training.lr_factor)
    return None


def fit(
    states: list[TrainState],
    train: Table,
    val: Table,
    cache: TeacherCache | None,
    on_epoch_end: Callable[[list[TrainState]], None] | None = None,
    labelled: torch.Tensor | None = None,
) -> None:
    """Train ``states`` until each has run its epochs (or stopped early, or diverged), from where
    each stands.

    Students the linear engine can train are stacked into groups; the rest go to the autograd
    engine. ``cache`` may be None only if no method uses the teacher. ``labelled`` (N,) bool
    marks the training rows whose labels students may use (default: all); the labels of the other
    rows play no part in training, while the teacher's outputs serve on every row.
    ``on_epoch_end(states)`` is called with every student of ``states`` after each epoch of any
    of them (to checkpoint them, say): each student's state is then one it can resume from.
    """
    device = next(states[0].model.parameters()).device
    data = _TrainingData.build(train, val, cache, any(s.method.uses_teacher for s in states), device, labelled)
    for group, engine_type in _plan(states):
        _fit_group(group, engine_type, data, None if on_epoch_end is None else lambda: on_epoch_end(states))


def epochs_left(states: list[TrainState]) -> int:
    """The epochs the students have yet to train, at most: early stopping or divergence may end
    a student sooner, which takes its remaining epochs off the count at once."""
    return sum(s.method.training.epochs - s.epoch for s in states if not s.done)


@dataclass
class _TrainingData:
    """The training split with the teacher's outputs aligned row by row, the validation split, and
    the validation loss above which a student has diverged."""

    batch: Batch  # every training row; batches are gathered from it
    val: Table
    divergence_threshold: float

    @classmethod
    def build(
        cls, train: Table, val: Table, cache: TeacherCache | None, needs_teacher: bool, device: torch.device, labelled: torch.Tensor | None
    ) -> _TrainingData:
        if needs_teacher:
            if cache is None:
                raise ValueError("a method uses the teacher, but no teacher outputs were given")
            teacher = cache.take(train.ids)
            logits, rationale = teacher.logits, teacher.rationale
        else:
            logits, rationale = torch.zeros(len(train), 0), None
        # Hidden labels are replaced before training sees them, so no term or curriculum can read them.
        y = train.y if labelled is None else torch.where(labelled, train.y, 0)
        batch = Batch(train.X, y, logits, rationale, labelled)
        seen = train.y if labelled is None else train.y[labelled]
        threshold = DIVERGENCE_FACTOR * _prior_log_loss(seen, val.y, train.n_classes)
        return cls(batch.map(lambda t: t.to(device)), val.to(device), threshold)

    def permuted(self, perms: torch.Tensor) -> Batch:
        """``perms`` (S, N) -> every field gathered once per epoch as (S, N, ...), so that the
        epoch's batches are slices (views), not per-batch gathers. (index_select is several
        times faster than advanced indexing.)"""
        return self.batch.map(lambda t: t.index_select(0, perms.flatten()).unflatten(0, perms.shape))

    def measurement_sample(self) -> Batch:
        """The first ``EVAL_CHUNK`` training rows, on which loss terms are measured each epoch
        (the split's order is already random)."""
        n = min(len(self), EVAL_CHUNK)
        return self.batch.map(lambda t: t[:n])

    def __len__(self) -> int:
        return self.batch.x.shape[0]


def _prior_log_loss(train_y: torch.Tensor, val_y: torch.Tensor, n_classes: int) -> float:
    """Mean log-loss on ``val_y`` of predicting every row's class with its share of ``train_y``."""
    shares = torch.bincount(train_y.cpu(), minlength=n_classes).double() / len(train_y)
    return float(-shares[val_y.cpu()].log().mean())


def _fit_group(states: list[TrainState], engine_type: type[_Engine], data: _TrainingData, on_epoch_end: Callable[[], None] | None) -> None:
    batch_size = states[0].method.training.batch_size
    curriculum = states[0].method.curriculum  # shared by the group (see _plan)
    order = None
    if curriculum is not None:
        b = data.batch
        order = curriculum.easiest_first(b.teacher_logits, b.y, b.labelled).cpu()
        data = replace(data, batch=replace(b, teacher_weight=curriculum.teacher_weights(b.teacher_logits, b.y, b.labelled)))
    engine = None
    while active := _next_round(states, curriculum is not None):
        if engine is None or engine.states != active:
            if engine is not None:
                engine.release()
            engine = engine_type(active)
        rows = torch.arange(len(data)) if curriculum is None else curriculum.rows_at(order, active[0].epoch)
        engine.run_epoch(data, rows, batch_size)
        if on_epoch_end is not None:
            on_epoch_end()
    if engine is not None:
        engine.release()
    for state in states:
        early_stopping = state.method.training.early_stopping_patience is not None
        if state.best_model is not None and early_stopping and state.diverged is None:
            state.model.load_state_dict(state.best_model)


def _next_round(states: list[TrainState], paced: bool) -> list[TrainState]:
    """The students that train the next epoch together: all that are not done, or, when the rows
    are ``paced`` by a curriculum (and so depend on the epoch), those of them at the earliest
    epoch. Students ahead (e.g. resumed from a later epoch) wait until the others catch up; as each
    student's steps depend only on its own state, the order of the rounds changes nothing."""
    active = [s for s in states if not s.done]
    if not paced or not active:
        return active
    earliest = min(s.epoch for s in active)
    return [s for s in active if s.epoch == earliest]


@torch.no_grad()
def validation_loss(model: nn.Module, val: Table) -> float:
    """Mean hard-label loss on the validation split: what schedulers and early stopping watch."""
    was_training = model.training
    model.eval()
    total = sum(
        float(hard_label_loss(model(val.X[start : start + EVAL_CHUNK]).logits, val.y[start : start + EVAL_CHUNK]).sum())
        for start in range(0, len(val), EVAL_CHUNK)
    )
    model.train(was_training)
    return total / len(val)


def _end_epoch(state: TrainState, term_names: list[str], raw: torch.Tensor, weights: torch.Tensor, data: _TrainingData) -> None:
    own = {t.name for t in state.method.terms}
    terms = {
        name: {"raw": float(raw[j]), "weight": float(weights[j]), "weighted": float(raw[j] * weights[j])}
        for j, name in enumerate(term_names)
        if name in own
    }
    if state.balancer is not None:
        state.balancer.observe_epoch({name: t["raw"] for name, t in terms.items()})
    val_loss = validation_loss(state.model, data.val)
    train_loss = sum(t["weighted"] for t in terms.values())
    state.history.append(
        {
            "epoch": state.epoch,
            "lr": state.optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            "val_loss": val_loss,
            "terms": terms,
        }
    )
    state.diverged = _divergence(state.epoch, train_loss, val_loss, data.divergence_threshold)
    state.epoch += 1
    if state.diverged is not None:
        return
    if isinstance(state.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        state.scheduler.step(val_loss)
    elif state.scheduler is not None:
        state.scheduler.step()
    patience = state.method.training.early_stopping_patience
    if val_loss < state.best_val_loss:
        state.best_val_loss, state.bad_epochs = val_loss, 0
        if patience is not None:
            state.best_model = copy.deepcopy(state.model.state_dict())
    else:
        state.bad_epochs += 1
        state.stopped = patience is not None and state.bad_epochs >= patience


def _divergence(epoch: int, train_loss: float, val_loss: float, threshold: float) -> str | None:
    """Why the epoch's losses show a run that blew up, or None."""
    if not math.isfinite(train_loss):
        return f"training loss {train_loss} at epoch {epoch}; lower the learning rate"
    if not math.isfinite(val_loss):
        return f"validation loss {val_loss} at epoch {epoch}; lower the learning rate"
    if val_loss > threshold:
        return (
            f"validation loss {val_loss:.4g} at epoch {epoch} is above {DIVERGENCE_FACTOR:g}x the class-prior rule's"
            f" ({threshold / DIVERGENCE_FACTOR:.4g}); lower the learning rate"
        )
    return None


def _record_time(stack: list[TrainState], seconds: float) -> None:
    """``seconds``: the wall time of one epoch of ``stack``, students that trained as one."""
    for state in stack:
        state.stacked_seconds += seconds
        state.stacked_with = max(state.stacked_with, len(stack))
        if len(stack) > 1:
            state.seconds = None
        elif state.seconds is not None:
            state.seconds += seconds


# --- engines ---------------------------------------------------------------------------------


class _Engine:
    """Shared by both engines: the union of the students' terms, each student's weights, and the
    measurement of its terms after an epoch. Every student an engine holds is training."""

    def __init__(self, states: list[TrainState]):
        self.states = states
        self.term_names: list[str] = []
        self.objectives = []
        for state in states:
            for term in state.method.terms:
                if term.name not in self.term_names:
                    self.term_names.append(term.name)
                    self.objectives.append(term.objective)
        self.has = torch.tensor([[self._has_term(s, name) for name in self.term_names] for s in states])

    @staticmethod
    def _has_term(state: TrainState, name: str) -> bool:
        return any(t.name == name for t in state.method.terms)

    def run_epoch(self, data: _TrainingData, rows: torch.Tensor, batch_size: int) -> None:
        """One epoch of every student over ``rows`` (positions in ``data``), each in its own
        random order, then each student's end of epoch (measurements, history, schedulers)."""
        raise NotImplementedError

    def weights_of(self, i: int) -> torch.Tensor:
        """(T,): student ``i``'s weight of each term now, 0 for terms it lacks."""
        weights = torch.zeros(len(self.term_names))
        for name, value in current_weights(self.states[i]).items():
            weights[self.term_names.index(name)] = value
        return weights

    def release(self) -> None:
        """Hand the students back, detached from anything the engine shares between them."""

    @torch.no_grad()
    def term_values(self, i: int, sample: Batch) -> torch.Tensor:
        """(T,): each term's mean value for student ``i`` over ``sample``, measured after the epoch
        in eval mode. Measuring once per epoch on a fixed sample, instead of averaging over the
        epoch's batches, keeps the hot loop free of bookkeeping and gives values of one model, not
        of a model changing during the epoch. Consistency noise here comes from a generator of its
        own, so measuring does not change the training run."""
        state = self.states[i]
        model, head = state.model, state.head
        noise = torch.Generator().manual_seed(state.epoch)
        values = torch.zeros(len(self.term_names))
        model.eval()
        out = model(sample.x)
        if head is not None:
            out.rationale = head(out.rationale)
        for j, objective in enumerate(self.objectives):
            if not self.has[i, j]:
                continue
            if objective.perturbs_inputs:
                out.perturbed_logits = model(objective.perturb(sample.x, noise)).logits
            values[j] = objective.loss(out, sample).mean()
        model.train()
        return values


class AutogradEngine(_Engine):
    """Any student; one optimizer step per batch through autograd. Students train one after the
    other, each timed on its own: they share nothing but the data."""

    def __init__(self, states: list[TrainState]):
        super().__init__(states)
        for state in states:
            state.model.train()

    def run_epoch(self, data: _TrainingData, rows: torch.Tensor, batch_size: int) -> None:
        sample = data.measurement_sample()
        for i, state in enumerate(self.states):
            started = time.perf_counter()
            weights = self.weights_of(i)
            epoch_weights = dict(zip(self.term_names, weights.tolist()))
            perm = rows[torch.randperm(len(rows), generator=state.generator)].to(data.batch.x.device)
            shuffled = data.batch.map(lambda t: t.index_select(0, perm))
            for batch in shuffled.split(batch_size, dim=0):
                self.step(i, batch, epoch_weights)
            _end_epoch(state, self.term_names, self.term_values(i, sample), weights, data)
            _record_time([state], time.perf_counter() - started)

    def step(self, i: int, batch: Batch, epoch_weights: dict[str, float]) -> None:
        """One optimizer step of student ``i`` on ``batch``, with the epoch's weights unless its
        balancer updates them after every step."""
        state = self.states[i]
        out = state.model(batch.x)
        if state.head is not None:
            out.rationale = state.head(out.rationale)
        raw = {}
        for j, objective in enumerate(self.objectives):
            if not self.has[i, j]:
                continue
            if objective.perturbs_inputs:
                out.perturbed_logits = state.model(objective.perturb(batch.x, state.generator)).logits
            raw[self.term_names[j]] = objective.loss(out, batch).mean()
        balancer = state.balancer
        stepwise = balancer is not None and balancer.observes_steps
        weights = current_weights(state) if stepwise else epoch_weights
        grad_norms = _gradient_norms(state, raw) if stepwise and balancer.needs_grad_norms else None
        loss = sum(weights[name] * value for name, value in raw.items())
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        if stepwise:
            balancer.observe_step({name: value.detach() for name, value in raw.items()}, grad_norms)


def _gradient_norms(state: TrainState, raw: dict[str, torch.Tensor]) -> dict[str, float]:
    """GradNorm's G_k = w_k * ||d L_k / d W|| on the student's shared layer W, w_k the
    balancer's own factor (not the schedule)."""
    factors = state.balancer.factors(scheduled_weights(state))
    shared = state.model.shared_layer
    norms = {}
    for name, value in raw.items():
        if name in factors:
            (grad,) = torch.autograd.grad(value, shared, retain_graph=True, allow_unused=True)
            norms[name] = factors[name] * (0.0 if grad is None else float(grad.norm()))
    return norms


class LinearEngine(_Engine):
    """Logistic students without projection heads, trained as one stacked model ``(S, K, d)``.

    The gradient of every term with respect to the logits and rationale is closed-form
    (losses.py); the chain rule through ``z = W x + b`` and contributions ``W * x`` is written out
    here. The resulting gradients are handed to each student's own torch optimizer. One step
    updates every student, so an epoch is timed for the stack as a whole.
    """

    def __init__(self, states: list[TrainState]):
        super().__init__(states)
        self.models: list[LogisticModel] = [s.model for s in states]
        self.needs_rationale = any(o.needs_rationale for o in self.objectives)
        # The students' parameters and gradients become views into stacked tensors (as a flat
        # parameter does in sharded training): each optimizer updates its own view in place, and
        # the engine reads all students at once without stacking on every step.
        self.W = torch.stack([m.linear.weight.detach() for m in self.models])  # (S, K, d)
        self.b = torch.stack([m.linear.bias.detach() for m in self.models]).unsqueeze(1)  # (S, 1, K)
        self.grad_W, self.grad_b = torch.zeros_like(self.W), torch.zeros_like(self.b)
        for i, m in enumerate(self.models):
            m.linear.weight.data, m.linear.bias.data = self.W[i], self.b[i, 0]
            m.linear.weight.grad, m.linear.bias.grad = self.grad_W[i], self.grad_b[i, 0]

    def release(self) -> None:
        for m in self.models:
            m.linear.weight.data = m.linear.weight.data.clone()
            m.linear.bias.data = m.linear.bias.data.clone()
            m.linear.weight.grad = m.linear.bias.grad = None

    @staticmethod
    def accepts(state: TrainState) -> bool:
        """Logistic students without a projection head, whose weights change once per epoch
        (a balancer that learns from every step needs the autograd engine's per-batch values)."""
        stepwise = state.balancer is not None and state.balancer.observes_steps
        return isinstance(state.model, LogisticModel) and state.head is None and not stepwise

    @staticmethod
    def key(state: TrainState) -> tuple:
        """Students stack together when they explain themselves alike and take batches of one size."""
        m = state.model
        return (m.rationale_kind, m.include_bias, tuple(m.groups.tolist()) if m.grouped else None, state.method.training.batch_size)

    def run_epoch(self, data: _TrainingData, rows: torch.Tensor, batch_size: int) -> None:
        started = time.perf_counter()
        weights = torch.stack([self.weights_of(i) for i in range(len(self.states))])  # (S, T)
        on_device = weights.to(self.W.device)
        self.term_weights = [on_device[:, j].view(-1, 1, 1) for j in range(len(self.term_names))]
        perms = torch.stack([rows[torch.randperm(len(rows), generator=s.generator)] for s in self.states])
        for batch in data.permuted(perms.to(data.batch.x.device)).split(batch_size, dim=1):
            self.step(batch)
        sample = data.measurement_sample()
        for i, state in enumerate(self.states):
            _end_epoch(state, self.term_names, self.term_values(i, sample), weights[i], data)
        _record_time(self.states, time.perf_counter() - started)

    @torch.no_grad()
    def step(self, batch: Batch) -> None:
        W, b, x = self.W, self.b, batch.x  # (S, K, d), (S, 1, K), (S, B, d)
        logits = torch.baddbmm(b, x, W.transpose(1, 2))  # (S, B, K)
        model = self.models[0]  # all students of a group explain themselves alike (see key)
        out = Outputs(logits, model.rationale(x, W, b.squeeze(1), logits) if self.needs_rationale else None)
        g_logits = torch.zeros_like(logits)
        g_rationale = None if out.rationale is None else torch.zeros_like(out.rationale)
        perturbed_x = g_perturbed = None
        for j, objective in enumerate(self.objectives):
            if objective.perturbs_inputs:
                perturbed_x = torch.stack(
                    [
                        objective.perturb(x[i], s.generator) if self.has[i, j] else x[i]
                        for i, s in enumerate(self.states)
                    ]
                )
                out.perturbed_logits = torch.baddbmm(b, perturbed_x, W.transpose(1, 2))
            grads = objective.grads(out, batch)
            w = self.term_weights[j]
            if grads.logits is not None:
                g_logits += w * grads.logits
            if grads.rationale is not None:
                g_rationale += w * grads.rationale
            if grads.perturbed_logits is not None:
                g_perturbed = w * grads.perturbed_logits
        g_W = torch.bmm(g_logits.transpose(1, 2), x)
        g_b = g_logits.sum(1, keepdim=True)
        if g_rationale is not None:
            g_W_rationale, g_b_rationale = model.rationale_backward(g_rationale, x)
            g_W += g_W_rationale
            g_b += g_b_rationale.unsqueeze(1)
        if g_perturbed is not None:
            g_W += torch.bmm(g_perturbed.transpose(1, 2), perturbed_x)
            g_b += g_perturbed.sum(1, keepdim=True)
        scale = 1.0 / x.shape[1]  # the loss is a mean over the batch
        torch.mul(g_W, scale, out=self.grad_W)
        torch.mul(g_b, scale, out=self.grad_b)
        for state in self.states:
            state.optimizer.step()


def _plan(states: list[TrainState]) -> list[tuple[list[TrainState], type]]:
    """Groups of students trained together, and the engine for each."""
    groups: dict[tuple, list[TrainState]] = {}
    for state in states:
        # A group shares its epochs' rows, so its students share their curriculum too.
        if LinearEngine.accepts(state):
            key = ("linear", *LinearEngine.key(state), state.method.curriculum)
        else:
            key = ("autograd", state.method.training.batch_size, state.method.curriculum)
        groups.setdefault(key, []).append(state)
    plan = []
    for key, group in groups.items():
        engine = LinearEngine if key[0] == "linear" else AutogradEngine
        plan += [(g, engine) for g in _split_conflicting_terms(group)]
    return plan


def _split_conflicting_terms(states: list[TrainState]) -> list[list[TrainState]]:
    """Split a group so that within each part a term name always means the same objective."""
    parts: list[tuple[dict, list[TrainState]]] = []
    for state in states:
        objectives = {t.name: t.objective for t in state.method.terms}
        for seen, members in parts:
            if all(seen.get(name, obj) == obj for name, obj in objectives.items()):
                seen.update(objectives)
                members.append(state)
                break
        else:
            parts.append((dict(objectives), [state]))
    return [members for _, members in parts]
