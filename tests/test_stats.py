"""The comparison statistics against hand computations, scipy and statsmodels."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from stepdistill.stats import (
    CONFIDENCE,
    MIN_REPEATS,
    corrected_paired_t,
    fixed_test_paired_t,
    holm,
    mcnemar_test,
    paired_bootstrap,
)

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import fixed_test_simulation  # noqa: E402

# Five repeats; differences d = [.02, .04, .01, .04, .01], mean .024, sample variance 2.3e-4.
VALUES = [0.82, 0.85, 0.80, 0.84, 0.83]
REFERENCE = [0.80, 0.81, 0.79, 0.80, 0.82]


def accuracy(y, probs):
    return float(np.mean(probs.argmax(axis=1) == y))


# ---------------------------------------------------------------- corrected_paired_t


def test_corrected_t_matches_the_formula():
    ratio = 0.25
    d = np.subtract(VALUES, REFERENCE)
    n = len(d)
    se = math.sqrt((1 / n + ratio) * d.var(ddof=1))
    t = d.mean() / se
    crit = sps.t.ppf(0.975, n - 1)

    result = corrected_paired_t(VALUES, REFERENCE, ratio)

    assert result["status"] == "ok" and result["n"] == 5
    assert result["diff"] == pytest.approx(0.024, abs=1e-12)
    assert result["p_value"] == pytest.approx(2 * sps.t.sf(abs(t), n - 1), rel=1e-12)
    assert result["ci_low"] == pytest.approx(d.mean() - crit * se, rel=1e-12)
    assert result["ci_high"] == pytest.approx(d.mean() + crit * se, rel=1e-12)
    # Literal values by hand: se = sqrt(0.45 * 2.3e-4) = 0.0101735, t = 2.35906 (4 df),
    # t_.975 = 2.776445: p = 0.07774, interval .024 ± .028246. Significant uncorrected (p = .024),
    # not after the correction.
    assert result["p_value"] == pytest.approx(0.0777416, abs=1e-6)
    assert result["ci_low"] == pytest.approx(-0.0042462, abs=1e-6)
    assert result["ci_high"] == pytest.approx(0.0522462, abs=1e-6)
    json.dumps(result)  # plain types only
    assert all(type(v) in (float, int, str) for v in result.values())


def test_corrected_t_is_wider_than_the_plain_paired_t():
    plain = sps.ttest_rel(VALUES, REFERENCE)
    plain_ci = plain.confidence_interval(CONFIDENCE)
    corrected = corrected_paired_t(VALUES, REFERENCE, test_train_ratio=1 / 4)

    # Same t quantile (4 df), standard error scaled by sqrt((1/5 + 1/4) / (1/5)) = 1.5.
    assert corrected["ci_high"] - corrected["ci_low"] == pytest.approx(1.5 * (plain_ci.high - plain_ci.low), rel=1e-12)
    assert corrected["ci_low"] < plain_ci.low and corrected["ci_high"] > plain_ci.high
    assert corrected["p_value"] > plain.pvalue
    assert plain.pvalue < 0.05 < corrected["p_value"]  # the correction changes the verdict here


def test_corrected_t_without_overlap_is_the_plain_paired_t():
    plain = sps.ttest_rel(VALUES, REFERENCE)
    plain_ci = plain.confidence_interval(CONFIDENCE)
    result = corrected_paired_t(VALUES, REFERENCE, test_train_ratio=0.0)

    assert result["p_value"] == pytest.approx(plain.pvalue, rel=1e-12)
    assert result["ci_low"] == pytest.approx(plain_ci.low, rel=1e-12)
    assert result["ci_high"] == pytest.approx(plain_ci.high, rel=1e-12)


def test_corrected_t_confidence_changes_the_width_only():
    wide = corrected_paired_t(VALUES, REFERENCE, 0.25, confidence=0.99)
    narrow = corrected_paired_t(VALUES, REFERENCE, 0.25, confidence=0.90)
    assert wide["ci_high"] - wide["ci_low"] > narrow["ci_high"] - narrow["ci_low"]
    assert wide["p_value"] == narrow["p_value"]


def test_two_repeats_are_too_few_and_never_significant():
    # The case: two repeats, both +.01.
    result = corrected_paired_t([0.81, 0.82], [0.80, 0.81], 0.25)
    assert MIN_REPEATS == 3
    assert result["status"] == "too few repeats"
    assert result["n"] == 2
    assert result["diff"] == pytest.approx(0.01)
    assert result["ci_low"] is None and result["ci_high"] is None and result["p_value"] is None

    [row] = holm([result])
    assert row["significant"] is False
    assert row["p_holm"] is None
    assert row["verdict"] == "too few repeats"


@pytest.mark.parametrize(
    "values, reference, diff",
    [
        ([0.5, 0.75, 0.25], [0.25, 0.5, 0.0], 0.25),  # differences exactly equal
        ([0.81, 0.82, 0.83], [0.80, 0.81, 0.82], 0.01),  # equal up to float rounding only
        ([0.51, 0.76, 0.26], [0.26, 0.510001, 0.009999], 0.25),  # equal up to 1e-6 of jitter: one rule
    ],
)
def test_equal_differences_have_no_spread_and_are_never_significant(values, reference, diff):
    result = corrected_paired_t(values, reference, 0.25)
    assert result["status"] == "no spread"
    assert result["diff"] == pytest.approx(diff)
    assert result["ci_low"] is None and result["ci_high"] is None and result["p_value"] is None

    [row] = holm([result])
    assert row["significant"] is False
    assert row["verdict"] == "no spread"


def test_corrected_t_rejects_bad_input():
    with pytest.raises(ValueError, match="got 3 and 2 values"):
        corrected_paired_t([0.1, 0.2, 0.3], [0.1, 0.2], 0.25)
    with pytest.raises(ValueError, match="NaN"):
        corrected_paired_t([0.1, float("nan"), 0.3], [0.1, 0.2, 0.3], 0.25)
    with pytest.raises(ValueError, match="test_train_ratio"):
        corrected_paired_t(VALUES, REFERENCE, -0.1)
    with pytest.raises(ValueError, match="empty"):
        corrected_paired_t([], [], 0.25)


# ---------------------------------------------------------------- fixed_test_paired_t


def test_fixed_test_t_matches_the_formula():
    rng = np.random.default_rng(3)
    values, reference = rng.random((4, 50)), rng.random((4, 50))
    result = fixed_test_paired_t(values, reference, 0.2)
    d = values - reference
    runs_part = (1 / 4 + 0.2) * d.mean(1).var(ddof=1)
    rows_part = d.mean(0).var(ddof=1) / 50
    df = (runs_part + rows_part) ** 2 / (runs_part**2 / 3 + rows_part**2 / 49)
    se = math.sqrt(runs_part + rows_part)
    assert result["diff"] == pytest.approx(d.mean())
    assert result["p_value"] == pytest.approx(2 * sps.t(df).sf(abs(d.mean()) / se))
    assert result["ci_high"] - result["ci_low"] == pytest.approx(2 * sps.t(df).ppf(0.975) * se)
    assert (result["n"], result["n_rows"], result["status"]) == (4, 50, "ok")


def test_fixed_test_t_has_no_spread_only_when_neither_runs_nor_rows_vary():
    same = np.tile([1.0, 0.0, 1.0, 1.0], (3, 1))
    assert fixed_test_paired_t(same, same, 0.1)["status"] == "no spread"
    # The runs agree exactly, yet the rows differ: the test file's own variance is still there.
    rows_differ = fixed_test_paired_t(same, np.tile([0.0, 0.0, 1.0, 0.0], (3, 1)), 0.1)
    assert rows_differ["status"] == "ok" and rows_differ["ci_low"] < 0.5 < rows_differ["ci_high"]
    assert fixed_test_paired_t(same[:2], same[:2], 0.1)["status"] == "too few repeats"


def test_fixed_test_t_rejects_bad_input():
    with pytest.raises(ValueError, match="both be"):
        fixed_test_paired_t(np.zeros((3, 4)), np.zeros((3, 5)), 0.1)
    with pytest.raises(ValueError, match="finite"):
        fixed_test_paired_t(np.full((3, 4), np.nan), np.zeros((3, 4)), 0.1)
    with pytest.raises(ValueError, match="holdout_train_ratio"):
        fixed_test_paired_t(np.zeros((3, 4)), np.zeros((3, 4)), -1.0)


@pytest.mark.parametrize("n_runs", [3, 5])
def test_over_a_fixed_test_file_no_difference_is_found_at_the_nominal_rate_and_a_real_one_is(n_runs):
    for runs, n_rows, run_sd, rng in fixed_test_simulation.settings():
        if runs != n_runs:
            continue
        false_positives, repeats_only = fixed_test_simulation.simulated_rejections(n_runs, n_rows, run_sd, 0.0, rng)
        assert false_positives <= 0.07, (n_rows, run_sd, false_positives)
        assert repeats_only > 0.10  # the runs' variance alone misses the shared test draw
        power, _ = fixed_test_simulation.simulated_rejections(n_runs, n_rows, run_sd, fixed_test_simulation.SHIFT_IN_ROW_SDS, rng, n_comparisons=500)
        assert power > 0.5, (n_rows, run_sd, power)


# ---------------------------------------------------------------- holm


def test_holm_hand_example():
    rows = holm([{"p_value": 0.01, "status": "ok"}, {"p_value": 0.04, "status": "ok"}, {"p_value": 0.03, "status": "ok"}])
    # Sorted .01, .03, .04 times 3, 2, 1 -> .03, .06, .04, made monotone -> .03, .06, .06.
    assert [r["p_holm"] for r in rows] == pytest.approx([0.03, 0.06, 0.06])
    assert [r["significant"] for r in rows] == [True, False, False]
    assert [r["verdict"] for r in rows] == ["difference", "no detectable difference", "no detectable difference"]
    assert [r["p_value"] for r in rows] == [0.01, 0.04, 0.03]  # input order and fields kept


def test_holm_matches_statsmodels_and_passes_none_through():
    p_values = [0.2, None, 0.001, 0.04, None, 0.012, 0.5]
    comparisons = [
        {"name": f"m{i}", "p_value": p, "status": "ok" if p is not None else ("too few repeats" if i == 1 else "no spread")}
        for i, p in enumerate(p_values)
    ]
    rows = holm(comparisons, alpha=0.05)

    tested = [p for p in p_values if p is not None]
    reject, expected, _, _ = multipletests(tested, alpha=0.05, method="holm")
    got = [r["p_holm"] for r in rows if r["p_value"] is not None]
    assert got == pytest.approx(expected.tolist(), rel=1e-12)
    assert [r["significant"] for r in rows if r["p_value"] is not None] == reject.tolist()
    assert [r["name"] for r in rows] == [c["name"] for c in comparisons]
    assert rows[1]["p_holm"] is None and rows[1]["significant"] is False and rows[1]["verdict"] == "too few repeats"
    assert rows[4]["p_holm"] is None and rows[4]["significant"] is False and rows[4]["verdict"] == "no spread"
    assert comparisons[0].keys() == {"name", "p_value", "status"}  # inputs not modified
    json.dumps(rows)


def test_holm_edge_cases():
    assert holm([]) == []
    with pytest.raises(ValueError, match="p_value"):
        holm([{"diff": 0.1}])
    with pytest.raises(ValueError, match="outside"):
        holm([{"p_value": 1.5, "status": "ok"}])


# ---------------------------------------------------------------- mcnemar_test


def test_mcnemar_exact_hand_example():
    # 100 rows: 80 both right, 9 only the method right, 1 only the reference right, 10 both wrong.
    correct = np.array([True] * 80 + [True] * 9 + [False] * 1 + [False] * 10)
    reference = np.array([True] * 80 + [False] * 9 + [True] * 1 + [False] * 10)
    result = mcnemar_test(correct, reference)

    # Exact binomial: 2 * P(X <= 1 | n=10, p=.5) = 2 * 11 / 1024.
    assert result["p_value"] == pytest.approx(0.021484375, rel=1e-12)
    assert result["n_discordant"] == 10
    assert result["diff"] == pytest.approx(0.89 - 0.81)
    assert result["status"] == "ok"
    json.dumps(result)


def test_mcnemar_chi_square_above_25_discordant():
    # 30 vs 10 discordant: chi-square with continuity correction, (|30-10| - 1)^2 / 40 on 1 df.
    correct = np.array([1] * 30 + [0] * 10 + [1] * 60)
    reference = np.array([0] * 30 + [1] * 10 + [1] * 60)
    result = mcnemar_test(correct, reference)
    assert result["n_discordant"] == 40
    assert result["p_value"] == pytest.approx(sps.chi2.sf(19**2 / 40, 1), rel=1e-12)


def test_mcnemar_without_discordant_rows():
    correct = np.array([True, False, True, True])
    result = mcnemar_test(correct, correct.copy())
    assert result == {"diff": 0.0, "p_value": 1.0, "n_discordant": 0, "status": "no spread"}
    [row] = holm([result])
    assert row["significant"] is False and row["verdict"] == "no spread"


def test_mcnemar_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="test row by test row"):
        mcnemar_test(np.ones(5, dtype=bool), np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_test(np.array([0, 2]), np.array([0, 1]))


# ---------------------------------------------------------------- paired_bootstrap


def _probs_from_correct(y, correct):
    """(N, 2) probabilities that put .8 on the true class where correct, else on the other one."""
    predicted = np.where(correct, y, 1 - y)
    probs = np.full((len(y), 2), 0.2)
    probs[np.arange(len(y)), predicted] = 0.8
    return probs


def test_bootstrap_identical_classifiers():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=500)
    probs = _probs_from_correct(y, rng.random(500) < 0.8)
    result = paired_bootstrap(accuracy, y, probs, probs.copy(), n_resamples=300)
    assert result == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0, "n": 500, "status": "ok"}


def test_bootstrap_clearly_better_classifier_excludes_zero():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=2000)
    better = _probs_from_correct(y, rng.random(2000) < 0.85)
    worse = _probs_from_correct(y, rng.random(2000) < 0.75)
    result = paired_bootstrap(accuracy, y, better, worse, n_resamples=500)

    assert result["diff"] == pytest.approx(accuracy(y, better) - accuracy(y, worse))
    assert result["diff"] > 0.05
    assert 0 < result["ci_low"] < result["diff"] < result["ci_high"]
    assert result["p_value"] < 0.01
    assert result["n"] == 2000 and result["status"] == "ok"
    json.dumps(result)

    swapped = paired_bootstrap(accuracy, y, worse, better, n_resamples=500)
    assert swapped["ci_high"] < 0
    assert swapped["ci_low"] == pytest.approx(-result["ci_high"])


def test_bootstrap_is_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=300)
    a = _probs_from_correct(y, rng.random(300) < 0.8)
    b = _probs_from_correct(y, rng.random(300) < 0.78)
    first = paired_bootstrap(accuracy, y, a, b, n_resamples=200, seed=7)
    assert paired_bootstrap(accuracy, y, a, b, n_resamples=200, seed=7) == first
    assert paired_bootstrap(accuracy, y, a, b, n_resamples=200, seed=8) != first


def test_bootstrap_drops_failed_resamples_and_raises_when_most_fail():
    from sklearn.metrics import roc_auc_score

    # One positive in ten rows: about (0.9)^10 = 35% of resamples lack it, where ROC AUC is undefined.
    y = np.array([1] + [0] * 9)
    rng = np.random.default_rng(4)
    probs = rng.dirichlet([1, 1], size=10)
    reference = rng.dirichlet([1, 1], size=10)
    auc = lambda y, p: roc_auc_score(y, p[:, 1])  # noqa: E731
    result = paired_bootstrap(auc, y, probs, reference, n_resamples=100)
    assert math.isfinite(result["ci_low"]) and math.isfinite(result["ci_high"])

    # A metric defined only on exactly balanced rows: the full rows are, ~92% of resamples are not.
    def balanced_only(y, p):
        if y.mean() != 0.5:
            raise ValueError("undefined")
        return accuracy(y, p)

    y = np.array([1, 0] * 50)
    probs = _probs_from_correct(y, np.ones(100, dtype=bool))
    with pytest.raises(ValueError, match="failed on"):
        paired_bootstrap(balanced_only, y, probs, probs, n_resamples=50)


def test_bootstrap_rejects_mismatched_rows():
    y = np.zeros(10, dtype=int)
    with pytest.raises(ValueError, match="same test rows"):
        paired_bootstrap(accuracy, y, np.ones((10, 2)) / 2, np.ones((9, 2)) / 2)
    with pytest.raises(ValueError, match="same test rows"):
        paired_bootstrap(accuracy, y[:8], np.ones((10, 2)) / 2, np.ones((10, 2)) / 2)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        paired_bootstrap(accuracy, y, np.ones(10), np.ones(10))


def test_the_bootstraps_log_loss_is_scikit_learns():
    from sklearn.metrics import log_loss

    from stepdistill.experiment.summary import fast_log_loss

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=200)
    probs[0] = [1.0, 0.0, 0.0]
    y = rng.integers(0, 3, size=200)
    y[0] = 1  # a zero probability on the true class: clipped by both
    assert fast_log_loss(y, probs) == pytest.approx(log_loss(y, probs, labels=[0, 1, 2]), rel=1e-9)
