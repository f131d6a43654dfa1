"""The ``stepdistill`` command's entry point: Ctrl-C is one line and exit code 130 from the first
moment, before the command line is even imported or parsed."""

from __future__ import annotations

import os
import signal
import sys

INTERRUPTED_EXIT_CODE = 130


def _stop_before_start(signum, frame) -> None:
    # Nothing has been written yet, so there is nothing to resume or clean up. The process ends
    # here and now: an exception raised into a library's import (numpy's, torch's) can leave it
    # recursing or aborting instead of exiting.
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(INTERRUPTED_EXIT_CODE)


def main() -> None:
    """Run the command line; until a command starts (it then takes Ctrl-C as KeyboardInterrupt,
    see ``cli._guarded``), Ctrl-C stops at once with one line."""
    signal.signal(signal.SIGINT, _stop_before_start)
    from stepdistill.cli import app

    try:
        app()
    except SystemExit as stop:
        if stop.code == INTERRUPTED_EXIT_CODE:
            # The line is printed and everything on disk is whole (written atomically); tearing
            # down torch and the other libraries would keep a stopped user waiting for seconds.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(INTERRUPTED_EXIT_CODE)
        raise
