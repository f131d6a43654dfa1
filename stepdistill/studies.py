"""Studies made of experiments: an ablation of the enhanced method, and a sweep over the share
of training rows whose labels the students see.

An ablation is one experiment whose methods are the variants, so every variant trains on the
same data, teacher and seeds, and students that fit together train stacked. A variant is compared
with ``full`` seed by seed: both start from the same initialization and see batches in the same
order, so pairing removes most of the seed-to-seed noise that a comparison of means keeps.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from stepdistill.config import ExperimentConfig
from stepdistill.errors import StepDistillError
from stepdistill.experiment import ProgressFn, run_experiment
from stepdistill.report.results import metric_columns

FULL = "full"
ENHANCED = "enhanced"
# Each removal switches one component of the enhanced method off, on top of full's settings.
REMOVALS: dict[str, dict] = {
    "no_curriculum": {"ramp_epochs": 0},  # the rationale weight is b_max from the first epoch
    "no_cosine": {"rationale_distance": "mse", "margin": 0.0},  # the margin only exists for cosine
    "no_margin": {"margin": 0.0},
    "no_consistency": {"consistency": 0.0},
    "no_lr_schedule": {"scheduler": "none"},
    "no_rationale": {"beta": 0.0},
}
# The simpler methods, as references for how much of full's result the components account for.
REFERENCE_METHODS = ("baseline", "traditional", "step_by_step")
CONFIDENCE = 0.95


def enhanced_overrides(config: ExperimentConfig) -> dict:
    """The settings of the config's enhanced method (the one named ``enhanced``, else the only
    method with ``preset: enhanced``), without the ``preset`` key."""
    if ENHANCED in config.methods:
        name = ENHANCED
    else:
        candidates = [name for name in config.methods if config.preset_of(name) == ENHANCED]
        if len(candidates) != 1:
            found = f"several ({', '.join(candidates)})" if candidates else "none"
            raise StepDistillError(
                f"the ablation needs one enhanced method in the config and found {found}; name the one to ablate 'enhanced' under methods"
            )
        (name,) = candidates
    return {key: value for key, value in config.methods[name].items() if key != "preset"}


def ablation_config(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with its methods replaced by the ablation's variants: ``full`` (the enhanced
    method with the config's settings), full with each of ``REMOVALS`` applied, and the reference
    methods with the config's settings for them, if any."""
    fixed = {key for removal in REMOVALS.values() for key in removal}
    if config.tune is not None and (tuned := sorted(fixed & set(config.tune.grid))):
        # Tuning applies its grid on top of a method's settings, so it would undo the removal.
        raise StepDistillError(
            f"tune.grid tunes {', '.join(tuned)}, which ablation variants fix; remove {'it' if len(tuned) == 1 else 'them'} from tune.grid"
        )
    full = {"preset": ENHANCED, **enhanced_overrides(config)}
    variants = {FULL: full, **{name: {**full, **removal} for name, removal in REMOVALS.items()}}
    variants.update({name: config.methods.get(name, {}) for name in REFERENCE_METHODS})
    return config.model_copy(update={"methods": variants})


def paired_comparison(values: list[float], reference: list[float]) -> dict:
    """Mean of ``values - reference`` (paired by seed) with its ``CONFIDENCE`` interval from the
    t distribution with n-1 degrees of freedom; ``significant`` when the interval excludes 0.
    With a single pair there is no interval (``ci_low``/``ci_high`` None, not significant)."""
    differences = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    mean = float(differences.mean())
    if len(differences) < 2:
        return {"diff": mean, "ci_low": None, "ci_high": None, "significant": False}
    quantile = stats.t.ppf((1 + CONFIDENCE) / 2, df=len(differences) - 1)
    half_width = float(quantile * differences.std(ddof=1) / math.sqrt(len(differences)))
    low, high = mean - half_width, mean + half_width
    return {"diff": mean, "ci_low": low, "ci_high": high, "significant": bool(low > 0 or high < 0)}


def summarize_ablation(results: dict) -> dict:
    """Per variant: ``{"test": {metric: {"mean", "std"}}, "vs_full": {metric: {"diff", "ci_low",
    "ci_high", "significant"}}}``. ``full`` is compared with itself too, so every variant has the
    same keys: its differences are 0 and never significant."""
    methods = results["methods"]
    full_test = methods[FULL]["test"]
    return {
        name: {
            "test": {metric: _mean_std(entry["test"][metric]) for metric in metric_columns(results)},
            "vs_full": {
                metric: paired_comparison(entry["test"][metric]["values"], full_test[metric]["values"])
                for metric in metric_columns(results)
            },
        }
        for name, entry in methods.items()
    }


def run_ablation(
    config: ExperimentConfig, frame: pd.DataFrame, description: dict | None = None, progress: ProgressFn | None = None
) -> tuple[dict, dict]:
    """Train every variant of ``ablation_config(config)`` in one experiment; returns the
    experiment's results dict and ``summarize_ablation`` of it."""
    results = run_experiment(ablation_config(config), frame, description, progress)
    return results, summarize_ablation(results)


def parse_fractions(text: str) -> list[float]:
    """``"0.01,0.05,1"`` -> [0.01, 0.05, 1.0], ascending, each in (0, 1] and given once."""
    try:
        fractions = [float(part) for part in text.split(",")]
    except ValueError:
        raise StepDistillError(f"--fractions {text!r} is not a comma-separated list of numbers; pass e.g. 0.01,0.1,1") from None
    if bad := [f for f in fractions if not 0 < f <= 1]:
        raise StepDistillError(
            f"--fractions must each be in (0, 1], got {fraction_key(bad[0])}; pass shares of the training rows such as 0.05"
        )
    if len(set(fractions)) != len(fractions):
        raise StepDistillError(f"--fractions {text!r} repeats a value; give each fraction once")
    return sorted(fractions)


def fraction_key(fraction: float) -> str:
    """The fraction as written in decimal, without a trailing ``.0``: 0.05 -> "0.05", 1.0 -> "1"."""
    return np.format_float_positional(fraction, trim="-")


def run_sweep(
    config: ExperimentConfig,
    frame: pd.DataFrame,
    fractions: list[float],
    description: dict | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, dict]:
    """The experiment once per labelled fraction, smallest first (so that a fraction too small for
    some class fails before the others have run); returns results dicts by ``fraction_key``.
    Each experiment builds its own teacher, on every training label whatever the fraction."""
    say = progress or (lambda message: None)
    by_fraction = {}
    for fraction in sorted(fractions):
        key = fraction_key(fraction)
        data = config.data.model_copy(update={"labelled_fraction": fraction})
        by_fraction[key] = run_experiment(
            config.model_copy(update={"data": data}), frame, description, lambda message: say(f"labelled {key}: {message}")
        )
    return by_fraction


def summarize_sweep(results_by_fraction: dict[str, dict]) -> dict:
    """``{method: {fraction: {metric: {"mean", "std"}}}}`` from ``run_sweep``'s results."""
    summary: dict[str, dict] = {}
    for key, results in results_by_fraction.items():
        for name, entry in results["methods"].items():
            summary.setdefault(name, {})[key] = {metric: _mean_std(entry["test"][metric]) for metric in metric_columns(results)}
    return summary


def _mean_std(summary: dict) -> dict:
    return {"mean": summary["mean"], "std": summary["std"]}
