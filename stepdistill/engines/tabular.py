"""Engines for numeric tables: the training split in memory as tensors, with the teacher's outputs
aligned row by row (the caller looked them up by sample id), and two engines:

- the linear engine trains a group of logistic students as one stacked model, with the
  closed-form gradients of the loss terms (losses.py), several times faster than autograd for
  such small models;
- the autograd engine trains any other student (MLPs, CNNs, students with a projection head).

An epoch is a permutation of the training rows, cut into batches by slicing, so there is no
per-sample Python work. Unlabelled rows kept on disk (``RowFiles``: a pool or transfer set larger
than memory) are streamed instead (``StreamedRows``): an epoch reads them a shuffle buffer at a
time, so resident memory stays bounded whatever their number. An engine holds only the students still training (one that is done draws
nothing from its generator and costs nothing), and under a curriculum, whose rows depend on the
epoch, only students at the same epoch train together (``Group.paced``).

A student is marked diverged, and stops, when an epoch leaves its training or validation loss not
finite, or its validation loss above ``DIVERGENCE_FACTOR`` times that of the class-prior rule.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

import torch
from torch import nn

from stepdistill.curriculum import Curriculum
from stepdistill.data.row_files import RowFiles
from stepdistill.data.table import Table
from stepdistill.engines.base import (
    DIVERGENCE_FACTOR,
    Engine,
    Group,
    TrainState,
    current_weights,
    end_epoch,
    record_time,
    scheduled_weights,
    set_step_learning_rate,
)
from stepdistill.errors import StepDistillError
from stepdistill.losses import hard_label_loss
from stepdistill.students.logistic import LogisticModel
from stepdistill.terms import Batch, Outputs

# Rows per forward pass when measuring a split, and the size of the training sample on which
# loss terms are measured each epoch: bounds the memory of activations and the time spent.
EVAL_CHUNK = 8192
# Streamed rows are read, and their order shuffled, in chunks of this many consecutive rows.
STREAM_CHUNK_ROWS = 65_536
# Rows of students that read sequences are sorted by length within pools of this many batches.
BUCKET_BATCHES = 50


class TeacherRows(Protocol):
    """The teacher's outputs on the training rows, row by row: ``logits`` (N, K) and
    ``rationale`` (N, R), None when it gives none (``teachers.cache.TeacherOutputs``)."""

    logits: torch.Tensor
    rationale: torch.Tensor | None


@dataclass
class TabularData:
    """A training and a validation table, and the teacher's outputs on the training rows, aligned
    with them row by row (None when no method uses the teacher). ``labelled`` (N,) bool marks the
    training rows whose labels students may use (None: all); the labels of the other rows play no
    part in training, while the teacher's outputs serve on every row. ``unlabelled``: rows that
    have no label at all (an unlabelled pool, a synthetic transfer set) with the teacher's outputs
    on them (``unlabelled_teacher``), which students that learn from the teacher train on besides
    the training rows, and students that do not never see. ``unlabelled_files``: such rows kept
    on disk instead (their encoded features ``x``, the teacher's ``logits`` and ``rationale``),
    streamed ``shuffle_buffer`` rows at a time (``StreamedRows``)."""

    train: Table
    val: Table
    teacher: TeacherRows | None = None
    labelled: torch.Tensor | None = None
    unlabelled: Table | None = None
    unlabelled_teacher: TeacherRows | None = None
    unlabelled_files: RowFiles | None = None
    shuffle_buffer: int = 1 << 20

    def plan(self, states: list[TrainState]) -> list[Group]:
        """Groups of students trained together, each with its engine: logistic students the
        linear engine accepts are stacked by ``LinearEngine.key``, the rest go to the autograd
        engine; a group shares its curriculum (its epochs' rows) and its rows (with the unlabelled
        rows, for students that learn from the teacher), and within a group a term name always
        means the same objective. Streamed rows go to the autograd engine (the linear engine
        gathers a whole epoch at once), and admit no curriculum (it orders every row)."""
        device = next(states[0].model.parameters()).device
        needs_teacher = any(s.method.uses_teacher for s in states)
        has_unlabelled = self.unlabelled is not None or self.unlabelled_files is not None
        rows = {}
        groups: dict[tuple, list[TrainState]] = {}
        for state in states:
            with_unlabelled = has_unlabelled and state.method.uses_teacher
            streamed = with_unlabelled and self.unlabelled_files is not None
            if streamed and state.method.curriculum is not None:
                raise StepDistillError(
                    f"{state.name} follows a curriculum, which orders every training row, and the unlabelled rows are streamed from disk;"
                    " set data.stream_unlabelled: false (if they fit in memory) or drop the curriculum"
                )
            if LinearEngine.accepts(state) and not streamed:
                key = ("linear", *LinearEngine.key(state), state.method.curriculum, with_unlabelled)
            else:
                key = ("autograd", state.method.training.batch_size, state.method.curriculum, with_unlabelled)
            groups.setdefault(key, []).append(state)
        plan = []
        for key, group in groups.items():
            engine = LinearEngine if key[0] == "linear" else AutogradEngine
            curriculum, with_unlabelled = group[0].method.curriculum, key[-1]
            if with_unlabelled not in rows:
                if with_unlabelled and self.unlabelled_files is not None:
                    rows[with_unlabelled] = StreamedRows.build(self, device, any(s.method.needs_rationale for s in states))
                else:
                    rows[with_unlabelled] = TrainingRows.build(self, needs_teacher, device, with_unlabelled)
            paced_rows = rows[with_unlabelled] if curriculum is None else rows[with_unlabelled].paced(curriculum)
            plan += [Group(part, partial(engine, data=paced_rows), curriculum is not None) for part in _split_conflicting_terms(group)]
        return plan


@dataclass
class TrainingRows:
    """The training split with the teacher's outputs aligned row by row, on the students'
    device, the validation split, the validation loss above which a student has diverged, and,
    under a curriculum, the rows' order from easiest (``order``) and the curriculum itself."""

    batch: Batch  # every training row; batches are gathered from it
    val: Table
    divergence_threshold: float
    curriculum: Curriculum | None = None
    order: torch.Tensor | None = None

    @classmethod
    def build(cls, data: TabularData, needs_teacher: bool, device: torch.device, with_unlabelled: bool = False) -> TrainingRows:
        """``data``'s training rows (and, ``with_unlabelled``, its unlabelled rows after them) on
        ``device``; the teacher's outputs aligned with them when ``needs_teacher``."""
        train, labelled = data.train, data.labelled
        if needs_teacher:
            if data.teacher is None:
                raise ValueError("a method uses the teacher, but no teacher outputs were given")
            logits, rationale = data.teacher.logits, data.teacher.rationale
            if len(logits) != len(train):
                raise ValueError(f"{len(logits)} rows of teacher outputs for {len(train)} training rows; align them with the training rows")
        else:
            logits, rationale = torch.zeros(len(train), 0), None
        # Hidden labels are replaced before training sees them, so no term or curriculum can read them.
        y = train.y if labelled is None else torch.where(labelled, train.y, 0)
        seen = train.y if labelled is None else train.y[labelled]
        X = train.X
        if with_unlabelled:
            extra, outputs = data.unlabelled, data.unlabelled_teacher
            if outputs is None or len(outputs.logits) != len(extra):
                raise ValueError("unlabelled rows need the teacher's outputs on them, one row each")
            X, logits = torch.cat([X, extra.X]), torch.cat([logits, outputs.logits])
            rationale = None if rationale is None else torch.cat([rationale, outputs.rationale])
            y = torch.cat([y, torch.zeros(len(extra), dtype=y.dtype)])
            labelled = torch.cat([torch.ones(len(train), dtype=torch.bool) if labelled is None else labelled, torch.zeros(len(extra), dtype=torch.bool)])
        batch = Batch(X, y, logits, rationale, labelled)
        threshold = DIVERGENCE_FACTOR * _prior_log_loss(seen, data.val.y, train.n_classes)
        return cls(batch.map(lambda t: t.to(device)), data.val.to(device), threshold)

    def paced(self, curriculum: Curriculum | None) -> TrainingRows:
        """These rows under ``curriculum`` (None: as they are): its order and teacher weights."""
        if curriculum is None:
            return self
        b = self.batch
        order = curriculum.easiest_first(b.teacher_logits, b.y, b.labelled).cpu()
        weighted = replace(b, teacher_weight=curriculum.teacher_weights(b.teacher_logits, b.y, b.labelled))
        return replace(self, batch=weighted, curriculum=curriculum, order=order)

    def rows_at(self, epoch: int) -> torch.Tensor:
        """The positions of the rows trained at ``epoch``: all, or the curriculum's share."""
        return torch.arange(len(self)) if self.curriculum is None else self.curriculum.rows_at(self.order, epoch)

    def epoch_batches(self, generator: torch.Generator, batch_size: int, epoch: int, lengths: torch.Tensor | None = None) -> list[Batch]:
        """The batches of one student's ``epoch``: its rows in an order drawn from ``generator``;
        for a student that reads sequences, batches of rows of similar ``lengths`` (N,), in a
        random order (``bucketed``)."""
        rows = self.rows_at(epoch)
        perm = rows[torch.randperm(len(rows), generator=generator)]
        if lengths is not None:
            perm = bucketed(perm, lengths, batch_size, generator)
        perm = perm.to(self.batch.x.device)
        return self.batch.map(lambda t: t.index_select(0, perm)).split(batch_size, dim=0)

    def permuted(self, perms: torch.Tensor) -> Batch:
        """``perms`` (S, N) -> every field gathered once per epoch as (S, N, ...), so that the
        epoch's batches are slices (views), not per-batch gathers. (index_select is several
        times faster than advanced indexing.)"""
        return self.batch.map(lambda t: t.index_select(0, perms.flatten()).unflatten(0, perms.shape))

    def measurement_sample(self, rows: int = EVAL_CHUNK) -> Batch:
        """The first ``rows`` training rows, on which loss terms are measured each epoch (the
        split's order is already random)."""
        n = min(len(self), rows)
        return self.batch.map(lambda t: t[:n])

    def __len__(self) -> int:
        return self.batch.x.shape[0]


def perturbed_logits(objective, model: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The logits of a consistency term's second pass: on perturbed inputs; or, for a student
    that reads token ids (``perturbs_itself``), on the same ids with its dropout drawn anew
    (R-Drop, Liang et al. 2021), since noise on ids would change the tokens, not perturb them.
    In inference mode (the epoch's measurement) that pass is the first one: the term reads 0."""
    if getattr(model, "perturbs_itself", False):
        return model(x).logits
    return model(objective.perturb(x, generator)).logits


def bucketed(perm: torch.Tensor, lengths: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """``perm`` (rows in a random order) sorted by ``lengths`` within pools of ``BUCKET_BATCHES``
    batches, cut into batches, and the batches put in a random order: each batch holds rows of
    similar lengths, so a batch cut to its longest row pads little, and every row is still seen
    once an epoch in an order that changes with ``generator``."""
    pools = perm.split(batch_size * BUCKET_BATCHES)
    batches = torch.cat([pool[torch.argsort(lengths[pool], stable=True)] for pool in pools]).split(batch_size)
    return torch.cat([batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()])


@dataclass
class StreamedRows:
    """The training rows in memory (``in_memory``, on the CPU) followed by unlabelled rows on disk
    (``files``), read ``STREAM_CHUNK_ROWS`` at a time: the rows of ``TrainingRows.build(...,
    with_unlabelled=True)`` without holding the unlabelled ones. Batches move to ``device`` one
    at a time.

    An epoch's order: the chunks in a random order, taken ``shuffle_buffer`` rows' worth at a time
    (a shuffle buffer, as streaming data loaders keep), the rows of each buffer in a random order,
    and batches cut from the buffers one after the other. When every row fits in one buffer the
    order is a permutation of all of them, the very one ``TrainingRows`` draws from the same
    generator: streamed and in-memory training then give the same student. A buffer is held once
    (each batch gathers its rows from it), and the teacher's rationale is read only for students
    that learn from it."""

    in_memory: Batch
    files: RowFiles
    val: Table
    divergence_threshold: float
    shuffle_buffer: int
    device: torch.device

    @classmethod
    def build(cls, data: TabularData, device: torch.device, with_rationale: bool = True) -> StreamedRows:
        """``data``'s training rows and its streamed rows; the teacher's rationale ``with_rationale``."""
        rows = TrainingRows.build(data, True, torch.device("cpu"))
        train = rows.batch
        labelled = torch.ones(len(data.train), dtype=torch.bool) if train.labelled is None else train.labelled
        if (train.teacher_rationale is None) != ("rationale" not in data.unlabelled_files.widths):
            raise ValueError("the streamed rows and the training rows need the teacher's rationale alike")
        train = replace(train, labelled=labelled, teacher_rationale=train.teacher_rationale if with_rationale else None)
        return cls(train, data.unlabelled_files, rows.val.to(device), rows.divergence_threshold, data.shuffle_buffer, device)

    def __len__(self) -> int:
        return len(self.in_memory.x) + len(self.files)

    def read(self, start: int, stop: int) -> Batch:
        """Rows ``start`` to ``stop`` of the training rows and then the streamed ones, on the CPU."""
        n_memory = len(self.in_memory.x)
        parts = []
        if start < n_memory:
            parts.append(self.in_memory.map(lambda t: t[start : min(stop, n_memory)]))
        if stop > n_memory:
            names = [name for name in self.files.widths if name != "rationale" or self.in_memory.teacher_rationale is not None]
            read = {name: torch.from_numpy(values) for name, values in self.files.read(max(start, n_memory) - n_memory, stop - n_memory, names).items()}
            n = len(read["x"])
            parts.append(
                Batch(read["x"], torch.zeros(n, dtype=self.in_memory.y.dtype), read["logits"], read.get("rationale"), torch.zeros(n, dtype=torch.bool))
            )
        return parts[0] if len(parts) == 1 else Batch.concat(parts)

    def epoch_batches(self, generator: torch.Generator, batch_size: int, epoch: int, lengths: None = None) -> Iterator[Batch]:
        """The batches of one student's epoch, in an order drawn from ``generator`` (see the class;
        no ``lengths``: students that read sequences read no streamed rows)."""
        n_chunks = -(-len(self) // STREAM_CHUNK_ROWS)
        per_buffer = max(1, self.shuffle_buffer // STREAM_CHUNK_ROWS)
        buffers = [torch.arange(n_chunks)] if n_chunks <= per_buffer else torch.randperm(n_chunks, generator=generator).split(per_buffer)
        carried = None  # the rows a buffer leaves short of a whole batch, first in the next batch
        for chunks in buffers:
            rows = self._buffer(chunks.tolist())
            perm = torch.randperm(len(rows.x), generator=generator)
            start = 0
            if carried is not None and len(carried.x) + len(perm) < batch_size:  # a buffer smaller than a batch
                carried = Batch.concat([carried, rows.map(lambda t: t.index_select(0, perm))])
                continue
            if carried is not None:
                start = batch_size - len(carried.x)
                yield Batch.concat([carried, rows.map(lambda t: t.index_select(0, perm[:start]))]).map(lambda t: t.to(self.device))
            whole = start + (len(perm) - start) // batch_size * batch_size
            for at in range(start, whole, batch_size):
                yield rows.map(lambda t: t.index_select(0, perm[at : at + batch_size]).to(self.device))
            carried = rows.map(lambda t: t.index_select(0, perm[whole:]))
            del rows
        if carried is not None and len(carried.x):
            yield carried.map(lambda t: t.to(self.device))

    def _buffer(self, chunks: list[int]) -> Batch:
        """The rows of ``chunks``, in that order, read into one buffer."""
        first = self.read(chunks[0] * STREAM_CHUNK_ROWS, (chunks[0] + 1) * STREAM_CHUNK_ROWS)
        if len(chunks) == 1:
            return first
        sizes = [min(STREAM_CHUNK_ROWS, len(self) - c * STREAM_CHUNK_ROWS) for c in chunks]
        buffer = first.map(lambda t: t.new_empty((sum(sizes), *t.shape[1:])))
        at = 0
        for c, size in zip(chunks, sizes):
            part = first if at == 0 else self.read(c * STREAM_CHUNK_ROWS, c * STREAM_CHUNK_ROWS + size)
            for name, target in vars(buffer).items():
                if target is not None:
                    target[at : at + size] = getattr(part, name)
            at += size
        return buffer

    def measurement_sample(self, rows: int = EVAL_CHUNK) -> Batch:
        """The first ``rows`` rows, as ``TrainingRows.measurement_sample``."""
        return self.read(0, min(len(self), rows)).map(lambda t: t.to(self.device))


def _prior_log_loss(train_y: torch.Tensor, val_y: torch.Tensor, n_classes: int) -> float:
    """Mean log-loss on ``val_y`` of predicting every row's class with its share of ``train_y``."""
    shares = torch.bincount(train_y.cpu(), minlength=n_classes).double() / len(train_y)
    return float(-shares[val_y.cpu()].log().mean())


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



def _close_epoch(state: TrainState, term_names: list[str], raw: torch.Tensor, weights: torch.Tensor, rows: TrainingRows) -> None:
    """The student's end of epoch (base.end_epoch) with its own terms' measured values."""
    own = {t.name for t in state.method.terms}
    terms = {
        name: {"raw": float(raw[j]), "weight": float(weights[j]), "weighted": float(raw[j] * weights[j])}
        for j, name in enumerate(term_names)
        if name in own
    }
    weights_now = {name: term["weight"] for name, term in terms.items()}
    end_epoch(state, weights_now, terms, validation_loss(state.model, rows.val), rows.divergence_threshold)


class TermsEngine(Engine):
    """Shared by both tabular engines: the union of the students' terms, each student's weights,
    and the measurement of its terms after an epoch, on ``data``. Every student an engine holds
    is training."""

    def __init__(self, states: list[TrainState], data: TrainingRows):
        super().__init__(states)
        self.data = data
        # A group shares its batch size (see TabularData.plan).
        self.batch_size = states[0].method.training.batch_size
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

    def weights_of(self, i: int) -> torch.Tensor:
        """(T,): student ``i``'s weight of each term now, 0 for terms it lacks."""
        weights = torch.zeros(len(self.term_names))
        for name, value in current_weights(self.states[i]).items():
            weights[self.term_names.index(name)] = value
        return weights

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
                out.perturbed_logits = perturbed_logits(objective, model, sample.x, noise)
            values[j] = objective.loss(out, sample).mean()
        model.train()
        return values


class AutogradEngine(TermsEngine):
    """Any student; one optimizer step per batch through autograd. Students train one after the
    other, each timed on its own: they share nothing but the data."""

    def __init__(self, states: list[TrainState], data: TrainingRows | StreamedRows):
        super().__init__(states, data)
        for state in states:
            state.model.train()
        # A student that reads sequences (students/encoder.py) trains on batches of similar lengths.
        self.lengths = {s.name: s.model.row_lengths(data.batch.x).cpu() for s in states if hasattr(s.model, "row_lengths") and isinstance(data, TrainingRows)}

    def run_epoch(self) -> None:
        """One epoch of every student over the epoch's rows, each in its own random order, then
        each student's end of epoch (measurements, history, schedulers)."""
        data = self.data
        # A large model (a transformer encoder) is measured on fewer rows: a forward pass over
        # thousands of sequences would cost a good part of an epoch.
        sample = data.measurement_sample(min(getattr(s.model, "measurement_rows", EVAL_CHUNK) for s in self.states))
        for i, state in enumerate(self.states):
            started = time.perf_counter()
            weights = self.weights_of(i)
            epoch_weights = dict(zip(self.term_names, weights.tolist()))
            stepped = state.method.training.scheduler == "warmup_linear"
            steps_per_epoch = -(-len(data) // self.batch_size)
            for k, batch in enumerate(data.epoch_batches(state.generator, self.batch_size, state.epoch, self.lengths.get(state.name))):
                if stepped:
                    set_step_learning_rate(state, k, steps_per_epoch)
                self.step(i, batch, epoch_weights)
            _close_epoch(state, self.term_names, self.term_values(i, sample), weights, data)
            record_time([state], time.perf_counter() - started)

    def step(self, i: int, batch: Batch, epoch_weights: dict[str, float]) -> None:
        """One optimizer step of student ``i`` on ``batch``, with the epoch's weights unless its
        balancer updates them after every step."""
        state = self.states[i]
        if getattr(state.model, "draws_dropout", False):
            # Dropout draws from torch's global generator: seeded from the student's own, a run
            # trains the same whatever ran before it in the process.
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=state.generator)))
        dtype = getattr(state.model, "autocast_dtype", None)
        with torch.autocast(batch.x.device.type, dtype=dtype, enabled=dtype is not None):
            out = state.model(batch.x)
            for j, objective in enumerate(self.objectives):
                if self.has[i, j] and objective.perturbs_inputs:
                    out.perturbed_logits = perturbed_logits(objective, state.model, batch.x, state.generator)
        if state.head is not None:
            out.rationale = state.head(out.rationale)
        raw = {}
        for j, objective in enumerate(self.objectives):
            if not self.has[i, j]:
                continue
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


class LinearEngine(TermsEngine):
    """Logistic students without projection heads, trained as one stacked model ``(S, K, d)``.

    The gradient of every term with respect to the logits and rationale is closed-form
    (losses.py); the chain rule through ``z = W x + b`` and contributions ``W * x`` is written out
    here. The resulting gradients are handed to each student's own torch optimizer. One step
    updates every student, so an epoch is timed for the stack as a whole.
    """

    def __init__(self, states: list[TrainState], data: TrainingRows):
        super().__init__(states, data)
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
        (a balancer that learns from every step needs the autograd engine's per-batch values, and
        a learning rate scheduled by the step its steps)."""
        stepwise = (state.balancer is not None and state.balancer.observes_steps) or state.method.training.scheduler == "warmup_linear"
        return isinstance(state.model, LogisticModel) and state.head is None and not stepwise

    @staticmethod
    def key(state: TrainState) -> tuple:
        """Students stack together when they explain themselves alike and take batches of one size."""
        m = state.model
        return (m.rationale_kind, m.include_bias, tuple(m.groups.tolist()) if m.grouped else None, state.method.training.batch_size)

    def run_epoch(self) -> None:
        """One epoch of the stack over the epoch's rows, each student in its own random order."""
        data, batch_size = self.data, self.batch_size
        rows = data.rows_at(self.states[0].epoch)
        started = time.perf_counter()
        weights = torch.stack([self.weights_of(i) for i in range(len(self.states))])  # (S, T)
        on_device = weights.to(self.W.device)
        self.term_weights = [on_device[:, j].view(-1, 1, 1) for j in range(len(self.term_names))]
        perms = torch.stack([rows[torch.randperm(len(rows), generator=s.generator)] for s in self.states])
        for batch in data.permuted(perms.to(data.batch.x.device)).split(batch_size, dim=1):
            self.step(batch)
        sample = data.measurement_sample()
        for i, state in enumerate(self.states):
            _close_epoch(state, self.term_names, self.term_values(i, sample), weights[i], data)
        record_time(self.states, time.perf_counter() - started)

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
