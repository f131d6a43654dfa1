"""Writing the report files all at once, or not at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from stepdistill.report import plots
from stepdistill.report.markdown import render_markdown
from stepdistill.report.staged import write_staged

RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
HISTORY_PNG = "history.png"
METRICS_PNG = "metrics.png"


def _write_files(results: dict, staging_dir: Path, more: Callable[[Path], list[str]] | None) -> list[str]:
    """Every report file into ``staging_dir``, then what ``more`` writes there (saved students);
    returns their names in writing order."""
    (staging_dir / RESULTS_JSON).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plots.plot_history(results, staging_dir / HISTORY_PNG)
    plots.plot_metrics(results, staging_dir / METRICS_PNG)
    report = render_markdown(results, history_png=HISTORY_PNG, metrics_png=METRICS_PNG)
    (staging_dir / REPORT_MD).write_text(report, encoding="utf-8")
    return [RESULTS_JSON, REPORT_MD, HISTORY_PNG, METRICS_PNG, *(more(staging_dir) if more else [])]


def write_report(results: dict, out_dir: Path, more: Callable[[Path], list[str]] | None = None) -> list[Path]:
    """Write results.json, report.md, history.png and metrics.png into ``out_dir``, with what
    ``more(staging_dir)`` writes (it returns the names), all at once or not at all (see
    ``write_staged``). Returns the written paths."""
    return write_staged(out_dir, lambda staging_dir: _write_files(results, staging_dir, more))
