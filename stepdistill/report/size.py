"""The student-size sweep as a terminal table, a markdown and an HTML page, a plot and a directory
of files: how small a student can be and keep the teacher's knowledge.

``sizes`` is ``stepdistill.studies.summarize_grid``'s dict keyed by student size (``size_key``:
hidden widths such as ``64x64``), smallest first as given, each student cell with its
``params`` and ``batch_ms`` (latency on 1,024 rows, run 0's); ``results`` is the largest size's
results dict, for what the teacher is and how the runs were made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.table import Table

from stepdistill.report.html import heading, html_figure, html_page, html_table, paragraph
from stepdistill.report.markdown import markdown_table
from stepdistill.report.plots import plt, save_figure  # pyplot with the headless backend already chosen
from stepdistill.report.results import SIGNIFICANT_MARK, page_subtitle, runs_word
from stepdistill.report.rows import rich_table
from stepdistill.report.staged import write_study_pages
from stepdistill.report.sweep import difference_rows, fractions_of, shown_metrics, sweep_rows
from stepdistill.studies import TEACHER_ROW

SIZE_STEM = "sizes"  # sizes.json, sizes.md, sizes.html, sizes.png
SIZE_TITLE = "Student-size sweep"
COLUMN = "hidden {}"


def size_rows(sizes: dict) -> tuple[list[str], list[list[str]]]:
    """Per size: the students' parameters and latency on 1,024 rows (one architecture per size)."""
    first_method = next(name for name in sizes if name != TEACHER_ROW)
    headers = ["size", "params", "1,024 rows ms"]
    return headers, [[key, f"{cell['params']:,}", f"{cell.get('batch_ms', float('nan')):.2f}"] for key, cell in sizes[first_method].items()]


def render_size_table(sizes: dict, results: dict) -> Table:
    metric = shown_metrics(sizes)[0]
    return rich_table(
        f"Test {metric.replace('_', ' ')} by student size (mean ± std over {runs_word(results)})",
        *sweep_rows(sizes, metric, COLUMN),
        caption=f"{SIGNIFICANT_MARK}: differs from its control after Holm's correction over every comparison of the sweep",
    )


def _introduction(results: dict) -> list[str]:
    return [
        f"Every method, the control included, trains an MLP student of each size (its hidden layers' widths) on the same "
        f"{runs_word(results)} ({results['evaluation']['runs_vary']}), with the same teacher ({results['teacher']['kind']}) in each run. "
        "Each method is compared with its control of the same size; all numbers are on the held-out test split."
    ]


def _sections(sizes: dict, results: dict) -> list[tuple[str, tuple, str, tuple]]:
    return [
        (
            f"Test {metric.replace('_', ' ')} (mean ± std over runs)",
            sweep_rows(sizes, metric, COLUMN),
            f"Difference from the control of the same size ({results['evaluation']['test']}; 95% intervals unadjusted; p Holm-corrected"
            " over every comparison of the sweep, all sizes and metrics):",
            difference_rows(sizes, metric, COLUMN),
        )
        for metric in shown_metrics(sizes)
    ]


def _plot_title(sizes: dict) -> str:
    return f"Test {shown_metrics(sizes)[0].replace('_', ' ')} against the student's parameters and latency"


def render_size_markdown(sizes: dict, results: dict, plot_png: str) -> str:
    lines = [f"# {SIZE_TITLE}", "", *_introduction(results), "", "## Student sizes", "", *markdown_table(*size_rows(sizes)), ""]
    for title, values, caption, differences in _sections(sizes, results):
        lines += [f"## {title}", "", *markdown_table(*values), "", caption, "", *markdown_table(*differences), ""]
    return "\n".join([*lines, f"![{_plot_title(sizes)}]({plot_png})", ""])


def render_size_html(sizes: dict, results: dict, plot: bytes) -> str:
    parts = [paragraph(text) for text in _introduction(results)] + [heading("Student sizes"), html_table(*size_rows(sizes))]
    for title, values, caption, differences in _sections(sizes, results):
        parts += [heading(title), html_table(*values), paragraph(caption, "caption"), html_table(*differences)]
    title = _plot_title(sizes)
    caption = "Mean ± std over runs against parameters (left) and latency on 1,024 rows (right), both log scale; the teacher's dashed."
    return html_page(SIZE_TITLE, page_subtitle(results), [*parts, heading(title), html_figure(plot, title, caption)])


def plot_sizes(sizes: dict, path: Path) -> None:
    """The headline metric against parameters and against latency (log scales): a line per
    method with ± std bars, the teacher's level dashed: the frontier of how small a student can be."""
    metric = shown_metrics(sizes)[0]
    keys = fractions_of(sizes)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, x_key, label in zip(axes, ("params", "batch_ms"), ("student parameters (log scale)", "latency on 1,024 rows, ms (log scale)"), strict=True):
        for name, by_size in sizes.items():
            means = np.array([by_size[key][metric]["mean"] for key in keys])
            if name == TEACHER_ROW:
                ax.axhline(means[0], color="black", linestyle="--", label=name)
                continue
            xs = np.array([by_size[key].get(x_key, np.nan) for key in keys], dtype=float)
            ax.errorbar(xs, means, yerr=[by_size[key][metric]["std"] for key in keys], marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_xlabel(label)
    axes[0].set_ylabel(f"test {metric.replace('_', ' ')}")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9)
    fig.suptitle(_plot_title(sizes))
    save_figure(fig, path, tight=True)


def write_sizes(sizes: dict, results: dict, out_dir: Path, more: Callable[[Path], list[str]] | None = None) -> list[Path]:
    """sizes.json, sizes.md, sizes.html and sizes.png (and what ``more(staging_dir)`` writes) into
    ``out_dir``: all of them, or none if anything fails."""
    return write_study_pages(out_dir, SIZE_STEM, sizes, results, plot_sizes, render_size_markdown, render_size_html, more)
