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
import reprlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from stepdistill.data.io import read_frame
from stepdistill.data.llm_outputs import FAILURE_EXAMPLES, parse_continuation, read_llm_jsonl
from stepdistill.errors import StepDistillError
from stepdistill.files import write_atomically
from stepdistill.lm_teach.config import LMTeachConfig
from stepdistill.lm_teach.store import GenerationStore, Request, default_store_path, generation_key
from stepdistill.lm_teach.templates import CHOICES_PLACEHOLDER, PROMPT_LETTERS, Template, answer_label, load_template

Say = Callable[[str], None]

# Servers accept at most this many stop strings (the OpenAI API's limit).
MAX_STOP_STRINGS = 4
# A progress line at most this often while generating.
PROGRESS_INTERVAL_S = 5.0
# The rationale written for a record none of whose samples gave any reasoning (an empty
# generation, or an answer alone): the same text for every such record, so that it tells the
# student nothing about the record, where the teacher-output format needs a rationale.
NO_RATIONALE = "(no rationale)"


@dataclass(frozen=True)
class TeachRecord:
    """One record to ask about: its prompt, the texts that filled the template's inputs, its
    human label (if any) and its choices (if any)."""

    id: str
    prompt: str
    inputs: dict[str, str]
    human_label: str | None
    choices: tuple[str, ...] | None


def read_records(config: LMTeachConfig, template: Template) -> list[TeachRecord]:
    """The data file's records as prompts, checked: every id present and distinct, every text
    the template takes present and non-empty, every choices cell a list of strings."""
    frame = read_frame(config.data.path)
    data = config.data
    columns = {name: data.fields.get(name, name) for name in template.inputs}
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
        inputs = {}
        for placeholder, column in columns.items():
            inputs[placeholder] = _cell_text(row[column])
            if inputs[placeholder] is None:
                raise StepDistillError(f"{data.path}: record {record_id!r} has an empty {column!r}; fill it or drop the record")
        choices = _choices(row[data.choices], record_id) if data.choices else None
        human = _cell_text(row[data.label]) if data.label else None
        records.append(TeachRecord(record_id, _prompt(template, inputs, choices), inputs, human, choices))
    return records


def _prompt(template: Template, inputs: dict[str, str], choices: tuple[str, ...] | None) -> str:
    """The template filled with a record's inputs and, lettered, its choices."""
    lettered = {CHOICES_PLACEHOLDER: "\n".join(f"({letter}) {choice}" for letter, choice in zip(PROMPT_LETTERS, choices))} if choices else {}
    return template.fill(inputs | lettered)


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


@dataclass(frozen=True)
class Answer:
    """A record's teacher output: the majority label (None: no sample parsed), every non-empty
    rationale, the share of each label among the samples that parsed, and, without a label, why
    (of its first sample)."""

    id: str
    label: str | None
    rationales: list[str]
    distribution: dict[str, float] | None
    failure: str | None = None

    def as_json(self) -> dict:
        """The line ``read_llm_jsonl`` reads: a record without any reasoning gets ``NO_RATIONALE``."""
        return {"id": self.id, "label": self.label, "rationale": self.rationales or [NO_RATIONALE], "label_distribution": self.distribution}


def record_answer(record: TeachRecord, continuations: Iterable[str], template: Template) -> Answer:
    """The self-consistent answer of ``record`` from its samples' continuations."""
    pattern = re.compile(template.pattern)
    rationales, labels, failures = [], [], []
    for continuation in continuations:
        rationale, raw = parse_continuation(continuation, pattern, template.block_starts)
        label = answer_label(raw, template, record.choices) if raw is not None else None
        if rationale:
            rationales.append(rationale)
        if label is not None:
            labels.append(label)
        elif not rationale and raw is None:
            failures.append("wrote nothing")
        else:
            failures.append("no answer found" if raw is None else f"unusable answer {reprlib.repr(raw)}")
    if not labels:
        return Answer(record.id, None, rationales, None, failures[0])
    counts = Counter(labels)
    # most_common keeps first-seen order among ties, so a tie goes to the earlier sample.
    return Answer(record.id, counts.most_common(1)[0][0], rationales, {label: n / len(labels) for label, n in counts.items()})


@dataclass(frozen=True)
class TeachSummary:
    """What a run did: ``records`` written to ``out`` (every record); ``generated`` asked of the
    model and ``reused`` found in the store; ``cut`` records whose text was cut to fit the
    prompt budget; ``parse_failures`` records without a label; ``accuracy`` the share of the
    ``labelled`` records (with a human label) whose teacher label equals it."""

    out: Path
    store: Path
    records: int
    generated: int
    reused: int
    cut: int
    parse_failures: int
    labelled: int
    accuracy: float | None

    def lines(self) -> list[str]:
        made = f"{self.generated} generations made, {self.reused} reused from {self.store}"
        lines = [f"wrote {self.out}: {self.records} records, {self.parse_failures} parse failures ({made})"]
        if self.accuracy is not None:
            coverage = 1 - self.parse_failures / self.records
            lines.append(f"teacher label accuracy {self.accuracy:.3f} on {self.labelled} records with a human label (an unparsed answer wrong; coverage {coverage:.3f})")
        return lines


def teach(config: LMTeachConfig, out: Path, say: Say | None = None, warn: Say | None = None) -> TeachSummary:
    """Ask the configured model about every record (what the store lacks), then write the teacher
    outputs to ``out`` (JSONL, whole or not at all) and return what was done. ``say`` hears the
    progress, ``warn`` what the user should know about the outputs (one line each)."""
    from stepdistill.lm_teach.backends import make_backend

    say = say or (lambda message: None)
    warn = warn or (lambda message: None)
    template = load_template(config)
    records = read_records(config, template)
    backend = make_backend(config.backend, template.block_starts[:MAX_STOP_STRINGS], say)
    records, cut = within_budget(records, template, backend, warn)
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
    summary = _write_outputs(answers, records, template, out, store.path, generated=len(pending), reused=len(requests) - len(pending), cut=cut)
    for line in _answer_warnings(answers):
        warn(line)
    return summary


def within_budget(records: list[TeachRecord], template: Template, backend, warn: Say) -> tuple[list[TeachRecord], int]:
    """The records with every prompt within the backend's ``prompt_budget`` (tokens), and how many
    were cut to get there: an over-long record's texts are cut at their end (a warning says how
    many), or, with ``long_prompts: refuse``, the run stops before any generation."""
    budget = backend.prompt_budget
    if budget is None:
        return records, 0
    lengths = dict(zip((record.id for record in records), backend.prompt_lengths([record.prompt for record in records])))
    over = [record for record in records if lengths[record.id] > budget]
    if not over:
        return records, 0
    longest = max(over, key=lambda record: lengths[record.id])
    counted = f"{len(over)} of {len(records)} prompts are longer than {budget} tokens ({backend.budget_origin}; record {longest.id!r} has {lengths[longest.id]})"
    if backend.settings.long_prompts == "refuse":
        raise StepDistillError(f"{counted}; shorten those texts, or set backend.long_prompts: cut to cut them to fit")
    cut = {record.id: _cut_to_budget(record, template, backend, budget) for record in over}
    warn(f"{counted}: their texts were cut at the end to fit; set backend.long_prompts: refuse to stop instead")
    return [cut.get(record.id, record) for record in records], len(over)


def _cut_to_budget(record: TeachRecord, template: Template, backend, budget: int) -> TeachRecord:
    """``record`` with its longest input cut at its end, again until its prompt holds at most
    ``budget`` tokens; the template's own text is never cut."""
    inputs, prompt = dict(record.inputs), record.prompt
    while (excess := backend.prompt_lengths([prompt])[0] - budget) > 0:
        longest = max(inputs, key=lambda name: len(inputs[name]))
        if not inputs[longest]:
            raise StepDistillError(
                f"template {template.name} alone is longer than the prompt budget of {budget} tokens ({backend.budget_origin}); shorten it or raise the budget"
            )
        inputs[longest] = backend.without_last_tokens(inputs[longest], excess)
        prompt = _prompt(template, inputs, record.choices)
    return replace(record, prompt=prompt, inputs=inputs)


def _answer_warnings(answers: list[Answer]) -> list[str]:
    """One line each: how many records have no label, and how many no rationale, with examples."""
    unlabelled = [answer for answer in answers if answer.label is None]
    bare = [answer.id for answer in answers if not answer.rationales]
    lines = []
    if unlabelled:
        examples = "; ".join(f"{answer.id}: {answer.failure}" for answer in unlabelled[:FAILURE_EXAMPLES])
        lines.append(
            f"{len(unlabelled)} of {len(answers)} answers could not be parsed into a label (e.g. {examples}); they are written with label null, "
            "which teaches the uniform distribution; check the template's worked examples and classes, or raise backend.max_new_tokens"
        )
    if bare:
        lines.append(
            f"{len(bare)} of {len(answers)} records got no reasoning from any sample (e.g. {bare[0]!r}); they are written with the rationale {NO_RATIONALE!r}; "
            "raise backend.max_new_tokens or give worked examples that reason"
        )
    return lines


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
    answers: list[Answer], records: list[TeachRecord], template: Template, out: Path, store: Path, generated: int, reused: int, cut: int
) -> TeachSummary:
    """Write every record's answer to ``out`` and read them back with ``read_llm_jsonl`` (which
    checks the file, as ``stepdistill run`` will), to compare the labels with the human ones. A
    file without a single label or rationale would teach nothing: refused instead."""
    if not any(answer.label or answer.rationales for answer in answers):
        raise StepDistillError(
            f"the model gave no label and no reasoning for any of the {len(answers)} records; raise backend.max_new_tokens or check the template"
        )
    write_atomically(out, "".join(json.dumps(a.as_json(), ensure_ascii=False) + "\n" for a in answers).encode("utf-8"))
    outputs = read_llm_jsonl(out, distribution_field="label_distribution")
    # A human label is compared the way a teacher label is read: a number by its value, a
    # class or choice by its name.
    human = {r.id: answer_label(r.human_label, template, r.choices) or r.human_label for r in records if r.human_label is not None}
    return TeachSummary(
        out=out,
        store=store,
        records=len(answers),
        generated=generated,
        reused=reused,
        cut=cut,
        parse_failures=outputs.parse_failures,
        labelled=len(human),
        accuracy=outputs.label_accuracy(human) if human else None,
    )
