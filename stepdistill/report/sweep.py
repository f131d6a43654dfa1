"""The labelled-fraction sweep as a terminal table, a markdown and an HTML page, a plot and a directory of files.

``sweep`` is ``stepdistill.studies.summarize_sweep``'s dict, ``{model: {fraction: {metric:
{"mean", "std"}, "vs_control": {metric: comparison}}}}``, the teacher's row first, with fractions
as strings in ascending order; ``results`` is the largest fraction's results dict, for what the
teacher is and how the runs were made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullLocator
from rich.table import Table

from stepdistill.report.html import heading, html_figure, html_page, html_table, paragraph
from stepdistill.report.markdown import markdown_table
from stepdistill.report.plots import plt, save_figure  # pyplot with the headless backend already chosen
from stepdistill.report.results import SIGNIFICANT_MARK, format_comparison, format_mean_std, page_subtitle, runs_word
from stepdistill.report.rows import rich_table
from stepdistill.report.staged import write_study_pages
from stepdistill.studies import TEACHER_ROW

SWEEP_STEM = "sweep"  # sweep.json, sweep.md, sweep.html, sweep.png


def fractions_of(sweep: dict) -> list[str]:
    """The swept fractions, as the keys of every method's entry."""
    return list(next(iter(sweep.values())))


def shown_metrics(sweep: dict) -> list[str]:
    """The metrics the sweep compared (``summarize_sweep``'s), the headline one first."""
    first_cell = next(iter(next(iter(sweep.values())).values()))
    return [metric for metric, value in first_cell.items() if isinstance(value, dict) and "mean" in value]


def sweep_rows(sweep: dict, metric: str, column: str = "labelled {}") -> tuple[list[str], list[list[str]]]:
    """Headers (one column per fraction, or other key, named by ``column``) and one row per
    method of ``metric``'s mean ± std, with the mark of a significant difference from the
    method's control."""
    fractions = fractions_of(sweep)
    headers = ["method", *[column.format(fraction) for fraction in fractions]]
    rows = [[name, *[_cell(by_fraction[f], metric) for f in fractions]] for name, by_fraction in sweep.items()]
    return headers, rows


def _cell(cell: dict, metric: str) -> str:
    comparison = cell.get("vs_control", {}).get(metric)
    mark = f" {SIGNIFICANT_MARK}" if comparison and comparison["significant"] else ""
    return format_mean_std(cell[metric]) + mark


def difference_rows(sweep: dict, metric: str, column: str = "labelled {}") -> tuple[list[str], list[list[str]]]:
    """Each method's difference from its control at each fraction (or other key), with interval and Holm p."""
    fractions = fractions_of(sweep)
    headers = ["method", *[column.format(fraction) for fraction in fractions]]
    rows = [
        [name, *[format_comparison(metric, by_fraction[f]["vs_control"][metric]) for f in fractions]]
        for name, by_fraction in sweep.items()
        if all("vs_control" in by_fraction[f] for f in fractions)
    ]
    return headers, rows


def render_sweep_table(sweep: dict, results: dict) -> Table:
    metric = shown_metrics(sweep)[0]
    return rich_table(
        f"Test {metric.replace('_', ' ')} by labelled fraction (mean ± std over {runs_word(results)})",
        *sweep_rows(sweep, metric),
        caption=f"{SIGNIFICANT_MARK}: differs from its control after Holm's correction over every comparison of the sweep",
    )


SWEEP_TITLE = "Labelled-fraction sweep"
PLOT_TITLE = "Test {metric} by labelled fraction"
PLOT_CAPTION = "Test {metric} (mean ± std band over runs) against the labelled fraction (log scale); the teacher's dashed."


def _introduction(sweep: dict, results: dict) -> list[str]:
    """What a fraction means, what the teacher learned from, and how the runs were made."""
    teacher = results["teacher"]
    if not teacher.get("refit"):
        trained = "was trained elsewhere and annotates every row"
    elif results["config"]["teacher"].get("sees") == "all":
        trained = "is trained on every training label, those the students lack too (teacher.sees: all), and annotates every row"
    else:
        trained = "is trained on the labels the students see at each fraction, no others, and annotates every row"
    return [
        "Students see the labels of a share of the training rows (the fraction), drawn at random without reading any label, "
        f"and validation uses the labels of the same share of its rows; the teacher ({teacher['kind']}) {trained}. Every fraction "
        f"runs on the same {runs_word(results)} ({results['evaluation']['runs_vary']}), and the labelled rows of a smaller "
        "fraction are among those of a larger one. All numbers are on the held-out test split."
    ]


def _plot_words(sweep: dict) -> tuple[str, str]:
    """The plot's title and caption, naming the headline metric."""
    metric = shown_metrics(sweep)[0].replace("_", " ")
    return PLOT_TITLE.format(metric=metric), PLOT_CAPTION.format(metric=metric)


def _metric_sections(sweep: dict, results: dict) -> list[tuple[str, tuple, str, tuple]]:
    """Per table metric: heading, its table, the caption of the differences, their table."""
    return [
        (
            f"Test {metric.replace('_', ' ')} (mean ± std over runs)",
            sweep_rows(sweep, metric),
            f"Difference from the control ({results['evaluation']['test']}; 95% intervals unadjusted; p Holm-corrected over every"
            " comparison of the sweep, all fractions and metrics):",
            difference_rows(sweep, metric),
        )
        for metric in shown_metrics(sweep)
    ]


def render_sweep_markdown(sweep: dict, results: dict, plot_png: str) -> str:
    """The sweep page; ``plot_png`` is a file name relative to it."""
    lines = [f"# {SWEEP_TITLE}", ""]
    for text in _introduction(sweep, results):
        lines += [text, ""]
    for title, values, caption, differences in _metric_sections(sweep, results):
        lines += [f"## {title}", "", *markdown_table(*values), "", caption, "", *markdown_table(*differences), ""]
    lines += [f"![{_plot_words(sweep)[0]}]({plot_png})", ""]
    return "\n".join(lines)


def render_sweep_html(sweep: dict, results: dict, plot: bytes) -> str:
    """The sweep page as self-contained HTML."""
    parts = [paragraph(text) for text in _introduction(sweep, results)]
    for title, values, caption, differences in _metric_sections(sweep, results):
        parts += [heading(title), html_table(*values), paragraph(caption, "caption"), html_table(*differences)]
    title, caption = _plot_words(sweep)
    return html_page(SWEEP_TITLE, page_subtitle(results), [*parts, heading(title), html_figure(plot, title, caption)])


def plot_sweep(sweep: dict, path: Path) -> None:
    """Test accuracy (the headline metric) against the labelled fraction (log scale): a line
    per method with a ± std band, and the teacher's dashed."""
    metric = shown_metrics(sweep)[0]
    keys = fractions_of(sweep)
    fractions = [float(key) for key in keys]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, by_fraction in sweep.items():
        means = np.array([by_fraction[key][metric]["mean"] for key in keys])
        stds = np.array([by_fraction[key][metric]["std"] for key in keys])
        style = {"color": "black", "linestyle": "--", "marker": "s"} if name == TEACHER_ROW else {"marker": "o"}
        (line,) = ax.plot(fractions, means, label=name, **style)
        ax.fill_between(fractions, means - stds, means + stds, color=line.get_color(), alpha=0.2 if name != TEACHER_ROW else 0.08, linewidth=0)
    ax.set_xscale("log")
    # Ticks at the swept fractions only: the log axis's own decades would hide which were run.
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(fractions, keys)
    ax.set_xlabel("share of training rows whose labels students see (log scale)")
    label = metric.replace("_", " ")
    ax.set_ylabel(f"test {label}")
    ax.set_title(f"Test {label} by labelled fraction, mean ± std over runs")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9)
    save_figure(fig, path, tight=True)


def write_sweep(sweep: dict, results: dict, out_dir: Path, more: Callable[[Path], list[str]] | None = None) -> list[Path]:
    """sweep.json, sweep.md, sweep.html and sweep.png, with what ``more(staging_dir)`` writes, into
    ``out_dir``: all of them, or none if anything fails."""
    return write_study_pages(out_dir, SWEEP_STEM, sweep, results, plot_sweep, render_sweep_markdown, render_sweep_html, more)
