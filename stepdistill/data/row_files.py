"""Float32 matrices with one row per sample, kept on disk side by side (one file each, rows
contiguous): rows that do not fit in memory, written a block at a time and read back by row range.

Reads are positional (``os.preadv`` into a fresh array), not memory maps: the pages of a mapped
file count as the process's resident memory once touched, so an epoch over a mapped 20-million-row
file would end up holding all of it, while a read holds only the rows asked for (the operating
system's page cache still serves a file read again, and gives its pages back under pressure).

A directory is complete once its ``rows.json`` exists: written last, whole, with the row count,
each matrix's width and a sha256 of its bytes, so that a damaged or half-written directory is
noticed (``RowFiles.open`` returns None) and rewritten rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from stepdistill.files import write_atomically

INDEX_FILE = "rows.json"
ITEM = np.dtype(np.float32)


class RowFiles:
    """The matrices ``widths`` (name -> columns) of ``n_rows`` rows in ``directory``."""

    def __init__(self, directory: Path, widths: dict[str, int], n_rows: int):
        self.directory = Path(directory)
        self.widths = dict(widths)
        self.n_rows = n_rows

    def __len__(self) -> int:
        return self.n_rows

    def read(self, start: int, stop: int, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Rows ``start`` to ``stop`` (exclusive) of the matrices ``names`` (None: all), (stop -
        start, width) each."""
        stop = min(stop, self.n_rows)
        out = {}
        for name in self.widths if names is None else names:
            width = self.widths[name]
            values = np.empty((max(0, stop - start), width), dtype=ITEM)
            if values.size:
                with open(self.directory / f"{name}.f32", "rb", buffering=0) as file:
                    got = os.preadv(file.fileno(), [memoryview(values).cast("B")], start * width * ITEM.itemsize)
                if got != values.nbytes:
                    raise OSError(f"{self.directory / name}.f32 ends before row {stop}")
            out[name] = values
        return out

    @classmethod
    def open(cls, directory: Path, verify: bool = True) -> RowFiles | None:
        """The complete row files in ``directory``, or None when there are none, or when their
        sizes (and, with ``verify``, their bytes) disagree with the index: then the directory is
        removed, for the caller to write again."""
        directory = Path(directory)
        try:
            index = json.loads((directory / INDEX_FILE).read_text())
            files = cls(directory, index["widths"], int(index["rows"]))
            whole = all(
                (directory / f"{name}.f32").stat().st_size == files.n_rows * width * ITEM.itemsize for name, width in files.widths.items()
            )
            if whole and verify:
                whole = all(_file_digest(directory / f"{name}.f32") == index["sha256"][name] for name in files.widths)
        except (OSError, ValueError, KeyError, TypeError):
            whole = False
        if whole:
            return files
        shutil.rmtree(directory, ignore_errors=True)
        return None


class RowFilesWriter:
    """Appends blocks of rows to new row files in ``directory`` (created empty); ``close`` makes
    them complete. A writer not closed leaves a directory that ``RowFiles.open`` refuses."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self.widths: dict[str, int] | None = None
        self.n_rows = 0
        self._files: dict = {}
        self._hashes: dict = {}

    def append(self, **blocks: np.ndarray) -> None:
        """One block of rows: the same matrices, with the same widths, at every call."""
        widths = {name: block.shape[1] for name, block in blocks.items()}
        rows = {block.shape[0] for block in blocks.values()}
        if self.widths is None:
            self.widths = widths
            self._files = {name: open(self.directory / f"{name}.f32", "wb") for name in widths}
            self._hashes = {name: hashlib.sha256() for name in widths}
        if widths != self.widths or len(rows) != 1:
            raise ValueError(f"blocks of widths {widths} and rows {sorted(rows)}; every block needs the widths {self.widths} and one row count")
        for name, block in blocks.items():
            data = np.ascontiguousarray(block, dtype=ITEM).tobytes()
            self._files[name].write(data)
            self._hashes[name].update(data)
        self.n_rows += rows.pop()

    def close(self) -> RowFiles:
        """Flush the matrices and write the index: the row files, complete."""
        if self.widths is None:
            raise ValueError("no rows were written")
        for file in self._files.values():
            file.flush()
            os.fsync(file.fileno())
            file.close()
        index = {"rows": self.n_rows, "widths": self.widths, "sha256": {name: h.hexdigest() for name, h in self._hashes.items()}}
        write_atomically(self.directory / INDEX_FILE, json.dumps(index).encode())
        return RowFiles(self.directory, self.widths, self.n_rows)

    def abandon(self) -> None:
        """Close and remove what was written (an error, an interruption)."""
        for file in self._files.values():
            file.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _file_digest(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
