import json
import math

import numpy as np
import pytest
import torch

from stepdistill.evaluate import (
    class_probabilities,
    classification_metrics,
    count_parameters,
    expected_calibration_error,
    predicted_classes,
    predictions,
    summarize,
    summarize_runs,
)


def logits_from_probabilities(rows: list[list[float]]) -> torch.Tensor:
    """Log-probabilities are valid softmax logits that give back exactly these probabilities."""
    return torch.tensor(rows, dtype=torch.float64).log()


def test_binary_probabilities_have_two_columns():
    probs = class_probabilities(torch.tensor([[0.0], [math.log(3.0)]]))
    np.testing.assert_allclose(probs, [[0.5, 0.5], [0.25, 0.75]], atol=1e-7)


def test_multiclass_probabilities_are_softmax():
    probs = class_probabilities(torch.tensor([[0.0, 0.0, 0.0], [0.0, math.log(2.0), math.log(5.0)]]))
    np.testing.assert_allclose(probs, [[1 / 3, 1 / 3, 1 / 3], [0.125, 0.25, 0.625]], atol=1e-7)


def test_probabilities_stay_finite_for_extreme_logits():
    binary = class_probabilities(torch.tensor([[1000.0], [-1000.0]]))
    multiclass = class_probabilities(torch.tensor([[1000.0, 0.0, -1000.0]]))
    np.testing.assert_array_equal(binary, [[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_array_equal(multiclass, [[1.0, 0.0, 0.0]])


def test_predicted_classes():
    binary = predicted_classes(torch.tensor([[-1.0], [0.0], [2.0]]))
    multiclass = predicted_classes(torch.tensor([[0.1, 3.0, 0.2], [5.0, 0.0, 1.0]]))
    assert binary.dtype == torch.int64 and binary.tolist() == [0, 0, 1]
    assert multiclass.dtype == torch.int64 and multiclass.tolist() == [1, 0]


def test_ece_two_bins_by_hand():
    probs = np.array([
        [0.40, 0.30, 0.30],  # confidence 0.40, predicts 0, correct
        [0.35, 0.45, 0.20],  # confidence 0.45, predicts 1, wrong
        [0.90, 0.05, 0.05],  # confidence 0.90, predicts 0, correct
        [0.10, 0.20, 0.70],  # confidence 0.70, predicts 2, wrong
    ])
    y = np.array([0, 0, 0, 1])
    # bin (0, 0.5]: accuracy 0.5, confidence 0.425; bin (0.5, 1]: accuracy 0.5, confidence 0.8
    expected = 0.5 * abs(0.5 - 0.425) + 0.5 * abs(0.5 - 0.8)
    assert expected_calibration_error(probs, y, n_bins=2) == pytest.approx(expected)  # 0.1875


def test_ece_is_zero_when_confidence_matches_accuracy():
    probs = np.array([[0.25, 0.75]] * 4)
    y = np.array([1, 1, 1, 0])
    assert expected_calibration_error(probs, y) == pytest.approx(0.0)


def test_binary_metrics_by_hand():
    third = math.log(3.0)
    logits = torch.tensor([[third], [-third], [third], [0.0]])  # p(1) = 0.75, 0.25, 0.75, 0.5
    y = torch.tensor([1, 0, 0, 1])
    metrics = classification_metrics(logits, y, reference_pred=torch.tensor([1, 1, 1, 1]))

    assert set(metrics) == {"accuracy", "log_loss", "roc_auc", "ece", "fidelity"}
    assert metrics["accuracy"] == pytest.approx(0.5)  # predictions 1, 0, 1, 0
    assert metrics["log_loss"] == pytest.approx(
        -(math.log(0.75) + math.log(0.75) + math.log(0.25) + math.log(0.5)) / 4)
    # positive/negative score pairs: (.75,.25) 1, (.75,.75) 0.5, (.5,.25) 1, (.5,.75) 0
    assert metrics["roc_auc"] == pytest.approx(2.5 / 4)
    # confidence 0.75 bin: accuracy 2/3 over 3 samples; confidence 0.5 bin: accuracy 0
    assert metrics["ece"] == pytest.approx(0.75 * abs(2 / 3 - 0.75) + 0.25 * 0.5)
    assert metrics["fidelity"] == pytest.approx(0.5)


def test_multiclass_metrics_by_hand():
    logits = logits_from_probabilities([
        [0.70, 0.20, 0.10],  # predicts 0, y 0
        [0.10, 0.62, 0.28],  # predicts 1, y 2
        [0.15, 0.20, 0.65],  # predicts 2, y 2
    ])
    y = np.array([0, 2, 2])
    metrics = classification_metrics(logits, y)

    assert set(metrics) == {"accuracy", "log_loss", "macro_f1", "ece"}
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["log_loss"] == pytest.approx(-(math.log(0.7) + math.log(0.28) + math.log(0.65)) / 3)
    # F1 per class: 0 -> 1, 1 -> 0 (predicted once, never true), 2 -> 2/3 (precision 1, recall 1/2)
    assert metrics["macro_f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    # one bin of the ten, (0.6, 0.7]: confidence (0.70 + 0.62 + 0.65) / 3, accuracy 2/3
    assert metrics["ece"] == pytest.approx(abs(2 / 3 - (0.70 + 0.62 + 0.65) / 3))


def test_an_unanswered_row_is_a_miss_whatever_its_logits_and_coverage_says_how_many():
    # Uniform rows (an LLM's unparsed label) predict class 0 by argmax: once unanswered, they miss.
    logits = logits_from_probabilities([[1 / 3] * 3, [1 / 3] * 3, [0.1, 0.8, 0.1], [0.8, 0.1, 0.1]])
    y = np.array([0, 0, 1, 0])
    answered = np.array([False, False, True, True])
    assert classification_metrics(logits, y)["accuracy"] == 1.0
    metrics = classification_metrics(logits, y, answered=answered)
    assert metrics["accuracy"] == 0.5 and metrics["coverage"] == 0.5
    assert classification_metrics(logits, y, reference_pred=predictions(logits, answered))["fidelity"] == 0.5


def test_fidelity_counts_agreement_with_reference():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    metrics = classification_metrics(logits, torch.tensor([0, 1, 2, 0]), reference_pred=np.array([0, 1, 1, 1]))
    assert metrics["fidelity"] == pytest.approx(0.5)
    assert metrics["accuracy"] == pytest.approx(1.0)


def test_summarize_uses_sample_std():
    summary = summarize([1.0, 2.0, 3.0, 4.0])
    assert summary["mean"] == pytest.approx(2.5)
    assert summary["std"] == pytest.approx(math.sqrt(5 / 3))
    assert summary["values"] == [1.0, 2.0, 3.0, 4.0]


def test_summarize_single_value_has_zero_std_and_is_json_ready():
    summary = summarize([np.float32(0.25)])
    assert summary == {"mean": 0.25, "std": 0.0, "values": [0.25]}
    assert json.loads(json.dumps(summary)) == summary


def test_summarize_runs_per_metric():
    runs = [{"accuracy": 0.8, "ece": 0.1}, {"accuracy": 0.9, "ece": 0.3}]
    summary = summarize_runs(runs)
    assert set(summary) == {"accuracy", "ece"}
    assert summary["accuracy"]["mean"] == pytest.approx(0.85)
    assert summary["ece"]["std"] == pytest.approx(math.sqrt(0.02))
    assert summary["ece"]["values"] == [0.1, 0.3]


def test_count_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    assert count_parameters(model) == (3 * 4 + 4) + (4 * 1 + 1)
