"""The runs of an experiment summarized as its results dict (the contract with report/).

Every metric is summarized over runs (mean, std, the value of each run). Each method is compared
with its control run by run (stats.py): over several runs by the corrected resampled t-test, within
a single run by McNemar's test (accuracy) and a paired bootstrap over test rows (other metrics);
Holm's correction covers all comparisons of the table. Each row carries the flags a reader should
not have to find alone: classes a student never predicts, divergence, a control that beats it, a
majority-class rule it does not beat. Classifiers' results also hold per-class metrics,
reliability bins and confusion counts; a generative student's labels are free text, and its
results have none of these.
"""

from __future__ import annotations

import datetime
import platform
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import sklearn
import torch
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

from stepdistill import stats
from stepdistill.evaluate import ECE_BINS, NO_ANSWER, class_probabilities, expected_calibration_error, is_worse, per_class_metrics, predictions, summarize_runs
from stepdistill.experiment.records import RunResult

# The metric that picks the method to deploy, and a method's candidate, on the validation split:
# the log-loss of its labels (a generative student's: its label tokens' cross-entropy).
SELECTION_METRIC = "log_loss"


@dataclass(frozen=True)
class Setup:
    """How an experiment was set up, as its results say: the teacher's kind and whether each run
    refit it, the evaluation scheme, whether the test split is a fixed file, and the class names
    (None: labels are free text)."""

    teacher_kind: str
    refit: bool
    scheme: str
    fixed_test: bool
    classes: list[str] | None


def summarize_experiment(
    runs: list[RunResult],
    *,
    fraction: float,
    config,
    control_of: dict[str, str | None],
    compared_metrics: tuple[str, ...],
    teacher_params: int | None,
    teacher_seconds: float | None,
    seconds: dict[str, float],
    warnings: list[str],
    description: dict | None,
    setup: Setup,
) -> dict:
    """The results dict of ``runs`` (one per run) at one labelled fraction."""
    classes = setup.classes
    classifier = runs[0].y_test is not None  # class probabilities and labels to summarize
    speed = runs[0].speed or {}  # measured in the first run only (speed.py)
    methods = {}
    for name in runs[0].methods:
        entries = [r.methods[name] for r in runs]
        methods[name] = {
            "test": summarize_runs([e["test"] for e in entries]),
            "validation": summarize_runs([e["validation"] for e in entries]),
            **(_classifier_summary([(predictions(e["logits"]), r.probabilities[name], r.y_test) for e, r in zip(entries, runs)], classes) if classifier else {}),
            "params": entries[0]["params"],
            "train_seconds": seconds.get(name),
            "speed": speed.get(name),
            "control": control_of.get(name),
            "recipe": config.recipe(name),
            "method": entries[0]["method"],
            "settings": [e["settings"] for e in entries],
            "tuning": [e["tuning"] for e in entries],
            "history": [e["history"] for e in entries],
            "divergence": [e["diverged"] for e in entries],
            "flags": {
                "never_predicts": _count_runs([c for e in entries for c in e["never_predicts"]]),
                "diverged": sum(bool(e["diverged"]) for e in entries),
            },
        }
    _compare_with_controls(methods, runs, compared_metrics, setup.fixed_test)
    majority = summarize_runs([r.majority["test"] for r in runs]) if runs[0].majority is not None else None
    for entry in methods.values():
        if majority is not None:
            entry["flags"]["below_majority"] = entry["test"]["accuracy"]["mean"] < majority["accuracy"]["mean"]
    # A method whose student diverged in some run is chosen only if every method's did.
    chosen = min(methods, key=lambda name: (methods[name]["flags"]["diverged"] > 0, methods[name]["validation"][SELECTION_METRIC]["mean"]))
    dumped = config.model_dump(mode="json")
    teacher = runs[0].teacher
    return {
        "teacher": {
            "kind": setup.teacher_kind,
            "test": summarize_runs([r.teacher["test"] for r in runs]),
            **(
                {"accuracy_on": {split: float(np.mean([r.teacher["accuracy_on"][split] for r in runs])) for split in ("train", "validation")}}
                if "accuracy_on" in teacher
                else {}
            ),
            **(
                _classifier_summary(
                    [(predictions(r.teacher["logits"], r.teacher.get("answered")), class_probabilities(r.teacher["logits"]), r.y_test) for r in runs], classes
                )
                if classifier
                else {}
            ),
            "params": teacher_params,
            "train_seconds": teacher_seconds,
            "speed": speed.get("teacher"),
            "refit": setup.refit,
        },
        **({"reference": {"majority": {"test": majority}}} if majority is not None else {}),
        "methods": methods,
        "chosen": {"method": chosen, "metric": SELECTION_METRIC, "split": "validation"},
        "evaluation": {
            "scheme": setup.scheme,
            "runs": len(runs),
            "labelled_fraction": fraction,
            "runs_vary": _runs_vary(setup.refit, setup.fixed_test),
            "test": _test_name(len(runs), setup.fixed_test),
            "compared": list(compared_metrics),
            "confidence": stats.CONFIDENCE,
            "correction": "holm",
        },
        "warnings": warnings,
        "config": {
            **(description or {}),
            **dumped,
            "data": {
                **dumped["data"],
                "n_train": int(np.mean([r.n_train for r in runs])),
                "n_val": int(np.mean([r.n_val for r in runs])),
                "n_test": int(np.mean([r.n_test for r in runs])),
                **(
                    {"n_unlabelled": int(np.mean([r.n_unlabelled for r in runs])), "unlabelled_seconds": float(np.mean([r.unlabelled_seconds for r in runs]))}
                    if any(r.n_unlabelled for r in runs)
                    else {}
                ),
                **({"n_features": runs[0].n_features} if runs[0].n_features is not None else {}),
                **({"classes": list(classes)} if classes is not None else {}),
            },
        },
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}, torch {torch.__version__}",
        "versions": package_versions(),
        "date": datetime.date.today().isoformat(),
    }


def _classifier_summary(outputs: list[tuple], classes) -> dict:
    """A classifier's per-class metrics, reliability bins and confusion counts over the runs,
    from each run's test predictions (NO_ANSWER where it gave none), class probabilities and labels."""
    return {"per_class": per_class_metrics([(predicted, y) for predicted, _, y in outputs], classes), **prediction_summary(outputs)}


def _count_runs(names: list[str]) -> dict[str, int]:
    return {name: names.count(name) for name in dict.fromkeys(names)}


def _runs_vary(refit: bool, fixed_test: bool) -> str:
    """What differs between runs, for the reports' descriptions."""
    split = "train/validation split (the test file fixed)" if fixed_test else "split"
    return f"each run its own {split}, teacher fit and seed" if refit else f"each run its own {split} and seed, the same teacher"


def _test_name(n_runs: int, fixed_test: bool) -> str:
    if n_runs == 1:
        return "one split: McNemar's test (accuracy), paired bootstrap over test rows (other metrics)"
    if fixed_test:
        return "paired t-test over runs and the fixed test file's rows (corrected resampled variance of the runs plus the rows' variance)"
    return "corrected resampled t-test over runs (Nadeau & Bengio 2003)"


def _compare_with_controls(methods: dict, runs: list, metrics: tuple[str, ...], fixed_test: bool) -> None:
    """Fill each method's ``vs_control`` (metric -> comparison, Holm-corrected over the table) and
    its ``worse_than_control`` flag."""
    pending = []  # (method, metric, comparison)
    for name, entry in methods.items():
        control = entry["control"]
        if control is None:
            continue
        for metric in metrics:
            pending.append((name, metric, compare(metric, name, control, methods, runs, fixed_test)))
    corrected = stats.holm([c for _, _, c in pending])
    for (name, metric, _), comparison in zip(pending, corrected):
        methods[name].setdefault("vs_control", {})[metric] = comparison
    for entry in methods.values():
        entry["flags"]["worse_than_control"] = [
            metric for metric, c in entry.get("vs_control", {}).items() if c["significant"] and is_worse(metric, c["diff"])
        ]


def compare(metric: str, name: str, control: str, methods: dict, runs: list[RunResult], fixed_test: bool) -> dict:
    """Method ``name`` against ``control`` on ``metric``: paired over runs (over runs and test rows
    where every run scores the same test file), or within the one run (an accuracy by which test
    rows each got right, another metric over the class probabilities)."""
    if len(runs) > 1 and fixed_test:
        ratio = float(np.mean([r.n_val / r.n_train for r in runs]))
        return stats.fixed_test_paired_t(_row_values(metric, name, runs), _row_values(metric, control, runs), ratio)
    if len(runs) > 1:
        ratio = float(np.mean([r.n_test / r.n_train for r in runs]))
        return stats.corrected_paired_t(methods[name]["test"][metric]["values"], methods[control]["test"][metric]["values"], ratio)
    run = runs[0]
    if metric.endswith("accuracy"):
        return stats.mcnemar_test(run.correct[name], run.correct[control])
    return stats.paired_bootstrap(METRIC_FUNCTIONS[metric], run.y_test, run.probabilities[name], run.probabilities[control])


def _row_values(metric: str, name: str, runs: list[RunResult]) -> np.ndarray:
    """(R, N) each test row's contribution to ``metric`` of method ``name`` in each run: 1/0 for
    an accuracy, the negative log-probability of the true class for log loss."""
    if metric.endswith("accuracy"):
        return np.stack([run.correct[name] for run in runs]).astype(np.float64)
    if metric == "log_loss":
        return np.stack([_true_class_loss(run.y_test, run.probabilities[name]) for run in runs])
    raise ValueError(f"{metric} is not a mean over test rows; a fixed test file compares accuracy and log_loss")


def _true_class_loss(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(N,) negative log-probability of each row's true class, with scikit-learn's clipping."""
    return -np.log(np.clip(probs[np.arange(len(y)), y], np.finfo(probs.dtype).eps, None))


def fast_log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-probability of the true class (what scikit-learn's log_loss computes,
    with its clipping), without its input checks: a bootstrap calls it thousands of times."""
    return float(_true_class_loss(y, probs).mean())


METRIC_FUNCTIONS = {
    "log_loss": fast_log_loss,
    "roc_auc": lambda y, p: roc_auc_score(y, p[:, 1]),
    "macro_f1": lambda y, p: f1_score(y, p.argmax(1), average="macro", labels=list(range(p.shape[1])), zero_division=0),
    "ece": lambda y, p: expected_calibration_error(p, y),
}


def prediction_summary(outputs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """``calibration`` and ``confusion`` of a model's test predictions, and ``no_answer`` where it
    left some rows unanswered; ``outputs`` holds per run the (N,) predictions (NO_ANSWER where
    it gave none), the (N, K) class probabilities and the labels."""
    no_answer = sum(np.bincount(y[predicted == NO_ANSWER], minlength=probs.shape[1]) for predicted, probs, y in outputs)
    return {
        "calibration": calibration_summary(outputs),
        "confusion": confusion_counts(outputs),
        **({"no_answer": no_answer.tolist()} if no_answer.any() else {}),
    }


def calibration_summary(outputs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """Reliability bins of the predicted class's probability over the runs' test rows pooled, the
    ECE's bins (``ECE_BINS``): ``bin_edges``, and per bin the mean ``confidence``, the
    ``accuracy`` (None for an empty bin; an unanswered row is wrong) and the ``count``."""
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    counts, confidence_sums, correct_sums = np.zeros((3, ECE_BINS))
    for predicted, probs, y in outputs:
        confidence = probs.max(axis=1)
        # Right-closed bins, (lo, hi], as expected_calibration_error bins rows.
        bin_of_row = np.searchsorted(edges[1:-1], confidence, side="left")
        counts += np.bincount(bin_of_row, minlength=ECE_BINS)
        confidence_sums += np.bincount(bin_of_row, weights=confidence, minlength=ECE_BINS)
        correct_sums += np.bincount(bin_of_row, weights=predicted == y, minlength=ECE_BINS)
    return {
        "bin_edges": edges.tolist(),
        "confidence": [float(total / n) if n else None for total, n in zip(confidence_sums, counts)],
        "accuracy": [float(total / n) if n else None for total, n in zip(correct_sums, counts)],
        "count": counts.astype(int).tolist(),
    }


def confusion_counts(outputs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[list[int]]:
    """Answered test rows by true class (rows) and predicted class (columns), summed over runs."""
    classes = list(range(outputs[0][1].shape[1]))
    return sum(confusion_matrix(y, predicted, labels=classes) for predicted, _, y in outputs).tolist()


def package_versions() -> dict[str, str]:
    """The versions of what computed the results."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "stepdistill": metadata.version("stepdistill"),
    }


def divergence_lines(results: dict) -> list[str]:
    """A line for each method whose student diverged in some run: why (its first such run), and
    that its row is marked, not a result to read."""
    lines = []
    for name, entry in results["methods"].items():
        if reasons := [r for r in entry.get("divergence", []) if r]:
            lines.append(
                f"{name} diverged in {len(reasons)} of {len(entry['divergence'])} runs ({reasons[0]});"
                " its students stopped there and its row is marked DIVERGED, not a result"
            )
    return lines
