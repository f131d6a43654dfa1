"""The results as a markdown report: setup, metrics table, comparison with the baseline, plots."""

from __future__ import annotations

import math

from stepdistill.report.results import per_class_f1_rows, table_rows

BASELINE = "baseline"


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    alignment = [":---", *["---:"] * (len(headers) - 1)]
    return [f"| {' | '.join(cells)} |" for cells in (headers, alignment, *rows)]


def _setup_lines(results: dict) -> list[str]:
    """Bullet points for the parts of the config a reader needs to judge the numbers."""
    config = results.get("config", {})
    lines = []
    if "preset" in config:
        lines.append(f"- Preset: `{config['preset']}`")
    data = config.get("data", {})
    sizes = [f"{data[key]:,} {split}" for key, split in
             (("n_train", "train"), ("n_val", "validation"), ("n_test", "test")) if key in data]
    if sizes:
        lines.append(f"- Rows: {', '.join(sizes)}")
    if "n_features" in data:
        lines.append(f"- Features: {data['n_features']:,}")
    if "classes" in data:
        lines.append(f"- Classes: {', '.join(str(name) for name in data['classes'])}")
    if "seeds" in config:
        seeds = config["seeds"]
        lines.append(f"- Seeds: {', '.join(str(seed) for seed in seeds)} ({len(seeds)} runs per method)")
    lines.append(f"- Teacher: {results['teacher']['kind']}")
    return lines


# Below this many points of accuracy a difference is not worth a claim, however steady.
NEGLIGIBLE_POINTS = 0.1


def accuracy_comparison(method: str, accuracy: dict, baseline_accuracy: dict) -> str:
    """One sentence on how a method's mean test accuracy compares with the baseline's.

    Differences under ``NEGLIGIBLE_POINTS`` are called negligible. Otherwise the difference of
    means counts as beyond seed noise only when it exceeds the combined std,
    sqrt(std_method² + std_baseline²); with a single seed there is no noise estimate.
    """
    difference = 100 * (accuracy["mean"] - baseline_accuracy["mean"])
    combined_std = 100 * math.hypot(accuracy["std"], baseline_accuracy["std"])
    if abs(difference) < NEGLIGIBLE_POINTS:
        verdict = f"negligible: under {NEGLIGIBLE_POINTS} points"
    elif min(len(accuracy["values"]), len(baseline_accuracy["values"])) < 2:
        verdict = "single seed, so no estimate of seed noise"
    elif abs(difference) > combined_std:
        verdict = f"beyond seed noise: combined std {combined_std:.2f} points"
    else:
        verdict = f"within seed noise: combined std {combined_std:.2f} points"
    return (f"- **{method}**: {100 * accuracy['mean']:.2f}% test accuracy, "
            f"{difference:+.2f} points vs baseline ({verdict}).")


def _comparison_lines(results: dict) -> list[str]:
    methods = results["methods"]
    if BASELINE not in methods:
        return ["No baseline was run, so there is nothing to compare against."]
    baseline_accuracy = methods[BASELINE]["test"]["accuracy"]
    return [accuracy_comparison(name, entry["test"]["accuracy"], baseline_accuracy)
            for name, entry in methods.items() if name != BASELINE]


def _per_class_lines(results: dict) -> list[str]:
    table = per_class_f1_rows(results)
    if table is None:
        return []
    return ["## Per-class test F1 (mean ± std over seeds)", "", *markdown_table(*table), ""]


def render_markdown(results: dict, history_png: str, metrics_png: str) -> str:
    """The full report; the plot arguments are file names relative to the report."""
    headers, rows = table_rows(results)
    subtitle = " · ".join(str(results[key]) for key in ("date", "machine") if key in results)
    lines = [
        "# Distillation report",
        "",
        *([f"_{subtitle}_", ""] if subtitle else []),
        "## Setup",
        "",
        *_setup_lines(results),
        "",
        "## Test metrics (mean ± std over seeds)",
        "",
        *markdown_table(headers, rows),
        "",
        *_per_class_lines(results),
        "## Compared with the baseline",
        "",
        *_comparison_lines(results),
        "",
        "## Plots",
        "",
        "Loss terms per epoch (seed 0): weighted value solid, weight dashed.",
        "",
        f"![Training history]({history_png})",
        "",
        f"![Test metrics]({metrics_png})",
        "",
    ]
    return "\n".join(lines)
