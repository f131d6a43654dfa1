"""Writing a set of files into a directory all at once, or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from stepdistill.errors import StepDistillError


def write_staged(out_dir: Path, write_files: Callable[[Path], list[str]]) -> list[Path]:
    """Call ``write_files(staging_dir)``, which returns the names of the files it wrote there, and
    move those files into ``out_dir``.

    The staging directory sits next to ``out_dir`` (same file system, so moves are renames) and
    the files move only once all of them exist: if anything fails, ``out_dir`` is left as it was.
    Returns the written paths.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as err:  # a read-only file system, no permission
        raise _unwritable(out_dir, err) from err
    try:
        names = write_files(staging_dir)
        out_dir.mkdir(exist_ok=True)
        for name in names:
            if (out_dir / name).is_dir():  # a directory of an earlier run (saved students): os.replace cannot replace it
                shutil.rmtree(out_dir / name)
            os.replace(staging_dir / name, out_dir / name)
    except OSError as err:  # a full disk, a quota
        raise _unwritable(out_dir, err) from err
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return [out_dir / name for name in names]


def _unwritable(out_dir: Path, err: OSError) -> StepDistillError:
    """The one-line error for files that could not be written into ``out_dir``."""
    return StepDistillError(f"cannot write into {out_dir}: {err.strerror or err}; choose a directory you can write to, with room to spare")
