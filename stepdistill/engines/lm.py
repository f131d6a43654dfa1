"""The LM engine: one generative student (a Hugging Face causal LM or seq2seq model) trained under
a ``Method`` of methods.py, with the same terms, weight schedules and balancers as the tabular
engines.

Each term of the method becomes a text target of the student (Hsieh et al. 2023):

    hard        predict: <input>  ->  the human label
    soft        predict: <input>  ->  the teacher's label (sequence-level distillation)
    rationale   explain: <input>  ->  the teacher's rationale

Every term's loss is the mean token cross-entropy of its targets; all targets of a batch go
through one forward pass (``task_losses`` with one id per term). With a ``TokenTeacher`` (a local
model sharing the student's tokenizer), the terms it distills (soft, and optionally rationale)
compare the student's token distributions with the teacher's on the same targets instead:
``T^2 * KL(teacher^T || student^T)`` per target token, the teacher run under ``no_grad``. The loss of a step is
``sum_k w_k * loss_k``, ``w_k`` the term's weight at the epoch (``weight.value(epoch)``), rescaled
by the method's balancer if it has one, exactly as train.py computes it. The objectives' own
settings (temperature, rationale distance, margin) describe numeric outputs and play no part
here. The consistency term perturbs numeric inputs and is not defined for text: a method with it
is refused, as are a sample curriculum and GradNorm (which needs the student's shared layer).

Optimization: AdamW with the method's learning rate, gradient accumulation, gradient clipping,
the method's per-epoch learning-rate scheduler, bf16 autocast on CUDA, length-grouped batches.
The validation loss (the human label's token cross-entropy on validation records) drives
early stopping and the plateau scheduler; the best epoch's weights are kept.

Several processes (``accelerate launch``, data parallel): every process draws the same global
batches and computes its share of each (every P-th record); each term's loss is its token sum
over the whole batch's token count, so that the gradients DDP averages are the single process's
up to the order of floating-point additions. Term values, validation losses and so early
stopping are added up across processes and the same on every one. A frozen teacher model (token
distillation) would be moved to the device and used under ``no_grad``, never wrapped by DDP:
only the student's parameters are trained and synchronized.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from stepdistill.balancers import Balancer, GradNorm
from stepdistill.engines.processes import dealt, lm_accelerator, sum_across
from stepdistill.errors import StepDistillError
from stepdistill.methods import Method
from stepdistill.terms import HardLabel, Objective, Rationale, SoftTarget
from stepdistill.text.lm_tasks import (
    LABEL_TASK,
    MAX_PROMPT_TOKENS,
    MAX_TARGET_TOKENS,
    RATIONALE_TASK,
    LengthGroupedBatchSampler,
    LMRecord,
    MultiTaskCollator,
    per_task_sums,
    target_logits,
    task_token_sums,
    token_kl,
)
from stepdistill.train import _scheduler as epoch_scheduler
from stepdistill.train import current_weights, scheduled_weights


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
    ``grad_accumulation`` batches per optimizer step, AdamW's ``weight_decay``, the gradient's
    largest norm (``max_grad_norm``, None: no clipping), and the token limits of prompts and
    targets."""

    grad_accumulation: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    max_prompt_tokens: int = MAX_PROMPT_TOKENS
    max_target_tokens: int = MAX_TARGET_TOKENS


def check_lm_method(method: Method) -> None:
    """Raise a one-line ``StepDistillError`` naming the fix when ``method`` has a part that is not
    defined for a generative student."""
    for term in method.terms:
        if not isinstance(term.objective, (HardLabel, SoftTarget, Rationale)):
            raise StepDistillError(
                f"method {method.name!r} has a {term.name} term ({type(term.objective).__name__}), which perturbs numeric inputs "
                f"and is not defined for generative students; set consistency: 0 for {method.name}"
            )
    if method.curriculum is not None:
        raise StepDistillError(f"method {method.name!r} has a curriculum, which generative students do not support; remove its curriculum")
    if isinstance(method.balancer, GradNorm):
        raise StepDistillError(
            f"method {method.name!r} balances its terms with gradnorm, which needs a shared layer generative students do not name; "
            "choose balancer kind dwa, loss_ratio or uncertainty"
        )


def term_item(objective: Objective, example: DistillationRecord) -> tuple[LMRecord, int]:
    """The (record, prompt task) a term trains on ``example``: hard the human label, soft the
    teacher's label, rationale the teacher's rationale."""
    if isinstance(objective, HardLabel):
        return example.record, LABEL_TASK
    if isinstance(objective, SoftTarget):
        return example.teacher, LABEL_TASK
    return example.record, RATIONALE_TASK


def term_batch(collator: MultiTaskCollator, items: Sequence[tuple[LMRecord, int, int]]) -> dict[str, torch.Tensor]:
    """The collator's batch of ``(record, prompt task, term index)`` items, B of them, with
    ``task_ids`` (B,) holding each item's term index (for ``task_token_sums``)."""
    batch = collator([(record, task) for record, task, _ in items])
    batch["task_ids"] = torch.tensor([term for _, _, term in items], dtype=torch.long)
    return batch


@dataclass(eq=False)
class LMStudentState:
    """One generative student in training. ``method``, ``epoch`` and ``balancer`` are what
    train.py's ``scheduled_weights`` / ``current_weights`` read, so the weights come from the same
    code as the tabular engines'. ``history``: one dict per epoch (``epoch``, ``lr``, ``weights``:
    every term's weight at the epoch's start, ``train_loss``, ``val_loss``, ``terms``: the terms
    trained that epoch (weight above 0), name -> ``raw``, ``weight``, ``weighted``).
    ``best_weights``: the state dict (on the CPU) of the epoch with the lowest validation loss."""

    method: Method
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    balancer: Balancer | None
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_weights: dict | None = None
    bad_epochs: int = 0
    stopped: bool = False
    diverged: str | None = None

    @property
    def done(self) -> bool:
        return self.stopped or self.diverged is not None or self.epoch >= self.method.training.epochs


def new_lm_state(method: Method, model: torch.nn.Module, options: LMOptions) -> LMStudentState:
    """A student ready to train: AdamW with the method's learning rate, its scheduler, its own
    copy of the method's balancer."""
    check_lm_method(method)
    optimizer = torch.optim.AdamW(model.parameters(), lr=method.training.lr, weight_decay=options.weight_decay)
    # The method holds a template: each student learns its own balancer factors.
    balancer = None if method.balancer is None else copy.deepcopy(method.balancer)
    return LMStudentState(method, model, optimizer, epoch_scheduler(optimizer, method.training), balancer)


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
    own forward (hidden states, then the output layer at target tokens)."""

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
            token_losses = torch.where(by_teacher, token_kl(logits, teacher_logits, self.teacher.temperature), token_losses)
        return per_task_sums(token_losses, token_terms, self.n_terms)


def train_lm_student(
    state: LMStudentState,
    tokenizer,
    train: Sequence[DistillationRecord],
    val: Sequence[LMRecord],
    options: LMOptions,
    seed: int,
    accelerator=None,
    teacher: TokenTeacher | None = None,
) -> None:
    """Train ``state`` on ``train`` until its epochs are done, early stopping or divergence, then
    load its best epoch's weights. ``val`` (human labels) is read only for the validation loss.
    ``teacher``: token-level distillation of the terms it names (see ``TokenTeacher``).
    ``seed`` fixes the batch order and dropout (with dropout, several processes draw other
    masks than one). ``accelerator``: this process's (``lm_accelerator``, made if None); every
    process passes the same arguments and ends with the same weights and history."""
    accelerator = accelerator or lm_accelerator()
    model = state.model
    collator = MultiTaskCollator(tokenizer, model.config.is_encoder_decoder, options.max_prompt_tokens, options.max_target_tokens)
    sampler = LengthGroupedBatchSampler([collator.record_length(example.record) for example in train], state.method.training.batch_size, seed)
    # The student's place is the caller's choice (process_device); prepare only wraps it. Only the
    # student is prepared: a frozen teacher (token distillation) goes to model.device, under no_grad.
    distilled = [] if teacher is None else [j for j, term in enumerate(state.method.terms) if isinstance(term.objective, teacher.objectives)]
    term_sums, optimizer = accelerator.prepare(
        TermTokenSums(model, len(state.method.terms), teacher, distilled), state.optimizer, device_placement=[False, False]
    )
    torch.manual_seed(seed)  # dropout
    model.train()
    try:
        while not state.done:
            sampler.set_epoch(state.epoch)
            weights = current_weights(state)
            raw = _train_epoch(state, accelerator, term_sums, optimizer, collator, train, list(sampler), options, weights)
            _end_epoch(state, raw, weights, validation_loss(model, collator, val, state.method.training.batch_size, accelerator))
    finally:
        # The accelerator keeps what it prepared: let go of this student's wrapper and optimizer.
        accelerator.free_memory()
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    model.eval()


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing elsewhere (CPU bf16 matmuls are slow and lossy)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _train_epoch(
    state: LMStudentState,
    accelerator,
    term_sums: torch.nn.Module,
    optimizer,
    collator: MultiTaskCollator,
    train: Sequence[DistillationRecord],
    batches: list[list[int]],
    options: LMOptions,
    epoch_weights: dict[str, float],
) -> dict[str, float]:
    """One epoch over ``batches`` (lists of positions in ``train``, the same on every process)
    with ``epoch_weights`` (term -> weight, unless a step-level balancer updates them each step);
    returns the mean raw value of each term trained this epoch. ``term_sums``: the prepared
    ``TermTokenSums`` (DDP-wrapped with several processes), ``optimizer`` the prepared one."""
    model, terms, balancer = state.model, state.method.terms, state.balancer
    device = model.device
    processes = accelerator.num_processes
    stepwise = balancer is not None and balancer.observes_steps
    # A term scheduled at 0 for the epoch (alpha 0's hard term) stays 0 under any balancer, which
    # multiplies: it is left out of the batch instead of costing a forward pass for nothing.
    active = [j for j, weight in enumerate(scheduled_weights(state).values()) if weight > 0]
    if not active:  # every weight 0 this epoch (a schedule that starts late): nothing to train
        return {}
    sums = torch.zeros(len(terms))
    optimizer.zero_grad(set_to_none=True)
    for position, indices in enumerate(batches):
        mine, counted = _share(indices, accelerator)
        items = [(*term_item(terms[j].objective, train[i]), j) for i in mine for j in active]
        batch = {key: value.to(device) for key, value in term_batch(collator, items).items()}
        stepping = (position + 1) % options.grad_accumulation == 0 or position + 1 == len(batches)
        # Gradients are averaged across processes once per optimizer step, not per batch.
        with nullcontext() if stepping else accelerator.no_sync(term_sums):
            with _autocast(device):
                token_sums, counts = term_sums(batch)
            if not counted:
                token_sums, counts = token_sums * 0, counts * 0
            # Each term's mean over the whole batch's tokens; this process holds part of the sum.
            losses = token_sums / sum_across(accelerator, counts).clamp(min=1)
            values = sum_across(accelerator, losses.detach())
            raw = {terms[j].name: losses[j] for j in active}
            weights = current_weights(state) if stepwise else epoch_weights
            loss = sum(weights[name] * value for name, value in raw.items())
            if processes > 1:  # DDP averages the processes' gradients: their sum is the batch's
                loss = loss * processes
            (loss / options.grad_accumulation).backward()
        sums += values.float().cpu()
        if stepping:
            if options.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if stepwise:
                balancer.observe_step({terms[j].name: values[j] for j in active})
    return {terms[j].name: float(sums[j]) / max(1, len(batches)) for j in active}


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
    so that every process gets the same value."""
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


def _end_epoch(state: LMStudentState, raw: dict[str, float], weights: dict[str, float], val_loss: float) -> None:
    """Record the epoch, feed the balancer and the scheduler, keep the best weights, and decide
    early stopping or divergence."""
    terms = {name: {"raw": value, "weight": weights[name], "weighted": weights[name] * value} for name, value in raw.items()}
    train_loss = sum(term["weighted"] for term in terms.values())
    if state.balancer is not None:
        state.balancer.observe_epoch(raw)
    lr = state.optimizer.param_groups[0]["lr"]
    state.history.append(
        {"epoch": state.epoch, "lr": lr, "weights": dict(weights), "train_loss": train_loss, "val_loss": val_loss, "terms": terms}
    )
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        state.diverged = f"training loss {train_loss}, validation loss {val_loss} at epoch {state.epoch}; lower the learning rate"
    state.epoch += 1
    if state.diverged is not None:
        return
    if isinstance(state.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        state.scheduler.step(val_loss)
    elif state.scheduler is not None:
        state.scheduler.step()
    if val_loss < state.best_val_loss:
        state.best_val_loss, state.bad_epochs = val_loss, 0
        state.best_weights = {key: value.detach().to("cpu", copy=True) for key, value in state.model.state_dict().items()}
    else:
        state.bad_epochs += 1
        patience = state.method.training.early_stopping_patience
        state.stopped = patience is not None and state.bad_epochs >= patience
