"""lm-teach's few-shot templates: a shipped one (``templates/``) or the user's file, with the
pattern that parses a continuation and what a label must be."""

from __future__ import annotations

import importlib.resources
import re
import reprlib
from dataclasses import dataclass
from typing import Literal

from stepdistill.data.llm_outputs import BLOCK_STARTS
from stepdistill.errors import StepDistillError
from stepdistill.lm_teach.config import ANSWER_PHRASE_PATTERN, SHIPPED_TEMPLATES, LMTeachConfig

# Placeholders filled from the config rather than from a record's columns.
CHOICES_PLACEHOLDER = "choices"
CLASSES_PLACEHOLDER = "classes"
PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
# The first line of a template's last block, "Premise: {premise}", starts every made-up example.
BLOCK_HEADER = re.compile(r"([A-Z][\w ]*:)")


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
