"""Telling the user how an experiment goes: notes (one line each) and tasks (a bar each).

The experiment code reports through a ``Progress`` and never prints; the command line chooses how
it shows: progress bars on a terminal (``Bars``), one plain line per note and per task started
when the output is a log (``Lines``), or nothing (``SILENT``, for ``--quiet`` and library use).
What libraries would print on their own (their log lines, their bars) is kept off for the calls
that would print it (``quiet_logger``, ``without_transformers_bars``).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, contextmanager
from typing import Callable, Iterator, Protocol, TextIO

# ``advance(steps=1)``: moves a task on by ``steps``.
Advance = Callable[..., None]


class Progress(Protocol):
    def note(self, message: str) -> None:
        """A message worth a line of its own (a run's result, a warning)."""

    def task(self, description: str, total: int | None = None) -> AbstractContextManager[Advance]:
        """A context manager for work of ``total`` steps (None: unknown), yielding ``advance``."""


def _ignore(steps: int = 1) -> None:
    pass


class Silent:
    def note(self, message: str) -> None:
        pass

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        yield _ignore


SILENT = Silent()


class Lines:
    """A line for each note, and for each task as it starts: what a log file can show."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def note(self, message: str) -> None:
        self.stream.write(message + "\n")
        self.stream.flush()

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        self.note(description)
        yield _ignore


class Bars:
    """A bar for each task under way, on ``console`` (a ``rich.console.Console``), gone when the
    task ends; notes are printed above the bars. Use it as a context manager."""

    def __init__(self, console):
        from rich import progress

        self.bars = progress.Progress(
            progress.SpinnerColumn(),
            progress.TextColumn("{task.description}"),
            progress.BarColumn(),
            progress.MofNCompleteColumn(),
            progress.TimeElapsedColumn(),
            console=console,
            transient=True,
        )

    def __enter__(self) -> Bars:
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def note(self, message: str) -> None:
        self.bars.console.print(message, highlight=False, markup=False)

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        task_id = self.bars.add_task(description, total=total)
        try:
            yield lambda steps=1: self.bars.advance(task_id, steps)
        finally:
            self.bars.remove_task(task_id)


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """The log records of the logger ``name`` and its children below errors dropped for the
    block: a library's notices about its own workings, which are not the user's concern."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def without_transformers_bars() -> Iterator[None]:
    """transformers' own progress bars (loading weights) off for the block, as they were after:
    stepdistill says what it does itself, and ``--quiet`` means quiet."""
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()
