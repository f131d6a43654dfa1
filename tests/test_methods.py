import pytest
from pydantic import ValidationError

from stepdistill.terms import Consistency, HardLabel, Rationale, SoftTarget, build_method


def _weights(method, epoch):
    return {t.name: t.weight.value(epoch) for t in method.terms}


def test_presets_hold_the_article_values():
    assert [type(t.objective) for t in build_method("baseline").terms] == [HardLabel]
    traditional = build_method("traditional")
    assert _weights(traditional, 0) == {"hard": 0.5, "soft": 0.5}
    assert traditional.terms[1].objective == SoftTarget(2.0)
    assert traditional.training.optimizer == "sgd" and traditional.training.lr == 0.01
    assert _weights(build_method("step_by_step"), 3) == pytest.approx({"hard": 0.5, "rationale": 0.3, "soft": 0.2})


def test_enhanced_ramps_the_rationale_weight_and_the_soft_weight_takes_the_rest():
    enhanced = build_method("enhanced")
    objectives = {t.name: t.objective for t in enhanced.terms}
    assert objectives["rationale"] == Rationale("cosine", 0.1)
    assert objectives["consistency"] == Consistency(0.04)
    for epoch, b in [(0, 0.0), (2, 0.025), (4, 0.05), (8, 0.1), (9, 0.1)]:
        w = _weights(enhanced, epoch)
        assert w["rationale"] == pytest.approx(b)
        assert w["soft"] == pytest.approx(1 - 0.5 - b)
        assert w["consistency"] == 0.25
    assert enhanced.training.optimizer == "adam" and enhanced.training.scheduler == "plateau"


def test_overrides_apply():
    method = build_method("traditional", {"alpha": 0.0, "temperature": 4})
    assert _weights(method, 0) == {"hard": 0.0, "soft": 1.0}
    assert method.terms[1].objective.temperature == 4


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("traditional", {"alpha": 1.5}),
        ("traditional", {"alpha": -0.1}),
        ("traditional", {"temperature": 0}),
        ("step_by_step", {"alpha": 0.8, "beta": 0.3}),
        ("step_by_step", {"beta": 2}),
        ("enhanced", {"lr": -1}),
        ("traditional", {"no_such_option": 1}),
    ],
)
def test_bad_values_are_rejected(preset, overrides):
    with pytest.raises(ValidationError):
        build_method(preset, overrides)


def test_any_term_takes_any_schedule_and_the_soft_weight_follows():
    method = build_method(
        "step_by_step", {"weights": {"rationale": {"kind": "phases", "boundaries": [3, 6], "values": [0.0, 0.3, 0.45]}}}
    )
    assert [_weights(method, e)["rationale"] for e in (0, 3, 6)] == [0.0, 0.3, 0.45]
    assert [_weights(method, e)["soft"] for e in (0, 3, 6)] == pytest.approx([0.5, 0.2, 0.05])
    cosine = build_method("enhanced", {"weights": {"consistency": {"kind": "cosine", "maximum": 0.2, "ramp_epochs": 4}}})
    assert _weights(cosine, 2)["consistency"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown terms"):
        build_method("traditional", {"weights": {"rationale": {"kind": "constant", "value": 0.1}}})
