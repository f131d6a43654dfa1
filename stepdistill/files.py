"""Writing a file whole or not at all, and where stepdistill keeps what it caches."""

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


def cache_root() -> Path:
    """The folder of everything stepdistill caches, each kind in a subfolder (``teachers``,
    ``sentences``, ``models``, ``lm-teach``): ``$STEPDISTILL_CACHE_DIR`` when set, else
    ``stepdistill`` under the user's cache directory (``$XDG_CACHE_HOME``, by default ``~/.cache``)."""
    chosen = os.environ.get("STEPDISTILL_CACHE_DIR")
    if chosen:
        return Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "stepdistill"
