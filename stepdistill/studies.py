"""Studies made of experiments: an ablation of the enhanced method, a sweep over the share of
training rows whose labels the students see, and a sweep over student sizes. This module defines
them (the ablation's variants, the sweep's fractions, the students' sizes) and summarizes their
results; the first two run as one experiment (experiment/loop.py), of either track, the size
sweep as one experiment per size on the same runs.

An ablation is one experiment whose methods are the variants, so every variant trains on the
same runs (splits, teachers, seeds), with the same recipe, and students that fit together train
stacked. Each variant is compared with ``full`` run by run (stats.py: corrected resampled t-test
over runs, or McNemar and a paired bootstrap within a single run), with Holm's correction over
the ablation table.

A sweep runs every fraction on the same runs: per run one teacher, nested labelled subsets, and
validation labels limited to the same fraction (the validation split drives tuning, the LR
scheduler and early stopping, so with all its labels a low-label result would be flattered).
"""

from __future__ import annotations

from stepdistill import stats
from stepdistill.config import ExperimentConfig
from stepdistill.data.repeats import fraction_key
from stepdistill.errors import StepDistillError
from stepdistill.lm.config import LM_METHODS, LMTrainConfig

FULL = "full"
ENHANCED = "enhanced"
# Each removal switches one component of the enhanced method off, on top of full's settings.
REMOVALS: dict[str, dict] = {
    "no_weight_ramp": {"ramp_epochs": 0},  # the rationale weight is b_max from the first epoch
    "no_sample_curriculum": {"curriculum": None},  # only when full has one (see ablation_config)
    "no_cosine": {"rationale_distance": "mse", "margin": 0.0},  # the margin only exists for cosine
    "no_margin": {"margin": 0.0},
    "no_consistency": {"consistency": 0.0},
    "no_lr_schedule": {"scheduler": "none"},
    "no_rationale": {"beta": 0.0},
}
# The removals that change what a generative student trains: its methods have no consistency
# term (not defined for text), no rationale distance or margin (the rationale is a token
# cross-entropy), no curriculum, and one learning-rate schedule shared by every method.
LM_REMOVALS = ("no_weight_ramp", "no_rationale")
# The simpler methods, as references for how much of full's result the components account for.
REFERENCE_METHODS = ("baseline", "traditional", "step_by_step")


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


def ablation_config(config: ExperimentConfig | LMTrainConfig) -> ExperimentConfig | LMTrainConfig:
    """``config`` with its methods replaced by the ablation's variants: ``full`` (the enhanced
    method with the config's settings), full with each of ``REMOVALS`` applied (the sample
    curriculum only when full has one; for generative students ``LM_REMOVALS``), and the
    reference methods with the config's settings for them, if any. All train with full's
    recipe (optimizer, schedule, budget), so they differ only in what the method does
    (``no_lr_schedule`` removes the schedule itself)."""
    full = {"preset": ENHANCED, **enhanced_overrides(config)}
    if isinstance(config, LMTrainConfig):  # one recipe (training:) for every method already
        variants = {FULL: full, **{name: {**full, **REMOVALS[name]} for name in LM_REMOVALS}}
        variants.update({name: config.methods.get(name, LM_METHODS[name]) for name in REFERENCE_METHODS})
        return config.model_copy(update={"methods": variants})
    fixed = {key for removal in REMOVALS.values() for key in removal}
    if config.tune is not None and (tuned := sorted(fixed & set(config.tune.grid))):
        # Tuning applies its grid on top of a method's settings, so it would undo the removal.
        raise StepDistillError(
            f"tune.grid tunes {', '.join(tuned)}, which ablation variants fix; remove {'it' if len(tuned) == 1 else 'them'} from tune.grid"
        )
    removals = {name: removal for name, removal in REMOVALS.items() if name != "no_sample_curriculum" or full.get("curriculum")}
    variants = {FULL: full, **{name: {**full, **removal} for name, removal in removals.items()}}
    full_recipe = config.model_copy(update={"methods": {FULL: full}}).training_settings(FULL)
    variants.update({name: {**full_recipe, **config.methods.get(name, {})} for name in REFERENCE_METHODS})
    return config.model_copy(update={"methods": variants})


def summarize_ablation(results: dict) -> dict:
    """Per variant: ``{"test": {metric: {"mean", "std"}}, "vs_full": {metric: comparison}}``
    for the metrics the experiment compared (stats.py's comparison after Holm's correction over
    the table); full has no ``vs_full``."""
    metrics = results["evaluation"]["compared"]
    return {
        name: {
            "test": {metric: _mean_std(entry["test"][metric]) for metric in metrics},
            **({"vs_full": {metric: entry["vs_control"][metric] for metric in metrics}} if name != FULL else {}),
        }
        for name, entry in results["methods"].items()
    }


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


# The sweep's row of the teacher's test metrics.
TEACHER_ROW = "teacher"


def summarize_sweep(results_by_fraction: dict[float, dict]) -> dict:
    """``{model: {fraction: {metric: {"mean", "std"}, "vs_control": {metric: comparison}}}}``,
    the teacher first (a teacher that learns from labels here learns from each fraction's), then
    each method, fractions as ``fraction_key`` writes them, from the sweep's results by fraction,
    for the metrics the experiment compared; the p-values Holm-corrected over every comparison
    of the sweep."""
    return summarize_grid({fraction_key(fraction): results for fraction, results in sorted(results_by_fraction.items())})


def summarize_grid(results_by_key: dict[str, dict]) -> dict:
    """``summarize_sweep``'s dict over any keys (fractions, student sizes), in the order given;
    a student's cells also hold its parameters and its latency on 1,024 rows (run 0's)."""
    summary: dict[str, dict] = {TEACHER_ROW: {}}
    for key, results in results_by_key.items():
        metrics = results["evaluation"]["compared"]
        summary[TEACHER_ROW][key] = {metric: _mean_std(results["teacher"]["test"][metric]) for metric in metrics}
        for name, entry in results["methods"].items():
            cell = {metric: _mean_std(entry["test"][metric]) for metric in metrics}
            if entry.get("vs_control"):
                cell["vs_control"] = {metric: entry["vs_control"][metric] for metric in metrics}
            if entry.get("params") is not None:
                cell["params"] = entry["params"]
            if (entry.get("speed") or {}).get("batch_ms") is not None:
                cell["batch_ms"] = entry["speed"]["batch_ms"]
            summary.setdefault(name, {})[key] = cell
    # One Holm family for the sweep: every comparison at every fraction, on every metric.
    cells = [cell["vs_control"] for by_fraction in summary.values() for cell in by_fraction.values() if "vs_control" in cell]
    pending = [(comparisons, metric) for comparisons in cells for metric in comparisons]
    for (comparisons, metric), corrected in zip(pending, stats.holm([comparisons[metric] for comparisons, metric in pending])):
        comparisons[metric] = corrected
    return summary


def parse_sizes(text: str) -> list[tuple[int, ...]]:
    """``"8;32;64,64"`` -> [(8,), (32,), (64, 64)]: student MLPs' hidden layers, smallest first
    as given, each a comma-separated list of positive widths, sizes apart by semicolons."""
    sizes = []
    for part in text.split(";"):
        try:
            widths = tuple(int(width) for width in part.split(","))
        except ValueError:
            raise StepDistillError(f"--sizes {text!r}: {part!r} is not a list of layer widths; pass e.g. 8;32;64,64 (semicolons between sizes)") from None
        if not widths or min(widths) < 1:
            raise StepDistillError(f"--sizes {text!r}: every width must be a positive whole number; pass e.g. 8;32;64,64")
        sizes.append(widths)
    if len(set(sizes)) != len(sizes):
        raise StepDistillError(f"--sizes {text!r} repeats a size; give each once")
    return sizes


def size_key(hidden: tuple[int, ...]) -> str:
    """How a student size is named in the study's files: its hidden widths, e.g. ``64x64``."""
    return "x".join(map(str, hidden))


def _mean_std(summary: dict) -> dict:
    return {"mean": summary["mean"], "std": summary["std"]}
