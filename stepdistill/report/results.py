"""Reading the results dict shared by the table, the markdown report and the plots.

Shape (the contract with the pipeline that produces it)::

    {"teacher": {"kind", "test": M, "per_class": P, "params", "train_seconds"},
     "methods": {name: {"test": M, "per_class": P, "params", "train_seconds", "history": [[epoch record, ...] per seed]}},
     "config": {...}, "machine": str, "date": "YYYY-MM-DD"}

where M maps a metric name to ``{"mean", "std", "values"}`` and P maps a class name to
``{"precision": S, "recall": S, "f1": S, "support": n}`` with S of the same shape as M's
entries. The teacher's ``params`` and ``train_seconds`` may be None (trees, a file, a model
trained elsewhere).
"""

from __future__ import annotations

MISSING_CELL = "—"


def secondary_metric(results: dict) -> str:
    """``"roc_auc"`` for a binary task, ``"macro_f1"`` for a multi-class one."""
    return "roc_auc" if "roc_auc" in results["teacher"]["test"] else "macro_f1"


def metric_columns(results: dict) -> list[str]:
    """Test metrics shown per model, in display order."""
    return ["accuracy", "log_loss", secondary_metric(results), "ece", "fidelity"]


def teacher_label(results: dict) -> str:
    return f"teacher ({results['teacher']['kind']})"


def models(results: dict) -> list[tuple[str, dict]]:
    """(display name, entry) for the teacher, then each method in the order they were run."""
    return [(teacher_label(results), results["teacher"]), *results["methods"].items()]


def format_mean_std(summary: dict | None) -> str:
    """``"0.853 ± 0.012"``, or a dash for a metric the model does not have (teacher fidelity)."""
    if summary is None:
        return MISSING_CELL
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Column headers and one row of formatted cells per model, shared by rich and markdown tables."""
    metrics = metric_columns(results)
    headers = ["model", *metrics, "params", "train s"]
    rows = []
    for name, entry in models(results):
        metric_cells = [format_mean_std(entry["test"].get(metric)) for metric in metrics]
        params, seconds = entry.get("params"), entry.get("train_seconds")
        rows.append(
            [
                name,
                *metric_cells,
                MISSING_CELL if params is None else f"{params:,}",  # trees and files have no parameter count
                MISSING_CELL if seconds is None else f"{seconds:.2f}",  # a teacher trained elsewhere
            ]
        )
    return headers, rows


def per_class_f1_rows(results: dict) -> tuple[list[str], list[list[str]]] | None:
    """Headers and rows of per-class test F1 (mean ± std) per model, or None if not recorded."""
    if "per_class" not in results["teacher"]:
        return None
    classes = list(results["teacher"]["per_class"])
    headers = ["model", *[f"{c} (n={results['teacher']['per_class'][c]['support']})" for c in classes]]
    rows = [[name, *[format_mean_std(entry["per_class"][c]["f1"]) for c in classes]] for name, entry in models(results)]
    return headers, rows
