"""The one exception type users see: a one-line message naming the problem and the fix."""


class StepDistillError(ValueError):
    """Bad input or configuration. The CLI prints ``str(err)`` on one line and exits with code 2."""


def validation_message(err, prefix: str = "", union_tags: frozenset[str] = frozenset()) -> str:
    """A pydantic ``ValidationError`` as one line: ``where: what (got value)`` and the fix.

    ``union_tags``: the tags of discriminated unions (e.g. teacher kinds), which pydantic puts
    into an error's location (``teacher.mlp.hidden``) although the user never wrote them.
    """
    first = err.errors()[0]
    loc = [str(p) for p in (prefix, *first["loc"]) if p != "" and p not in union_tags]
    if first["type"] == "union_tag_invalid":
        ctx = first["ctx"]
        loc.append(ctx["discriminator"].strip("'"))
        return (
            f"invalid config at {'.'.join(loc)}: unknown value '{ctx['tag']}'; choose one of {ctx['expected_tags'].replace(chr(39), '')}"
        )
    message = first["msg"].removeprefix("Value error, ")
    got = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
    return f"invalid config at {'.'.join(loc) or 'top level'}: {message}{got}; fix that value and run again"
