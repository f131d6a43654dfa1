import math

import pytest
import torch

from stepdistill.curriculum import Curriculum
from stepdistill.methods import build_method
from stepdistill.students import LogisticModel
from stepdistill.teachers import cache_model_outputs
from stepdistill.train import fit, new_state


def test_pacing_functions_by_hand():
    linear = Curriculum(start_fraction=0.2, ramp_epochs=4)
    assert [linear.fraction(t) for t in (0, 1, 2, 4, 9)] == pytest.approx([0.2, 0.4, 0.6, 1.0, 1.0])
    root = Curriculum(start_fraction=0.2, ramp_epochs=4, pacing="root")
    # sqrt(0.04 + 0.96 * 0.5) = sqrt(0.52)
    assert root.fraction(2) == pytest.approx(math.sqrt(0.52))
    assert root.fraction(4) == 1.0


def test_difficulty_measures_by_hand():
    # binary logits 0 (p = 0.5), ln 3 (p1 = 0.75), -ln 9 (p1 = 0.1); labels 1, 1, 1
    logits = torch.tensor([[0.0], [math.log(3)], [-math.log(9)]])
    y = torch.tensor([1, 1, 1])
    assert Curriculum(difficulty="confidence").difficulty_of(logits, y).tolist() == pytest.approx([0.5, 0.25, 0.1])
    assert Curriculum(difficulty="disagreement").difficulty_of(logits, y).tolist() == pytest.approx([0.5, 0.25, 0.9])
    entropy = Curriculum(difficulty="entropy").difficulty_of(logits, y)
    assert entropy[0] == pytest.approx(math.log(2)) and entropy[1] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert Curriculum(difficulty="disagreement").easiest_first(logits, y).tolist() == [1, 0, 2]
    weights = Curriculum(mistake_confidence=0.85, mistake_weight=0.0).teacher_weights(logits, y)
    assert weights.tolist() == [1.0, 1.0, 0.0]  # the teacher says 0 with p = 0.9 where the label is 1


def test_curriculum_paces_the_rows_and_both_engines_agree(linear_splits, monkeypatch, train_both_engines):
    import stepdistill.train as train_module

    teacher = new_state("t", build_method("baseline", {"epochs": 2, "optimizer": "adam", "lr": 0.02}), lambda: LogisticModel(10, 1), 0)
    fit([teacher], linear_splits.train, linear_splits.val, None)
    cache = cache_model_outputs(teacher.model, [linear_splits.train, linear_splits.val])
    curriculum = {"start_fraction": 0.25, "ramp_epochs": 2, "mistake_weight": 0.0, "mistake_confidence": 0.6}
    method = build_method("step_by_step", {"epochs": 3, "curriculum": curriculum})
    seen, original_step = [], train_module.LinearEngine.step

    def counting_step(self, batch):
        seen.append(batch.x.shape[1])
        return original_step(self, batch)

    monkeypatch.setattr(train_module.LinearEngine, "step", counting_step)
    fit([new_state("a", method, lambda: LogisticModel(10, 1), seed=1)], linear_splits.train, linear_splits.val, cache)
    n = len(linear_splits.train)
    per_epoch = [math.ceil(f * n) for f in (0.25, 0.625, 1.0)]
    assert sum(seen) == sum(per_epoch)  # each epoch visits exactly the paced rows

    monkeypatch.undo()  # the real step again
    train_both_engines(method, lambda: LogisticModel(10, 1), linear_splits.train, linear_splits.val, cache)
