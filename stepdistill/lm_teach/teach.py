"""``stepdistill lm-teach``: a large language model as the teacher. Each record fills a few-shot
chain-of-thought template; the model's continuations are parsed into a rationale and a label; the
teacher outputs are written as JSONL that ``read_llm_jsonl`` reads.

Self-consistency (Wang et al. 2023): with ``samples: k`` the model writes k continuations per
record; the label is the most common parsed label and ``label_distribution`` the share of each
label among the parsed ones; all k rationales are kept.

Every finished generation is appended to a store (JSONL, one line per generation, flushed to disk
after each batch) under a key that hashes the prompt, the template, the model's identity, the
sampling settings and the sample's index; a re-run asks the model only for what the store lacks,
so a killed run loses at most the requests in flight. The teacher-output file is written whole at
the end, from the store.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stepdistill.data.io import read_frame
from stepdistill.data.llm_outputs import matching_name, numeric_answer, parse_continuation, read_llm_jsonl
from stepdistill.errors import StepDistillError
from stepdistill.files import write_atomically
from stepdistill.lm_teach.config import LMTeachConfig
from stepdistill.lm_teach.store import GenerationStore, Request, default_store_path, generation_key
from stepdistill.lm_teach.templates import CHOICES_PLACEHOLDER, CLASSES_PLACEHOLDER, Template, load_template
from stepdistill.text.inputs import CHOICE_LETTERS

Say = Callable[[str], None]

# Servers accept at most this many stop strings (the OpenAI API's limit).
MAX_STOP_STRINGS = 4
# Choices are lettered in prompts as in CommonsenseQA's: "(a) ...".
PROMPT_LETTERS = CHOICE_LETTERS.lower()
# A multiple-choice answer as written in the template: "(e) blotter", or just "(e)".
CHOICE_ANSWER = re.compile(r"\(([a-z])\)\s*(.*)", re.IGNORECASE | re.DOTALL)
# A progress line at most this often while generating.
PROGRESS_INTERVAL_S = 5.0


@dataclass(frozen=True)
class TeachRecord:
    """One record to ask about: its prompt, its human label (if any) and its choices (if any)."""

    id: str
    prompt: str
    human_label: str | None
    choices: tuple[str, ...] | None


def read_records(config: LMTeachConfig, template: Template) -> list[TeachRecord]:
    """The data file's records as prompts, checked: every id present and distinct, every text
    the template takes present and non-empty, every choices cell a list of strings."""
    frame = read_frame(config.data.path)
    data = config.data
    columns = {name: data.fields.get(name, name) for name in template.placeholders if name not in (CHOICES_PLACEHOLDER, CLASSES_PLACEHOLDER)}
    needed = [data.id, *columns.values(), *([data.label] if data.label else []), *([data.choices] if data.choices else [])]
    if missing := [column for column in needed if column not in frame.columns]:
        raise StepDistillError(
            f"{data.path} has no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))}); fix data.id, data.fields, data.label or data.choices"
        )
    if CHOICES_PLACEHOLDER in template.placeholders and data.choices is None:
        raise StepDistillError(f"template {template.name} lists {{choices}} but data.choices names no column; set data.choices")
    records: list[TeachRecord] = []
    seen: set[str] = set()
    for row_number, row in enumerate(frame.to_dict("records"), start=1):
        record_id = _cell_text(row[data.id])
        if record_id is None:
            raise StepDistillError(f"{data.path}: record {row_number} has no id in column {data.id!r}; give every record an id")
        if record_id in seen:
            raise StepDistillError(f"{data.path}: record id {record_id!r} appears twice; give every record its own id")
        seen.add(record_id)
        values = {}
        for placeholder, column in columns.items():
            values[placeholder] = _cell_text(row[column])
            if values[placeholder] is None:
                raise StepDistillError(f"{data.path}: record {record_id!r} has an empty {column!r}; fill it or drop the record")
        choices = _choices(row[data.choices], record_id) if data.choices else None
        if choices is not None:
            values[CHOICES_PLACEHOLDER] = "\n".join(f"({letter}) {choice}" for letter, choice in zip(PROMPT_LETTERS, choices))
        if template.classes:
            values[CLASSES_PLACEHOLDER] = ", ".join(template.classes)
        human = _cell_text(row[data.label]) if data.label else None
        records.append(TeachRecord(record_id, template.fill(values), human, choices))
    return records


def _cell_text(value: object) -> str | None:
    """A cell as stripped text, or None where it is missing or blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _choices(value: object, record_id: str) -> tuple[str, ...]:
    """A choices cell (a list, or a string holding a JSON list) as a tuple of strings."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if hasattr(value, "tolist"):  # Parquet lists arrive as numpy arrays
        value = value.tolist()
    if not isinstance(value, list) or not value or len(value) > len(PROMPT_LETTERS) or not all(isinstance(c, str) and c.strip() for c in value):
        raise StepDistillError(f"record {record_id!r}: the choices are not a non-empty list of strings; write them as a list such as [\"yes\", \"no\"]")
    return tuple(c.strip() for c in value)


def answer_label(raw: str, template: Template, choices: Sequence[str] | None) -> str | None:
    """A parsed answer as a label, or None where it is not one: a number answer as the value of
    its arithmetic expression; otherwise one of the record's choices (or its letter), else one
    of the classes (both ignoring case and a final period), else the answer as written. A
    choice is matched by its text, else by its letter: "(b) water", "water" or "(b)"."""
    if template.answer == "number":
        try:
            return numeric_answer(raw)
        except StepDistillError:
            return None
    if choices:
        lettered = CHOICE_ANSWER.fullmatch(raw.strip())
        text, letter = (lettered[2], lettered[1].lower()) if lettered else (raw, None)
        named = matching_name(text, choices, ignore_case=True) if text.strip() else None
        if named is None and letter is not None and PROMPT_LETTERS.index(letter) < len(choices):
            return choices[PROMPT_LETTERS.index(letter)]
        return named
    if template.classes:
        return matching_name(raw, template.classes, ignore_case=True)
    return raw.strip() or None


@dataclass(frozen=True)
class Answer:
    """A record's teacher output: the majority label (None: no sample parsed), every non-empty
    rationale, and the share of each label among the samples that parsed."""

    id: str
    label: str | None
    rationales: list[str]
    distribution: dict[str, float] | None

    def as_json(self) -> dict:
        return {"id": self.id, "label": self.label, "rationale": self.rationales, "label_distribution": self.distribution}


def record_answer(record: TeachRecord, continuations: Iterable[str], template: Template) -> Answer:
    """The self-consistent answer of ``record`` from its samples' continuations."""
    pattern = re.compile(template.pattern)
    rationales, labels = [], []
    for continuation in continuations:
        rationale, raw = parse_continuation(continuation, pattern, template.block_starts)
        label = answer_label(raw, template, record.choices) if raw is not None else None
        if rationale:
            rationales.append(rationale)
        if label is not None:
            labels.append(label)
    if not labels:
        return Answer(record.id, None, rationales, None)
    counts = Counter(labels)
    # most_common keeps first-seen order among ties, so a tie goes to the earlier sample.
    return Answer(record.id, counts.most_common(1)[0][0], rationales, {label: n / len(labels) for label, n in counts.items()})


@dataclass(frozen=True)
class TeachSummary:
    """What a run did: ``records`` written to ``out``; ``generated`` asked of the model and
    ``reused`` found in the store; ``parse_failures`` records without a label; ``left_out``
    records whose samples were all empty (no rationale to write); ``accuracy`` the share of the
    ``labelled`` records (with a human label) whose teacher label equals it."""

    out: Path
    store: Path
    records: int
    generated: int
    reused: int
    parse_failures: int
    left_out: list[str]
    labelled: int
    accuracy: float | None

    def lines(self) -> list[str]:
        made = f"{self.generated} generations made, {self.reused} reused from {self.store}"
        lines = [f"wrote {self.out}: {self.records} records, {self.parse_failures} parse failures ({made})"]
        if self.left_out:
            lines.append(f"left out {len(self.left_out)} records whose every sample was empty (e.g. {self.left_out[0]!r}); raise max_new_tokens")
        if self.accuracy is not None:
            lines.append(f"teacher label accuracy {self.accuracy:.3f} on {self.labelled} records with a human label")
        return lines


def teach(config: LMTeachConfig, out: Path, say: Say | None = None) -> TeachSummary:
    """Ask the configured model about every record (what the store lacks), then write the teacher
    outputs to ``out`` (JSONL, whole or not at all) and return what was done."""
    from stepdistill.lm_teach.backends import make_backend

    say = say or (lambda message: None)
    template = load_template(config)
    records = read_records(config, template)
    backend = make_backend(config.backend, template.block_starts[:MAX_STOP_STRINGS], say)
    settings = config.backend.settings()
    store = GenerationStore(config.store or default_store_path(backend.identity, template.text))
    texts = store.read()
    keys = {record.id: [generation_key(record.prompt, template.text, backend.identity, settings, i) for i in range(config.samples)] for record in records}
    requests = [Request(key, record.id, i, record.prompt, int(key[:8], 16)) for record in records for i, key in enumerate(keys[record.id])]
    # Two records with the same prompt share their generations: each key is asked for once.
    pending = list({r.key: r for r in requests if r.key not in texts}.values())
    say(f"lm-teach: {len(records)} records x {config.samples} samples; {len(requests) - len(pending)} generations in the store, {len(pending)} to make")
    _generate(backend, pending, store, texts, say)
    answers = [record_answer(record, [texts[key] for key in keys[record.id]], template) for record in records]
    return _write_outputs(answers, records, template, out, store.path, generated=len(pending), reused=len(requests) - len(pending))


def _generate(backend, pending: list[Request], store: GenerationStore, texts: dict[str, str], say: Say) -> None:
    """Make the ``pending`` generations, appending each finished batch to the store."""
    done, last_said = 0, time.monotonic()
    for finished in backend.generate(pending):
        store.append(finished)
        texts.update((request.key, text) for request, text in finished)
        done += len(finished)
        if done == len(pending) or time.monotonic() - last_said >= PROGRESS_INTERVAL_S:
            say(f"lm-teach: {done} of {len(pending)} generations made")
            last_said = time.monotonic()


def _write_outputs(
    answers: list[Answer], records: list[TeachRecord], template: Template, out: Path, store: Path, generated: int, reused: int
) -> TeachSummary:
    """Write the answers with a rationale to ``out`` and read them back with ``read_llm_jsonl``
    (which checks the file), to compare the labels with the human ones."""
    written = [answer for answer in answers if answer.rationales]
    left_out = [answer.id for answer in answers if not answer.rationales]
    if not written:
        raise StepDistillError(f"the model wrote nothing for any of the {len(answers)} records; raise backend.max_new_tokens or check the template")
    write_atomically(out, "".join(json.dumps(a.as_json(), ensure_ascii=False) + "\n" for a in written).encode("utf-8"))
    outputs = read_llm_jsonl(out, distribution_field="label_distribution")
    # A human label is compared the way a teacher label is read: a number by its value, a
    # class or choice by its name.
    human = {r.id: answer_label(r.human_label, template, r.choices) or r.human_label for r in records if r.human_label is not None}
    return TeachSummary(
        out=out,
        store=store,
        records=len(written),
        generated=generated,
        reused=reused,
        parse_failures=sum(answer.label is None for answer in answers),
        left_out=left_out,
        labelled=len(human),
        accuracy=outputs.label_accuracy(human) if human else None,
    )
