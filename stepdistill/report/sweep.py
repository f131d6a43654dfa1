"""The labelled-fraction sweep as a terminal table, a markdown page, a plot and a directory of files.

``sweep`` is ``stepdistill.studies.summarize_sweep``'s dict, ``{method: {fraction: {metric:
{"mean", "std"}}}}`` with fractions as strings in ascending order; ``teacher`` is the results
dict's teacher entry, the same at every fraction since the teacher sees every training label.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullLocator
from rich.table import Table

from stepdistill.report.markdown import markdown_table
from stepdistill.report.plots import DPI, plt  # pyplot with the headless backend already chosen
from stepdistill.report.results import format_mean_std
from stepdistill.report.rows import rich_table
from stepdistill.report.staged import write_staged

SWEEP_JSON = "sweep.json"
SWEEP_MD = "sweep.md"
SWEEP_PNG = "sweep.png"
TABLE_METRICS = ("accuracy", "log_loss")


def fractions_of(sweep: dict) -> list[str]:
    """The swept fractions, as the keys of every method's entry."""
    return list(next(iter(sweep.values())))


def sweep_rows(sweep: dict, metric: str) -> tuple[list[str], list[list[str]]]:
    """Headers (one column per fraction) and one row per method of ``metric``'s mean ± std."""
    fractions = fractions_of(sweep)
    headers = ["method", *[f"labelled {fraction}" for fraction in fractions]]
    rows = [[name, *[format_mean_std(by_fraction[f][metric]) for f in fractions]] for name, by_fraction in sweep.items()]
    return headers, rows


def render_sweep_table(sweep: dict) -> Table:
    return rich_table("Test accuracy by labelled fraction (mean ± std over seeds)", *sweep_rows(sweep, "accuracy"))


def render_sweep_markdown(sweep: dict, teacher: dict, seeds: list[int], plot_png: str) -> str:
    """The sweep page; ``plot_png`` is a file name relative to it."""
    lines = [
        "# Labelled-fraction sweep",
        "",
        "Students see the labels of a stratified share of the training rows (the fraction); the teacher "
        f"({teacher['kind']}) is trained on every training label and annotates every row. Each fraction is a "
        f"separate experiment with seeds {', '.join(map(str, seeds))}; all numbers are on the held-out test split.",
        "",
        f"Teacher test accuracy: {format_mean_std(teacher['test']['accuracy'])}.",
        "",
    ]
    for metric in TABLE_METRICS:
        lines += [f"## Test {metric.replace('_', ' ')} (mean ± std over seeds)", "", *markdown_table(*sweep_rows(sweep, metric)), ""]
    lines += [f"![Test accuracy by labelled fraction]({plot_png})", ""]
    return "\n".join(lines)


def plot_sweep(sweep: dict, teacher_accuracy: float, path: Path) -> None:
    """Test accuracy against the labelled fraction (log scale): a line per method with a ± std
    band, and the teacher's accuracy as a dashed horizontal line."""
    keys = fractions_of(sweep)
    fractions = [float(key) for key in keys]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, by_fraction in sweep.items():
        means = np.array([by_fraction[key]["accuracy"]["mean"] for key in keys])
        stds = np.array([by_fraction[key]["accuracy"]["std"] for key in keys])
        (line,) = ax.plot(fractions, means, marker="o", label=name)
        ax.fill_between(fractions, means - stds, means + stds, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.axhline(teacher_accuracy, color="black", linestyle="--", linewidth=1.2, label=f"teacher ({teacher_accuracy:.3f})")
    ax.set_xscale("log")
    # Ticks at the swept fractions only: the log axis's own decades would hide which were run.
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(fractions, keys)
    ax.set_xlabel("share of training rows whose labels students see (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Test accuracy by labelled fraction, mean ± std over seeds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def write_sweep(sweep: dict, teacher: dict, seeds: list[int], out_dir: Path) -> list[Path]:
    """sweep.json, sweep.md and sweep.png into ``out_dir``: all of them, or none if anything fails."""

    def write_files(staging_dir: Path) -> list[str]:
        (staging_dir / SWEEP_JSON).write_text(json.dumps(sweep, indent=2) + "\n", encoding="utf-8")
        plot_sweep(sweep, teacher["test"]["accuracy"]["mean"], staging_dir / SWEEP_PNG)
        (staging_dir / SWEEP_MD).write_text(render_sweep_markdown(sweep, teacher, seeds, SWEEP_PNG), encoding="utf-8")
        return [SWEEP_JSON, SWEEP_MD, SWEEP_PNG]

    return write_staged(out_dir, write_files)
