import json

import pytest

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

