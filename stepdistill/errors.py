"""The one exception type users see: a one-line message naming the problem and the fix."""

from __future__ import annotations

import difflib
import typing


class StepDistillError(ValueError):
    """Bad input or configuration. The CLI prints ``str(err)`` on one line and exits with code 2."""


def validation_message(err, prefix: str = "", union_tags: frozenset[str] = frozenset(), model=None) -> str:
    """A pydantic ``ValidationError`` as one line: ``where: what (got value)`` and the fix.

    ``union_tags``: the tags of discriminated unions (e.g. teacher kinds), which pydantic puts
    into an error's location (``teacher.mlp.hidden``) although the user never wrote them.
    ``model``: the pydantic model validated, whose field names suggest the key a misspelt one
    meant.
    """
    first = err.errors()[0]
    loc = [str(p) for p in (prefix, *first["loc"]) if p != "" and p not in union_tags]
    if first["type"] == "extra_forbidden":
        return unknown_key_message(".".join(loc), known_keys(model, first["loc"][:-1]) if model is not None else [])
    if first["type"] == "union_tag_invalid":
        ctx = first["ctx"]
        loc.append(ctx["discriminator"].strip("'"))
        return (
            f"invalid config at {'.'.join(loc)}: unknown value '{ctx['tag']}'; choose one of {ctx['expected_tags'].replace(chr(39), '')}"
        )
    message = first["msg"].removeprefix("Value error, ")
    got = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
    return f"invalid config at {'.'.join(loc) or 'top level'}: {message}{got}; fix that value and run again"


def unknown_key_message(where: str, known: list[str]) -> str:
    """One line for a key nobody reads, ``where`` its dotted path: the closest ``known`` name
    when one is close (a misspelling), else all of them."""
    key = where.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"invalid config at {where}: unknown key '{key}'; did you mean '{close[0]}'?"
    choices = f"; the keys there are: {', '.join(known)}" if known else ""
    return f"invalid config at {where}: unknown key '{key}'{choices}; fix or remove it"


def known_keys(model, loc: tuple) -> list[str]:
    """The field names of the pydantic model that ``loc`` (an error location under ``model``)
    points into. A discriminated union's tag in ``loc`` picks its member; a dict key or a list
    index passes through to the models the container holds."""
    models = [model]
    for part in loc:
        holders = [m for m in models if part in m.model_fields]
        if holders:
            models = _models_in(holders[0].model_fields[part].annotation)
        else:
            tagged = [m for m in models if part in typing.get_args(getattr(m.model_fields.get("kind"), "annotation", None))]
            models = tagged or models
    return sorted({name for m in models for name in m.model_fields})


def _models_in(annotation) -> list:
    """The pydantic models an annotation holds (through unions, ``Annotated``, containers)."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
