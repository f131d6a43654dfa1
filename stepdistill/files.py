"""Reading a YAML config file into a strict schema, writing a file whole or not at all, and where
stepdistill keeps what it caches."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict

from stepdistill.errors import StepDistillError, validation_message

M = TypeVar("M")


class StrictModel(BaseModel):
    """A config section: a key it does not know is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (creating its directory) so that a reader, or a process killed
    at any moment, sees the old file or the new one, never part of one: the bytes go to a
    temporary file beside it, are flushed to disk, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:  # a full disk, Ctrl-C: no temporary file is left behind
        Path(temporary).unlink(missing_ok=True)
        raise


def cache_root() -> Path:
    """The folder of everything stepdistill caches, each kind in a subfolder (``teachers``,
    ``sentences``, ``models``, ``lm-teach``): ``$STEPDISTILL_CACHE_DIR`` when set, else
    ``stepdistill`` under the user's cache directory (``$XDG_CACHE_HOME``, by default ``~/.cache``)."""
    chosen = os.environ.get("STEPDISTILL_CACHE_DIR")
    if chosen:
        return Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "stepdistill"


def read_yaml_mapping(path: Path, keys: str) -> dict:
    """The YAML mapping in the config file ``path``; a missing file, a syntax error (with its line
    and column) or anything but a mapping (of ``keys``, named in the error) is a one-line error."""
    if not path.is_file():
        raise StepDistillError(f"config file not found: {path}; pass the path of a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise StepDistillError(f"config {path} is not valid YAML ({yaml_problem(err)}); fix its syntax") from err
    if not isinstance(raw, dict):
        raise StepDistillError(f"config {path} must be a YAML mapping with keys {keys}")
    return raw


def read_yaml_config(path: Path, schema: type[M], keys: str, **message_options) -> M:
    """The config file ``path`` (``read_yaml_mapping``) validated as ``schema``, a pydantic model;
    a validation error is one line (``errors.validation_message`` with ``message_options``)."""
    from pydantic import ValidationError

    raw = read_yaml_mapping(path, keys)
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        raise StepDistillError(validation_message(err, **message_options)) from err


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML parser's complaint on one line, with where it is: "line 3, column 7: ..."."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return problem if mark is None else f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
