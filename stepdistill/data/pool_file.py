"""An unlabelled pool's file (``data.unlabelled_path``): read whole, or a chunk of rows at a time
when it is larger than memory, with the data file's reading options."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from stepdistill.data.io import count_rows, read_chunks, read_frame


@dataclass(frozen=True)
class PoolFile:
    """``path`` read with ``read_options`` (``DataConfig.read_options``)."""

    path: Path
    read_options: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return read_frame(self.path, **self.read_options)

    def chunks(self, rows: int) -> Iterator[pd.DataFrame]:
        return read_chunks(self.path, rows, **self.read_options)

    def count(self) -> int:
        """Its rows, counted without reading its values (``data.io.count_rows``)."""
        return count_rows(self.path, self.read_options.get("encoding", "utf-8"))

    def fingerprint(self) -> str:
        """sha256 of the file's bytes, read a block at a time."""
        hasher = hashlib.sha256()
        with open(self.path, "rb") as file:
            for block in iter(lambda: file.read(1 << 22), b""):
                hasher.update(block)
        return f"sha256:{hasher.hexdigest()}"
