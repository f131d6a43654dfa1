"""Batches of generative students' training targets, and every target's loss in one forward pass.

A batch holds all targets (tasks, loss terms) of the same records, padded to its longest row,
records of similar length batched together (``LengthGroupedBatchSampler``). A causal batch packs
each record into one row, the input once and every target after it as a branch of its own
(``MultiTaskCollator``): a 4D attention mask keeps each branch from seeing the others, and
position ids start each branch where it would start alone, so that every loss and gradient is the
one of the separate ``input + tag + target`` sequences while the input is computed once instead
of once per task. ``target_logits`` gives the logits at every target token of such a batch, for
causal LMs and seq2seq models alike; the LM engine (engines/lm.py) turns them into its terms.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from stepdistill.errors import StepDistillError
from stepdistill.lm.config import MAX_PROMPT_TOKENS, MAX_TARGET_TOKENS
from stepdistill.lm.prompts import (
    LABEL_TASK,
    RATIONALE_TASK,
    TASK_PREFIXES,
    EncodedTask,
    LMRecord,
    encode_task,
    pad_id,
    pad_sequences,
)

# Positions whose label is this are not targets (torch's cross-entropy ignores them too).
IGNORE_INDEX = -100
# Records are sorted by length within groups of this many batches (HF Trainer's group_by_length uses 50).
MEGA_BATCH_BATCHES = 50
# The attention implementations of transformers that apply a custom 4D mask as given (masking_utils
# returns a 4D mask as-is; sdpa reads it as bool True = attend, eager adds it as a float mask).
# Others (flash attention reads no dense mask) get one row per (record, task) instead of packed rows.
PACKING_ATTENTION = ("sdpa", "eager")
# The segment of a packed row's padding: never attended to by real tokens (see branch_attention_mask).
PADDING_SEGMENT = -1


def both_tasks(records: Sequence[LMRecord]) -> list[tuple[LMRecord, int]]:
    """The items of a batch of records: each record's label task, then its rationale task. One
    batch holds both tasks of the same records, so every step trains ``a * label + (1 - a) *
    rationale`` on the same records, as the released trainer's step does (and a causal student's
    batch packs both into one row per record)."""
    return [(record, task) for record in records for task in (LABEL_TASK, RATIONALE_TASK)]


class MultiTaskCollator:
    """Turns (record, task) items into one padded batch, in one of three layouts.

    - seq2seq (``seq2seq=True``): one row per item, the prompt in the encoder, the target in the
      decoder.
    - packed (causal, the default): one row per record input, ``[input][tag + target][tag +
      target]...``, every item of the batch with that input a branch after it. ``target_logits``
      gives the model a 4D attention mask in which a branch's tokens see the whole input and the
      earlier tokens of their own branch only, and ``position_ids`` that continue each branch from
      the input's end as if it were alone: each branch computes exactly what its own ``input + tag
      + target`` sequence would, but the input (most of the tokens of a label task) is computed
      once per record instead of once per task, and short label targets are not padded to a
      rationale's length.
    - rows (causal, ``packed=False``): one row per item, ``prompt + target``: for attention
      implementations that take no custom mask (see ``supports_packing``).

    Padding is on the right and only up to the longest row of the batch: with right padding every
    real token keeps the positions it has alone, and causal attention never lets it see the
    padding after it, so padding changes no loss. Encodings are kept per item, so each (record,
    task) is tokenized once.
    """

    def __init__(
        self,
        tokenizer,
        seq2seq: bool,
        max_prompt_tokens: int = MAX_PROMPT_TOKENS,
        max_target_tokens: int = MAX_TARGET_TOKENS,
        packed: bool | None = None,
    ):
        if seq2seq and packed:
            raise StepDistillError("a seq2seq student's batches cannot be packed (its tasks share no decoder input); leave packed unset")
        self.tokenizer = tokenizer
        self.seq2seq = seq2seq
        self.packed = not seq2seq if packed is None else packed
        self.max_prompt_tokens = max_prompt_tokens
        self.max_target_tokens = max_target_tokens
        self.pad_id = pad_id(tokenizer)
        self._encoded: dict[tuple[LMRecord, int], EncodedTask] = {}

    def encoded(self, record: LMRecord, task: int) -> EncodedTask:
        """``encode_task`` of the item, computed once."""
        key = (record, task)
        if key not in self._encoded:
            self._encoded[key] = encode_task(self.tokenizer, record, task, self.seq2seq, self.max_prompt_tokens, self.max_target_tokens)
        return self._encoded[key]

    def record_length(self, record: LMRecord) -> int:
        """The length of the record's row in a batch of its own (both tasks): its packed row, or
        its longer task's row. The key by which records are grouped."""
        encoded = [self.encoded(record, task) for task in (LABEL_TASK, RATIONALE_TASK)]
        if self.packed:
            return encoded[0].shared + sum(len(e.branch_ids) for e in encoded)
        return max(e.tokens for e in encoded)

    def __call__(self, items: Sequence[tuple[LMRecord, int]], ids: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """The batch of ``items`` (B of them); ``ids``: a number per item that its target tokens
        carry (``task_ids``), e.g. the loss term it trains; default its task.

        Seq2seq: ``input_ids`` and ``attention_mask`` (B, Lp) the prompts; ``labels`` (B, Lt) the
        targets, ``IGNORE_INDEX`` on padding; ``task_ids`` (B,).
        Rows: ``input_ids`` and ``attention_mask`` (B, L), L the longest prompt + target;
        ``labels`` (B, L) holds each target token at its own position (the model's output one
        position earlier predicts it) and ``IGNORE_INDEX`` on prompt and padding; ``task_ids`` (B,).
        Packed, R rows (the items' distinct inputs, in order of first appearance; a row's branches
        in the items' order): ``input_ids``, ``labels`` (as rows: ``IGNORE_INDEX`` on input, tags
        and padding), ``position_ids``, ``segments`` (0 the input, b >= 1 the b-th branch, -1
        padding) and ``task_ids`` (each branch token's id), all (R, L). No ``attention_mask``: the
        4D mask is ``branch_attention_mask(segments)``, built on the model's device.
        """
        encoded = [self.encoded(record, task) for record, task in items]
        ids = [task for _, task in items] if ids is None else list(ids)
        if len(ids) != len(items):
            raise StepDistillError(f"{len(ids)} ids for {len(items)} items; give one id per item")
        if self.packed:
            return self._packed(encoded, ids)
        if self.seq2seq:
            input_ids, attention_mask = pad_sequences([e.prompt_ids for e in encoded], self.pad_id)
            labels, _ = pad_sequences([e.target_ids for e in encoded], IGNORE_INDEX)
            return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "task_ids": torch.tensor(ids, dtype=torch.long)}
        masked = [(IGNORE_INDEX,) * len(e.prompt_ids) + e.target_ids for e in encoded]
        return causal_rows([e.prompt_ids + e.target_ids for e in encoded], masked, ids, self.pad_id)

    def _packed(self, encoded: Sequence[EncodedTask], ids: Sequence[int]) -> dict[str, torch.Tensor]:
        """The packed layout of ``__call__``."""
        branches: dict[tuple[int, ...], list[int]] = {}  # input ids -> positions of its items
        for position, e in enumerate(encoded):
            branches.setdefault(e.shared_ids, []).append(position)
        columns: dict[str, list[list[int]]] = {key: [] for key in ("input_ids", "labels", "position_ids", "segments", "task_ids")}
        for shared, positions in branches.items():
            start = len(shared)
            row = {"input_ids": list(shared), "labels": [IGNORE_INDEX] * start, "position_ids": list(range(start)), "segments": [0] * start}
            row["task_ids"] = [0] * start
            for branch, position in enumerate(positions, start=1):
                e, length = encoded[position], len(encoded[position].branch_ids)
                row["input_ids"] += e.branch_ids
                row["labels"] += (IGNORE_INDEX,) * (len(e.prompt_ids) - e.shared) + e.target_ids
                # Each branch continues from the input's end, where it starts in its own sequence.
                row["position_ids"] += range(start, start + length)
                row["segments"] += [branch] * length
                row["task_ids"] += [ids[position]] * length
            for key, values in row.items():
                columns[key].append(values)
        fills = {"input_ids": self.pad_id, "labels": IGNORE_INDEX, "position_ids": 0, "segments": PADDING_SEGMENT, "task_ids": 0}
        return {key: pad_sequences(values, fills[key])[0] for key, values in columns.items()}


def causal_rows(sequences: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], ids: Sequence[int], fill: int) -> dict[str, torch.Tensor]:
    """The rows layout of ``MultiTaskCollator`` from B sequences ``prompt + target``, their labels
    (``IGNORE_INDEX`` on the prompt) and ids: ``input_ids``, ``attention_mask``, ``labels`` (B, L)
    and ``task_ids`` (B,), right-padded with ``fill``."""
    input_ids, attention_mask = pad_sequences(sequences, fill)
    padded_labels, _ = pad_sequences(labels, IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": padded_labels, "task_ids": torch.tensor(list(ids), dtype=torch.long)}


def is_packed(batch: dict[str, torch.Tensor]) -> bool:
    """Whether ``batch`` is in ``MultiTaskCollator``'s packed layout."""
    return "segments" in batch


def unpacked(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The rows layout of a packed batch: one row ``input + branch`` per branch, in the packed
    batch's order, so that its target tokens come in the same order (a teacher that cannot read
    the packed layout gives logits aligned with a student's that can). Built on the CPU, then
    moved to the batch's device."""
    sequences, labels, ids = [], [], []
    columns = [batch[key].tolist() for key in ("input_ids", "labels", "segments", "task_ids")]
    for tokens, row_labels, segments, row_ids in zip(*columns):
        for branch in range(1, max(segments) + 1):
            kept = [i for i, segment in enumerate(segments) if segment in (0, branch)]
            sequences.append([tokens[i] for i in kept])
            labels.append([row_labels[i] for i in kept])
            ids.append(row_ids[kept[-1]])  # the branch's last token: every branch ends with its target
    # Padding is never attended to, so its id does not matter: the batch does not carry the tokenizer's.
    rows = causal_rows(sequences, labels, ids, fill=0)
    return {key: value.to(batch["input_ids"].device) for key, value in rows.items()}


def supports_packing(model) -> bool:
    """Whether ``model`` computes a packed batch exactly: a causal LM whose attention
    implementation applies a custom 4D mask (``PACKING_ATTENTION``) and whose base model takes
    ``position_ids``. ``target_logits`` unpacks a packed batch for any other model."""
    config = model.config
    return (
        not config.is_encoder_decoder
        and config._attn_implementation in PACKING_ATTENTION
        and "position_ids" in inspect.signature(model.base_model.forward).parameters
    )


def branch_attention_mask(segments: torch.Tensor, model) -> torch.Tensor:
    """(R, 1, L, L), query by key: whom each token of a packed batch with ``segments`` (R, L)
    attends to: earlier (and its own) tokens of the shared input and of its own branch. A padding
    token (segment -1) attends to the input and to earlier padding, never to nothing (a row
    without any key would be NaN). In the format ``model``'s attention reads, the one
    transformers' masking_utils builds for it: bool (True: attend) for sdpa, additive float (0,
    or the dtype's minimum) for eager."""
    positions = torch.arange(segments.shape[1], device=segments.device)
    causal = positions[None, :] <= positions[:, None]
    queries, keys = segments[:, :, None], segments[:, None, :]
    allowed = (causal & ((keys == 0) | (keys == queries)))[:, None]
    if model.config._attn_implementation == "eager":
        zero = torch.zeros((), dtype=model.dtype, device=segments.device)
        return torch.where(allowed, zero, torch.finfo(model.dtype).min)
    return allowed



class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of indices whose ``lengths`` are alike, so that little of a batch is padding.

    Each epoch, the indices are shuffled (seeded by ``seed`` and the epoch, see ``set_epoch``),
    cut into mega-batches of ``mega_batch_batches`` batches, each sorted by length (longest first)
    and cut into batches; the batches' order is shuffled again, so that training does not meet
    the lengths in order. Every index appears once per epoch; the last batch may be smaller.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batch_batches: int = MEGA_BATCH_BATCHES):
        if batch_size < 1 or mega_batch_batches < 1:
            raise StepDistillError(f"batch size {batch_size} and mega-batch size {mega_batch_batches} must be at least 1")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_batches = mega_batch_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order ``__iter__`` gives (each epoch has its own)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        mega = self.batch_size * self.mega_batch_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), mega):
            group = sorted(order[start : start + mega], key=lambda index: -self.lengths[index])
            batches += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[position]


def target_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits (N, V), targets (N,), token_tasks (N,))`` at the batch's N target tokens, from one
    forward pass over the whole batch (every task); ``token_tasks`` holds each target token's
    ``task_ids`` entry (its task, or the id its collator was given).

    Causal LM: the logits of the position before each target token. Only those positions go
    through the output layer (the vocabulary projection, the largest layer of a small LM): prompt
    and padding positions never need logits. Models whose output layer is more than that linear
    map (logit soft-capping or scaling) are refused rather than computed wrongly. A packed batch
    goes in with its position ids and 4D branch mask (``branch_attention_mask``), or, for a model
    that cannot apply that mask (``supports_packing``), unpacked into rows: the same targets in
    the same order either way.
    Seq2seq: the decoder reads the targets shifted right (teacher forcing) and every non-padding
    decoder position is a target.
    """
    labels = batch["labels"]
    if model.config.is_encoder_decoder:
        decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=decoder_input_ids).logits
        is_target = labels != IGNORE_INDEX
        return logits[is_target], labels[is_target], batch["task_ids"][:, None].expand_as(labels)[is_target]
    _check_plain_output_layer(model)
    if is_packed(batch) and not supports_packing(model):
        batch = unpacked(batch)
    if is_packed(batch):
        attention = {"attention_mask": branch_attention_mask(batch["segments"], model), "position_ids": batch["position_ids"]}
    else:
        attention = {"attention_mask": batch["attention_mask"]}
    # No key-value cache: every position is computed once, in this pass.
    hidden = model.base_model(input_ids=batch["input_ids"], use_cache=False, **attention).last_hidden_state
    labels, token_tasks = batch["labels"], batch["task_ids"]
    if token_tasks.dim() == 1:  # one id per row
        token_tasks = token_tasks[:, None].expand_as(labels)
    next_labels = labels[:, 1:]
    is_target = next_labels != IGNORE_INDEX
    logits = model.get_output_embeddings()(hidden[:, :-1][is_target])
    return logits, next_labels[is_target], token_tasks[:, 1:][is_target]


def _check_plain_output_layer(model) -> None:
    """Refuse causal LMs whose logits are not the output layer applied to the last hidden state."""
    for setting in ("final_logit_softcapping", "logit_scale"):
        if getattr(model.config, setting, None) not in (None, 1.0):
            raise StepDistillError(
                f"{type(model).__name__} transforms its logits ({setting} = {getattr(model.config, setting)}), which the "
                "generative student's loss does not apply; choose a causal LM with a plain output layer (Llama, Qwen, Mistral, SmolLM2)"
            )


def task_losses(model, batch: dict[str, torch.Tensor], n_tasks: int = len(TASK_PREFIXES)) -> torch.Tensor:
    """(n_tasks,): the label task's and the rationale task's token cross-entropy, each the mean over
    that task's target tokens in ``batch`` (a ``MultiTaskCollator`` batch holding both tasks, in any layout),
    from one forward pass. A task without target tokens in the batch gets 0 (no gradient). The
    training loss is then ``a * losses[0] + (1 - a) * losses[1]``.

    ``task_ids`` may number loss terms rather than prompts (ids below ``n_tasks``, the collator's
    ``ids``): the LM engine gives each term of a method its own id, so that the human and the teacher label, both
    ``predict:`` targets, get means of their own from the same forward pass."""
    sums, counts = task_token_sums(model, batch, n_tasks)
    return sums / counts.clamp(min=1)


def task_token_sums(model, batch: dict[str, torch.Tensor], n_tasks: int = len(TASK_PREFIXES)) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums, counts)``, both (n_tasks,): each task's summed token cross-entropy over its target
    tokens in ``batch``, and how many target tokens it has there, from one forward pass. The
    means of ``task_losses``; kept apart for processes that each hold part of a batch, whose
    means are their sums over the whole batch's counts."""
    logits, targets, token_tasks = target_logits(model, batch)
    return per_task_sums(F.cross_entropy(logits.float(), targets, reduction="none"), token_tasks, n_tasks)


def per_task_sums(token_losses: torch.Tensor, token_tasks: torch.Tensor, n_tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums, counts)`` (n_tasks,): the token losses (N,) added up by their task (N,), and each
    task's token count."""
    sums = torch.zeros(n_tasks, dtype=token_losses.dtype, device=token_losses.device).index_add(0, token_tasks, token_losses)
    return sums, torch.bincount(token_tasks, minlength=n_tasks)


