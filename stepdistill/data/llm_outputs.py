"""Outputs of a large-language-model teacher: per input a label and one or more chain-of-thought
rationales (Hsieh et al. 2023, distilling step by step), read from raw few-shot continuations
(the released PaLM outputs for cqa, svamp and e-SNLI) or from a JSONL file."""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from stepdistill.data.arithmetic import evaluate_arithmetic
from stepdistill.data.io import spelling_key
from stepdistill.errors import StepDistillError

# The distilling-step-by-step release, beside the project's folder by default.
DSBS_DEFAULT_DIR = Path("../shared/data/dsbs")
# A few-shot continuation runs on into the next example the model makes up: after a blank line,
# or on the next line when the model drops the blank line.
BLOCK_STARTS = ("\n\n", "\nQ:", "\nPremise:")
# cqa and svamp rationales end in "So the answer is ..." or "The answer is ..."; a cqa answer
# reads "(d) math problem." and the letter is dropped, since the choice text is what is matched.
_ANSWER_PHRASE = r"(?:So the answer is|The answer is)"
DSBS_FORMATS = {
    "cqa": rf"(?s)(?P<rationale>.*?)\s*{_ANSWER_PHRASE}\s*(?:\([a-e]\)\s*)?(?P<label>.*?)\.?\s*$",
    "svamp": rf"(?s)(?P<rationale>.*?)\s*{_ANSWER_PHRASE}\s*(?P<label>.*?)\.?\s*$",
    "esnli": r"(?s)(?P<rationale>.*?)\s*Answer:\s*(?P<label>.*?)\s*$",
}
# The paper's own parse, kept to reproduce the teacher labels its students learned from (and the
# published teacher accuracies): a svamp answer is only the text from the first "(" to the last
# ")" after the answer phrase (so "(12 * 14) + 6" reads as 168), and a cqa or e-SNLI label must
# spell a class name exactly, case included.
DSBS_PAPER_FORMATS = DSBS_FORMATS | {"svamp": rf"(?s)(?P<rationale>.*?)\s*{_ANSWER_PHRASE}[^(]*(?P<label>\(.*\))"}
DSBS_PARSES = {"careful": DSBS_FORMATS, "paper": DSBS_PAPER_FORMATS}
ESNLI_CLASSES = ("entailment", "neutral", "contradiction")
# Numeric labels are rounded to this many decimals, so that two expressions with the same value
# (say 0.1 + 0.2 and 0.3) give the same label string despite floating-point rounding.
NUMERIC_LABEL_DECIMALS = 6
# How many parse failures LLMOutputs keeps as examples, and how many ids an error names.
FAILURE_EXAMPLES = 5
NAMED_IN_ERRORS = 3
DISTRIBUTION_TOLERANCE = 1e-6


@dataclass(frozen=True)
class LLMAnswer:
    """One input's teacher output: ``label`` is None where none could be parsed; ``rationales``
    holds one string per sample the model wrote; ``label_distribution`` maps label -> share."""

    id: str
    label: str | None
    rationales: list[str]
    label_distribution: dict[str, float] | None = None


@dataclass(frozen=True)
class LLMOutputs:
    """A teacher's answers by id. ``classes``: the label names (sorted where the teacher's labels
    define them); ``parse_failures``: answers without a label; ``failure_examples``: up to
    ``FAILURE_EXAMPLES`` (id, why) pairs of them."""

    answers: dict[str, LLMAnswer]
    classes: tuple[str, ...]
    parse_failures: int
    failure_examples: list[tuple[str, str]]

    @property
    def coverage(self) -> float:
        """The share of answers with a label, in [0, 1]."""
        return 1 - self.parse_failures / len(self.answers) if self.answers else 0.0

    def label_accuracy(self, human: Mapping[str, str], numeric_tolerance: float | None = None) -> float:
        """The share of ``human``'s ids (id -> label) whose teacher label equals the human one; an
        id without a teacher label counts as wrong. With ``numeric_tolerance``, labels are numbers
        that agree when they differ by at most that much."""
        if not human:
            raise StepDistillError("no human labels to compare the teacher's with; pass a mapping id -> label")
        correct = 0
        for record_id, human_label in human.items():
            answer = self.answers.get(record_id)
            if answer is None or answer.label is None:
                continue
            if numeric_tolerance is None:
                correct += answer.label == human_label
            else:
                correct += abs(_as_number(answer.label) - _as_number(human_label)) <= numeric_tolerance
        return correct / len(human)

    def check_against(self, ids: Iterable[str], classes: Iterable[str]) -> None:
        """Raise a ``StepDistillError`` unless every id in ``ids`` has an answer whose label (and
        label distribution) uses only ``classes``; a label that spells a class with another case
        or surrounding spaces is named with that class, not matched to it."""
        ids = list(ids)
        missing = [record_id for record_id in ids if record_id not in self.answers]
        if missing:
            raise StepDistillError(
                f"the teacher outputs lack {len(missing)} of {len(ids)} record ids (e.g. {_named(missing)}); "
                "give the teacher one output per record id"
            )
        known = set(classes)
        for record_id in ids:
            answer = self.answers[record_id]
            labels = [answer.label] if answer.label is not None else []
            for label in labels + list(answer.label_distribution or {}):
                if label in known:
                    continue
                twin = next((name for name in sorted(known) if spelling_key(name) == spelling_key(label)), None)
                if twin is not None:
                    raise StepDistillError(
                        f"teacher label {reprlib.repr(label)} of record {record_id!r} and the data's class {twin!r} differ only by case or"
                        " surrounding spaces; write the teacher's labels as the data spells its classes"
                    )
                raise StepDistillError(
                    f"teacher label {reprlib.repr(label)} of record {record_id!r} is not a class "
                    f"({_named(sorted(known))}); map the teacher's labels to the class names"
                )


def parse_continuation(text: str, pattern: str | re.Pattern[str], block_starts: Sequence[str] = BLOCK_STARTS) -> tuple[str, str | None]:
    """``(rationale, label)`` from a raw few-shot continuation: the text is cut at the first of
    ``block_starts`` (the next made-up example), then ``pattern`` (a regex with the named groups
    ``rationale`` and ``label``, searched) splits it; both are stripped. Where the pattern does not
    match or the label is empty, the label is None and the rationale is the whole cut text."""
    pattern = re.compile(pattern)
    if not {"rationale", "label"} <= set(pattern.groupindex):
        raise StepDistillError(
            f"the pattern {reprlib.repr(pattern.pattern)} lacks the named groups 'rationale' and 'label'; "
            "write them as (?P<rationale>...) and (?P<label>...)"
        )
    text = text.lstrip()
    cut = min((i for i in (text.find(start) for start in block_starts) if i >= 0), default=len(text))
    text = text[:cut].strip()
    match = pattern.search(text)
    if match is None or not match["label"].strip():
        return text, None
    return match["rationale"].strip(), match["label"].strip()


def read_dsbs(
    data_dir: Path, task: Literal["cqa", "svamp", "esnli"], split: str, parse: Literal["careful", "paper"] = "careful"
) -> tuple[pd.DataFrame, LLMOutputs]:
    """A split of the distilling-step-by-step release (``data_dir`` holds ``datasets/{task}/``) and
    its PaLM outputs, aligned by id.

    The frame has one row per record: ``id`` (cqa's own; ``"{split}-{row}"`` for svamp and
    e-SNLI), the text columns (cqa ``question``, ``choices`` (5 strings); svamp ``input``; e-SNLI
    ``premise``, ``hypothesis``) and the human ``label`` as a class-name string (cqa the answer
    text, svamp the expression's value as a number string, e-SNLI entailment/neutral/contradiction).
    Teacher labels are parsed with ``DSBS_FORMATS[task]``; a cqa label must be one of the record's
    choices, an e-SNLI label one of ``ESNLI_CLASSES`` (both matched ignoring case and a final
    period), a svamp label an arithmetic expression; anything else is a parse failure.
    ``parse="paper"`` parses as the paper's code does (``DSBS_PAPER_FORMATS``, names matched
    exactly), which gives the teacher accuracies it published.
    """
    if task not in DSBS_FORMATS:
        raise StepDistillError(f"unknown distilling-step-by-step task {task!r}; choose one of {', '.join(DSBS_FORMATS)}")
    if parse not in DSBS_PARSES:
        raise StepDistillError(f"unknown parse {parse!r}; choose one of {', '.join(DSBS_PARSES)}")
    task_dir = Path(data_dir) / "datasets" / task
    records_path = task_dir / f"{task}_{split}.json"
    if not records_path.is_file():
        splits = sorted(p.stem.removeprefix(f"{task}_") for p in task_dir.glob(f"{task}_*.json"))
        raise StepDistillError(
            f"no split {split!r} at {records_path}; choose one of {', '.join(splits) or 'none'} "
            "(data_dir must be the folder that holds datasets/)"
        )
    with records_path.open(encoding="utf-8") as file:
        records = [json.loads(line) for line in file if line.strip()]
    continuations = _read_continuation_chunks(task_dir / "llm", split)
    if len(continuations) != len(records):
        raise StepDistillError(
            f"{task} {split}: {len(continuations)} teacher outputs in {task_dir / 'llm'} for {len(records)} records; "
            f"the {split}_CoT_*.json chunks must hold one output per record, in order"
        )
    frame = _dsbs_frame(task, split, records)
    answers: dict[str, LLMAnswer] = {}
    failures: list[tuple[str, str]] = []
    # The class names a teacher label must spell: a cqa record's own choices, e-SNLI's three classes.
    class_names = frame["choices"] if task == "cqa" else [ESNLI_CLASSES] * len(frame)
    for record_id, names, continuation in zip(frame["id"], class_names, continuations):
        rationale, raw_label = parse_continuation(continuation, DSBS_PARSES[parse][task])
        label = None if raw_label is None else _dsbs_label(task, raw_label, names, ignore_case=parse == "careful")
        if label is None:
            failures.append((record_id, "no answer found" if raw_label is None else f"unusable answer {reprlib.repr(raw_label)}"))
        answers[record_id] = LLMAnswer(record_id, label, [rationale] if rationale else [])
    classes = ESNLI_CLASSES if task == "esnli" else tuple(sorted({a.label for a in answers.values() if a.label is not None}))
    return frame, LLMOutputs(answers, classes, len(failures), failures[:FAILURE_EXAMPLES])


def dsbs_splits(data_dir: Path, task: str) -> list[str]:
    """The splits of ``task`` in the release: train/test for cqa and svamp, valid/test for e-SNLI."""
    task_dir = Path(data_dir) / "datasets" / task
    splits = sorted(p.stem.removeprefix(f"{task}_") for p in task_dir.glob(f"{task}_*.json"))
    if not splits:
        raise StepDistillError(f"no {task} data under {task_dir}; point it at the folder that holds datasets/ of the distilling-step-by-step release")
    return splits


def read_dsbs_outputs(data_dir: Path, task: Literal["cqa", "svamp", "esnli"], parse: Literal["careful", "paper"] = "careful") -> LLMOutputs:
    """The PaLM outputs for every split of ``task``, by record id (ids differ across splits)."""
    parts = [read_dsbs(data_dir, task, split, parse)[1] for split in dsbs_splits(data_dir, task)]
    answers = {record_id: answer for part in parts for record_id, answer in part.answers.items()}
    classes = tuple(sorted({c for part in parts for c in part.classes})) if task != "esnli" else ESNLI_CLASSES
    failures = [example for part in parts for example in part.failure_examples]
    return LLMOutputs(answers, classes, sum(part.parse_failures for part in parts), failures[:FAILURE_EXAMPLES])


def read_llm_jsonl(
    path: str | Path,
    id_field: str = "id",
    label_field: str = "label",
    rationale_field: str = "rationale",
    distribution_field: str | None = None,
) -> LLMOutputs:
    """Teacher outputs from a JSONL file, one object per line: an id (string or integer), a label
    (string, or null/absent where the teacher gave none), a rationale (a string, or a list of
    strings for several samples) and, with ``distribution_field``, optionally a label
    distribution (an object label -> share summing to 1). ``classes``: the labels seen, sorted."""
    path = Path(path)
    if not path.is_file():
        raise StepDistillError(f"teacher output file not found: {path}; check the path")
    answers: dict[str, LLMAnswer] = {}
    first_lines: dict[str, int] = {}
    with path.open(encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            if line.strip():
                answer = _jsonl_answer(line, f"{path}:{line_number}", id_field, label_field, rationale_field, distribution_field)
                if answer.id in answers:
                    raise StepDistillError(
                        f"{path}:{line_number}: duplicate id {answer.id!r} (first on line {first_lines[answer.id]}); "
                        "keep one line per id"
                    )
                answers[answer.id] = answer
                first_lines[answer.id] = line_number
    if not answers:
        raise StepDistillError(f"{path} holds no teacher outputs; write one JSON object per line")
    failures = [(a.id, "no label") for a in answers.values() if a.label is None]
    classes = {a.label for a in answers.values() if a.label is not None}
    classes.update(label for a in answers.values() for label in a.label_distribution or {})
    return LLMOutputs(answers, tuple(sorted(classes)), len(failures), failures[:FAILURE_EXAMPLES])


def _jsonl_answer(line: str, where: str, id_field: str, label_field: str, rationale_field: str, distribution_field: str | None) -> LLMAnswer:
    """One JSONL line as an answer; ``where`` (path:line) starts every error."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise StepDistillError(f"{where}: invalid JSON ({err.msg} at column {err.colno}); write one JSON object per line") from None
    if not isinstance(record, dict):
        raise StepDistillError(f"{where}: a JSON {type(record).__name__}, not an object; write one JSON object per line")
    record_id = record.get(id_field)
    if type(record_id) not in (str, int) or record_id == "":
        raise StepDistillError(f"{where}: no id in field {id_field!r}; give every line a string or integer id (or pass id_field=)")
    label = record.get(label_field)
    if label is not None and (not isinstance(label, str) or not label.strip()):
        raise StepDistillError(f"{where}: label {reprlib.repr(label)} is not a class name; write the label as a non-empty string, or null")
    rationales = record.get(rationale_field)
    if isinstance(rationales, str):
        rationales = [rationales]
    if not isinstance(rationales, list) or not rationales or not all(isinstance(r, str) and r.strip() for r in rationales):
        raise StepDistillError(
            f"{where}: empty or missing rationale in field {rationale_field!r}; write a non-empty string, or a list of them"
        )
    distribution = record.get(distribution_field) if distribution_field else None
    if distribution is not None:
        distribution = _checked_distribution(distribution, where)
    return LLMAnswer(str(record_id), label, rationales, distribution)


def _checked_distribution(distribution: object, where: str) -> dict[str, float]:
    if not isinstance(distribution, dict) or not distribution or not all(
        type(share) in (int, float) and math.isfinite(share) and share >= 0 for share in distribution.values()
    ):
        raise StepDistillError(f"{where}: the label distribution is not an object label -> share >= 0; write e.g. {{\"yes\": 0.8, \"no\": 0.2}}")
    total = sum(distribution.values())
    if abs(total - 1) > DISTRIBUTION_TOLERANCE:
        raise StepDistillError(f"{where}: the label distribution sums to {total:.6g}, not 1; normalize the shares")
    return {label: float(share) for label, share in distribution.items()}


def _read_continuation_chunks(llm_dir: Path, split: str) -> list[str]:
    """The ``{split}_CoT_{i}.json`` lists concatenated for i = 0, 1, ... up to the first missing."""
    continuations: list[str] = []
    index = 0
    while (chunk_path := llm_dir / f"{split}_CoT_{index}.json").is_file():
        with chunk_path.open(encoding="utf-8") as file:
            chunk = json.load(file)
        if not isinstance(chunk, list) or not all(isinstance(text, str) for text in chunk):
            raise StepDistillError(f"{chunk_path} is not a JSON list of strings; restore the released file")
        continuations += chunk
        index += 1
    if index == 0:
        raise StepDistillError(f"no teacher outputs {llm_dir / f'{split}_CoT_0.json'}; point data_dir at the full release")
    return continuations


def _dsbs_frame(task: str, split: str, records: list[dict]) -> pd.DataFrame:
    """The records as a frame with ``id``, the task's text columns and the human ``label``."""
    if task == "cqa":
        columns = {"id": [r["id"] for r in records], "question": [r["question"] for r in records]}
        columns |= {"choices": [list(r["choices"]) for r in records], "label": [r["answer"] for r in records]}
        return pd.DataFrame(columns)
    ids = [f"{split}-{row}" for row in range(len(records))]
    if task == "svamp":
        labels = [numeric_label(r["label"]) for r in records]
        return pd.DataFrame({"id": ids, "input": [r["input"] for r in records], "label": labels})
    if any(r["label"] not in range(len(ESNLI_CLASSES)) for r in records):
        raise StepDistillError(f"e-SNLI {split} holds a label outside 0, 1, 2; restore the released file")
    labels = [ESNLI_CLASSES[r["label"]] for r in records]
    return pd.DataFrame({"id": ids, "premise": [r["premise"] for r in records], "hypothesis": [r["hypothesis"] for r in records], "label": labels})


def _dsbs_label(task: str, raw_label: str, names: Sequence[str], ignore_case: bool) -> str | None:
    """The teacher's parsed answer as one of ``names`` (a svamp answer: as a number string), or None."""
    if task == "svamp":
        try:
            return numeric_answer(raw_label)
        except ValueError:
            return None
    return matching_name(raw_label, names, ignore_case)


def matching_name(text: str, names: Sequence[str], ignore_case: bool) -> str | None:
    """The name in ``names`` that ``text`` spells (with ``ignore_case``, ignoring case and a final
    period, which some cqa choices have), or None."""
    key = _name_key(text, ignore_case)
    return next((name for name in names if _name_key(name, ignore_case) == key), None)


def _name_key(text: str, ignore_case: bool) -> str:
    return text.strip().rstrip(".").strip().casefold() if ignore_case else text.strip()


def numeric_answer(answer: str) -> str:
    """A written arithmetic answer ("$1,200 / 4") as a normalized number string ("300")."""
    return numeric_label(answer.replace("$", "").replace(",", ""))


def numeric_label(expr: str) -> str:
    """The value of an arithmetic expression as a normalized number string: ``"42"``, ``"5.625"``."""
    value = round(evaluate_arithmetic(expr), NUMERIC_LABEL_DECIMALS)
    return str(int(value)) if value.is_integer() else repr(value)


def _as_number(label: str) -> float:
    try:
        return float(label)
    except ValueError:
        raise StepDistillError(f"label {reprlib.repr(label)} is not a number; compare labels without numeric_tolerance") from None


def _named(values: Sequence[str]) -> str:
    """The first few of ``values`` for an error message."""
    shown = ", ".join(repr(v) for v in values[:NAMED_IN_ERRORS])
    return shown + (", ..." if len(values) > NAMED_IN_ERRORS else "")


def dsbs_directory(data_dir: Path | None) -> Path:
    """The released distilling-step-by-step data: ``data_dir``, else the default when present."""
    chosen = DSBS_DEFAULT_DIR if data_dir is None else data_dir
    if not (chosen / "datasets").is_dir():
        where = f"--data-dir {data_dir}" if data_dir is not None else f"the default {DSBS_DEFAULT_DIR}"
        raise StepDistillError(f"no distilling-step-by-step data at {where} (no datasets/ folder); pass --data-dir with the folder that holds datasets/")
    return chosen.resolve()
