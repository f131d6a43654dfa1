"""PNG plots of the training history, the test metrics, calibration, confusion and speed."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np

# Agg renders to files without a display, so reports can be written on headless machines.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import LogFormatter, MaxNLocator  # noqa: E402

from stepdistill.report.results import class_names, models_with, one_row_ms, score_metrics, teacher_label, timed_models  # noqa: E402

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


# The length of a dash of a weight line, in points (scaled by the line width, as matplotlib's dashes are).
WEIGHT_DASH_PT = 4.0


def _interleaved_dashes(index: int, count: int) -> tuple[float, tuple[float, float]]:
    """The dash pattern of the ``index``-th of ``count`` weight lines: one dash, then room for the
    others' dashes, started where the ones before leave off. Terms with the same weight schedule
    draw the same line; so dashed, it shows each term's color in turn instead of the last one drawn."""
    return (index * WEIGHT_DASH_PT, (WEIGHT_DASH_PT, count * WEIGHT_DASH_PT))


def _plot_method_history(ax, history: list[dict], term_colors: dict[str, str]) -> None:
    """Weighted terms and val_loss on ``ax``; term weights dashed on a twin axis, each term's
    dashes between the others' (``_interleaved_dashes``)."""
    epochs = [record["epoch"] for record in history]
    weight_ax = ax.twinx()
    present = [name for name in term_colors if name in history[0]["terms"]]
    for index, name in enumerate(present):
        terms = [record["terms"][name] for record in history]
        ax.plot(epochs, [term["weighted"] for term in terms], color=term_colors[name])
        weight_ax.plot(epochs, [term["weight"] for term in terms], color=term_colors[name], linestyle=_interleaved_dashes(index, len(present)))
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


def _panels(n_panels: int, max_cols: int, panel_size_in: tuple[float, float], extra_height_in: float = 0.0, shared: bool = False):
    """A figure with a grid of ``n_panels`` axes, at most ``max_cols`` a row, and room below for
    ``extra_height_in`` (a legend); ``shared`` axes have tick labels on the outer panels only.
    Returns the figure and the axes in use (the rest hidden)."""
    n_cols = min(max_cols, n_panels)
    n_rows = math.ceil(n_panels / n_cols)
    size = (panel_size_in[0] * n_cols, panel_size_in[1] * n_rows + extra_height_in)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=size, squeeze=False, sharex=shared, sharey=shared)
    for unused_ax in axes.flat[n_panels:]:
        unused_ax.set_visible(False)
    used = list(axes.flat[:n_panels])
    for ax in used[-n_cols:]:
        # The lowest panel of each column shows the x tick labels, also above a hidden panel.
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig, used


def save_figure(fig, path: Path, tight: bool = False) -> None:
    """``fig`` as a PNG at ``path`` (laid out tightly first with ``tight``), then closed."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_history(results: dict, path: Path) -> None:
    """``history_figure`` as a PNG file."""
    save_figure(history_figure(results), path)


def history_figure(results: dict):
    """One subplot per method, run 0: each term's weighted value and weight per epoch, and val_loss."""
    methods = results["methods"]
    term_colors = _term_colors(methods)
    fig, axes = _panels(len(methods), 2, SUBPLOT_SIZE_IN, LEGEND_HEIGHT_IN)
    for ax, (name, entry) in zip(axes, methods.items()):
        ax.set_title(f"{name} (run 0)")
        history = entry["history"][0] if entry.get("history") else []
        if history:
            _plot_method_history(ax, history, term_colors)
        else:
            ax.text(0.5, 0.5, "no history recorded", ha="center", va="center", transform=ax.transAxes)
    fig.legend(handles=_history_legend(term_colors), loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, LEGEND_HEIGHT_IN / fig.get_figheight(), 1, 1))
    return fig


def _score_axis_bottom(lowest: float) -> float:
    """Start the axis a little below the lowest score, on a 0.05 step, so small gaps stay visible."""
    return max(0.0, math.floor((lowest - 0.05) * 20) / 20)


def plot_metrics(results: dict, path: Path) -> None:
    """Grouped bars of the test scores per method (± std): a classifier's accuracy and ROC AUC /
    macro F1, a generative student's label accuracy and rationale ROUGE-L; the teacher's as lines."""
    methods = results["methods"]
    metrics = score_metrics(results)
    names = list(methods)
    bar_width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names) + 2), 4.5))
    lowest, highest = math.inf, -math.inf
    for offset_index, (metric, color) in enumerate(zip(metrics, ("C0", "C1", "C2"))):
        means = [methods[name]["test"][metric]["mean"] for name in names]
        stds = [methods[name]["test"][metric]["std"] for name in names]
        positions = [index + (offset_index - (len(metrics) - 1) / 2) * bar_width for index in range(len(names))]
        bars = ax.bar(positions, means, bar_width, yerr=stds, capsize=4, color=color, label=metric)
        # Inside the bars, where neither the error bars nor the teacher lines can cover them.
        ax.bar_label(bars, labels=[f"{mean:.3f}" for mean in means], label_type="center",
                     color="white", fontsize=8)
        teacher = results["teacher"]["test"].get(metric)  # an LLM teacher's labels have no rationale score
        if teacher is not None:
            ax.axhline(teacher["mean"], color=color, linestyle="--", linewidth=1.2, label=f"teacher {metric} ({teacher['mean']:.3f})")
        shown = ([teacher["mean"]] if teacher is not None else []) + [mean - std for mean, std in zip(means, stds)]
        lowest = min(lowest, *shown)
        highest = max(highest, *([teacher["mean"]] if teacher is not None else []), *(mean + std for mean, std in zip(means, stds)))
    bottom = _score_axis_bottom(lowest)
    ax.set_ylim(bottom, min(1.02, highest + 0.03))
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("test score" if bottom == 0 else f"test score (axis starts at {bottom:.2f})")
    ax.set_title("Test metrics, mean ± std over runs")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


PANEL_SIZE_IN = (3.6, 3.4)
PANELS_PER_ROW = 4


def plot_reliability(results: dict, path: Path) -> None:
    """A reliability diagram per model (teacher, then each method): per confidence bin, the share
    of test rows predicted correctly (bar) at its mean confidence (dot), against the diagonal."""
    calibrated = models_with(results, "calibration")
    fig, axes = _panels(len(calibrated), PANELS_PER_ROW, PANEL_SIZE_IN, shared=True)
    for ax, (name, entry) in zip(axes, calibrated):
        calibration = entry["calibration"]
        edges = calibration["bin_edges"]
        filled = [i for i, count in enumerate(calibration["count"]) if count]
        ax.bar([edges[i] for i in filled], [calibration["accuracy"][i] for i in filled],
               width=[edges[i + 1] - edges[i] for i in filled], align="edge", color="C0", alpha=0.35, edgecolor="C0")
        ax.plot([calibration["confidence"][i] for i in filled], [calibration["accuracy"][i] for i in filled], "o-", color="C0", markersize=4)
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ece = entry["test"]["ece"]
        ax.set_title(f"{name}\nECE {ece['mean']:.3f} ± {ece['std']:.3f}", fontsize=9)
        ax.set_xlabel("confidence (predicted class)", fontsize=8)
        ax.set_ylabel("share correct", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    save_figure(fig, path)


# Above this many classes the cells are too small for their counts to be written in them.
MAX_ANNOTATED_CLASSES = 12


def plot_confusion(results: dict, path: Path) -> None:
    """A confusion matrix per model (teacher, then each method), shaded by the share of each true
    class, with the counts written in the cells; a model that left rows unanswered (an LLM
    teacher's unparsed labels) has a last column of them."""
    labelled = models_with(results, "confusion")
    classes = class_names(results)
    fig, axes = _panels(len(labelled), PANELS_PER_ROW, PANEL_SIZE_IN, shared=True)
    for ax, (name, entry) in zip(axes, labelled):
        counts = np.array(entry["confusion"])
        columns = classes
        if "no_answer" in entry:
            counts, columns = np.column_stack([counts, entry["no_answer"]]), [*classes, "no answer"]
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        if len(classes) <= MAX_ANNOTATED_CLASSES:
            for (row, column), count in np.ndenumerate(counts):
                ax.text(column, row, str(count), ha="center", va="center", fontsize=7,
                        color="white" if shares[row, column] > 0.5 else "black")
        ax.set_xticks(range(len(columns)), columns, rotation=90 if len(columns) > 5 else 0)
        ax.set_yticks(range(len(classes)), classes)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


TEACHER_STYLE = {"color": "black", "marker": "s"}
STUDENT_MARKERS = "o^vD<>P*Xh"


def _student_style(index: int) -> dict:
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {"color": palette[index % len(palette)], "marker": STUDENT_MARKERS[index % len(STUDENT_MARKERS)]}


class _PlainLogFormatter(LogFormatter):
    """``LogFormatter``'s choice of the ticks to label (every tick of a narrow axis, fewer as it
    widens, decades only past two), each as a plain number with the digits it needs ("0.2",
    "0.21", "30"); its own labels read "2e-01" below 1, alike on every tick of a narrow axis."""

    def __call__(self, x, pos=None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def plot_tradeoff(results: dict, path: Path) -> None:
    """``tradeoff_figure`` as a PNG file."""
    save_figure(tradeoff_figure(results), path)


def tradeoff_figure(results: dict):
    """Test accuracy (± std over runs) against the one-row latency (log scale), a labelled point
    per timed model, the teacher in black."""
    timed = timed_models(results)
    teacher = teacher_label(results)
    students = [name for name, _ in timed if name != teacher]
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for name, entry in timed:
        accuracy = entry["test"]["accuracy"]
        # A color and marker per model, named in the legend: models of equal speed and accuracy overlap.
        style = TEACHER_STYLE if name == teacher else _student_style(students.index(name))
        ax.errorbar(one_row_ms(entry), accuracy["mean"], yerr=accuracy["std"], capsize=4, linestyle="none",
                    label=f"{name}: {one_row_ms(entry):.3g} ms, {accuracy['mean']:.3f}", **style)
    ax.set_xscale("log")
    # Plain numbers on the log axis (0.5, 2), not powers of ten.
    ax.xaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.margins(x=0.15)
    ax.set_xlabel("time to predict one row (ms, log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy against latency, mean ± std over runs")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
