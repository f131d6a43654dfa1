"""lm-teach's store of finished generations: every generation is appended (JSONL, flushed to
disk) under a key that hashes the prompt, the template, the model's identity, the sampling
settings and the sample's index, so that a re-run asks the model only for what the store lacks."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stepdistill.errors import StepDistillError
from stepdistill.files import cache_root

# Part of every store key: raise it when what a generation means changes, so old entries miss.
STORE_VERSION = 1


@dataclass(frozen=True)
class Request:
    """One generation to make: its store key, the record it belongs to, the sample's index, the
    prompt, and a seed of its own (so that a record's samples differ, and a re-run repeats them)."""

    key: str
    record_id: str
    sample: int
    prompt: str
    seed: int


def generation_key(prompt: str, template_text: str, model_identity: str, settings: dict, sample: int) -> str:
    """The store key (sha256, hex) of one sample of one prompt of the template ``template_text``."""
    payload = json.dumps([STORE_VERSION, prompt, template_text, model_identity, settings, sample], sort_keys=True)
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


def default_store_path(model_identity: str, template_text: str) -> Path:
    """``lm-teach/<hash of model and template>.jsonl`` under the cache root
    ($STEPDISTILL_CACHE_DIR, else ~/.cache/stepdistill)."""
    name = hashlib.sha256(f"{model_identity}\0{template_text}".encode()).hexdigest()[:16]
    # The sentence cache sits directly under the cache root, so its parent is the root.
    return cache_root() / "lm-teach" / f"{name}.jsonl"
