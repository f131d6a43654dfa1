"""Evaluating a generative student by what it writes: greedy generations of its label-task
prompts (``predict``) scored against the labels (cqa: the chosen answer, e-SNLI: the label word,
svamp: the value), and of its rationale-task prompts (``explain``) against the teacher's
rationales (ROUGE-L). The prompts are the training prompts (``lm.prompts.prompt_ids``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from stepdistill.data.arithmetic import evaluate_arithmetic
from stepdistill.data.llm_outputs import ESNLI_CLASSES, matching_name
from stepdistill.errors import StepDistillError
from stepdistill.lm.prompts import (
    CHOICE_LETTERS,
    LABEL_TASK,
    RATIONALE_TASK,
    LMRecord,
    eos_id,
    pad_id,
    pad_sequences,
    prompt_ids,
)

# Two numeric answers agree when they differ by at most this much.
NUMERIC_TOLERANCE = 1e-4
# "(b)", "(b) garden center", "b" or "b." name a choice by its letter.
LETTER_ANSWER = re.compile(r"^\(?([a-j])\)?(?:[.\s]|$)", re.IGNORECASE)
ROUGE_HINT = "pip install 'rouge-score>=0.1.2'"


@torch.no_grad()
def generate(
    model,
    tokenizer,
    records: Sequence[LMRecord],
    task: int,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    *,
    max_prompt_tokens: int,
) -> list[str]:
    """The model's greedy continuation of ``task``'s prompt for each record, decoded without
    special tokens and stripped, in the records' order.

    Prompts are the token ids training used (``prompt_ids``: a causal model's input then its task
    tag, a seq2seq model's task prefix then its input), within the prompt budget the student was
    trained with (``max_prompt_tokens``, given by every caller: no default could differ from it). A decoder-only model's prompts are
    padded on the left, so that every continuation starts right after its own prompt (generate
    derives positions from the attention mask); an encoder-decoder's on the right. The model is
    left in the mode (training or evaluation) it was in.
    """
    was_training = model.training
    model.eval()
    try:
        return _generate_batches(model, tokenizer, records, task, batch_size, max_new_tokens, max_prompt_tokens)
    finally:
        model.train(was_training)


def _generate_batches(model, tokenizer, records, task, batch_size, max_new_tokens, max_prompt_tokens) -> list[str]:
    seq2seq = model.config.is_encoder_decoder
    fill = pad_id(tokenizer)
    texts: list[str] = []
    for start in range(0, len(records), batch_size):
        prompts = [prompt_ids(tokenizer, record, task, seq2seq, max_prompt_tokens) for record in records[start : start + batch_size]]
        input_ids, attention_mask = pad_sequences(prompts, fill, left=not seq2seq)
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=fill,
            eos_token_id=eos_id(tokenizer),
        )
        # A decoder-only model returns the prompt followed by the continuation.
        continuations = output if seq2seq else output[:, input_ids.shape[1] :]
        texts += [text.strip() for text in tokenizer.batch_decode(continuations, skip_special_tokens=True)]
    return texts


def chosen_answer(generated: str, choices: Sequence[str]) -> str | None:
    """The choice a cqa answer names: its text (ignoring case and a final period), or its letter
    ("(b)", "(b) garden center", "b"); None when it names none."""
    by_text = matching_name(generated, choices, ignore_case=True)
    if by_text is not None:
        return by_text
    letter = LETTER_ANSWER.match(generated.strip())
    index = CHOICE_LETTERS.find(letter.group(1).lower()) if letter else -1
    return choices[index] if 0 <= index < len(choices) else None


def numeric_value(text: str) -> float | None:
    """The value of a written number or arithmetic expression ("42", "( 84.0 / 2.0 )", "$1,200"),
    by the safe evaluator (numbers, + - * / and parentheses only); None for anything else, which
    is never executed."""
    try:
        return evaluate_arithmetic(text.replace("$", "").replace(",", ""))
    except ValueError:
        return None


def answer_of(dataset: str, generated: str, record: LMRecord) -> str | None:
    """The answer a generated label gives, as labels are written: cqa the choice it names, e-SNLI
    the label word (case and a final period ignored), svamp the value; None when it gives none
    (an unparsed answer, which is a wrong one)."""
    if dataset == "cqa":
        return chosen_answer(generated, record.choices)
    if dataset == "esnli":
        return matching_name(generated, ESNLI_CLASSES, ignore_case=True)
    if dataset == "svamp":
        value = numeric_value(generated)
        return None if value is None else format(value, ".12g")
    raise StepDistillError(f"unknown dataset {dataset!r} for scoring generations; choose one of cqa, svamp, esnli")


def label_correct(dataset: str, generated: str, record: LMRecord) -> bool:
    """Whether a generated label's answer (``answer_of``) is ``record.label``: svamp's value
    within ``NUMERIC_TOLERANCE`` of the label's, the others exactly."""
    if dataset == "svamp":
        value, expected = numeric_value(generated), numeric_value(record.label)
        return value is not None and expected is not None and abs(value - expected) <= NUMERIC_TOLERANCE
    answer = answer_of(dataset, generated, record)
    return answer is not None and answer == record.label


def labels_correct(dataset: str, generations: Sequence[str], records: Sequence[LMRecord]) -> list[bool]:
    """Whether each of ``records``' generated label (same order) is correct."""
    if len(generations) != len(records) or not records:
        raise StepDistillError(f"{len(generations)} generations for {len(records)} records; give one generation per record")
    return [label_correct(dataset, text, record) for text, record in zip(generations, records)]


def label_accuracy(dataset: str, generations: Sequence[str], records: Sequence[LMRecord]) -> float:
    """The share of ``records`` whose generated label (same order) is correct."""
    correct = labels_correct(dataset, generations, records)
    return sum(correct) / len(correct)


def rouge_l(generations: Sequence[str], references: Sequence[str]) -> float:
    """The mean ROUGE-L F-measure of each generation against its reference (``rouge-score``, with
    its Porter stemmer, as is usual for rationales): 1 for identical texts, 0 for no common word."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise StepDistillError(f"ROUGE-L needs the rouge-score package; run {ROUGE_HINT}") from None
    if len(generations) != len(references) or not references:
        raise StepDistillError(f"{len(generations)} generations for {len(references)} references; give one generation per reference")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return sum(scorer.score(reference, text)["rougeL"].fmeasure for text, reference in zip(generations, references)) / len(references)


@dataclass(frozen=True)
class GenerativeScores:
    """A generative student's test scores (``label_accuracy``; ``coverage``, the share of labels
    that give an answer at all; and ``rationale_rouge_l`` when rationales were generated), each
    record's answer (``answer_of``, "" where it gave none) and
    whether it was right."""

    metrics: dict[str, float]
    answers: list[str]
    correct: list[bool]


def evaluate_generative_student(
    model,
    tokenizer,
    records: Sequence[LMRecord],
    dataset: str,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    rationales: bool = True,
    generator: Callable[..., list[str]] | None = None,
    *,
    max_prompt_tokens: int,
) -> GenerativeScores:
    """The scores of the model's greedy generations on ``records``: ``rationales=False`` skips
    the rationale generations (the slower half) and the ROUGE-L entry. ``generator``: a function
    with ``generate``'s arguments and result (one that shares the batches among processes);
    None: ``generate``."""
    generator = generator or generate
    labels = generator(model, tokenizer, records, LABEL_TASK, batch_size, max_new_tokens, max_prompt_tokens=max_prompt_tokens)
    correct = labels_correct(dataset, labels, records)
    answers = [answer_of(dataset, text, record) or "" for text, record in zip(labels, records)]
    metrics = {"label_accuracy": sum(correct) / len(correct), "coverage": sum(map(bool, answers)) / len(answers)}
    if rationales:
        explanations = generator(model, tokenizer, records, RATIONALE_TASK, batch_size, max_new_tokens, max_prompt_tokens=max_prompt_tokens)
        metrics["rationale_rouge_l"] = rouge_l(explanations, [record.rationale for record in records])
    return GenerativeScores(metrics, answers, correct)
