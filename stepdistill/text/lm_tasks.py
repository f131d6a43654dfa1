"""Generative students (Hsieh et al. 2023, distilling step by step): a language model learns, from
each record, two tasks told apart by a tag in its prompt, the label task (-> the label) and the
rationale task (-> the teacher's rationale), trained with ``a * label + (1 - a) * rationale``.

Prompts: an encoder-decoder (seq2seq) student reads the released ``predict: <input>`` and
``explain: <input>``. A decoder-only (causal) student reads the input first and the tag after it,
``<input>\\npredict:\\n`` and ``<input>\\nexplain:\\n``, so that all of a record's targets follow the
same input tokens. A causal batch then packs each record into one row, the input once and every
target after it as a branch of its own (``MultiTaskCollator``): a 4D attention mask keeps each
branch from seeing the others, and position ids start each branch where it would start alone, so
that every loss and gradient is the one of the separate ``input + tag + target`` sequences while
the input is computed once instead of once per task.

This module turns records into those token sequences, batches them (all tasks of the same records
in one batch, padded to the batch's longest row, records of similar length batched together) and
computes every task's loss in one forward pass, for causal LMs and seq2seq models alike.
``token_kd_loss`` adds token-level distillation from a local teacher that shares the student's
tokenizer.
"""

from __future__ import annotations

import inspect
import math
import reprlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from stepdistill.errors import StepDistillError
from stepdistill.text.llm_outputs import LLMOutputs

# The task prefixes of the paper (a seq2seq student's prompt starts with one); a task id indexes this tuple.
TASK_PREFIXES = ("predict: ", "explain: ")
# A causal student's task tags, which follow its input (see prompt_ids); indexed by task id too. The
# tag carries the newline after the input, so that it stays when a long input is cut.
TASK_TAGS = ("\npredict:\n", "\nexplain:\n")
LABEL_TASK, RATIONALE_TASK = 0, 1
# Positions whose label is this are not targets (torch's cross-entropy ignores them too).
IGNORE_INDEX = -100
DATASETS = ("cqa", "svamp", "esnli")
CHOICE_LETTERS = "abcdefghij"
# The released trainer's limits: inputs of up to 1,024 tokens, targets of up to 256.
MAX_PROMPT_TOKENS = 1024
MAX_TARGET_TOKENS = 256
# Records are sorted by length within groups of this many batches (HF Trainer's group_by_length uses 50).
MEGA_BATCH_BATCHES = 50
# The attention implementations of transformers that apply a custom 4D mask as given (masking_utils
# returns a 4D mask as-is; sdpa reads it as bool True = attend, eager adds it as a float mask).
# Others (flash attention reads no dense mask) get one row per (record, task) instead of packed rows.
PACKING_ATTENTION = ("sdpa", "eager")
# The segment of a packed row's padding: never attended to by real tokens (see branch_attention_mask).
PADDING_SEGMENT = -1


@dataclass(frozen=True)
class LMRecord:
    """One record as a generative student sees it: ``text`` the formatted input (without task
    prefix), ``label`` the label target, ``rationale`` the teacher's rationale, ``choices`` the
    answer choices of a multiple-choice record (empty otherwise), kept for scoring."""

    id: str
    text: str
    label: str
    rationale: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class EncodedTask:
    """One (record, task) pair as token ids: the prompt and the target, which ends with the
    end-of-sequence token. ``shared``: how many of the prompt's first tokens are the record's
    input, the same for all its tasks (a causal student's prompt is input then tag); 0 for a
    seq2seq student, whose prompt starts with the task prefix."""

    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    shared: int = 0

    @property
    def tokens(self) -> int:
        """Prompt plus target tokens: the training tokens of this pair."""
        return len(self.prompt_ids) + len(self.target_ids)

    @property
    def shared_ids(self) -> tuple[int, ...]:
        """The input's tokens, which all tasks of the record share."""
        return self.prompt_ids[: self.shared]

    @property
    def branch_ids(self) -> tuple[int, ...]:
        """What follows the shared input: the tag and the target."""
        return self.prompt_ids[self.shared :] + self.target_ids


def record_text(dataset: str, row: pd.Series) -> str:
    """The input of a row of ``read_dsbs(dataset)``'s frame as the student reads it: a cqa
    question followed by its lettered choices (the released format), an e-SNLI premise and
    hypothesis on two labelled lines, a svamp problem as written."""
    if dataset == "cqa":
        lettered = "\n".join(f"({letter}) {choice}" for letter, choice in zip(CHOICE_LETTERS, row["choices"]))
        return f"{row['question']}\nAnswer Choices:\n{lettered}"
    if dataset == "esnli":
        return f"Premise: {row['premise']}\nHypothesis: {row['hypothesis']}"
    if dataset == "svamp":
        return str(row["input"])
    raise StepDistillError(f"unknown dataset {dataset!r} for a generative student; choose one of {', '.join(DATASETS)}")


def lm_records(
    frame: pd.DataFrame, outputs: LLMOutputs, dataset: str, label_source: Literal["human", "teacher"] = "human"
) -> tuple[list[LMRecord], list[str]]:
    """``(records, left_out_ids)`` from a ``read_dsbs`` frame and its teacher outputs.

    Label targets: ``label_source="human"`` the frame's labels, ``"teacher"`` the teacher's (the
    paper's ``gt`` and ``llm`` label types). They are class names: the cqa answer text, the e-SNLI
    label word, and for svamp the answer's value as a number string (``"42"``, as ``read_dsbs``
    gives both; the released expressions are not kept, and ``lm_eval`` accepts a generated
    expression with the same value). The rationale target is the teacher's first rationale.
    Records without a rationale, or without a teacher label when it is the target, are left out
    (their ids returned); a record without any teacher output is an error.
    """
    if label_source not in ("human", "teacher"):
        raise StepDistillError(f"unknown label source {label_source!r}; choose human or teacher")
    missing = [record_id for record_id in frame["id"] if record_id not in outputs.answers]
    if missing:
        raise StepDistillError(
            f"the teacher outputs lack {len(missing)} of {len(frame)} record ids (e.g. {reprlib.repr(missing[0])}); "
            "give the teacher one output per record id"
        )
    records: list[LMRecord] = []
    left_out: list[str] = []
    for _, row in frame.iterrows():
        answer = outputs.answers[row["id"]]
        label = row["label"] if label_source == "human" else answer.label
        if label is None or not answer.rationales:
            left_out.append(row["id"])
            continue
        choices = tuple(row["choices"]) if dataset == "cqa" else ()
        records.append(LMRecord(str(row["id"]), record_text(dataset, row), str(label), answer.rationales[0], choices))
    return records, left_out


def task_prompt(record: LMRecord, task: int, seq2seq: bool) -> str:
    """The prompt of ``task`` (``LABEL_TASK`` or ``RATIONALE_TASK``) for ``record`` as text: a
    seq2seq student's ``predict: <input>\\n``, a causal student's ``<input>\\npredict:\\n`` (see
    ``prompt_ids`` for its tokens). A newline ends it, so that the target starts on a line of its own."""
    return f"{TASK_PREFIXES[task]}{record.text}\n" if seq2seq else f"{record.text}{TASK_TAGS[task]}"


def prompt_formats(seq2seq: bool) -> dict[str, str]:
    """The prompts' format by task name, ``<input>`` standing for a record's input: what a saved
    student's manifest records, so that ``stepdistill predict`` prompts it as it was trained."""
    example = LMRecord("", "<input>", "", "")
    return {name: task_prompt(example, task, seq2seq) for name, task in (("label", LABEL_TASK), ("rationale", RATIONALE_TASK))}


def task_target(record: LMRecord, task: int) -> str:
    """What ``task`` asks the student to write for ``record``: its label or its rationale."""
    return record.label if task == LABEL_TASK else record.rationale


def prompt_ids(tokenizer, record: LMRecord, task: int, seq2seq: bool, max_prompt_tokens: int = MAX_PROMPT_TOKENS) -> list[int]:
    """The prompt's token ids, at most ``max_prompt_tokens``. Training and generation both use
    this, so that a model is prompted at test time exactly as it was trained.

    Seq2seq: ``task_prompt`` tokenized with the special tokens the tokenizer adds to an input (an
    EOS for T5's), truncated. Causal: ``record_input_ids`` then ``tag_ids``, tokenized apart,
    so that a record's tasks share the input's tokens exactly and a batch can compute them once."""
    if seq2seq:
        return tokenizer(task_prompt(record, task, seq2seq), truncation=True, max_length=max_prompt_tokens)["input_ids"]
    return record_input_ids(tokenizer, record, max_prompt_tokens) + tag_ids(tokenizer, task)


def tag_ids(tokenizer, task: int) -> list[int]:
    """A causal prompt's task tag (``\\npredict:\\n``, ``\\nexplain:\\n``) as token ids, without special tokens."""
    return tokenizer(TASK_TAGS[task], add_special_tokens=False)["input_ids"]


def record_input_ids(tokenizer, record: LMRecord, max_prompt_tokens: int = MAX_PROMPT_TOKENS) -> list[int]:
    """A causal prompt's input, the record's text, as token ids with the special tokens the tokenizer
    adds (a BOS for Llama-style tokenizers), cut so that the longest tag still fits in
    ``max_prompt_tokens``: the same cut for every task, so that the tasks share the input."""
    room = max_prompt_tokens - max(len(tag_ids(tokenizer, task)) for task in range(len(TASK_TAGS)))
    if room < 1:
        raise StepDistillError(f"max_prompt_tokens {max_prompt_tokens} leaves no room for the input beside the task tag; raise it above {max_prompt_tokens - room}")
    return tokenizer(record.text, truncation=True, max_length=room)["input_ids"]


def eos_id(tokenizer) -> int:
    """The tokenizer's end-of-sequence id, which ends every target."""
    if tokenizer.eos_token_id is None:
        raise StepDistillError(f"the tokenizer {tokenizer.name_or_path!r} has no end-of-sequence token; set tokenizer.eos_token")
    return tokenizer.eos_token_id


def pad_id(tokenizer) -> int:
    """The id that fills padding: the tokenizer's pad token, else its EOS (padding is masked out,
    so its value never matters)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id(tokenizer)


def encode_task(
    tokenizer,
    record: LMRecord,
    task: int,
    seq2seq: bool,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    max_target_tokens: int = MAX_TARGET_TOKENS,
) -> EncodedTask:
    """``record``'s ``task`` as token ids, with the prompt of a seq2seq or a causal student (see
    ``prompt_ids``). Prompt and target are tokenized apart, so that the target's tokens are the
    ones the model will generate after the prompt; the target is cut to ``max_target_tokens - 1``
    tokens and gets the EOS."""
    target = tokenizer(task_target(record, task), add_special_tokens=False)["input_ids"][: max_target_tokens - 1]
    prompt = prompt_ids(tokenizer, record, task, seq2seq, max_prompt_tokens)
    shared = 0 if seq2seq else len(prompt) - len(tag_ids(tokenizer, task))
    return EncodedTask(tuple(prompt), tuple(target) + (eos_id(tokenizer),), shared)


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


def pad_sequences(sequences: Sequence[Sequence[int]], fill: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)``, both (B, longest): the sequences padded with ``fill`` on the right (for
    training) or the left (for a decoder-only model's generation); ``mask`` is 1 on real tokens."""
    longest = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), longest), fill, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        where = slice(longest - len(sequence), longest) if left else slice(0, len(sequence))
        ids[row, where] = torch.tensor(sequence, dtype=torch.long)
        mask[row, where] = 1
    return ids, mask


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


def token_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Scalar: ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` per target token, averaged
    over the tokens where ``labels_mask`` is true (Hinton et al. 2015, token by token).

    ``student_logits`` and ``teacher_logits``: (..., V) over the same vocabulary (see
    ``check_same_vocabulary``), e.g. (B, L, V) or ``target_logits``' (N, V); ``labels_mask``:
    (...) bool. The T^2 factor keeps the gradients' scale independent of T. The teacher's logits
    are a fixed target (detached). No target token: 0.
    """
    if not temperature > 0:
        raise StepDistillError(f"the distillation temperature must be > 0, got {temperature}; use e.g. 2")
    if student_logits.shape != teacher_logits.shape:
        raise StepDistillError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ in shape; "
            "token distillation needs a teacher with the student's tokenizer, run on the same batch"
        )
    kl = token_kl(student_logits[labels_mask], teacher_logits[labels_mask], temperature)
    return kl.sum() if kl.shape[0] == 0 else kl.mean()


def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N,): ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` of each of N tokens, from
    logits (N, V) over the same vocabulary; the teacher's are a fixed target (detached)."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="none").sum(dim=-1) * temperature**2


def check_same_vocabulary(student_tokenizer, teacher_tokenizer) -> None:
    """Raise a one-line ``StepDistillError`` naming both tokenizers unless they map the same
    tokens to the same ids (token distillation compares logits id by id)."""
    student_vocabulary, teacher_vocabulary = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if student_vocabulary == teacher_vocabulary:
        return
    differing = sorted(set(student_vocabulary.items()) ^ set(teacher_vocabulary.items()), key=lambda item: item[1])
    raise StepDistillError(
        f"the student's tokenizer {student_tokenizer.name_or_path!r} ({len(student_vocabulary)} tokens) and the teacher's "
        f"{teacher_tokenizer.name_or_path!r} ({len(teacher_vocabulary)} tokens) differ (e.g. token {differing[0][0]!r} -> "
        f"id {differing[0][1]}); token distillation needs a teacher with the student's tokenizer, or use the teacher's rationales only"
    )
