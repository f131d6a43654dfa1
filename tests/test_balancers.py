import io
import json
import math
import warnings

import pytest
import torch

from stepdistill.balancers import (
    MIN_GRADNORM_FACTOR,
    DynamicWeightAverage,
    GradNorm,
    LossRatioBalancer,
    UncertaintyWeighting,
)

# --- DynamicWeightAverage ----------------------------------------------------------------------


def test_dwa_keeps_the_scheduled_weights_for_the_first_two_epochs():
    balancer = DynamicWeightAverage(temperature=2.0)
    scheduled = {"hard": 0.5, "soft": 0.2}
    assert balancer.weights(scheduled) == scheduled
    balancer.observe_epoch({"hard": 1.0, "soft": 2.0})
    assert balancer.weights(scheduled) == scheduled


def test_dwa_weighs_the_term_that_fell_more_slowly_up():
    balancer = DynamicWeightAverage(temperature=2.0)
    balancer.observe_epoch({"hard": 1.0, "soft": 2.0})
    balancer.observe_epoch({"hard": 0.5, "soft": 2.0})
    # r = [0.5/1.0, 2.0/2.0] = [0.5, 1.0]; r / T = [0.25, 0.5]
    # w_hard = 2 * exp(0.25) / (exp(0.25) + exp(0.5)) = 2 / (1 + exp(0.25)) = 2 / 2.2840254 = 0.8756470
    # w_soft = 2 - w_hard = 1.1243530
    # used = scheduled * w = [0.5 * 0.8756470, 0.2 * 1.1243530] = [0.4378235, 0.2248706]
    # "other" was never observed: it keeps its scheduled weight
    weights = balancer.weights({"hard": 0.5, "soft": 0.2, "other": 0.3})
    assert weights == pytest.approx({"hard": 0.4378235, "soft": 0.2248706, "other": 0.3}, abs=1e-7)


def test_dwa_compares_only_the_last_two_epochs_and_guards_a_zero():
    balancer = DynamicWeightAverage(temperature=1.0)
    for raw in ({"hard": 9.0, "soft": 9.0}, {"hard": 1.0, "soft": 0.0}, {"hard": 2.0, "soft": 3.0}):
        balancer.observe_epoch(raw)
    # r_hard = 2/1 = 2; soft's older value is 0, so r_soft = 1
    # w_hard = 2 * e^2 / (e^2 + e^1) = 2e / (e + 1) = 1.4621172, w_soft = 2 - 1.4621172 = 0.5378828
    expected = {"hard": 1.4621172, "soft": 0.5378828}
    assert balancer.weights({"hard": 1.0, "soft": 1.0}) == pytest.approx(expected, abs=1e-7)


# --- LossRatioBalancer -------------------------------------------------------------------------


def test_loss_ratio_gives_a_tiny_term_its_target_share_of_the_total():
    balancer = LossRatioBalancer({"hard": 0.5, "soft": 0.5})
    scheduled = {"hard": 0.5, "soft": 0.5, "rationale": 0.3}
    assert balancer.weights(scheduled) == scheduled  # nothing observed yet
    balancer.observe_epoch({"hard": 1.0, "soft": 0.001, "rationale": 7.0})
    # S = 0.5 * 1.0 + 0.5 * 0.001 = 0.5005
    # used_hard = 0.5 * S / 1.0 = 0.25025; used_soft = 0.5 * S / 0.001 = 250.25; rationale is not targeted
    # weighted values: 0.25025 * 1.0 = 0.25025 and 250.25 * 0.001 = 0.25025, summing to S
    weights = balancer.weights(scheduled)
    assert weights == pytest.approx({"hard": 0.25025, "soft": 250.25, "rationale": 0.3})
    assert weights["hard"] * 1.0 + weights["soft"] * 0.001 == pytest.approx(0.5005)


def test_loss_ratio_shares_the_total_among_the_terms_that_are_switched_on():
    balancer = LossRatioBalancer({"hard": 1.0, "soft": 3.0, "rationale": 4.0})
    balancer.observe_epoch({"hard": 2.0, "soft": 0.01, "rationale": 0.3})
    # rationale is scheduled at 0 (a ramp's first epoch): it stays off, and hard and soft split
    # the total 1 : 3 -> shares 0.25, 0.75
    # S = 0.5 * 2.0 + 0.5 * 0.01 = 1.005
    # used_hard = 0.25 * 1.005 / 2.0 = 0.125625; used_soft = 0.75 * 1.005 / 0.01 = 75.375
    weights = balancer.weights({"hard": 0.5, "soft": 0.5, "rationale": 0.0})
    assert weights == pytest.approx({"hard": 0.125625, "soft": 75.375, "rationale": 0.0})


def test_loss_ratio_keeps_the_weight_of_a_term_at_zero():
    balancer = LossRatioBalancer({"hard": 0.5, "soft": 0.5})
    balancer.observe_epoch({"hard": 2.0, "soft": 0.0})
    # soft has nothing to scale; hard alone gets the whole S = 0.5 * 2.0, i.e. its own weight back
    assert balancer.weights({"hard": 0.5, "soft": 0.5}) == pytest.approx({"hard": 0.5, "soft": 0.5})


def test_loss_ratio_smooths_the_magnitudes_over_epochs():
    balancer = LossRatioBalancer({"hard": 0.5, "soft": 0.5}, momentum=0.5)
    balancer.observe_epoch({"hard": 1.0, "soft": 0.001})
    balancer.observe_epoch({"hard": 3.0, "soft": 0.003})
    # Lbar = [0.5 * 1.0 + 0.5 * 3.0, 0.5 * 0.001 + 0.5 * 0.003] = [2.0, 0.002]
    # S = 0.5 * 2.0 + 0.5 * 0.002 = 1.001; used = [0.5 * 1.001 / 2.0, 0.5 * 1.001 / 0.002] = [0.25025, 250.25]
    assert balancer.weights({"hard": 0.5, "soft": 0.5}) == pytest.approx({"hard": 0.25025, "soft": 250.25})


# --- UncertaintyWeighting ----------------------------------------------------------------------


def test_uncertainty_weighting_takes_one_adam_step_on_the_log_variances():
    balancer = UncertaintyWeighting(("hard", "soft"), lr=0.01)
    assert balancer.weights({"hard": 0.5, "soft": 1.0}) == {"hard": 0.5, "soft": 1.0}  # s = 0
    loss = torch.tensor(2.0, requires_grad=True) * 1.0  # a value still attached to a graph
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balancer.observe_step({"hard": loss, "soft": torch.tensor(0.5)})
    # d/ds = 1 - exp(-0) * L = [1 - 2.0, 1 - 0.5] = [-1.0, 0.5]
    # Adam's first step is lr * g / (|g| + eps) = lr * sign(g): s = [0.01, -0.01]
    # used = scheduled * exp(-s) = [0.5 * exp(-0.01), 1.0 * exp(0.01)] = [0.4950249, 1.0100502]
    weights = balancer.weights({"hard": 0.5, "soft": 1.0, "other": 0.3})
    assert weights == pytest.approx({"hard": 0.4950249, "soft": 1.0100502, "other": 0.3}, abs=1e-7)


def test_uncertainty_weighting_settles_on_the_inverse_of_each_value():
    balancer = UncertaintyWeighting(("hard", "soft"), lr=0.05)
    for _ in range(400):
        balancer.observe_step({"hard": torch.tensor(4.0), "soft": torch.tensor(0.5)})
    # the optimum of exp(-s) * L + s is s = log L, i.e. a weight of 1 / L
    assert balancer.weights({"hard": 1.0, "soft": 1.0}) == pytest.approx({"hard": 0.25, "soft": 2.0}, rel=0.05)


def test_uncertainty_weighting_keeps_a_term_at_zero_within_the_bound():
    # A margin cosine inside its margin is 0 at every step: d/ds = 1 - exp(-s) * 0 = 1 always, so
    # unbounded, s falls by ~lr per step and the factor exp(-s) reaches e^125 after 5,000 steps.
    balancer = UncertaintyWeighting(("hard", "rationale"), lr=0.025)
    for step in range(5000):
        balancer.observe_step({"hard": torch.tensor(0.5), "rationale": torch.tensor(0.0)})
        assert balancer.factors({})["rationale"] <= 10.0 * (1 + 1e-12), step
    factors = balancer.factors({})
    assert factors["rationale"] == pytest.approx(10.0)  # held at the bound
    assert factors["hard"] == pytest.approx(2.0, rel=0.05)  # the other term still settles on 1 / L


def test_uncertainty_weighting_clamps_each_step_to_the_bound():
    balancer = UncertaintyWeighting(("hard", "soft"), lr=1.0, max_factor=2.0)
    balancer.observe_step({"hard": torch.tensor(4.0), "soft": torch.tensor(0.0)})
    # d/ds = [1 - 4, 1 - 0] = [-3, 1]; Adam's first step: s = -lr * sign = [1, -1]
    # clamped to [-ln 2, ln 2]: s = [ln 2, -ln 2], factors exp(-s) = [0.5, 2]
    assert balancer.factors({}) == pytest.approx({"hard": 0.5, "soft": 2.0}, abs=1e-12)
    assert balancer.describe()["max_factor"] == 2.0


# --- GradNorm ----------------------------------------------------------------------------------


def test_gradnorm_moves_the_factors_towards_equal_gradient_norms():
    balancer = GradNorm(("hard", "soft"), alpha=1.5, lr=0.025)
    balancer.observe_step({"hard": torch.tensor(2.0), "soft": torch.tensor(1.0)}, {"hard": 3.0, "soft": 1.0})
    # first step: L~ = [1, 1], r = [1, 1], Gbar = (3 + 1) / 2 = 2, target = [2, 2]
    # hard: G above target -> 1 - 0.025 * 3/1 = 0.925; soft: below -> 1 + 0.025 * 1/1 = 1.025
    # renormalized to sum 2: [0.925, 1.025] * 2 / 1.95 = [0.9487179, 1.0512821]
    # used = scheduled * w = [0.5 * 0.9487179, 1.0 * 1.0512821]
    weights = balancer.weights({"hard": 0.5, "soft": 1.0, "other": 0.3})
    assert weights == pytest.approx({"hard": 0.4743590, "soft": 1.0512821, "other": 0.3}, abs=1e-7)


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        # target = Gbar = 2.2 for both: hard below -> 1 + 0.025 * 2 = 1.05, soft above -> 1 - 0.025 * 2.4 = 0.94
        # renormalized: [1.05, 0.94] * 2 / 1.99 = [1.0552764, 0.9447236]
        (0.0, {"hard": 1.0552764, "soft": 0.9447236}),
        # target = 2.2 * [2/3, 4/3] = [1.4666667, 2.9333333]: hard above -> 0.95, soft below -> 1.06
        # renormalized: [0.95, 1.06] * 2 / 2.01 = [0.9452736, 1.0547264]
        (1.0, {"hard": 0.9452736, "soft": 1.0547264}),
    ],
)
def test_gradnorm_pulls_up_the_term_that_trains_slowly(alpha, expected):
    balancer = GradNorm(("hard", "soft"), alpha=alpha, lr=0.025)
    ones = {"hard": torch.tensor(1.0), "soft": torch.tensor(1.0)}
    balancer.observe_step(ones, {"hard": 1.0, "soft": 1.0})  # L(0) = [1, 1]; G on target: no change
    assert balancer.weights({"hard": 1.0, "soft": 1.0}) == {"hard": 1.0, "soft": 1.0}
    balancer.observe_step({"hard": torch.tensor(0.5), "soft": torch.tensor(1.0)}, {"hard": 2.0, "soft": 2.4})
    # L~ = [0.5, 1.0], mean 0.75, r = [2/3, 4/3]; Gbar = (2.0 + 2.4) / 2 = 2.2
    assert balancer.weights({"hard": 1.0, "soft": 1.0}) == pytest.approx(expected, abs=1e-7)


def test_gradnorm_keeps_every_factor_positive():
    balancer = GradNorm(("hard", "soft"), lr=1.0)
    balancer.observe_step({"hard": 1.0, "soft": 1.0}, {"hard": 10.0, "soft": 0.0})
    # target = [5, 5]; hard: 1 - 1.0 * 10/1 = -9 -> kept at 0.001; soft: G = 0 -> slope 0, stays 1
    # renormalized: [0.001, 1] * 2 / 1.001 = [0.0019980, 1.9980020]
    expected = {"hard": 2 * MIN_GRADNORM_FACTOR / 1.001, "soft": 2 / 1.001}
    assert balancer.weights({"hard": 1.0, "soft": 1.0}) == pytest.approx(expected)


def test_gradnorm_needs_gradient_norms():
    with pytest.raises(ValueError):
        GradNorm(("hard", "soft")).observe_step({"hard": torch.tensor(1.0), "soft": torch.tensor(1.0)})


# --- every balancer ----------------------------------------------------------------------------


def _epochs(balancer, rows):
    for hard, soft in rows:
        balancer.observe_epoch({"hard": hard, "soft": soft})


def _steps(balancer, rows):
    for hard, soft in rows:
        raw = {"hard": torch.tensor(hard), "soft": torch.tensor(soft)}
        balancer.observe_step(raw, {"hard": 3.0 * hard, "soft": 40.0 * soft})


BALANCERS = [
    (lambda: DynamicWeightAverage(temperature=1.5), _epochs),
    (lambda: LossRatioBalancer({"hard": 0.3, "soft": 0.7}, momentum=0.8), _epochs),
    (lambda: UncertaintyWeighting(("hard", "soft"), lr=0.1), _steps),
    (lambda: GradNorm(("hard", "soft"), alpha=1.0, lr=0.01), _steps),
]


@pytest.mark.parametrize(("build", "observe"), BALANCERS)
def test_a_restored_balancer_continues_as_the_original_would(build, observe):
    scheduled = {"hard": 0.4, "soft": 0.6}
    history = [(1.0, 0.02), (0.7, 0.018), (0.6, 0.011), (0.5, 0.01)]
    original = build()
    observe(original, history[:3])
    saved = io.BytesIO()
    torch.save(original.state_dict(), saved)  # as a checkpoint would
    observe(original, history[3:])  # later steps must not leak into what was saved
    restored = build()
    restored.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    observe(restored, history[3:])
    assert restored.weights(scheduled) == original.weights(scheduled)
    assert restored.weights(scheduled) != build().weights(scheduled)


@pytest.mark.parametrize(("build", "observe"), BALANCERS)
def test_a_saved_state_is_a_snapshot(build, observe):
    scheduled = {"hard": 1.0, "soft": 1.0}
    history = [(1.0, 0.02), (0.7, 0.018), (0.6, 0.011)]
    original = build()
    observe(original, history[:2])
    state = original.state_dict()
    observe(original, history[2:])  # neither the balancer that saved ``state``...
    first = build()
    first.load_state_dict(state)
    observe(first, history[2:])  # ...nor one that loaded it may write into it
    second = build()
    second.load_state_dict(state)
    observe(second, history[2:])
    assert first.weights(scheduled) == second.weights(scheduled) == original.weights(scheduled)


@pytest.mark.parametrize(("build", "observe"), BALANCERS)
def test_balancers_describe_themselves_as_json(build, observe):
    balancer = build()
    assert json.loads(json.dumps(balancer.describe()))["kind"] == type(balancer).__name__


@pytest.mark.parametrize(
    "build",
    [
        lambda: DynamicWeightAverage(temperature=0.0),
        lambda: LossRatioBalancer({}),
        lambda: LossRatioBalancer({"hard": 0.5, "soft": -0.5}),
        lambda: LossRatioBalancer({"hard": 0.5, "soft": 0.0}),
        lambda: LossRatioBalancer({"hard": 1.0}, momentum=1.0),
        lambda: LossRatioBalancer({"hard": 1.0}, momentum=-0.1),
        lambda: UncertaintyWeighting(()),
        lambda: UncertaintyWeighting(("hard", "hard")),
        lambda: UncertaintyWeighting(("hard",), lr=0.0),
        lambda: UncertaintyWeighting(("hard",), max_factor=1.0),
        lambda: GradNorm(()),
        lambda: GradNorm(("hard", "soft"), alpha=-1.0),
        lambda: GradNorm(("hard", "soft"), lr=-0.1),
        lambda: DynamicWeightAverage(temperature=math.nan),
    ],
)
def test_invalid_balancers_are_refused(build):
    with pytest.raises(ValueError):
        build()


def test_balancers_say_what_they_observe():
    for epoch_level in (DynamicWeightAverage, LossRatioBalancer):
        assert (epoch_level.observes_steps, epoch_level.needs_grad_norms) == (False, False)
    assert (UncertaintyWeighting.observes_steps, UncertaintyWeighting.needs_grad_norms) == (True, False)
    assert (GradNorm.observes_steps, GradNorm.needs_grad_norms) == (True, True)
