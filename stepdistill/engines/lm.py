"""The LM engine: generative students (Hugging Face causal LMs or seq2seq models) trained by
``engines.base.fit`` on ``LMData`` under a ``Method`` (terms.py), with the same terms, weight
schedules, balancers, ``TrainState`` and end-of-epoch bookkeeping as the tabular engines.

Each term of the method becomes a text target of the student (Hsieh et al. 2023), after the
label task's prompt or the rationale task's (for a causal LM the input, then ``predict:`` or
``explain:`` on a line of its own, so that the targets of one record share the input's tokens in
one packed row; for a seq2seq model ``predict: <input>`` and ``explain: <input>``; see
lm/prompts.py):

    hard        label prompt      ->  the human label
    soft        label prompt      ->  the teacher's label (sequence-level distillation)
    rationale   rationale prompt  ->  the teacher's rationale

Every term's loss is the mean token cross-entropy of its targets; all targets of a batch go
through one forward pass (lm_batching.py: ``task_token_sums`` with one id per term). With a ``TokenTeacher`` (a local
model sharing the student's tokenizer), the terms it distills (soft, and optionally rationale)
compare the student's token distributions with the teacher's on the same targets instead:
``T^2 * KL(teacher^T || student^T)`` per target token (``losses.soft_target_kl``), the teacher run under ``no_grad``. The
loss of a step is ``sum_k w_k * loss_k``, ``w_k`` the term's weight at the epoch
(``weight.value(epoch)``), rescaled by the method's balancer if it has one
(``base.current_weights``, as for tabular students). The objectives' own settings (temperature,
rationale distance, margin) describe numeric outputs and play no part here. The consistency term perturbs numeric inputs and is not defined for text: a method with it
is refused, as are a sample curriculum and GradNorm (which needs the student's shared layer).

Optimization: the method's optimizer (AdamW for ``lm-train``) and learning rate, gradient
accumulation, gradient clipping, the method's per-epoch learning-rate scheduler, bf16 autocast on
CUDA, length-grouped batches. The validation loss (the human label's token cross-entropy on
validation records) drives early stopping and the plateau scheduler; with early stopping on, the
best epoch's weights are kept. With ``LMData.labelled``, the hard term learns from the labelled
records only (a share of the labels, as ``sweep-data`` varies it).

Several processes (``accelerate launch``, data parallel): every process draws the same global
batches and computes its share of each (every P-th record); each term's loss is its token sum
over the whole batch's token count, so that the gradients DDP averages are the single process's
up to the order of floating-point additions. Term values, validation losses and so early
stopping are added up across processes and the same on every one. A frozen teacher model (token
distillation) would be moved to the device and used under ``no_grad``, never wrapped by DDP:
only the student's parameters are trained and synchronized.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F

from stepdistill.engines.base import Engine, Group, TrainState, current_weights, end_epoch, record_time, scheduled_weights
from stepdistill.engines.lm_batching import (
    LengthGroupedBatchSampler,
    MultiTaskCollator,
    per_task_sums,
    supports_packing,
    target_logits,
    task_token_sums,
)
from stepdistill.engines.processes import dealt, lm_accelerator, sum_across
from stepdistill.errors import StepDistillError
from stepdistill.lm.config import MAX_PROMPT_TOKENS, MAX_TARGET_TOKENS
from stepdistill.lm.prompts import LABEL_TASK, RATIONALE_TASK, LMRecord
from stepdistill.losses import soft_target_kl
from stepdistill.terms import HardLabel, Method, Objective, SoftTarget


@dataclass(frozen=True)
class DistillationRecord:
    """A training record with both label targets: ``record`` carries the human label (and the
    teacher's rationale), ``teacher_label`` the teacher's label."""

    record: LMRecord
    teacher_label: str

    @property
    def teacher(self) -> LMRecord:
        """The record with the teacher's label as its label target."""
        return replace(self.record, label=self.teacher_label)


def distillation_records(human: Sequence[LMRecord], teacher: Sequence[LMRecord]) -> tuple[list[DistillationRecord], list[str]]:
    """``(records, left_out_ids)``: each of ``human`` (``lm_records(..., "human")``) joined by id
    with its teacher-labelled twin in ``teacher`` (``lm_records(..., "teacher")``); records the
    teacher gave no label are left out, so that every method trains on the same records."""
    teacher_labels = {record.id: record.label for record in teacher}
    kept = [DistillationRecord(record, teacher_labels[record.id]) for record in human if record.id in teacher_labels]
    return kept, [record.id for record in human if record.id not in teacher_labels]


@dataclass(frozen=True)
class LMOptions:
    """How a generative student is optimized beyond its method's ``TrainingConfig``:
    ``grad_accumulation`` batches per optimizer step, the gradient's largest norm
    (``max_grad_norm``, None: no clipping), and the token limits of prompts and targets."""

    grad_accumulation: int = 1
    max_grad_norm: float | None = 1.0
    max_prompt_tokens: int = MAX_PROMPT_TOKENS
    max_target_tokens: int = MAX_TARGET_TOKENS


def check_lm_method(method: Method) -> None:
    """Raise a one-line ``StepDistillError`` naming the fix when ``method`` has a part that is not
    defined for a generative student (``MethodSpec.generative_problem``, which validating an
    lm-train config checks too)."""
    if method.spec is None:
        raise ValueError(f"method {method.name!r} has no spec; build generative students' methods with terms.build_method")
    problem = method.spec.generative_problem()
    if problem is not None:
        raise StepDistillError(problem)


def term_item(objective: Objective, example: DistillationRecord) -> tuple[LMRecord, int]:
    """The (record, prompt task) a term trains on ``example``: hard the human label, soft the
    teacher's label, rationale the teacher's rationale."""
    if isinstance(objective, HardLabel):
        return example.record, LABEL_TASK
    if isinstance(objective, SoftTarget):
        return example.teacher, LABEL_TASK
    return example.record, RATIONALE_TASK


def term_batch(collator: MultiTaskCollator, items: Sequence[tuple[LMRecord, int, int]]) -> dict[str, torch.Tensor]:
    """The collator's batch of ``(record, prompt task, term index)`` items, B of them, whose
    ``task_ids`` hold each item's term index (for ``task_token_sums``): (B,) one per row, or per
    token in a packed causal batch, where a record's terms are branches of one row."""
    return collator([(record, task) for record, task, _ in items], [term for _, _, term in items])


@dataclass(frozen=True)
class TokenTeacher:
    """A frozen local teacher model with the student's tokenizer, for token-level distillation of
    the terms whose objectives are among ``objectives`` (SoftTarget, optionally Rationale), at
    ``temperature``. Never trained, never wrapped for data parallelism."""

    model: torch.nn.Module
    temperature: float
    objectives: tuple[type, ...] = (SoftTarget,)


class TermTokenSums(torch.nn.Module):
    """The student as data parallelism sees it: ``forward(batch)`` is ``task_token_sums`` with one
    id per term (token distillation for ``distilled`` term ids, with ``teacher``). DDP
    synchronizes the gradients of a module whose forward it ran, and the loss is not the model's
    own forward (hidden states, then the output layer at target tokens). The teacher reads the
    student's batch in its layout (a packed one unpacked into rows if its attention cannot read
    the packed mask, ``target_logits``): its target tokens come in the student's order."""

    def __init__(self, model: torch.nn.Module, n_terms: int, teacher: TokenTeacher | None = None, distilled: Sequence[int] = ()):
        super().__init__()
        self.model = model
        self.n_terms = n_terms
        # A dataclass, not a submodule: the teacher is neither trained nor synchronized.
        self.teacher = teacher
        self.distilled = torch.tensor(list(distilled), dtype=torch.long)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.teacher is None or not len(self.distilled):
            return task_token_sums(self.model, batch, self.n_terms)
        logits, targets, token_terms = target_logits(self.model, batch)
        token_losses = F.cross_entropy(logits.float(), targets, reduction="none")
        by_teacher = torch.isin(token_terms, self.distilled.to(token_terms.device))
        if by_teacher.any():
            with torch.no_grad():
                teacher_logits, _, _ = target_logits(self.teacher.model, batch)
            token_losses = torch.where(by_teacher, soft_target_kl(logits.float(), teacher_logits.float(), self.teacher.temperature), token_losses)
        return per_task_sums(token_losses, token_terms, self.n_terms)


@dataclass
class LMData:
    """What generative students train on (``fit``'s ``TrainingData``): ``train`` records with both
    labels and the teacher's rationale, ``val`` records (human labels, read only for the
    validation loss), the ``tokenizer``, the engine's ``options``, this process's
    ``accelerator`` (``lm_accelerator``, made if None: every process passes the same data and
    ends with the same weights and history), the ``teacher`` of token-level distillation, and
    ``labelled``: which training records' human labels students may use (None: all), so that
    the hard term trains on those only while the teacher's targets serve on every record."""

    tokenizer: object
    train: Sequence[DistillationRecord]
    val: Sequence[LMRecord]
    options: LMOptions = LMOptions()
    accelerator: object | None = None
    teacher: TokenTeacher | None = None
    labelled: Sequence[bool] | None = None

    def __post_init__(self):
        if self.labelled is not None:
            if len(self.labelled) != len(self.train):
                raise ValueError(f"labelled has {len(self.labelled)} entries for {len(self.train)} training records")
            # Hidden labels are blanked before training sees them, so that nothing (not even the
            # records' lengths, by which batches are grouped) can depend on them.
            self.train = [example if seen else _without_human_label(example) for example, seen in zip(self.train, self.labelled)]

    def plan(self, states: list[TrainState]) -> list[Group]:
        """Every student in the LM engine, trained one after the other."""
        for state in states:
            check_lm_method(state.method)
        if self.accelerator is None:
            self.accelerator = lm_accelerator()
        return [Group(states, partial(LMEngine, data=self))]

    def rows(self, terms: Sequence, active: Sequence[int]) -> list[int]:
        """The training records that give the ``active`` terms a target: all, unless the hard
        term is the only one, which learns from labelled records only."""
        if self.labelled is None or any(not isinstance(terms[j].objective, HardLabel) for j in active):
            return list(range(len(self.train)))
        return [i for i, seen in enumerate(self.labelled) if seen]

    def items(self, terms: Sequence, active: Sequence[int], index: int) -> list[tuple[LMRecord, int, int]]:
        """The (record, prompt task, term index) targets of training record ``index`` for the
        ``active`` terms: a hard term only where its human label may be used."""
        example = self.train[index]
        hidden = self.labelled is not None and not self.labelled[index]
        return [(*term_item(terms[j].objective, example), j) for j in active if not (hidden and isinstance(terms[j].objective, HardLabel))]


def _without_human_label(example: DistillationRecord) -> DistillationRecord:
    return replace(example, record=replace(example.record, label=""))


class LMEngine(Engine):
    """Generative students, each trained in turn for an epoch: length-grouped batches (a seeded
    order per epoch, from the student's generator), all of a batch's targets in one forward pass,
    AdamW (the method's optimizer) with gradient accumulation and clipping, bf16 autocast on CUDA,
    then the validation loss and ``base.end_epoch``. The student's place is the caller's choice
    (``process_device``); the accelerator only wraps it: a frozen teacher (token distillation)
    goes to the student's device, under ``no_grad``."""

    def __init__(self, states: list[TrainState], data: LMData):
        super().__init__(states)
        self.data = data
        options = data.options
        model = states[0].model  # students of one engine share their architecture (one config per lm-train)
        packed = supports_packing(model)
        self.collator = MultiTaskCollator(data.tokenizer, model.config.is_encoder_decoder, options.max_prompt_tokens, options.max_target_tokens, packed)
        self.lengths = [self.collator.record_length(example.record) for example in data.train]
        self.prepared = []
        for state in states:
            teacher = data.teacher
            distilled = [] if teacher is None else [j for j, term in enumerate(state.method.terms) if isinstance(term.objective, teacher.objectives)]
            module = TermTokenSums(state.model, len(state.method.terms), teacher, distilled)
            self.prepared.append(data.accelerator.prepare(module, state.optimizer, device_placement=[False, False]))
            state.model.train()

    def run_epoch(self) -> None:
        data = self.data
        for state, (term_sums, optimizer) in zip(self.states, self.prepared):
            started = time.perf_counter()
            seed = state.generator.initial_seed()
            weights = current_weights(state)
            # A term scheduled at 0 for the epoch (alpha 0's hard term) stays 0 under any balancer,
            # which multiplies: it is left out of the batch instead of costing a forward pass for nothing.
            active = [j for j, weight in enumerate(scheduled_weights(state).values()) if weight > 0]
            rows = data.rows(state.method.terms, active) if active else []
            sampler = LengthGroupedBatchSampler([self.lengths[i] for i in rows], state.method.training.batch_size, seed)
            sampler.set_epoch(state.epoch)
            torch.manual_seed(seed * 1_000_003 + state.epoch)  # dropout, the same in an uninterrupted and a resumed run
            batches = [[rows[i] for i in batch] for batch in sampler]
            raw = _train_epoch(state, data, term_sums, optimizer, self.collator, batches, active, weights)
            val_loss = validation_loss(state.model, self.collator, data.val, state.method.training.batch_size, data.accelerator)
            terms = {name: {"raw": value, "weight": weights[name], "weighted": weights[name] * value} for name, value in raw.items()}
            end_epoch(state, weights, terms, val_loss)
            record_time([state], time.perf_counter() - started)

    def release(self) -> None:
        # The accelerator keeps what it prepared: let go of these students' wrappers and optimizers.
        self.data.accelerator.free_memory()
        for state in self.states:
            state.model.eval()


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing elsewhere (CPU bf16 matmuls are slow and lossy)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _train_epoch(
    state: TrainState,
    data: LMData,
    term_sums: torch.nn.Module,
    optimizer,
    collator: MultiTaskCollator,
    batches: list[list[int]],
    active: list[int],
    epoch_weights: dict[str, float],
) -> dict[str, float]:
    """One epoch over ``batches`` (lists of positions in ``data.train``, the same on every
    process) of the ``active`` terms (their indices) with ``epoch_weights`` (term -> weight,
    unless a step-level balancer updates them each step); returns each term's raw value over the
    epoch, the mean over all of its tokens (a batch without a term's tokens, such as one of
    unlabelled records for the hard term, adds nothing to it rather than a zero).
    ``term_sums``: the prepared ``TermTokenSums`` (DDP-wrapped with several processes),
    ``optimizer`` the prepared one."""
    accelerator, options = data.accelerator, data.options
    model, terms, balancer = state.model, state.method.terms, state.balancer
    device = model.device
    processes = accelerator.num_processes
    stepwise = balancer is not None and balancer.observes_steps
    if not active:  # every weight 0 this epoch (a schedule that starts late): nothing to train
        return {}
    totals, tokens = torch.zeros(len(terms), dtype=torch.float64), torch.zeros(len(terms), dtype=torch.float64)
    optimizer.zero_grad(set_to_none=True)
    for position, indices in enumerate(batches):
        mine, counted = _share(indices, accelerator)
        items = [item for i in mine for item in data.items(terms, active, i)]
        batch = {key: value.to(device) for key, value in term_batch(collator, items).items()}
        stepping = (position + 1) % options.grad_accumulation == 0 or position + 1 == len(batches)
        # Gradients are averaged across processes once per optimizer step, not per batch.
        with nullcontext() if stepping else accelerator.no_sync(term_sums):
            with _autocast(device):
                token_sums, counts = term_sums(batch)
            if not counted:
                token_sums, counts = token_sums * 0, counts * 0
            # Each term's mean over the whole batch's tokens; this process holds part of the sum.
            batch_tokens = sum_across(accelerator, counts)
            losses = token_sums / batch_tokens.clamp(min=1)
            values = sum_across(accelerator, losses.detach())
            raw = {terms[j].name: losses[j] for j in active}
            weights = current_weights(state) if stepwise else epoch_weights
            loss = sum(weights[name] * value for name, value in raw.items())
            if processes > 1:  # DDP averages the processes' gradients: their sum is the batch's
                loss = loss * processes
            (loss / options.grad_accumulation).backward()
        totals += (values * batch_tokens).double().cpu()
        tokens += batch_tokens.double().cpu()
        if stepping:
            if options.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if stepwise and (observed := _observed(values, batch_tokens, totals, tokens, active)) is not None:
                balancer.observe_step({terms[j].name: value for j, value in observed.items()})
    return {terms[j].name: float(totals[j] / tokens[j]) if tokens[j] else 0.0 for j in active}


def _observed(values: torch.Tensor, batch_tokens: torch.Tensor, totals: torch.Tensor, tokens: torch.Tensor, active: list[int]) -> dict | None:
    """What a step-level balancer observes of the ``active`` terms after a batch: each term's
    mean on the batch, or, for a term without tokens in it, its mean over the epoch so far; None
    until every term has had tokens (a term never seen has no value to balance by)."""
    observed = {}
    for j in active:
        if batch_tokens[j] > 0:
            observed[j] = values[j]
        elif tokens[j] > 0:
            observed[j] = (totals[j] / tokens[j]).to(values.dtype)
        else:
            return None
    return observed


def _share(indices: list[int], accelerator) -> tuple[list[int], bool]:
    """``(records, counted)``: this process's records of a global batch (every P-th). A batch of
    fewer records than processes leaves some with none; they compute the first record's losses,
    not counted, since every process must take part in each gradient synchronization."""
    mine = dealt(indices, accelerator)
    return (mine, True) if mine else (indices[:1], False)


@torch.no_grad()
def validation_loss(model, collator: MultiTaskCollator, records: Sequence[LMRecord], batch_size: int, accelerator=None) -> float:
    """The mean token cross-entropy of the label task with ``records``' own labels: what early
    stopping and the plateau scheduler watch, the same criterion for every method. With
    ``accelerator``'s several processes, each takes every P-th batch and the sums are added up,
    so that every process gets the same value. The collator's layout is the training batches'
    (a causal student's packed rows hold one branch each here)."""
    was_training = model.training
    model.eval()
    starts = range(0, len(records), batch_size)
    total, tokens = 0.0, 0
    for start in dealt(starts, accelerator) if accelerator is not None else starts:
        batch = collator([(record, LABEL_TASK) for record in records[start : start + batch_size]])
        with _autocast(model.device):
            logits, targets, _ = target_logits(model, {key: value.to(model.device) for key, value in batch.items()})
        total += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
        tokens += len(targets)
    model.train(was_training)
    if accelerator is not None:
        total, tokens = sum_across(accelerator, torch.tensor([total, tokens], dtype=torch.float64, device=model.device)).tolist()
    return total / max(1, tokens)
