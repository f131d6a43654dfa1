"""Teacher outputs kept on disk between runs, so that a teacher is run (and, above all, explained)
once per model and data rather than once per run.

An entry is one safetensors file named by its key: a hash of the teacher's fingerprint, of every
requested split's sample ids, encoded features and raw columns (in order), of the data's classes
and of ``FORMAT_VERSION``. Any change to these is another key, so an entry is never stale; the
entry's header repeats its key, its tensors' shapes and a checksum of their values, so that a
file that is damaged (or renamed) is noticed and recomputed rather than trusted. Entries are
written whole or not at all: to a temporary file beside them, flushed to disk, then renamed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open

from stepdistill.files import cache_root, write_atomically
from stepdistill.teachers.base import Samples
from stepdistill.teachers.cache import TeacherOutputs
from stepdistill.teachers.digest import digest

# Part of every key: raise it when what an entry holds, or how, changes, so old entries miss.
FORMAT_VERSION = 1
ENTRY_SUFFIX = ".safetensors"

Say = Callable[[str], None]


def default_store_directory() -> Path:
    """``teachers/`` under the cache root (``files.cache_root``)."""
    return cache_root() / "teachers"


class TeacherStore:
    """Teacher outputs (sample ids, logits, rationale) on disk in ``directory``, by key."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    @staticmethod
    def key(fingerprint: str, samples: list[Samples], data_classes: tuple[str, ...]) -> str:
        """The key of a teacher's outputs over ``samples``, in order, for ``data_classes``."""
        splits = [(part.ids, part.X, part.frame) for part in samples]
        return digest(FORMAT_VERSION, fingerprint, list(data_classes), splits)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}{ENTRY_SUFFIX}"

    def load(self, key: str, ids: torch.Tensor, say: Say | None = None) -> TeacherOutputs | None:
        """The outputs stored under ``key`` for ``ids`` (in that order), or None when there are
        none, or when the entry is damaged or is not for ``key`` and ``ids``: then ``say`` hears
        so, and the caller recomputes and overwrites it."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(path, framework="pt") as entry:
                header = entry.metadata() or {}
                tensors = {name: entry.get_tensor(name) for name in entry.keys()}
        except (SafetensorError, OSError, ValueError):
            tensors = None
        if tensors is None or not _is_entry(tensors, header, key, ids):
            if say is not None:
                say(f"teacher cache entry {path} is corrupt; recomputing")
            return None
        return TeacherOutputs(tensors["logits"], tensors.get("rationale"))

    def save(self, key: str, ids: torch.Tensor, outputs: TeacherOutputs, say: Say | None = None) -> None:
        """Store ``outputs`` for ``ids`` under ``key``, replacing any entry there at once. A
        directory that cannot be written to costs only the reuse: ``say`` hears why."""
        tensors = _payload(ids, outputs)
        header = {"key": key, "shapes": json.dumps({name: list(t.shape) for name, t in tensors.items()}), "sha256": _checksum(tensors)}
        try:
            write_atomically(self.path(key), safetensors.torch.save(tensors, metadata=header))
        except OSError as err:
            if say is not None:
                say(f"could not store the teacher's outputs in {self.directory} ({err.strerror or err}); choose a writable teacher cache directory to reuse them")


def _payload(ids: torch.Tensor, outputs: TeacherOutputs) -> dict[str, torch.Tensor]:
    tensors = {"ids": ids.to("cpu", torch.int64), "logits": outputs.logits.to("cpu", torch.float32)}
    if outputs.rationale is not None:
        tensors["rationale"] = outputs.rationale.to("cpu", torch.float32)
    return {name: tensor.contiguous() for name, tensor in tensors.items()}


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    return digest(*(item for name in sorted(tensors) for item in (name, tensors[name])))


def _is_entry(tensors: dict[str, torch.Tensor], header: dict[str, str], key: str, ids: torch.Tensor) -> bool:
    """Whether an entry read back is whole and is the one for ``key`` and ``ids``."""
    if header.get("key") != key or set(tensors) not in ({"ids", "logits"}, {"ids", "logits", "rationale"}):
        return False
    try:
        shapes = json.loads(header.get("shapes", ""))
    except ValueError:
        return False
    n = len(ids)
    return (
        shapes == {name: list(t.shape) for name, t in tensors.items()}
        and header.get("sha256") == _checksum(tensors)
        and tensors["ids"].dtype == torch.int64
        and all(t.dtype == torch.float32 and t.ndim == 2 and t.shape[0] == n for name, t in tensors.items() if name != "ids")
        and torch.equal(tensors["ids"], ids.to("cpu", torch.int64))
    )
