"""Writing the report files all at once, or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from stepdistill.report import plots
from stepdistill.report.markdown import render_markdown

RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
HISTORY_PNG = "history.png"
METRICS_PNG = "metrics.png"


def _write_files(results: dict, staging_dir: Path) -> list[str]:
    """Every report file into ``staging_dir``; returns their names in writing order."""
    (staging_dir / RESULTS_JSON).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plots.plot_history(results, staging_dir / HISTORY_PNG)
    plots.plot_metrics(results, staging_dir / METRICS_PNG)
    report = render_markdown(results, history_png=HISTORY_PNG, metrics_png=METRICS_PNG)
    (staging_dir / REPORT_MD).write_text(report, encoding="utf-8")
    return [RESULTS_JSON, REPORT_MD, HISTORY_PNG, METRICS_PNG]


def write_report(results: dict, out_dir: Path) -> list[Path]:
    """Write results.json, report.md, history.png and metrics.png into ``out_dir``.

    Files are first written to a staging directory next to ``out_dir`` (same file system,
    so moves are renames) and moved in only once all of them exist: if anything fails,
    ``out_dir`` is left as it was. Returns the written paths.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        names = _write_files(results, staging_dir)
        out_dir.mkdir(exist_ok=True)
        for name in names:
            os.replace(staging_dir / name, out_dir / name)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return [out_dir / name for name in names]
