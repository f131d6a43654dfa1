"""Start-up time of the command line: `stepdistill --help`, the median of 5 fresh processes.

    python bench/startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 5


def seconds_of(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    command = [str(Path(sys.executable).with_name("stepdistill")), "--help"]
    times = [seconds_of(command) for _ in range(RUNS)]
    print(f"stepdistill --help: {statistics.median(times):.2f} s (median of {RUNS} processes; target under 1 s)")


if __name__ == "__main__":
    main()
