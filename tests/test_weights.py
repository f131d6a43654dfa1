import json

import pytest
from conftest import raises_one_line

from stepdistill.terms import build_method
from stepdistill.weights import Constant, CosineRamp, Phases, Remainder, StepSchedule


def test_cosine_ramp_follows_half_a_cosine_then_stays_flat():
    weight = CosineRamp(1.0, 4, minimum=0.2)
    # w(t) = 0.2 + 0.8 * (1 - cos(pi * t / 4)) / 2
    # t=1: (1 - cos(pi/4)) / 2 = (1 - 0.7071068) / 2 = 0.1464466 -> 0.2 + 0.8 * 0.1464466 = 0.3171573
    # t=2: (1 - cos(pi/2)) / 2 = 0.5                             -> 0.2 + 0.8 * 0.5       = 0.6
    # t=3: (1 - cos(3pi/4)) / 2 = 0.8535534                      -> 0.2 + 0.8 * 0.8535534 = 0.8828427
    expected = [0.2, 0.3171573, 0.6, 0.8828427, 1.0, 1.0, 1.0]
    assert [weight.value(t) for t in range(7)] == pytest.approx(expected, abs=1e-7)


def test_cosine_ramp_of_no_epochs_starts_at_its_maximum():
    assert CosineRamp(0.3, 0).value(0) == 0.3


def test_step_schedule_moves_to_the_next_value_every_step_epochs_and_holds_the_last():
    weight = StepSchedule((1.0, 0.5, 0.25), step_epochs=2)
    # t // 2 = 0, 0, 1, 1, 2, 2, 3 -> 2, 4 -> 2 (the last value)
    assert [weight.value(t) for t in range(9)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25]


def test_phases_give_the_task_structured_curriculum():
    weight = Phases((3, 6), (0.0, 0.3, 0.6))
    # prediction only for epochs 0-2, joint for 3-5, rationale-heavy from 6
    assert [weight.value(t) for t in range(9)] == [0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.6, 0.6, 0.6]


def test_phases_leave_the_soft_target_weight_to_a_remainder():
    rationale = Phases((3, 6), (0.0, 0.3, 0.6))
    soft = Remainder((Constant(0.4), rationale))
    # 1 - 0.4 - b(t): 0.6, then 0.3, then 0.0
    assert [soft.value(t) for t in (0, 3, 6)] == pytest.approx([0.6, 0.3, 0.0])
    assert soft.describe()["others"][1] == {"kind": "Phases", "boundaries": (3, 6), "values": (0.0, 0.3, 0.6)}


def test_schedules_from_json_lists_are_hashable_and_describe_themselves_as_json():
    step, phases = StepSchedule([1.0, 0.5], 3), Phases([2], [0.0, 1.0])
    assert hash(step) == hash(StepSchedule((1.0, 0.5), 3))
    assert hash(phases) == hash(Phases((2,), (0.0, 1.0)))
    for weight in (step, phases, CosineRamp(1.0, 5)):
        assert json.loads(json.dumps(weight.describe()))["kind"] == type(weight).__name__
        assert weight.state_dict() == {}


@pytest.mark.parametrize(
    "build",
    [
        lambda: CosineRamp(1.0, -1),
        lambda: CosineRamp(0.1, 5, minimum=0.2),
        lambda: StepSchedule((), 2),
        lambda: StepSchedule((1.0,), 0),
        lambda: Phases((3, 6), (0.0, 0.3)),
        lambda: Phases((3,), (0.0, 0.3, 0.6)),
        lambda: Phases((6, 3), (0.0, 0.3, 0.6)),
        lambda: Phases((3, 3), (0.0, 0.3, 0.6)),
        lambda: Phases((0, 3), (0.0, 0.3, 0.6)),
    ],
)
def test_invalid_schedules_are_refused(build):
    with pytest.raises(ValueError):
        build()


def test_a_schedule_that_drives_the_soft_weight_below_zero_is_refused():
    # soft = 1 - hard = 1 - 3: training would push the student away from the teacher
    with pytest.raises(ValueError, match=r"soft's weight is 1 - hard = -2 at epoch 0, below 0; lower the other weights or give soft a schedule"):
        build_method("traditional", {"weights": {"hard": {"kind": "constant", "value": 3}}})
    # soft = 1 - 0.5 - 0.6 = -0.1 from epoch 3, which a 10-epoch run reaches and a 3-epoch run does not
    rationale = {"kind": "phases", "boundaries": [3], "values": [0.1, 0.6]}
    with pytest.raises(ValueError, match=r"soft's weight is 1 - hard - rationale = -0.1 at epoch 3"):
        build_method("step_by_step", {"epochs": 10, "weights": {"rationale": rationale}})
    assert build_method("step_by_step", {"epochs": 3, "weights": {"rationale": rationale}}).terms[2].weight.value(2) == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"consistency's weight is -0.5 at epoch 0"):
        build_method("enhanced", {"weights": {"consistency": {"kind": "constant", "value": -0.5}}})
    # 1 - 0.9 - 0.1 is -2.8e-17 in floats: rounding, not a negative weight
    assert build_method("step_by_step", {"alpha": 0.9, "beta": 0.1}).terms[2].weight.value(0) == pytest.approx(0.0, abs=1e-15)
    # its own ramp to -0.1 over 4 epochs: 0 at epoch 0, -0.025 at epoch 1, the first negative one
    with pytest.raises(ValueError, match=r"soft's weight is -0.025 at epoch 1, below 0; give soft a schedule that stays at or above 0"):
        build_method("traditional", {"epochs": 5, "weights": {"soft": {"kind": "linear", "maximum": -0.1, "ramp_epochs": 4}}})


def test_a_negative_weight_in_a_config_is_a_one_line_error_naming_the_method():
    from stepdistill.config import ExperimentConfig

    config = ExperimentConfig.model_validate({"methods": {"traditional": {"weights": {"hard": {"kind": "constant", "value": 3}}}}})
    with raises_one_line(r"^invalid config at methods\.traditional: soft's weight is 1 - hard = -2 at epoch 0"):
        config.check()
