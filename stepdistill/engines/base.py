"""What every engine shares: the state of one student in training, its weights of the method's
terms, the bookkeeping at the end of an epoch, and the one ``fit`` loop.

An engine trains a group of students epoch by epoch (``Engine.run_epoch``); what it trains on is
a ``TrainingData``, which also plans which students train together with which engine:
- ``engines.tabular.TabularData``: numeric tables; logistic students stacked in the linear engine
  (closed-form gradients), every other student in the autograd engine;
- ``engines.lm.LMData``: text records; generative language models in the LM engine.

Each student keeps its own optimizer, scheduler, weight controllers (balancer) and random
generator, so its trajectory does not depend on which students it trained with, and a student's
``TrainState`` is all that is needed to resume it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from stepdistill.balancers import Balancer
from stepdistill.methods import TrainingConfig
from stepdistill.terms import Method


@dataclass(eq=False)  # a student is itself, not its values: engines compare students by identity
class TrainState:
    """Everything needed to continue training one student: model, projection head, optimizer,
    scheduler, weight controllers (in ``method``, and its own ``balancer``), random generator,
    progress and history.

    ``history``: one dict per epoch (``epoch``, ``lr``, ``weights``: every term's weight,
    ``train_loss``, ``val_loss``, ``terms``: the terms trained, name -> ``raw``, ``weight``,
    ``weighted``). ``best_model``: the weights (on the CPU) of the
    epoch with the lowest validation loss, kept when early stopping is on and restored when
    training ends.

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
    rationales as vectors and the student's rationale width differs from the teacher's.
    Initialization runs on the CPU, so a seed gives the same starting point on any device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model()
        head = None
        if method.needs_rationale and teacher_rationale_width is not None:
            if model.rationale_width != teacher_rationale_width:
                head = nn.Linear(model.rationale_width, teacher_rationale_width)
    model.to(device)
    if hasattr(model, "parameter_groups"):  # parts trained at learning rates of their own (students/encoder.py)
        params = model.parameter_groups() + ([] if head is None else [{"params": list(head.to(device).parameters())}])
    else:
        params = list(model.parameters()) + ([] if head is None else list(head.to(device).parameters()))
    optimizer = make_optimizer(params, method.training)
    balancer = None if method.balancer is None else copy.deepcopy(method.balancer)
    return TrainState(name, method, model, head, optimizer, epoch_scheduler(optimizer, method.training), torch.Generator().manual_seed(seed), balancer)


def make_optimizer(params: list[nn.Parameter] | list[dict], training: TrainingConfig) -> torch.optim.Optimizer:
    """The method's optimizer over ``params`` (or parameter groups, each at the method's learning
    rate unless it names its own)."""
    if training.optimizer == "sgd":
        return torch.optim.SGD(params, lr=training.lr, weight_decay=training.weight_decay)
    if training.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=training.lr, weight_decay=training.weight_decay)
    return torch.optim.Adam(params, lr=training.lr, weight_decay=training.weight_decay)


def epoch_scheduler(optimizer: torch.optim.Optimizer, training: TrainingConfig):
    """The learning-rate schedule, stepped once per epoch (plateau: on the validation loss)."""
    lr_scheduler = torch.optim.lr_scheduler
    if training.scheduler == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, factor=training.lr_factor, patience=training.plateau_patience)
    if training.scheduler == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=training.epochs)
    if training.scheduler == "step":
        return lr_scheduler.StepLR(optimizer, step_size=training.step_epochs, gamma=training.lr_factor)
    return None


def set_step_learning_rate(state: TrainState, step: int, steps_per_epoch: int) -> None:
    """``warmup_linear``, a schedule of optimizer steps (as Hugging Face's linear schedule with
    warmup): at the run's step s of T (``training.epochs`` x ``steps_per_epoch``), each group's
    learning rate times s / W for the first W (``warmup_fraction`` of T), then (T - s) / (T - W).
    Read from the student's epoch and ``step`` in it, it holds no state of its own, so a resumed
    run goes on where it stopped (each group's starting rate is kept in the optimizer's state)."""
    training = state.method.training
    total = training.epochs * steps_per_epoch
    warmup = max(1, round(training.warmup_fraction * total))
    s = state.epoch * steps_per_epoch + step
    factor = s / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    for group in state.optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor


def scheduled_weights(state: TrainState) -> dict[str, float]:
    """Each term's weight from its schedule at the state's epoch."""
    return {t.name: t.weight.value(state.epoch) for t in state.method.terms}


def current_weights(state: TrainState) -> dict[str, float]:
    """Each term's weight now: its schedule, rescaled by the student's balancer if any."""
    scheduled = scheduled_weights(state)
    return scheduled if state.balancer is None else state.balancer.weights(scheduled)


# --- the engine interface and the loop -------------------------------------------------------


class Engine:
    """Trains ``states`` (every one of them not done) together, one epoch per ``run_epoch``: each
    student's batches, then its ``end_epoch``. ``release`` hands the students back, detached
    from anything the engine shares between them."""

    def __init__(self, states: list[TrainState]):
        self.states = states

    def run_epoch(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        """Nothing to undo unless an engine shares something between its students."""


@dataclass(frozen=True)
class Group:
    """Students that train together: one engine per round (``make_engine(active students)``).
    ``paced``: the rows depend on the epoch (a curriculum), so only students at the same epoch
    train together."""

    states: list[TrainState]
    make_engine: Callable[[list[TrainState]], Engine]
    paced: bool = False


class TrainingData(Protocol):
    """What students train on, and how: ``plan(states)`` groups them, each with its engine."""

    def plan(self, states: list[TrainState]) -> list[Group]: ...


def fit(states: list[TrainState], data: TrainingData, on_epoch_end: Callable[[list[TrainState]], None] | None = None) -> None:
    """Train ``states`` on ``data`` until each has run its epochs (or stopped early, or
    diverged), from where each stands; then restore each student's best epoch (early stopping).

    ``on_epoch_end(states)`` is called with every student of ``states`` after each epoch of any
    of them (to checkpoint them, say): each student's state is then one it can resume from.
    """
    for group in data.plan(states):
        engine = None
        while active := _next_round(group.states, group.paced):
            if engine is None or engine.states != active:
                if engine is not None:
                    engine.release()
                engine = group.make_engine(active)
            engine.run_epoch()
            if on_epoch_end is not None:
                on_epoch_end(states)
        if engine is not None:
            engine.release()
        for state in group.states:
            if state.best_model is not None and state.diverged is None:
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


def epochs_left(states: list[TrainState]) -> int:
    """The epochs the students have yet to train, at most: early stopping or divergence may end
    a student sooner, which takes its remaining epochs off the count at once."""
    return sum(s.method.training.epochs - s.epoch for s in states if not s.done)


def end_epoch(state: TrainState, weights: dict[str, float], terms: dict[str, dict], val_loss: float, divergence_threshold: float = math.inf) -> None:
    """Close the student's epoch: ``weights`` (every term's weight this epoch), ``terms`` (the
    terms trained: name -> ``raw``, ``weight``, ``weighted``) and the validation loss go to its
    history, the terms to its balancer; a loss that is not finite, or a validation
    loss above ``divergence_threshold``, marks it diverged; otherwise the scheduler steps, the
    best epoch's weights are kept (early stopping on) and patience is counted."""
    if state.balancer is not None:
        state.balancer.observe_epoch({name: term["raw"] for name, term in terms.items()})
    train_loss = sum(term["weighted"] for term in terms.values())
    lr = state.optimizer.param_groups[0]["lr"]
    state.history.append({"epoch": state.epoch, "lr": lr, "weights": weights, "train_loss": train_loss, "val_loss": val_loss, "terms": terms})
    state.diverged = divergence(state.epoch, train_loss, val_loss, divergence_threshold)
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
            state.best_model = {key: value.detach().to("cpu", copy=True) for key, value in state.model.state_dict().items()}
    else:
        state.bad_epochs += 1
        state.stopped = patience is not None and state.bad_epochs >= patience


# A validation loss this many times a reference (for classifiers, the class-prior rule's, which
# predicts the training label shares for every row) is no model of the data: training has blown
# up, usually from too high a learning rate. A poor but working student stays within a small
# multiple of the prior.
DIVERGENCE_FACTOR = 10.0


def divergence(epoch: int, train_loss: float, val_loss: float, threshold: float = math.inf) -> str | None:
    """Why the epoch's losses show a run that blew up, or None. ``threshold``:
    ``DIVERGENCE_FACTOR`` times the reference validation loss (inf: none)."""
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


def record_time(stack: list[TrainState], seconds: float) -> None:
    """``seconds``: the wall time of one epoch of ``stack``, students that trained as one."""
    for state in stack:
        state.stacked_seconds += seconds
        state.stacked_with = max(state.stacked_with, len(stack))
        if len(stack) > 1:
            state.seconds = None
        elif state.seconds is not None:
            state.seconds += seconds
