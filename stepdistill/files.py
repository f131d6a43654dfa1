"""Writing a file whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
