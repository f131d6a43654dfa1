"""Writing a set of files into a directory all at once, or not at all."""

from __future__ import annotations

import json
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


def write_study_pages(
    out_dir: Path,
    stem: str,
    study: dict,
    results: dict,
    plot: Callable[[dict, Path], None],
    markdown: Callable[[dict, dict, str], str],
    html: Callable[[dict, dict, bytes], str],
    more: Callable[[Path], list[str]] | None = None,
) -> list[Path]:
    """A study's STEM.json (``study``), STEM.png (``plot(study, path)``), STEM.md
    (``markdown(study, results, png name)``) and STEM.html (``html(study, results, png bytes)``),
    with what ``more(staging_dir)`` writes, into ``out_dir``: all of them, or none if anything fails."""

    def write_files(staging_dir: Path) -> list[str]:
        names = [f"{stem}.json", f"{stem}.md", f"{stem}.html", f"{stem}.png"]
        (staging_dir / names[0]).write_text(json.dumps(study, indent=2) + "\n", encoding="utf-8")
        plot(study, staging_dir / names[3])
        (staging_dir / names[1]).write_text(markdown(study, results, names[3]), encoding="utf-8")
        (staging_dir / names[2]).write_text(html(study, results, (staging_dir / names[3]).read_bytes()), encoding="utf-8")
        return [*names, *(more(staging_dir) if more else [])]

    return write_staged(out_dir, write_files)
