"""lm-teach's few-shot templates: a shipped one (``templates/``) or the user's file, with the
pattern that parses a continuation, what a label must be, and the worked examples a template with
``{examples}`` takes from the config."""

from __future__ import annotations

import importlib.resources
import re
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from stepdistill.data.llm_outputs import BLOCK_STARTS, matching_name, numeric_answer, parse_continuation
from stepdistill.errors import StepDistillError
from stepdistill.lm_teach.config import ANSWER_PHRASE_PATTERN, SHIPPED_TEMPLATES, LMTeachConfig
from stepdistill.text.inputs import CHOICE_LETTERS

# Placeholders filled from the config (or, for choices, a record's list) rather than from a
# record's text columns.
CHOICES_PLACEHOLDER = "choices"
CLASSES_PLACEHOLDER = "classes"
EXAMPLES_PLACEHOLDER = "examples"
CONFIG_PLACEHOLDERS = (CHOICES_PLACEHOLDER, CLASSES_PLACEHOLDER, EXAMPLES_PLACEHOLDER)
PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
# The first line of a template's last block, "Premise: {premise}", starts every made-up example.
BLOCK_HEADER = re.compile(r"([A-Z][\w ]*:)")
# Choices are lettered in prompts as in CommonsenseQA's: "(a) ...".
PROMPT_LETTERS = CHOICE_LETTERS.lower()
# A multiple-choice answer as written in the template: "(e) blotter", or just "(e)".
CHOICE_ANSWER = re.compile(r"\(([a-z])\)\s*(.*)", re.IGNORECASE | re.DOTALL)
# A worked example from the config ends as the templates that take them (and their default
# parse pattern) expect an answer to: its rationale, then this with its label.
EXAMPLE_ANSWER = " {rationale} So the answer is {label}."
EXAMPLE_KEYS = ("label", "rationale")


@dataclass(frozen=True)
class Template:
    """A few-shot template: ``text`` ends with the block that a record fills, through
    placeholders ``{name}``; ``pattern`` parses a continuation; ``block_starts`` are where a
    made-up next example begins; ``answer``/``classes``: what a label must be; ``examples``: the
    config's worked examples as written into ``{examples}``, if the template has it."""

    name: str
    text: str
    pattern: str
    answer: Literal["text", "number"]
    classes: tuple[str, ...] | None
    block_starts: tuple[str, ...]
    examples: str | None = None

    @property
    def placeholders(self) -> list[str]:
        return list(dict.fromkeys(PLACEHOLDER.findall(self.text)))

    @property
    def inputs(self) -> list[str]:
        """The placeholders a record's text columns fill."""
        return [name for name in self.placeholders if name not in CONFIG_PLACEHOLDERS]

    @property
    def record_block(self) -> str:
        """The last block, which a record fills and the model's continuation ends."""
        return self.text.split("\n\n")[-1]

    def fill(self, values: dict[str, str]) -> str:
        """The prompt: each ``{name}`` replaced by ``values[name]`` (the classes and worked examples
        by the config's); other braces stay as written."""
        return _filled(self.text, self.config_values | values)

    @property
    def config_values(self) -> dict[str, str]:
        """What the config's placeholders read: the classes and the worked examples."""
        return {CLASSES_PLACEHOLDER: ", ".join(self.classes or ()), EXAMPLES_PLACEHOLDER: self.examples or ""}


def _filled(text: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda match: values[match[1]], text)


def load_template(config: LMTeachConfig) -> Template:
    """The config's template with its parse pattern, answer kind and classes, checked to have an
    input placeholder that the records fill."""
    shipped = SHIPPED_TEMPLATES.get(config.template)
    if shipped is not None:
        text = (importlib.resources.files("stepdistill.lm_teach") / "templates" / f"{config.template}.txt").read_text(encoding="utf-8")
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
    if not template.inputs:
        raise StepDistillError(
            f"template {template.name} has no input placeholder such as {{question}}; write one where each record's text goes"
        )
    if unused := sorted(set(config.data.fields) - set(template.inputs)):
        raise StepDistillError(f"template {template.name} has no placeholder {{{unused[0]}}} that data.fields names; add it or drop it from data.fields")
    if CLASSES_PLACEHOLDER in template.placeholders and not classes:
        raise StepDistillError(f"template {template.name} lists {{classes}} but the config names none; set classes")
    try:
        re.compile(template.pattern)
    except re.error as err:
        raise StepDistillError(f"parse pattern {reprlib.repr(template.pattern)} is not a regex ({err}); fix it") from None
    return replace(template, examples=_worked_examples(config, template))


def _worked_examples(config: LMTeachConfig, template: Template) -> str | None:
    """The config's worked examples as the template's ``{examples}``: each its record block
    filled with the example's fields, then its rationale and label (``EXAMPLE_ANSWER``), checked
    to parse back into that rationale and a label the template accepts. None for a template
    without ``{examples}``, which takes none."""
    if EXAMPLES_PLACEHOLDER not in template.placeholders:
        if config.examples:
            raise StepDistillError(
                f"template {template.name} has no {{examples}} placeholder, so examples: would go unused; drop examples: or write {{examples}} into the template"
            )
        return None
    block_placeholders = PLACEHOLDER.findall(template.record_block)
    fields = [name for name in block_placeholders if name not in CONFIG_PLACEHOLDERS]
    wanted = ", ".join([*fields, *EXAMPLE_KEYS])
    if not config.examples:
        raise StepDistillError(
            f"template {template.name} shows worked examples of the task, which the config does not give; add a few under examples: (one of each class serves best), each with {wanted}"
        )
    if CHOICES_PLACEHOLDER in block_placeholders:
        raise StepDistillError(f"template {template.name}: a worked example cannot fill {{choices}}; write the examples into the template and drop examples:")
    pattern = re.compile(template.pattern)
    blocks = []
    for number, given in enumerate(config.examples, start=1):
        # Stripped, so that a YAML block's final newline does not open a blank line in the example.
        example = {key: value.strip() for key, value in given.items()}
        if unknown := sorted(set(example) - {*fields, *EXAMPLE_KEYS}):
            raise StepDistillError(f"worked example {number} has a field {unknown[0]!r} that template {template.name} does not take; give only {wanted}")
        if missing := [key for key in (*fields, *EXAMPLE_KEYS) if not example.get(key)]:
            raise StepDistillError(f"worked example {number} has no {missing[0]!r}; give every example {wanted}")
        rationale, label = example["rationale"], example["label"]
        answer = EXAMPLE_ANSWER.format(rationale=rationale, label=label)
        if parse_continuation(answer, pattern, template.block_starts) != (rationale, label):
            raise StepDistillError(
                f"worked example {number} does not parse back into its rationale and label; write the rationale without 'So the answer is' and blank lines"
            )
        if answer_label(label, template, None) is None:
            expected = "a number" if template.answer == "number" else f"one of the classes ({', '.join(template.classes or ())})"
            raise StepDistillError(f"worked example {number}'s label {label!r} is not {expected}; correct it")
        blocks.append(_filled(template.record_block, template.config_values | example) + answer)
    return "\n\n".join(blocks)


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


def _block_starts(text: str) -> tuple[str, ...]:
    """``BLOCK_STARTS`` plus the header of the template's last block (``"\\nText:"``), which a
    continuation that runs on into a made-up example repeats."""
    header = BLOCK_HEADER.match(text.split("\n\n")[-1])
    return tuple(dict.fromkeys((*BLOCK_STARTS, *(["\n" + header[1]] if header else []))))
