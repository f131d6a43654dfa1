"""Generative students' prompts (Hsieh et al. 2023, distilling step by step): a language model
learns, from each record, two tasks told apart by a tag in its prompt, the label task (-> the
label) and the rationale task (-> the teacher's rationale).

An encoder-decoder (seq2seq) student reads the released ``predict: <input>`` and
``explain: <input>``. A decoder-only (causal) student reads the input first and the tag after it,
``<input>\\npredict:\\n`` and ``<input>\\nexplain:\\n``, so that all of a record's targets follow the
same input tokens (engines/lm_batching.py then computes that input once per record).

This module turns the released records into ``LMRecord``s and a record's task into token ids:
training (engines/lm_batching.py), test generation (lm/eval.py) and ``stepdistill predict``
(lm/predict.py) all prompt through ``prompt_ids``, with the one prompt budget of the config
(``training.max_prompt_tokens``), so that a model is prompted at test time exactly as it was trained.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch

from stepdistill.data.llm_outputs import LLMOutputs
from stepdistill.errors import StepDistillError
from stepdistill.lm.config import MAX_PROMPT_TOKENS, MAX_TARGET_TOKENS

# The task prefixes of the paper (a seq2seq student's prompt starts with one); a task id indexes this tuple.
TASK_PREFIXES = ("predict: ", "explain: ")
# A causal student's task tags, which follow its input (see prompt_ids); indexed by task id too. The
# tag carries the newline after the input, so that it stays when a long input is cut.
TASK_TAGS = ("\npredict:\n", "\nexplain:\n")
LABEL_TASK, RATIONALE_TASK = 0, 1
DATASETS = ("cqa", "svamp", "esnli")
CHOICE_LETTERS = "abcdefghij"


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
    gives both; the released expressions are not kept, and ``lm.evaluate`` accepts a generated
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
    return tokenizer(record.text, truncation=True, max_length=_input_room(tokenizer, max_prompt_tokens))["input_ids"]


def _input_room(tokenizer, max_prompt_tokens: int) -> int:
    """How many of a causal prompt's ``max_prompt_tokens`` the input may take beside the longest tag."""
    room = max_prompt_tokens - max(len(tag_ids(tokenizer, task)) for task in range(len(TASK_TAGS)))
    if room < 1:
        raise StepDistillError(f"max_prompt_tokens {max_prompt_tokens} leaves no room for the input beside the task tag; raise it above {max_prompt_tokens - room}")
    return room


def input_cut(tokenizer, record: LMRecord, seq2seq: bool, max_prompt_tokens: int) -> bool:
    """Whether ``prompt_ids`` cuts ``record``'s input to fit ``max_prompt_tokens``."""
    if seq2seq:
        return len(tokenizer(task_prompt(record, LABEL_TASK, seq2seq), verbose=False)["input_ids"]) > max_prompt_tokens
    return len(tokenizer(record.text, verbose=False)["input_ids"]) > _input_room(tokenizer, max_prompt_tokens)


def target_cut(tokenizer, text: str, max_target_tokens: int) -> bool:
    """Whether ``encode_task`` cuts the target ``text`` to fit ``max_target_tokens`` (with its EOS)."""
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]) > max_target_tokens - 1


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

