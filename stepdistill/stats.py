"""Statistics that compare two methods' test metrics, and when each one applies.

Which test depends on what the repeats vary, because a test only covers the sources of
randomness that its samples actually vary:

* Repeats that vary the split (repeated holdout, repeated k-fold), each repeat refitting
  everything -> :func:`corrected_paired_t`. One metric per repeat and method, paired by repeat.
  Its spread covers the split (which rows are train and test), the teacher refit, the student's
  init and batch order. The repeats' training sets overlap, so the differences are positively
  correlated and the plain paired t-test is far too confident; the corrected resampled t-test of
  Nadeau & Bengio (2003) inflates the variance by ``n_test / n_train`` to account for that.
* Several repeats over one fixed test file (``data.test_path``, the text presets, every
  ``lm-train`` run), each repeat redrawing the train/validation split and refitting ->
  :func:`fixed_test_paired_t`. The test rows are one draw shared by every repeat, so the spread
  between repeats never sees which rows happened to be in the test file; their paired
  differences row by row carry that variance, and it is added to the repeats' variance.
* One split, both classifiers scored on the SAME test rows -> :func:`mcnemar_test` for
  accuracy (the discordant rows) and :func:`paired_bootstrap` over the test rows for any other
  metric (log loss, ROC AUC, F1, ...). These cover test-row sampling only: they say nothing about
  whether another split, teacher refit or seed would give the same ranking.
* Several comparisons in one table (every method against the reference) -> :func:`holm`,
  Holm's step-down correction, so that "significant" keeps its meaning across the table.

Fewer than :data:`MIN_REPEATS` repeats, or repeats whose differences do not vary at all, give no
significance claim: the result says so in ``status`` instead of reporting a p-value.

All returned dicts hold plain ``float``/``int``/``str``/``bool``/``None`` so they serialize to JSON.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from stepdistill.errors import StepDistillError

MIN_REPEATS = 3  # below this, no significance claim
CONFIDENCE = 0.95

# McNemar: exact binomial test below this many discordant pairs, chi-square above (the usual rule;
# the chi-square approximation is poor for small counts).
_EXACT_BELOW = 25

# Differences whose standard deviation is below this share of the metrics' magnitude count as
# constant: no interval and no p-value (status "no spread"). One rule for an exact constant and a
# constant plus rounding noise or jitter, which would otherwise get an absurdly small p-value: a
# spread below the precision the reports print cannot be told from numerical noise. At worst the
# rule withholds a claim; it never makes one.
NO_SPREAD_RTOL = 1e-4

_VERDICT_BY_STATUS = {"too few repeats": "too few repeats", "no spread": "no spread"}


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise StepDistillError(f"confidence must be in (0, 1), got {confidence!r}")


def _as_vector(values, name: str) -> np.ndarray:
    """(J,) finite float64 array from a sequence, or a clear error."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise StepDistillError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise StepDistillError(f"{name} contains NaN or infinite values: {array.tolist()}")
    return array


def _check_pairs(a: np.ndarray, b: np.ndarray, names: str, unit: str) -> None:
    """Raise unless ``a`` and ``b`` pair up one ``unit`` (repeat, test row) to one, and have any."""
    if a.shape != b.shape:
        raise StepDistillError(f"{names} must pair up {unit} by {unit}, got {len(a)} and {len(b)} values")
    if len(a) == 0:
        raise StepDistillError(f"{names} are empty: there is no {unit} to compare")


def _no_spread(differences: np.ndarray, values: np.ndarray, reference: np.ndarray) -> bool:
    """True when the differences' standard deviation is below NO_SPREAD_RTOL of the metrics'
    magnitude (at least 1)."""
    scale = max(1.0, float(np.max(np.abs(values))), float(np.max(np.abs(reference))))
    return float(np.std(differences, ddof=1)) < NO_SPREAD_RTOL * scale


def _t_result(result: dict, standard_error: float, df: float, confidence: float) -> dict:
    """``result`` with the interval and two-sided p-value of its ``diff`` under a t distribution."""
    half_width = float(sps.t.ppf(0.5 + confidence / 2, df)) * standard_error
    return {
        **result,
        "ci_low": result["diff"] - half_width,
        "ci_high": result["diff"] + half_width,
        "p_value": float(2 * sps.t.sf(abs(result["diff"] / standard_error), df)),
        "status": "ok",
    }


def corrected_paired_t(
    values: Sequence[float] | np.ndarray,
    reference: Sequence[float] | np.ndarray,
    test_train_ratio: float,
    confidence: float = CONFIDENCE,
) -> dict:
    """Paired comparison over repeats with the corrected resampled t-test (Nadeau & Bengio, 2003).

    ``values``, ``reference``: (J,) one metric per repeat for the method and the reference, paired
    by repeat (same split, same repeat index). Differences ``d_j = values_j - reference_j``; the
    variance of their mean is corrected to ``(1/J + n_test/n_train) * s^2`` (``s^2`` the sample
    variance of ``d``, ddof=1) and compared to a t distribution with ``J - 1`` degrees of freedom.
    The correction accounts for training sets that overlap between repeats; with
    ``test_train_ratio = 0`` this is the plain paired t-test. For k-fold, ``n_test/n_train`` is
    ``1/(k-1)``.

    Returns ``{"diff", "ci_low", "ci_high", "p_value", "n", "status"}``: ``diff`` the mean
    difference, ``n`` = J, ``status`` one of

    * ``"ok"``: J >= MIN_REPEATS and the differences vary;
    * ``"too few repeats"``: J < MIN_REPEATS; ci_low, ci_high and p_value are None;
    * ``"no spread"``: the differences' standard deviation is below NO_SPREAD_RTOL of the metrics'
      magnitude, so no interval can be estimated; ci_low, ci_high and p_value are None (never a
      near-zero-width interval called significant).
    """
    values = _as_vector(values, "values")
    reference = _as_vector(reference, "reference")
    _check_pairs(values, reference, "values and reference", "repeat")
    if not (math.isfinite(test_train_ratio) and test_train_ratio >= 0):
        raise StepDistillError(f"test_train_ratio must be a finite number >= 0, got {test_train_ratio!r}")
    _check_confidence(confidence)

    differences = values - reference
    n = len(differences)
    result = {"diff": float(differences.mean()), "ci_low": None, "ci_high": None, "p_value": None, "n": n}
    if n < MIN_REPEATS:
        return {**result, "status": "too few repeats"}
    if _no_spread(differences, values, reference):
        return {**result, "status": "no spread"}

    standard_error = math.sqrt((1.0 / n + test_train_ratio) * float(differences.var(ddof=1)))
    return _t_result(result, standard_error, n - 1, confidence)


def fixed_test_paired_t(
    row_values: np.ndarray,
    row_reference: np.ndarray,
    holdout_train_ratio: float,
    confidence: float = CONFIDENCE,
) -> dict:
    """Paired comparison over repeats that all score the SAME test rows (a fixed test file).

    ``row_values``, ``row_reference``: (R, N) each test row's contribution to the metric (1/0 for
    accuracy, the negative log-probability of the true class for log loss) in each of R repeats,
    for the method and the reference; the metric is their mean over rows. With
    ``d[r, i] = row_values - row_reference``, the difference is ``mean(d)`` and its variance

        (1/R + n_holdout/n_train) * var_r(mean_i d[r, i])  +  var_i(mean_r d[r, i]) / N

    The first term is the corrected resampled t-test's (Nadeau & Bengio, 2003) over what the
    repeats redraw (the train/validation split, the teacher refit, the seed; ``n_holdout`` the rows
    each repeat leaves out of training, its validation split); the second is the paired test-row
    variance that every repeat shares, the term a fixed test file adds (the two-way decomposition of
    Bouthillier et al., 2021, "Accounting for variance in machine learning benchmarks"). Degrees of
    freedom by Welch-Satterthwaite from R - 1 and N - 1. Simulated with a true difference of 0 over
    500 to 2,000 test rows and 3 or 5 repeats, it rejects at most at the nominal rate
    (``tests/test_stats.py``), where the repeats' variance alone rejects up to half the time.

    Returns ``{"diff", "ci_low", "ci_high", "p_value", "n": R, "n_rows": N, "status"}`` with
    status as :func:`corrected_paired_t`'s: ``"too few repeats"`` below MIN_REPEATS, ``"no spread"``
    when neither the repeats' nor the rows' differences vary (NO_SPREAD_RTOL), else ``"ok"``.
    """
    values, reference = np.asarray(row_values, dtype=np.float64), np.asarray(row_reference, dtype=np.float64)
    if values.ndim != 2 or values.shape != reference.shape:
        raise StepDistillError(f"row_values and row_reference must both be (repeats, test rows), got shapes {values.shape} and {reference.shape}")
    if values.size == 0:
        raise StepDistillError("row_values and row_reference are empty: there is no test row to compare")
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(reference))):
        raise StepDistillError("row_values and row_reference must be finite")
    if not (math.isfinite(holdout_train_ratio) and holdout_train_ratio >= 0):
        raise StepDistillError(f"holdout_train_ratio must be a finite number >= 0, got {holdout_train_ratio!r}")
    _check_confidence(confidence)

    differences = values - reference
    n_runs, n_rows = differences.shape
    by_run, by_row = differences.mean(axis=1), differences.mean(axis=0)
    result = {"diff": float(differences.mean()), "ci_low": None, "ci_high": None, "p_value": None, "n": n_runs, "n_rows": n_rows}
    if n_runs < MIN_REPEATS:
        return {**result, "status": "too few repeats"}
    if _no_spread(by_run, values, reference) and (n_rows < 2 or _no_spread(by_row, values, reference)):
        return {**result, "status": "no spread"}
    runs_part = (1.0 / n_runs + holdout_train_ratio) * float(by_run.var(ddof=1))
    rows_part = float(by_row.var(ddof=1)) / n_rows if n_rows > 1 else 0.0
    terms = [(runs_part, n_runs - 1), (rows_part, n_rows - 1)]
    df = (runs_part + rows_part) ** 2 / sum(part**2 / dof for part, dof in terms if part > 0)
    return _t_result(result, math.sqrt(runs_part + rows_part), df, confidence)


def _verdict(status: str, significant: bool) -> str:
    """The table's word for a comparison: an untested status, or the outcome of the test."""
    if status in _VERDICT_BY_STATUS:
        return _VERDICT_BY_STATUS[status]
    return "difference" if significant else "no detectable difference"


def holm(comparisons: list[dict], alpha: float = 1 - CONFIDENCE) -> list[dict]:
    """Holm's step-down correction over the comparisons of one table.

    ``comparisons``: dicts as returned by the tests of this module (at least ``"p_value"``,
    optionally ``"status"``). Only those whose p_value is not None form the family that is
    corrected (via statsmodels ``multipletests(method="holm")``).

    Returns new dicts in the input order, each a copy of its input plus

    * ``"p_holm"``: the Holm-adjusted p-value (None where p_value is None);
    * ``"significant"``: ``p_holm < alpha`` (False where p_value is None);
    * ``"verdict"``: ``"too few repeats"`` | ``"no spread"`` (from the status) | ``"difference"``
      (significant) | ``"no detectable difference"`` (tested, not significant).
    """
    if not 0.0 < alpha < 1.0:
        raise StepDistillError(f"alpha must be in (0, 1), got {alpha!r}")
    for position, comparison in enumerate(comparisons):
        if "p_value" not in comparison:
            raise StepDistillError(f"comparison {position} has no 'p_value' key: {comparison!r}")
        p_value, status = comparison["p_value"], comparison.get("status", "ok")
        if p_value is None and status not in _VERDICT_BY_STATUS:
            raise StepDistillError(
                f"comparison {position} has no p_value but status {status!r}; "
                f"expected one of {sorted(_VERDICT_BY_STATUS)}"
            )
        if p_value is not None and not 0.0 <= p_value <= 1.0:
            raise StepDistillError(f"comparison {position} has p_value {p_value!r}, outside [0, 1]")

    tested = [i for i, comparison in enumerate(comparisons) if comparison["p_value"] is not None]
    adjusted: dict[int, float] = {}
    if tested:
        _, p_holm, _, _ = multipletests([comparisons[i]["p_value"] for i in tested], alpha=alpha, method="holm")
        adjusted = {i: float(p) for i, p in zip(tested, p_holm)}

    out = []
    for i, comparison in enumerate(comparisons):
        p_holm, status = adjusted.get(i), comparison.get("status", "ok")
        # A "no spread" result may carry p = 1.0 (McNemar): it is in the family (conservative) but
        # is never called significant.
        significant = p_holm is not None and p_holm < alpha and status not in _VERDICT_BY_STATUS
        verdict = _verdict(status, significant)
        out.append({**comparison, "p_holm": p_holm, "significant": bool(significant), "verdict": verdict})
    return out


def _as_bool_vector(values, name: str) -> np.ndarray:
    """(N,) bool array from bools or 0/1 values, or a clear error."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise StepDistillError(f"{name} must be one-dimensional (one entry per test row), got shape {array.shape}")
    if array.dtype != bool:
        if not np.all(np.isin(array, (0, 1))):
            raise StepDistillError(f"{name} must hold booleans or 0/1 (row classified correctly or not)")
        array = array.astype(bool)
    return array


def mcnemar_test(correct: np.ndarray, reference_correct: np.ndarray) -> dict:
    """McNemar's test: accuracy of two classifiers on the SAME test rows (one fixed split).

    ``correct``, ``reference_correct``: (N,) bool (or 0/1), whether each test row was classified
    correctly by the method and by the reference. Only the discordant rows (one right, the other
    wrong) carry information; with fewer than 25 of them the exact binomial test is used, else the
    chi-square with continuity correction (statsmodels ``mcnemar``). Covers test-row sampling only.

    Returns ``{"diff": acc - acc_ref, "p_value", "n_discordant", "status"}``; with no discordant
    row p_value is 1.0 and status ``"no spread"``, else status ``"ok"``.
    """
    correct = _as_bool_vector(correct, "correct")
    reference_correct = _as_bool_vector(reference_correct, "reference_correct")
    _check_pairs(correct, reference_correct, "correct and reference_correct", "test row")

    only_method = int(np.sum(correct & ~reference_correct))
    only_reference = int(np.sum(~correct & reference_correct))
    n_discordant = only_method + only_reference
    diff = float(correct.mean() - reference_correct.mean())
    if n_discordant == 0:
        return {"diff": diff, "p_value": 1.0, "n_discordant": 0, "status": "no spread"}

    both = int(np.sum(correct & reference_correct))
    neither = int(np.sum(~correct & ~reference_correct))
    table = [[both, only_method], [only_reference, neither]]
    result = mcnemar(table, exact=n_discordant < _EXACT_BELOW, correction=True)
    return {"diff": diff, "p_value": float(result.pvalue), "n_discordant": n_discordant, "status": "ok"}


def _metric_or_none(metric: Callable, y: np.ndarray, probs: np.ndarray) -> float | None:
    """metric(y, probs) as a float, or None where it is undefined on this resample.

    scikit-learn either raises ValueError or warns and returns NaN (e.g. ROC AUC with one class
    present); both count as a failed resample. Its warnings are silenced here because failures
    are counted, and thousands of identical warnings would bury everything else.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(metric(y, probs))
        except (ValueError, ZeroDivisionError, FloatingPointError):
            return None
    return value if math.isfinite(value) else None


def paired_bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y: np.ndarray,
    probs: np.ndarray,
    reference_probs: np.ndarray,
    n_resamples: int = 2000,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict:
    """Paired bootstrap over test rows: any metric of two classifiers on the SAME test rows.

    ``metric``: callable ``(y, probs) -> float``; ``y``: (N,) labels; ``probs``,
    ``reference_probs``: (N, C) class probabilities of the method and the reference. Each resample
    draws N rows with replacement, the same rows for both classifiers (that pairing is what makes
    the test sensitive), and records ``metric(y[idx], probs[idx]) - metric(y[idx],
    reference_probs[idx])``. Percentile interval; two-sided
    ``p = min(1, 2 * min(share of differences <= 0, share >= 0))``. Deterministic for a seed.
    Covers test-row sampling only.

    Resamples where the metric is undefined (raises ValueError or returns NaN, e.g. ROC AUC with
    one class present) are dropped; if more than half are, ValueError.

    Returns ``{"diff" (on the full rows), "ci_low", "ci_high", "p_value", "n": N, "status": "ok"}``.
    """
    if not callable(metric):
        raise StepDistillError(f"metric must be a callable (y, probs) -> float, got {metric!r}")
    y, probs, reference_probs = np.asarray(y), np.asarray(probs), np.asarray(reference_probs)
    if y.ndim != 1:
        raise StepDistillError(f"y must be one-dimensional (N,), got shape {y.shape}")
    if probs.ndim != 2 or reference_probs.ndim != 2:
        raise StepDistillError(
            f"probs and reference_probs must be (N, C) class probabilities, got shapes {probs.shape} and "
            f"{reference_probs.shape}"
        )
    if probs.shape != reference_probs.shape or len(probs) != len(y):
        raise StepDistillError(
            f"y, probs and reference_probs must cover the same test rows, got shapes {y.shape}, {probs.shape} "
            f"and {reference_probs.shape}"
        )
    if len(y) == 0:
        raise StepDistillError("y is empty: there are no test rows to compare")
    if not (isinstance(n_resamples, int | np.integer) and n_resamples >= 1):
        raise StepDistillError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    _check_confidence(confidence)

    diff = float(metric(y, probs)) - float(metric(y, reference_probs))
    if not math.isfinite(diff):
        raise StepDistillError(f"the metric is not finite on the full test rows (difference {diff})")

    rng = np.random.default_rng(seed)
    n = len(y)
    differences = []
    for _ in range(n_resamples):
        # One index draw per resample (not an (R, N) matrix): memory stays O(N) for large test sets.
        idx = rng.integers(0, n, size=n)
        value = _metric_or_none(metric, y[idx], probs[idx])
        reference_value = _metric_or_none(metric, y[idx], reference_probs[idx])
        if value is not None and reference_value is not None:
            differences.append(value - reference_value)
    n_failed = n_resamples - len(differences)
    if n_failed > n_resamples / 2:
        raise StepDistillError(
            f"the metric failed on {n_failed} of {n_resamples} bootstrap resamples (e.g. only one class "
            "present); use more test rows or a metric defined on every resample"
        )

    differences = np.asarray(differences)
    ci_low, ci_high = np.quantile(differences, [0.5 - confidence / 2, 0.5 + confidence / 2])
    share_below, share_above = float(np.mean(differences <= 0)), float(np.mean(differences >= 0))
    return {
        "diff": diff,
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "p_value": min(1.0, 2 * min(share_below, share_above)),
        "n": n,
        "status": "ok",
    }
