import math

import pytest
import torch

from stepdistill.curriculum import Curriculum
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.tabular import TabularData
from stepdistill.students.logistic import LogisticModel
from stepdistill.teachers.cache import cache_model_outputs
from stepdistill.terms import build_method


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
    import stepdistill.engines.tabular as train_module

    teacher = new_state("t", build_method("baseline", {"epochs": 2, "optimizer": "adam", "lr": 0.02}), lambda: LogisticModel(10, 1), 0)
    fit([teacher], TabularData(linear_splits.train, linear_splits.val, None))
    cache = cache_model_outputs(teacher.model, [linear_splits.train, linear_splits.val])
    curriculum = {"start_fraction": 0.25, "ramp_epochs": 2, "mistake_weight": 0.0, "mistake_confidence": 0.6}
    method = build_method("step_by_step", {"epochs": 3, "curriculum": curriculum})
    seen, original_step = [], train_module.LinearEngine.step

    def counting_step(self, batch):
        seen.append(batch.x.shape[1])
        return original_step(self, batch)

    monkeypatch.setattr(train_module.LinearEngine, "step", counting_step)
    fit([new_state("a", method, lambda: LogisticModel(10, 1), seed=1)], TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))
    n = len(linear_splits.train)
    per_epoch = [math.ceil(f * n) for f in (0.25, 0.625, 1.0)]
    assert sum(seen) == sum(per_epoch)  # each epoch visits exactly the paced rows

    monkeypatch.undo()  # the real step again
    train_both_engines(method, lambda: LogisticModel(10, 1), linear_splits.train, linear_splits.val, cache)


def test_hidden_rows_are_judged_by_the_teacher_alone():
    # binary logits ln 3 (p1 = 0.75) and -ln 9 (p1 = 0.1), both labelled 1; only the first is labelled
    logits = torch.tensor([[math.log(3)], [-math.log(9)]])
    y, labelled = torch.tensor([1, 1]), torch.tensor([True, False])
    curriculum = Curriculum(difficulty="disagreement", mistake_confidence=0.85, mistake_weight=0.0)
    # labelled: 1 - p_y = 0.25; hidden: 1 - max p = 1 - 0.9 = 0.1, as if the teacher's class 0 were right
    assert curriculum.difficulty_of(logits, y, labelled).tolist() == pytest.approx([0.25, 0.1])
    assert curriculum.difficulty_of(logits, y).tolist() == pytest.approx([0.25, 0.9])
    # the teacher is confidently wrong on the second row, but its label is hidden: weight 1
    assert curriculum.teacher_weights(logits, y, labelled).tolist() == [1.0, 1.0]
    assert curriculum.teacher_weights(logits, y).tolist() == [1.0, 0.0]


def _with_labels(table, y):
    from stepdistill.data import Table

    return Table(table.ids, table.X, y, table.classes, table.feature_names)


def test_hidden_labels_play_no_part_in_training(linear_splits, train_both_engines):
    """Flipping the labels of hidden rows changes nothing, bit for bit, on both engines; flipping
    labelled ones does."""
    teacher = new_state("t", build_method("baseline", {"epochs": 2, "optimizer": "adam", "lr": 0.02}), lambda: LogisticModel(10, 1), 0)
    fit([teacher], TabularData(linear_splits.train, linear_splits.val, None))
    cache = cache_model_outputs(teacher.model, [linear_splits.train, linear_splits.val])
    curriculum = {"difficulty": "disagreement", "start_fraction": 0.3, "ramp_epochs": 2, "mistake_weight": 0.2, "mistake_confidence": 0.6}
    method = build_method("step_by_step", {"epochs": 3, "curriculum": curriculum})
    train, val, make = linear_splits.train, linear_splits.val, lambda: LogisticModel(10, 1)
    labelled = torch.rand(len(train), generator=torch.Generator().manual_seed(0)) < 0.3
    assert Curriculum(**curriculum).teacher_weights(cache.take(train.ids).logits, train.y).min() < 1  # mistakes exist

    def params(states):
        return [torch.cat([p.detach().flatten() for p in s.model.parameters()]) for s in states]

    original = params(train_both_engines(method, make, train, val, cache, labelled=labelled))
    hidden_flipped = _with_labels(train, torch.where(labelled, train.y, 1 - train.y))
    for before, after in zip(original, params(train_both_engines(method, make, hidden_flipped, val, cache, labelled=labelled))):
        assert torch.equal(before, after)
    first_labelled = torch.nonzero(labelled)[:200].flatten()
    labelled_flipped = _with_labels(train, train.y.index_put((first_labelled,), 1 - train.y[first_labelled]))
    changed = new_state("c", method, make, seed=1)
    fit([changed], TabularData(labelled_flipped, val, cache.take(labelled_flipped.ids), labelled))
    assert not torch.allclose(params([changed])[0], original[0], atol=1e-4)
