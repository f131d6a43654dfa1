"""PNG plots of the training history and of the test metrics."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

# Agg renders to files without a display, so reports can be written on headless machines.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from stepdistill.report.results import secondary_metric  # noqa: E402

VAL_LOSS_COLOR = "black"
DPI = 120
SUBPLOT_SIZE_IN = (6.5, 4.0)
LEGEND_HEIGHT_IN = 0.6


def _term_colors(methods: dict) -> dict[str, str]:
    """One color per loss term, the same in every subplot, in order of first appearance."""
    names: list[str] = []
    for entry in methods.values():
        for record in entry["history"][0] if entry.get("history") else []:
            names.extend(name for name in record["terms"] if name not in names)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: palette[index % len(palette)] for index, name in enumerate(names)}


def _plot_method_history(ax, history: list[dict], term_colors: dict[str, str]) -> None:
    """Weighted terms and val_loss on ``ax``; term weights dashed on a twin axis."""
    epochs = [record["epoch"] for record in history]
    weight_ax = ax.twinx()
    for name, color in term_colors.items():
        if name not in history[0]["terms"]:
            continue
        terms = [record["terms"][name] for record in history]
        ax.plot(epochs, [term["weighted"] for term in terms], color=color)
        weight_ax.plot(epochs, [term["weight"] for term in terms], color=color, linestyle="--")
    ax.plot(epochs, [record["val_loss"] for record in history], color=VAL_LOSS_COLOR, linewidth=2)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    weight_ax.set_ylabel("weight")


def _history_legend(term_colors: dict[str, str]) -> list[Line2D]:
    handles = [Line2D([], [], color=color, label=name) for name, color in term_colors.items()]
    handles.append(Line2D([], [], color=VAL_LOSS_COLOR, linewidth=2, label="val_loss"))
    handles.append(Line2D([], [], color="gray", label="weighted term (left axis)"))
    handles.append(Line2D([], [], color="gray", linestyle="--", label="weight (right axis)"))
    return handles


def plot_history(results: dict, path: Path) -> None:
    """One subplot per method, run 0: each term's weighted value and weight per epoch, and val_loss."""
    methods = results["methods"]
    term_colors = _term_colors(methods)
    n_cols = min(2, len(methods))
    n_rows = math.ceil(len(methods) / n_cols)
    width, height = SUBPLOT_SIZE_IN[0] * n_cols, SUBPLOT_SIZE_IN[1] * n_rows + LEGEND_HEIGHT_IN
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, height), squeeze=False)
    for ax, (name, entry) in zip(axes.flat, methods.items()):
        ax.set_title(f"{name} (run 0)")
        history = entry["history"][0] if entry.get("history") else []
        if history:
            _plot_method_history(ax, history, term_colors)
        else:
            ax.text(0.5, 0.5, "no history recorded", ha="center", va="center", transform=ax.transAxes)
    for unused_ax in axes.flat[len(methods):]:
        unused_ax.set_visible(False)
    fig.legend(handles=_history_legend(term_colors), loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, LEGEND_HEIGHT_IN / height, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _score_axis_bottom(lowest: float) -> float:
    """Start the axis a little below the lowest score, on a 0.05 step, so small gaps stay visible."""
    return max(0.0, math.floor((lowest - 0.05) * 20) / 20)


def plot_metrics(results: dict, path: Path) -> None:
    """Grouped bars of test accuracy and ROC AUC / macro F1 per method (± std); teacher as lines."""
    methods = results["methods"]
    metrics = ["accuracy", secondary_metric(results)]
    names = list(methods)
    bar_width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names) + 2), 4.5))
    lowest, highest = math.inf, -math.inf
    for offset_index, (metric, color) in enumerate(zip(metrics, ("C0", "C1"))):
        means = [methods[name]["test"][metric]["mean"] for name in names]
        stds = [methods[name]["test"][metric]["std"] for name in names]
        positions = [index + (offset_index - 0.5) * bar_width for index in range(len(names))]
        bars = ax.bar(positions, means, bar_width, yerr=stds, capsize=4, color=color, label=metric)
        # Inside the bars, where neither the error bars nor the teacher lines can cover them.
        ax.bar_label(bars, labels=[f"{mean:.3f}" for mean in means], label_type="center",
                     color="white", fontsize=8)
        teacher_score = results["teacher"]["test"][metric]["mean"]
        ax.axhline(teacher_score, color=color, linestyle="--", linewidth=1.2,
                   label=f"teacher {metric} ({teacher_score:.3f})")
        lowest = min(lowest, teacher_score, *(mean - std for mean, std in zip(means, stds)))
        highest = max(highest, teacher_score, *(mean + std for mean, std in zip(means, stds)))
    bottom = _score_axis_bottom(lowest)
    ax.set_ylim(bottom, min(1.02, highest + 0.03))
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("test score" if bottom == 0 else f"test score (axis starts at {bottom:.2f})")
    ax.set_title("Test metrics, mean ± std over runs")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
