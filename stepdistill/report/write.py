"""Writing the report files all at once, or not at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from stepdistill.report import plots
from stepdistill.report.figures import Figure, shown_figures
from stepdistill.report.html import render_html
from stepdistill.report.markdown import render_markdown
from stepdistill.report.staged import write_staged

RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"


def draw_figure(figure: Figure, results: dict, path: Path) -> None:
    # Looked up on each call, so that a test can replace a plot function.
    draw = {
        "history": plots.plot_history,
        "metrics": plots.plot_metrics,
        "reliability": plots.plot_reliability,
        "confusion": plots.plot_confusion,
        "tradeoff": plots.plot_tradeoff,
    }[figure.name]
    draw(results, path)


def _write_files(results: dict, staging_dir: Path, more: Callable[[Path], list[str]] | None) -> list[str]:
    """Every report file into ``staging_dir``, then what ``more`` writes there (saved students);
    returns their names in writing order."""
    (staging_dir / RESULTS_JSON).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    figures = shown_figures(results)
    drawn = {}
    for figure in figures:
        draw_figure(figure, results, staging_dir / figure.file)
        drawn[figure.name] = (staging_dir / figure.file).read_bytes()
    (staging_dir / REPORT_MD).write_text(render_markdown(results), encoding="utf-8")
    (staging_dir / REPORT_HTML).write_text(render_html(results, drawn), encoding="utf-8")
    return [RESULTS_JSON, REPORT_MD, REPORT_HTML, *[figure.file for figure in figures], *(more(staging_dir) if more else [])]


def write_report(results: dict, out_dir: Path, more: Callable[[Path], list[str]] | None = None) -> list[Path]:
    """Write results.json, report.md, report.html (self-contained) and the figures' PNGs
    (figures.py: those the results can show) into ``out_dir``, with what ``more(staging_dir)``
    writes (it returns the names), all at once or not at all (see ``write_staged``). Returns the
    written paths."""
    return write_staged(out_dir, lambda staging_dir: _write_files(results, staging_dir, more))
