"""Test metrics for classifiers given as logits, and their mean ± std over runs.

Logits have shape (N, K): K == 1 is binary with a single logit for class 1, K >= 3 is
multi-class with softmax. Labels are (N,) int64 class indices.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_recall_fscore_support, roc_auc_score

from stepdistill.errors import StepDistillError

# Metrics where lower is better; the others are better higher.
LOWER_IS_BETTER = frozenset({"log_loss", "ece"})

# A model's prediction for a row it gave no answer for (an LLM teacher's unparsed label): a class
# index no label has, so that it counts as wrong everywhere a prediction is compared with a label.
NO_ANSWER = -1

# Equal-width confidence bins of the expected calibration error, the one ECE the results report
# (the table's, and the reliability diagrams' bins).
ECE_BINS = 10


def is_worse(metric: str, diff: float) -> bool:
    """Whether a change of ``metric`` by ``diff`` is for the worse."""
    return diff > 0 if metric in LOWER_IS_BETTER else diff < 0


def _as_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def class_probabilities(logits: torch.Tensor) -> np.ndarray:
    """(N, C) float64 class probabilities: C = 2 for a single binary logit, else C = K.

    Computed in log space and in float64 so that confident logits give probabilities
    that are exactly 0 or 1 rather than NaN, and log loss is not distorted by rounding.
    """
    logits = logits.detach().cpu().to(torch.float64)
    if logits.shape[1] == 1:
        log_probs = torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=1)
    else:
        log_probs = F.log_softmax(logits, dim=1)
    return log_probs.exp().numpy()


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """(N,) int64 predicted classes: logit > 0 for a single binary logit, else argmax."""
    logits = logits.detach()
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).to(torch.int64)
    return logits.argmax(dim=1)


def predictions(logits: torch.Tensor, answered: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """(N,) int64 predicted classes, ``NO_ANSWER`` where ``answered`` (N,) bool is False."""
    predicted = predicted_classes(logits).cpu().numpy()
    return predicted if answered is None else np.where(_as_numpy(answered), predicted, NO_ANSWER)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS, predicted: np.ndarray | None = None) -> float:
    """Top-label expected calibration error over ``n_bins`` equal-width confidence bins.

    Bins are right-closed, (lo, hi], so a confidence of exactly 1 falls in the last bin.
    ECE = sum over bins of (bin count / N) * |accuracy(bin) - mean confidence(bin)|, a row
    correct when ``predicted`` (default: the most probable class) is its label.
    """
    probs = np.asarray(probs)
    confidence = probs.max(axis=1)
    predicted = probs.argmax(axis=1) if predicted is None else predicted
    correct = (predicted == np.asarray(y)).astype(np.float64)
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    bin_of_sample = np.searchsorted(inner_edges, confidence, side="left")

    ece = 0.0
    for bin_index in np.unique(bin_of_sample):
        in_bin = bin_of_sample == bin_index
        gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
        ece += in_bin.mean() * gap
    return float(ece)


def classification_metrics(
    logits: torch.Tensor,
    y: torch.Tensor | np.ndarray,
    reference_pred: torch.Tensor | np.ndarray | None = None,
    answered: torch.Tensor | np.ndarray | None = None,
) -> dict[str, float]:
    """Accuracy, log loss, ROC AUC (binary) or macro F1 (multi-class), ECE, and fidelity.

    ``fidelity`` is reported only when ``reference_pred`` (the teacher's predictions, NO_ANSWER
    where it gave none) is given: the share of samples where this model predicts the same class.
    ``answered`` (N,) bool: the rows the model answered (an LLM teacher's parsed labels); an
    unanswered row is a wrong prediction in accuracy, F1, ECE and fidelity, whatever its logits
    (log loss and ROC AUC read the probabilities, a uniform row's for an unparsed label), and
    ``coverage``, the share answered, is reported.
    """
    labels = _as_numpy(y)
    probs = class_probabilities(logits)
    pred = predictions(logits, answered)
    n_classes = probs.shape[1]

    metrics = {
        "accuracy": float(accuracy_score(labels, pred)),
        "log_loss": float(log_loss(labels, probs, labels=list(range(n_classes)))),
    }
    if n_classes == 2:
        if np.unique(labels).size < 2:
            raise StepDistillError(
                "ROC AUC needs both classes in the evaluation labels, but only one is present; "
                "use a larger or stratified test split."
            )
        metrics["roc_auc"] = float(roc_auc_score(labels, probs[:, 1]))
    else:
        # zero_division=0: a class never predicted (or never present) counts as F1 0, not skipped.
        metrics["macro_f1"] = float(f1_score(labels, pred, average="macro", labels=list(range(n_classes)), zero_division=0))
    metrics["ece"] = expected_calibration_error(probs, labels, predicted=pred)
    if answered is not None:
        metrics["coverage"] = float(np.mean(_as_numpy(answered)))
    if reference_pred is not None:
        metrics["fidelity"] = float(np.mean(pred == _as_numpy(reference_pred)))
    return metrics


def selection_metrics(logits: torch.Tensor, y: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Accuracy and log loss: what a validation split chooses by (``tune.metric``, the chosen
    method), defined on however few labelled rows it has, of whichever classes."""
    labels = _as_numpy(y)
    probs = class_probabilities(logits)
    return {
        "accuracy": float(np.mean(predictions(logits) == labels)),
        "log_loss": float(log_loss(labels, probs, labels=list(range(probs.shape[1])))),
    }


def summarize(values: list[float]) -> dict:
    """``{"mean", "std", "values"}`` as plain floats; std is the sample std (ddof=1), 0 for one value."""
    if not values:
        raise ValueError("summarize needs at least one value")
    as_floats = [float(v) for v in values]
    std = float(np.std(as_floats, ddof=1)) if len(as_floats) > 1 else 0.0
    return {"mean": float(np.mean(as_floats)), "std": std, "values": as_floats}


def summarize_runs(runs: list[dict[str, float]]) -> dict[str, dict]:
    """Per metric, the summary over runs (one metrics dict per seed, all with the same keys)."""
    if not runs:
        raise ValueError("summarize_runs needs at least one run")
    return {name: summarize([run[name] for run in runs]) for name in runs[0]}


def count_parameters(module: torch.nn.Module) -> int:
    """Number of scalar parameters in ``module``, trainable or not."""
    return sum(parameter.numel() for parameter in module.parameters())


def per_class_metrics(runs: list[tuple[np.ndarray, np.ndarray]], classes: tuple[str, ...]) -> dict[str, dict]:
    """Precision, recall and F1 of each class, summarized over runs (each run's test predictions,
    NO_ANSWER a miss, and labels), with the class's support per run (the mean, rounded)."""
    labels = list(range(len(classes)))
    scores = [precision_recall_fscore_support(np.asarray(y), predicted, labels=labels, zero_division=0) for predicted, y in runs]
    return {
        name: {
            "precision": summarize([float(p[c]) for p, _, _, _ in scores]),
            "recall": summarize([float(r[c]) for _, r, _, _ in scores]),
            "f1": summarize([float(f[c]) for _, _, f, _ in scores]),
            "support": int(round(float(np.mean([s[c] for _, _, _, s in scores])))),
        }
        for c, name in enumerate(classes)
    }
