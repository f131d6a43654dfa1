"""Reading the results dict shared by the table, the markdown report and the plots.

Shape (the contract with stepdistill.experiment.summary, which produces it)::

    {"teacher": {"kind", "test": M, "per_class": P, "calibration": R, "confusion": X, "speed": T,
                 "params", "train_seconds", "refit"},
     "reference": {"majority": {"test": M}},
     "methods": {name: {"test": M, "validation": M, "per_class": P, "calibration": R, "confusion": X,
                        "speed": T, "params", "train_seconds", "control": name | None,
                        "vs_control": {metric: C}, "flags": F,
                        "history": [[epoch record, ...] per run], "settings": [per run], ...}},
     "chosen": {"method", "metric", "split"},
     "evaluation": {"scheme", "runs", "labelled_fraction", "test", "confidence", "correction"},
     "warnings": [str], "config": {...}, "machine": str, "versions": {package: version},
     "date": "YYYY-MM-DD"}

where M maps a metric name to ``{"mean", "std", "values"}`` (one value per run), P maps a class
name to ``{"precision": S, "recall": S, "f1": S, "support": n}``, C is a comparison of stats.py
after Holm's correction (``diff``, ``ci_low``, ``ci_high``, ``p_value``, ``p_holm``,
``significant``, ``verdict``), and F holds ``never_predicts`` ({class: runs}), ``diverged``
(runs), ``worse_than_control`` (metrics), ``below_majority`` (bool). The teacher's ``params`` and
``train_seconds`` may be None (trees, a file, a model trained elsewhere). R holds the reliability
bins of the test rows of all runs (``bin_edges``; per bin ``confidence``, ``accuracy``, ``count``)
and ``ece`` (M-like, one value per run); X counts test rows by true class (rows) and predicted
class (columns) over all runs; T is ``{"params", "bytes", "one_row_ms", "batch_ms", "batch_rows",
"speedup_one_row", "speedup_batch"}``. R, X, T and ``versions`` are absent from older results,
and T may be None or have None numbers where nothing was timed. Generative students' results
(lm-train) have other test metrics (``label_accuracy``, ``rationale_rouge_l``), no majority rule,
and neither P, R, X nor T: a classifier's results are those whose teacher has an ``accuracy``.
"""

from __future__ import annotations

MISSING_CELL = "—"


def is_classifier(results: dict) -> bool:
    """Whether the results are a classifier's (class labels), not a generative student's."""
    return "accuracy" in results["teacher"]["test"]


def secondary_metric(results: dict) -> str:
    """``"roc_auc"`` for a binary task, ``"macro_f1"`` for a multi-class one."""
    return "roc_auc" if "roc_auc" in results["teacher"]["test"] else "macro_f1"


def is_multiclass(results: dict) -> bool:
    return "macro_f1" in results["teacher"]["test"]


def class_names(results: dict) -> list[str]:
    """The class names in label order, or their indices where the config does not list them."""
    classes = results.get("config", {}).get("data", {}).get("classes")
    return [str(name) for name in classes] if classes else [str(index) for index in range(len(results["teacher"]["confusion"]))]


def metric_columns(results: dict) -> list[str]:
    """Test metrics shown per model, in display order: a classifier's (with ``coverage`` beside
    accuracy when the teacher can leave a row unanswered, as an LLM's can), or the test metrics
    the models have, in the order they come."""
    if is_classifier(results):
        coverage = ["coverage"] if "coverage" in results["teacher"]["test"] else []
        return ["accuracy", *coverage, "log_loss", secondary_metric(results), "ece", "fidelity"]
    return list(dict.fromkeys(metric for _, entry in models(results) for metric in entry["test"]))


def score_metrics(results: dict) -> list[str]:
    """The test scores (0 to 1, higher better) plotted per method: a classifier's accuracy and its
    ROC AUC or macro F1; otherwise every test metric."""
    return ["accuracy", secondary_metric(results)] if is_classifier(results) else metric_columns(results)


MAJORITY_LABEL = "majority class"


def teacher_label(results: dict) -> str:
    return f"teacher ({results['teacher']['kind']})"


def models(results: dict) -> list[tuple[str, dict]]:
    """(display name, entry) for the teacher, the majority-class rule, then each method in the
    order they were run."""
    majority = results.get("reference", {}).get("majority")
    return [(teacher_label(results), results["teacher"]), *([(MAJORITY_LABEL, majority)] if majority else []), *results["methods"].items()]


def models_with(results: dict, key: str) -> list[tuple[str, dict]]:
    """(display name, entry) of the models whose entry has ``key``, in the order of ``models``."""
    return [(name, entry) for name, entry in models(results) if entry.get(key) is not None]


def one_row_ms(entry: dict) -> float | None:
    """The model's latency on one row in ms, or None where it was not timed."""
    return (entry.get("speed") or {}).get("one_row_ms")


def timed_models(results: dict) -> list[tuple[str, dict]]:
    """(display name, entry) of the models with a one-row latency."""
    return [(name, entry) for name, entry in models(results) if one_row_ms(entry) is not None]


def page_subtitle(results: dict) -> str:
    """When and where the results were computed: "2024-01-02 · x86_64, Linux, ..."."""
    return " · ".join(str(results[key]) for key in ("date", "machine") if key in results)


def runs_word(results: dict) -> str:
    """How the results were repeated, for table titles: "5 runs (holdout)"."""
    evaluation = results.get("evaluation", {})
    n = evaluation.get("runs", 1)
    return f"{n} run{'s' if n != 1 else ''} ({evaluation.get('scheme', 'holdout')})"


def row_notes(results: dict, name: str, entry: dict) -> str:
    """What a reader should see at a glance about a row: the method chosen on validation, and
    students that never predict some class, diverged, lose to their control beyond its interval
    or do not beat the majority-class rule."""
    notes = []
    if results.get("chosen", {}).get("method") == name:
        notes.append("chosen (validation)")
    flags = entry.get("flags", {})
    n_runs = results.get("evaluation", {}).get("runs", 1)
    if flags.get("diverged"):
        notes.append(f"DIVERGED {flags['diverged']}/{n_runs}")
    for class_name, runs in flags.get("never_predicts", {}).items():
        notes.append(f"never predicts {class_name} ({runs}/{n_runs})")
    if flags.get("worse_than_control"):
        notes.append(f"worse than control: {', '.join(flags['worse_than_control'])}")
    if flags.get("below_majority"):
        notes.append("below majority rule")
    return "; ".join(notes)


def format_mean_std(summary: dict | None) -> str:
    """``"0.853 ± 0.012"``, or a dash for a metric the model does not have (teacher fidelity)."""
    if summary is None:
        return MISSING_CELL
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Column headers and one row of formatted cells per model, shared by rich and markdown tables."""
    metrics = metric_columns(results)
    headers = ["model", *metrics, "params", "train s", "notes"]
    rows = []
    for name, entry in models(results):
        metric_cells = [format_mean_std(entry["test"].get(metric)) for metric in metrics]
        params, seconds = entry.get("params"), entry.get("train_seconds")
        rows.append(
            [
                name,
                *metric_cells,
                MISSING_CELL if params is None else f"{params:,}",  # trees, files and the majority rule have no parameter count
                MISSING_CELL if seconds is None else f"{seconds:.2f}",  # a teacher trained elsewhere
                row_notes(results, name, entry),
            ]
        )
    return headers, rows


SPEED_TITLE = "What the student buys: size and prediction latency (run 0, raw columns to logits, median ms)"


def speed_rows(results: dict) -> tuple[list[str], list[list[str]]] | None:
    """Headers and one row per timed model (the teacher first): parameters, bytes on disk, one-row
    and batch latency, and the speed-ups over the teacher; None when nothing was timed."""
    timed = [(name, entry["speed"]) for name, entry in models(results) if entry.get("speed")]
    if not timed:
        return None
    batch = timed[0][1]["batch_rows"]
    headers = ["model", "params", "size", "1 row ms", f"{batch:,} rows ms", "speed-up 1 row", f"speed-up {batch:,} rows"]
    rows = [
        [
            name,
            _cell(speed["params"], "{:,}"),
            MISSING_CELL if speed["bytes"] is None else format_bytes(speed["bytes"]),
            _cell(speed["one_row_ms"], "{:.3f}"),
            _cell(speed["batch_ms"], "{:.2f}"),
            _cell(speed.get("speedup_one_row"), "{:.1f}x"),
            _cell(speed.get("speedup_batch"), "{:.1f}x"),
        ]
        for name, speed in timed
    ]
    return headers, rows


def _cell(value: float | None, template: str) -> str:
    return MISSING_CELL if value is None else template.format(value)


def format_bytes(n: int) -> str:
    """``"1.2 MB"``, ``"640 B"``: decimal units, as file managers show sizes."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def in_points(metric: str) -> bool:
    """Whether differences of ``metric`` are shown in percentage points: accuracies."""
    return metric.endswith("accuracy")


def points_label(metric: str) -> str:
    """``" (points)"`` after an accuracy's name, nothing after another metric's."""
    return " (points)" if in_points(metric) else ""


def format_change(metric: str, value: float) -> str:
    """A difference of ``metric``: accuracy in points (0.0052 -> "+0.52"), others as is."""
    return f"{100 * value:+.2f}" if in_points(metric) else f"{value:+.4f}"


def format_comparison(metric: str, comparison: dict) -> str:
    """``"-0.52 [-0.80, -0.24] p=0.004 *"``: the difference, its interval (when there is one),
    the Holm-adjusted p-value and a mark when significant after Holm; "too few repeats" or "no
    spread" where no test could be made."""
    diff = format_change(metric, comparison["diff"])
    if comparison["verdict"] in ("too few repeats", "no spread"):
        return f"{diff} ({comparison['verdict']})"
    interval = ""
    if comparison.get("ci_low") is not None:
        interval = f" [{format_change(metric, comparison['ci_low'])}, {format_change(metric, comparison['ci_high'])}]"
    mark = f" {SIGNIFICANT_MARK}" if comparison["significant"] else ""
    return f"{diff}{interval} p={comparison['p_holm']:.3f}{mark}"


SIGNIFICANT_MARK = "*"


def comparison_rows(results: dict, metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """Headers and one row per method with a control: each metric's difference from it."""
    percent = round(100 * results["evaluation"]["confidence"])
    headers = ["method", "compared with", *[f"Δ {m.replace('_', ' ')}{points_label(m)} [{percent}% CI, unadjusted] Holm p" for m in metrics]]
    rows = [
        [name, entry["control"], *[format_comparison(m, entry["vs_control"][m]) for m in metrics]]
        for name, entry in results["methods"].items()
        if entry.get("vs_control")
    ]
    return headers, rows


def per_class_f1_rows(results: dict) -> tuple[list[str], list[list[str]]] | None:
    """Headers and rows of per-class test F1 (mean ± std) per model, or None if not recorded."""
    if "per_class" not in results["teacher"]:
        return None
    classes = list(results["teacher"]["per_class"])
    headers = ["model", *[f"{c} (n={results['teacher']['per_class'][c]['support']})" for c in classes]]
    rows = [[name, *[format_mean_std(entry["per_class"][c]["f1"]) for c in classes]] for name, entry in models(results) if "per_class" in entry]
    return headers, rows
