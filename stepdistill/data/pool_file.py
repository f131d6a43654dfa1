"""An unlabelled pool's file (``data.unlabelled_path``): read whole, or a chunk of rows at a time
when it is larger than memory, with the data file's reading options."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from stepdistill.data.io import count_rows, read_chunks, read_frame


@dataclass(frozen=True)
class PoolFile:
    """``path`` read with ``read_options`` (``DataConfig.read_options``). Its row count and hash
    are computed once: every run asks for them, and either may read the whole file."""

    path: Path
    read_options: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return read_frame(self.path, **self.read_options)

    def chunks(self, rows: int) -> Iterator[pd.DataFrame]:
        return read_chunks(self.path, rows, **self.read_options)

    @cached_property
    def n_rows(self) -> int:
        """Its rows, counted without reading its values (``data.io.count_rows``)."""
        return count_rows(self.path, self.read_options.get("encoding", "utf-8"))

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the file's bytes, read a block at a time."""
        with open(self.path, "rb") as file:
            return f"sha256:{hashlib.file_digest(file, 'sha256').hexdigest()}"
