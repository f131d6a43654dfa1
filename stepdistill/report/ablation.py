"""The ablation study as a terminal table, a markdown and an HTML page, a plot and a directory of files.

``ablation`` is ``stepdistill.studies.summarize_ablation``'s dict; ``results`` the experiment's
results dict (see results.py) that it was computed from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from pathlib import Path

from rich.table import Table

from stepdistill.evaluate import is_worse
from stepdistill.report.html import html_figure, html_page, html_table, paragraph
from stepdistill.report.markdown import markdown_table
from stepdistill.report.plots import plt, save_figure  # pyplot with the headless backend already chosen
from stepdistill.report.results import SIGNIFICANT_MARK, format_change, format_comparison, format_mean_std, in_points, page_subtitle, points_label, runs_word
from stepdistill.report.rows import rich_table
from stepdistill.report.staged import write_staged
from stepdistill.report.write import REPORT_HTML, REPORT_MD, write_report
from stepdistill.stats import CONFIDENCE
from stepdistill.studies import FULL, REFERENCE_METHODS, REMOVALS

ABLATION_JSON = "ablation.json"
ABLATION_MD = "ablation.md"
ABLATION_HTML = "ablation.html"
ABLATION_PNG = "ablation.png"
WORSE_COLOR, BETTER_COLOR, UNCHANGED_COLOR = "C3", "C2", "gray"


def shown_metrics(ablation: dict) -> list[str]:
    """The metrics the ablation compared (``summarize_ablation``'s), the headline one first."""
    return list(ablation[FULL]["test"])


def ablation_rows(ablation: dict) -> tuple[list[str], list[list[str]]]:
    """Headers and one row per variant: each shown metric, with its difference from full."""
    percent = round(100 * CONFIDENCE)
    metrics = shown_metrics(ablation)
    headers = ["variant"]
    for metric in metrics:
        label = metric.replace("_", " ")
        headers += [label, f"Δ {label}{points_label(metric)} [{percent}% CI, unadjusted] Holm p"]
    rows = []
    for name, entry in ablation.items():
        cells = [name]
        for metric in metrics:
            change = "reference" if name == FULL else format_comparison(metric, entry["vs_full"][metric])
            cells += [format_mean_std(entry["test"][metric]), change]
        rows.append(cells)
    return headers, rows


def _caption(results: dict) -> str:
    return (
        f"Δ: mean over {runs_word(results)} of (variant − full), paired by run; tested with the "
        f"{results['evaluation']['test']}; p Holm-corrected over the table; {SIGNIFICANT_MARK}: significant after correction"
    )


def render_ablation_table(results: dict, ablation: dict) -> Table:
    return rich_table("Ablation: each variant against full", *ablation_rows(ablation), caption=_caption(results))


def significant_changes(comparisons: dict, worse: bool) -> list[str]:
    """The shown metrics that changed significantly for the worse (or better), e.g.
    ``["accuracy -0.52 points", "log loss +0.0100"]``."""
    return [
        f"{metric.replace('_', ' ')} {format_change(metric, c['diff'])}{' points' if in_points(metric) else ''}"
        for metric in comparisons
        if (c := comparisons[metric])["significant"] and is_worse(metric, c["diff"]) == worse
    ]


def verdict(ablation: dict, names: list[str], subject: str) -> str:
    """One sentence naming which of ``names`` are significantly worse, and which better, than
    full, and which show no detectable difference or could not be tested."""

    def listed(worse: bool) -> str:
        found = [f"{name} ({', '.join(changes)})" for name in names if (changes := significant_changes(ablation[name]["vs_full"], worse))]
        return "; ".join(found) or "none"

    untested = [name for name in names if any(c["verdict"] in ("too few repeats", "no spread") for c in ablation[name]["vs_full"].values())]
    unchanged = [
        name for name in names if name not in untested and not any(c["significant"] for c in ablation[name]["vs_full"].values())
    ]
    return (
        f"{subject} significantly worse than full: {listed(True)}. Significantly better: {listed(False)}. "
        f"No detectable difference: {', '.join(unchanged) or 'none'}."
        + (f" Not testable (too few repeats or no spread): {', '.join(untested)}." if untested else "")
    )


ABLATION_TITLE = "Ablation of the enhanced method"
PLOT_TITLE = "Test {metric} against full"
PLOT_CAPTION = (
    "Each variant's test {metric} minus full's (points) with its interval: red when significantly worse after Holm's "
    "correction, green when significantly better, gray otherwise."
)


def _introduction(results: dict) -> str:
    """What the variants are and how they were run, in inline markdown."""
    return (
        f"`{FULL}` is the enhanced method as configured; each `no_*` variant is `{FULL}` with one component removed, and "
        f"{', '.join(f'`{name}`' for name in REFERENCE_METHODS)} are the simpler methods. All trained with the same recipe on the "
        f"same {runs_word(results)}: {results['evaluation']['runs_vary']}; every number is on the held-out test split."
    )


def _verdicts(ablation: dict) -> list[str]:
    """The verdict on the removals, then on the simpler methods."""
    return [
        verdict(ablation, [name for name in REMOVALS if name in ablation], "Removals"),
        verdict(ablation, [name for name in REFERENCE_METHODS if name in ablation], "Simpler methods"),
    ]


def render_ablation_markdown(results: dict, ablation: dict, plot_png: str, report_md: str) -> str:
    """The ablation page; the file arguments are names relative to it."""
    subtitle = page_subtitle(results)
    lines = [
        f"# {ABLATION_TITLE}",
        "",
        *([f"_{subtitle}_", ""] if subtitle else []),
        _introduction(results),
        "",
        f"{_caption(results)}. Accuracy changes are in percentage points.",
        "",
        *markdown_table(*ablation_rows(ablation)),
        "",
        *[line for sentence in _verdicts(ablation) for line in (sentence, "")],
        f"![{_plot_words(ablation)[0]}]({plot_png})",
        "",
        f"Every metric of every variant: [{report_md}]({report_md}).",
        "",
    ]
    return "\n".join(lines)


def _plot_words(ablation: dict) -> tuple[str, str]:
    """The plot's title and caption, naming the headline metric."""
    metric = shown_metrics(ablation)[0].replace("_", " ")
    return PLOT_TITLE.format(metric=metric), PLOT_CAPTION.format(metric=metric)


def render_ablation_html(results: dict, ablation: dict, plot: bytes, report_html: str) -> str:
    """The ablation page as self-contained HTML; ``report_html`` is the report's name relative to it."""
    return html_page(
        ABLATION_TITLE,
        page_subtitle(results),
        [
            paragraph(_introduction(results)),
            paragraph(f"{_caption(results)}. Accuracy changes are in percentage points.", "caption"),
            html_table(*ablation_rows(ablation)),
            *[paragraph(sentence) for sentence in _verdicts(ablation)],
            html_figure(plot, *_plot_words(ablation)),
            f'<p>Every metric of every variant: <a href="{escape(report_html)}">{escape(report_html)}</a>.</p>',
        ],
    )


def _comparison_color(metric: str, comparison: dict) -> str:
    if not comparison["significant"]:
        return UNCHANGED_COLOR
    return WORSE_COLOR if is_worse(metric, comparison["diff"]) else BETTER_COLOR


def plot_ablation(ablation: dict, path: Path) -> None:
    """Each variant's test accuracy (the headline metric) minus full's (points), with its
    interval as an error bar: red when significantly worse after Holm's correction, green when
    better, gray otherwise."""
    metric = shown_metrics(ablation)[0]
    names = [name for name in ablation if name != FULL]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(names) + 1.6))
    for position, name in enumerate(names):
        comparison = ablation[name]["vs_full"][metric]
        diff = 100 * comparison["diff"]
        error = None if comparison.get("ci_low") is None else [[diff - 100 * comparison["ci_low"]], [100 * comparison["ci_high"] - diff]]
        ax.errorbar(diff, position, xerr=error, fmt="o", capsize=4, color=_comparison_color(metric, comparison))
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()  # the variants top to bottom in the table's order
    label = metric.replace("_", " ")
    ax.set_xlabel(f"test {label} minus full's (points), {round(100 * CONFIDENCE)}% interval paired over runs")
    ax.set_title(f"Ablation: test {label} against full")
    save_figure(fig, path, tight=True)


def write_ablation(results: dict, ablation: dict, out_dir: Path, more: Callable[[Path], list[str]] | None = None) -> list[Path]:
    """ablation.json, ablation.md, ablation.html and ablation.png, with the experiment's usual
    report files and what ``more(staging_dir)`` writes, into ``out_dir``: all of them, or none if
    anything fails."""

    def write_files(staging_dir: Path) -> list[str]:
        (staging_dir / ABLATION_JSON).write_text(json.dumps(ablation, indent=2) + "\n", encoding="utf-8")
        plot_ablation(ablation, staging_dir / ABLATION_PNG)
        report_files = [path.name for path in write_report(results, staging_dir)]
        (staging_dir / ABLATION_MD).write_text(render_ablation_markdown(results, ablation, ABLATION_PNG, REPORT_MD), encoding="utf-8")
        plot = (staging_dir / ABLATION_PNG).read_bytes()
        (staging_dir / ABLATION_HTML).write_text(render_ablation_html(results, ablation, plot, REPORT_HTML), encoding="utf-8")
        return [ABLATION_JSON, ABLATION_MD, ABLATION_HTML, ABLATION_PNG, *report_files, *(more(staging_dir) if more else [])]

    return write_staged(out_dir, write_files)
