"""Generative students (Hsieh et al. 2023, distilling step by step): a language model learns, from
each record, two tasks told apart by a prefix of its prompt, ``predict: <input>`` -> the label and
``explain: <input>`` -> the teacher's rationale, trained with ``a * label + (1 - a) * rationale``.

This module turns records into those two tasks' token sequences, batches them (both tasks of the
same records in one batch, padded to the batch's longest sequence, records of similar length
batched together) and computes both tasks' losses in one forward pass, for decoder-only causal
LMs and for encoder-decoder (seq2seq) models alike. ``token_kd_loss`` adds token-level
distillation from a local teacher that shares the student's tokenizer.
"""

from __future__ import annotations

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

# The task prefixes of the paper; a task id indexes this tuple.
TASK_PREFIXES = ("predict: ", "explain: ")
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
    """One (record, task) pair as token ids: the prompt (task prefix and input) and the target,
    which ends with the end-of-sequence token."""

    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]

    @property
    def tokens(self) -> int:
        """Prompt plus target tokens: the training tokens of this pair."""
        return len(self.prompt_ids) + len(self.target_ids)


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


def task_prompt(record: LMRecord, task: int) -> str:
    """The prompt of ``task`` (``LABEL_TASK`` or ``RATIONALE_TASK``) for ``record``. A newline ends
    it, so that a causal LM's target starts on a line of its own."""
    return f"{TASK_PREFIXES[task]}{record.text}\n"


def task_target(record: LMRecord, task: int) -> str:
    """What ``task`` asks the student to write for ``record``: its label or its rationale."""
    return record.label if task == LABEL_TASK else record.rationale


def prompt_ids(tokenizer, record: LMRecord, task: int, max_prompt_tokens: int = MAX_PROMPT_TOKENS) -> list[int]:
    """The prompt's token ids, with the special tokens the tokenizer adds to an input (a BOS for
    Llama-style tokenizers, an EOS for T5's), truncated to ``max_prompt_tokens``. Training and
    generation both use this, so that a model is prompted at test time exactly as it was trained."""
    return tokenizer(task_prompt(record, task), truncation=True, max_length=max_prompt_tokens)["input_ids"]


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
    tokenizer, record: LMRecord, task: int, max_prompt_tokens: int = MAX_PROMPT_TOKENS, max_target_tokens: int = MAX_TARGET_TOKENS
) -> EncodedTask:
    """``record``'s ``task`` as token ids. Prompt and target are tokenized apart, so that the
    target's tokens are the ones the model will generate after the prompt; the target is cut to
    ``max_target_tokens - 1`` tokens and gets the EOS."""
    target = tokenizer(task_target(record, task), add_special_tokens=False)["input_ids"][: max_target_tokens - 1]
    return EncodedTask(tuple(prompt_ids(tokenizer, record, task, max_prompt_tokens)), tuple(target) + (eos_id(tokenizer),))


def both_tasks(records: Sequence[LMRecord]) -> list[tuple[LMRecord, int]]:
    """The items of a batch of records: each record's label task, then its rationale task. One
    batch holds both tasks of the same records, so every step trains ``a * label + (1 - a) *
    rationale`` on the same records, as the released trainer's step does."""
    return [(record, task) for record in records for task in (LABEL_TASK, RATIONALE_TASK)]


class MultiTaskCollator:
    """Turns (record, task) items into one padded batch; ``seq2seq`` chooses the layout.

    Padding is on the right and only up to the longest sequence of the batch: with right padding
    every real token keeps the positions (0, 1, ...) it has alone, and causal attention never lets
    it see the padding after it, so padding changes no loss. Encodings are kept per item, so each
    (record, task) is tokenized once.
    """

    def __init__(self, tokenizer, seq2seq: bool, max_prompt_tokens: int = MAX_PROMPT_TOKENS, max_target_tokens: int = MAX_TARGET_TOKENS):
        self.tokenizer = tokenizer
        self.seq2seq = seq2seq
        self.max_prompt_tokens = max_prompt_tokens
        self.max_target_tokens = max_target_tokens
        self.pad_id = pad_id(tokenizer)
        self._encoded: dict[tuple[LMRecord, int], EncodedTask] = {}

    def encoded(self, record: LMRecord, task: int) -> EncodedTask:
        """``encode_task`` of the item, computed once."""
        key = (record, task)
        if key not in self._encoded:
            self._encoded[key] = encode_task(self.tokenizer, record, task, self.max_prompt_tokens, self.max_target_tokens)
        return self._encoded[key]

    def record_length(self, record: LMRecord) -> int:
        """The tokens of the record's longer task: what the record's sequences are padded to in
        a batch of its own, the key by which records are grouped."""
        return max(self.encoded(record, task).tokens for task in (LABEL_TASK, RATIONALE_TASK))

    def __call__(self, items: Sequence[tuple[LMRecord, int]]) -> dict[str, torch.Tensor]:
        """The batch of ``items`` (B of them).

        Causal LM: ``input_ids`` and ``attention_mask`` (B, L), L the longest prompt + target;
        ``labels`` (B, L) holds each target token at its own position (the model's output one
        position earlier predicts it) and ``IGNORE_INDEX`` on prompt and padding.
        Seq2seq: ``input_ids`` and ``attention_mask`` (B, Lp) the prompts; ``labels`` (B, Lt) the
        targets, ``IGNORE_INDEX`` on padding. Both: ``task_ids`` (B,), 0 label, 1 rationale.
        """
        encoded = [self.encoded(record, task) for record, task in items]
        task_ids = torch.tensor([task for _, task in items], dtype=torch.long)
        if self.seq2seq:
            input_ids, attention_mask = pad_sequences([e.prompt_ids for e in encoded], self.pad_id)
            labels, _ = pad_sequences([e.target_ids for e in encoded], IGNORE_INDEX)
        else:
            input_ids, attention_mask = pad_sequences([e.prompt_ids + e.target_ids for e in encoded], self.pad_id)
            masked = [(IGNORE_INDEX,) * len(e.prompt_ids) + e.target_ids for e in encoded]
            labels, _ = pad_sequences(masked, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "task_ids": task_ids}


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
    forward pass over the whole batch (both tasks).

    Causal LM: the logits of the position before each target token. Only those positions go
    through the output layer (the vocabulary projection, the largest layer of a small LM): prompt
    and padding positions never need logits. Models whose output layer is more than that linear
    map (logit soft-capping or scaling) are refused rather than computed wrongly.
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
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    next_labels = labels[:, 1:]
    is_target = next_labels != IGNORE_INDEX
    logits = model.get_output_embeddings()(hidden[:, :-1][is_target])
    return logits, next_labels[is_target], batch["task_ids"][:, None].expand_as(next_labels)[is_target]


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
    that task's target tokens in ``batch`` (a ``MultiTaskCollator`` batch holding both tasks),
    from one forward pass. A task without target tokens in the batch gets 0 (no gradient). The
    training loss is then ``a * losses[0] + (1 - a) * losses[1]``.

    ``task_ids`` may number loss terms rather than prompts (ids below ``n_tasks``): the LM engine
    gives each term of a method its own id, so that the human and the teacher label, both
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
