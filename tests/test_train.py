import math
from dataclasses import dataclass, field

import pytest
import torch

from stepdistill.data import Table, linear_binary, prepare
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.tabular import TabularData
from stepdistill.evaluate import classification_metrics, predicted_classes
from stepdistill.students.logistic import LogisticModel
from stepdistill.students.mlp import MLPModel
from stepdistill.teachers.cache import cache_model_outputs
from stepdistill.terms import Method, SoftTarget, Term, build_method
from stepdistill.weights import Constant


def _teacher(splits, epochs=5, seed=0):
    method = build_method("baseline", {"epochs": epochs, "optimizer": "adam", "lr": 0.02}, name="teacher")
    state = new_state("teacher", method, lambda: LogisticModel(10, 1), seed)
    fit([state], TabularData(splits.train, splits.val, None))
    state.model.eval()
    return state.model


def _logistic(rationale="contributions"):
    return lambda: LogisticModel(10, 1, rationale)


def _params(state):
    return torch.cat([p.detach().flatten() for p in state.model.parameters()])


@dataclass(frozen=True)
class RecordingSoftTarget(SoftTarget):
    """A soft-target term that keeps every batch it is shown (training steps call ``grads`` in
    the linear engine and ``loss`` in the autograd engine; epoch-end measurements call ``loss``)."""

    seen: list = field(default_factory=list, compare=False, hash=False)

    def _record(self, batch):
        self.seen.append((batch.x.reshape(-1, batch.x.shape[-1]).clone(), batch.teacher_logits.reshape(-1, 1).clone()))

    def loss(self, out, batch):
        self._record(batch)
        return super().loss(out, batch)

    def grads(self, out, batch):
        self._record(batch)
        return super().grads(out, batch)


@pytest.mark.parametrize("student", ["logistic", "mlp"])
def test_teacher_outputs_stay_aligned_to_samples_under_shuffling(linear_splits, student):
    # Ids that are neither positions nor sorted, and a cache built in a different row order than
    # the training table: only a lookup by id can line them up.
    train = linear_splits.train
    scrambled = train.take(torch.randperm(len(train), generator=torch.Generator().manual_seed(5)))
    train = Table(scrambled.ids * 7 + 1000, scrambled.X, scrambled.y, train.classes, train.feature_names)
    val = Table(linear_splits.val.ids * 7 + 1001, linear_splits.val.X, linear_splits.val.y, train.classes, train.feature_names)
    teacher = _teacher(linear_splits)
    cache = cache_model_outputs(teacher, [val, train.take(torch.arange(len(train)).flip(0))], batch_size=999)

    recorder = RecordingSoftTarget(2.0)
    method = Method("probe", (Term("soft", recorder, Constant(1.0)),), build_method("traditional", {"epochs": 2}).training)
    make = _logistic() if student == "logistic" else (lambda: MLPModel(10, 1, (8,)))
    fit([new_state("probe", method, make, seed=3)], TabularData(train, val, cache.take(train.ids)))

    batch_sizes = [len(x) for x, _ in recorder.seen]
    assert batch_sizes.count(512) == 2 * 15 and batch_sizes.count(8000) == 2  # 2 epochs, and their measurements
    first_x, _ = recorder.seen[0]
    assert not torch.equal(first_x, train.X[:512]), "batches should be shuffled"
    with torch.no_grad():
        for x, teacher_logits in recorder.seen:
            torch.testing.assert_close(teacher_logits, teacher(x).logits, rtol=1e-5, atol=1e-5)


def test_cache_rejects_unknown_ids(linear_splits):
    cache = cache_model_outputs(_teacher(linear_splits, epochs=1), [linear_splits.train])
    with pytest.raises(KeyError):
        cache.take(linear_splits.test.ids)


def test_pure_soft_target_student_reproduces_a_logistic_teacher(linear_splits):
    teacher = _teacher(linear_splits, epochs=10)
    cache = cache_model_outputs(teacher, [linear_splits.train, linear_splits.val, linear_splits.test])
    method = build_method("traditional", {"alpha": 0.0, "epochs": 30, "optimizer": "adam", "lr": 0.05})
    state = new_state("kd", method, _logistic(), seed=0)
    fit([state], TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))
    state.model.eval()
    with torch.no_grad():
        metrics = classification_metrics(
            state.model(linear_splits.test.X).logits, linear_splits.test.y, predicted_classes(teacher(linear_splits.test.X).logits)
        )
    assert metrics["fidelity"] >= 0.99


@pytest.mark.parametrize("preset", ["traditional", "step_by_step", "enhanced"])
@pytest.mark.parametrize("rationale", ["contributions", "score"])
def test_linear_engine_matches_autograd(linear_splits, preset, rationale, train_both_engines):
    """The closed-form engine and autograd take the same steps: same loss values, same weights."""
    teacher = _teacher(linear_splits, epochs=2)
    teacher.rationale_kind = rationale
    cache = cache_model_outputs(teacher, [linear_splits.train, linear_splits.val])
    method = build_method(preset, {"epochs": 3})
    linear, autograd = train_both_engines(method, _logistic(rationale), linear_splits.train, linear_splits.val, cache)
    for a, b in zip(linear.history, autograd.history):
        for name in a["terms"]:
            assert a["terms"][name]["raw"] == pytest.approx(b["terms"][name]["raw"], rel=1e-4, abs=1e-6)


def test_students_do_not_depend_on_who_they_are_stacked_with(linear_splits):
    cache = cache_model_outputs(_teacher(linear_splits, epochs=2), [linear_splits.train, linear_splits.val])
    alone = new_state("sbs", build_method("step_by_step", {"epochs": 2}), _logistic(), seed=4)
    fit([alone], TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))
    together = [new_state(m, build_method(m, {"epochs": 2}), _logistic(), seed=s) for m in ["baseline", "traditional"] for s in (4, 5)]
    stacked = new_state("sbs", build_method("step_by_step", {"epochs": 2}), _logistic(), seed=4)
    fit(together + [stacked], TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))
    torch.testing.assert_close(_params(alone), _params(stacked), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(_params(together[0]), _params(together[1]))  # seeds differ


def _resumed_after(epochs, short_method, full_method, make, splits, cache, tmp_path):
    """Train ``epochs`` epochs, save the state to disk, load it into a fresh student built with
    another seed (which must not matter), and train that to the end of ``full_method``."""
    first = new_state("s", short_method, make, seed=2, teacher_rationale_width=10)
    fit([first], TabularData(splits.train, splits.val, cache.take(splits.train.ids)))
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = new_state("s", full_method, make, seed=99, teacher_rationale_width=10)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False))
    fit([resumed], TabularData(splits.train, splits.val, cache.take(splits.train.ids)))
    assert first.epoch == epochs
    return resumed


def test_training_is_deterministic_and_resumes_from_a_saved_state(linear_splits, tmp_path):
    cache = cache_model_outputs(_teacher(linear_splits, epochs=2), [linear_splits.train, linear_splits.val])
    method = lambda epochs: build_method("enhanced", {"epochs": epochs})
    make = lambda: MLPModel(10, 1, (16,))
    full = new_state("e", method(4), make, seed=2, teacher_rationale_width=10)
    fit([full], TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))

    again = new_state("e", method(4), make, seed=2, teacher_rationale_width=10)
    fit([again], TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))
    assert torch.equal(_params(full), _params(again))

    resumed = _resumed_after(2, method(2), method(4), make, linear_splits, cache, tmp_path)
    torch.testing.assert_close(_params(full), _params(resumed))
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    assert resumed.head is not None  # the MLP's 16 hidden units are projected onto 10 contributions


def test_plateau_scheduler_and_early_stopping(linear_splits):
    method = build_method("baseline", {"epochs": 40, "lr": 5.0, "scheduler": "plateau", "plateau_patience": 0, "early_stopping_patience": 2})
    state = new_state("b", method, _logistic(), seed=0)
    fit([state], TabularData(linear_splits.train, linear_splits.val, None))
    lrs = [h["lr"] for h in state.history]
    assert lrs[-1] < lrs[0]  # the plateau scheduler cut the learning rate
    assert state.stopped and len(state.history) < 40
    best = min(h["val_loss"] for h in state.history)
    from stepdistill.engines.tabular import validation_loss

    assert validation_loss(state.model, linear_splits.val) == pytest.approx(best, rel=1e-6)  # best weights restored


def test_linear_engine_matches_autograd_on_three_classes(train_both_engines):
    frame = linear_binary(3000, 4, seed=2)
    frame["label"] = (frame["x0"] > -0.4).astype(int) + (frame["x1"] > 0.4).astype(int)
    splits, _ = prepare(frame, "label")
    teacher = new_state("t", build_method("baseline", {"epochs": 3, "optimizer": "adam", "lr": 0.05}), lambda: LogisticModel(4, 3), 0)
    fit([teacher], TabularData(splits.train, splits.val, None))
    cache = cache_model_outputs(teacher.model, [splits.train, splits.val])
    method = build_method("enhanced", {"epochs": 3, "ramp_epochs": 1})
    linear, autograd = train_both_engines(method, lambda: LogisticModel(4, 3), splits.train, splits.val, cache)
    assert linear.history[-1]["terms"]["rationale"]["raw"] > 0


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"scheduler": "step", "step_epochs": 2, "lr_factor": 0.1}, [1.0, 1.0, 0.1, 0.1, 0.01]),
        ({"scheduler": "cosine"}, [1.0, 0.9045, 0.6545, 0.3455, 0.0955]),
        ({"scheduler": "none"}, [1.0] * 5),
    ],
)
def test_epoch_schedulers(linear_splits, overrides, expected):
    method = build_method("baseline", {"epochs": 5, "lr": 1.0, **overrides})
    state = new_state("b", method, _logistic(), seed=0)
    fit([state], TabularData(linear_splits.train, linear_splits.val, None))
    assert [h["lr"] for h in state.history] == pytest.approx(expected, abs=1e-4)


def test_mlp_rationale_is_the_chosen_hidden_layer():
    model = MLPModel(10, 1, (16, 8), rationale_layer=0)
    assert model.rationale_width == 16
    x = torch.randn(5, 10)
    torch.testing.assert_close(model(x).rationale, model.blocks[0](x))
    last = MLPModel(10, 1, (16, 8))
    assert last.rationale_width == 8 and last(x).rationale.shape == (5, 8)


def test_grouped_contributions_with_bias_sum_to_the_logit_and_train_alike_in_both_engines(linear_splits, train_both_engines):
    """Contributions summed per raw column plus the bias: the layout of TreeSHAP explanations."""
    groups = [0, 0, 1, 1, 1, 2, 3, 3, 4, 5]  # e.g. one-hot columns of one raw column share a group
    make = lambda: LogisticModel(10, 1, feature_groups=groups, include_bias=True)
    model = make()
    with torch.no_grad():
        model.linear.weight.normal_()
        model.linear.bias.fill_(0.3)
        out = model(linear_splits.val.X)
    assert model.rationale_width == 7 and out.rationale.shape == (len(linear_splits.val), 7)
    torch.testing.assert_close(out.rationale.sum(1, keepdim=True), out.logits)

    teacher = make()
    with torch.no_grad():
        teacher.linear.weight.normal_(generator=torch.Generator().manual_seed(3))
    cache = cache_model_outputs(teacher, [linear_splits.train, linear_splits.val])
    method = build_method("step_by_step", {"epochs": 2, "alpha": 0.2, "beta": 0.6})
    linear, autograd = train_both_engines(method, make, linear_splits.train, linear_splits.val, cache)
    assert linear.history[-1]["terms"]["rationale"]["raw"] < linear.history[0]["terms"]["rationale"]["raw"]


def test_only_labelled_rows_feed_the_hard_label_term(linear_splits, train_both_engines):
    from stepdistill.terms import Batch, HardLabel, Outputs

    logits, y = torch.randn(2, 6, 1), torch.randint(0, 2, (2, 6))
    labelled = torch.tensor([[True, False, True, False, False, False], [True] * 6])
    values = HardLabel().loss(Outputs(logits), Batch(None, y, None, None, labelled)).mean(-1)
    full = HardLabel().loss(Outputs(logits), Batch(None, y, None, None)).mean(-1)
    only_labelled = HardLabel().loss(Outputs(logits[0, [0, 2]]), Batch(None, y[0, [0, 2]], None, None)).mean()
    torch.testing.assert_close(values[0], only_labelled)
    torch.testing.assert_close(values[1], full[1])

    cache = cache_model_outputs(_teacher(linear_splits, epochs=2), [linear_splits.train, linear_splits.val])
    mask = torch.rand(len(linear_splits.train), generator=torch.Generator().manual_seed(0)) < 0.05
    method = build_method("traditional", {"epochs": 2})
    linear, autograd = train_both_engines(method, _logistic(), linear_splits.train, linear_splits.val, cache, labelled=mask)
    unmasked = new_state("c", method, _logistic(), seed=1)
    fit([unmasked], TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))
    assert not torch.allclose(_params(linear), _params(unmasked), atol=1e-3)


@pytest.mark.parametrize(
    "balancer",
    [
        {"kind": "dwa"},
        {"kind": "loss_ratio", "targets": {"hard": 0.5, "soft": 0.3, "rationale": 0.2}},
        {"kind": "uncertainty", "lr": 0.05},
        {"kind": "gradnorm"},
    ],
)
def test_balancers_move_the_weights_and_resume_exactly(linear_splits, balancer, tmp_path):
    cache = cache_model_outputs(_teacher(linear_splits, epochs=2), [linear_splits.train, linear_splits.val])
    method = lambda epochs: build_method("step_by_step", {"epochs": epochs, "balancer": balancer})
    make = lambda: MLPModel(10, 1, (8,))
    full = new_state("s", method(4), make, seed=2, teacher_rationale_width=10)
    fit([full], TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))
    weights = [h["terms"]["soft"]["weight"] for h in full.history]
    assert len(set(weights)) > 1, weights  # the balancer changed the scheduled 0.2
    assert build_method("step_by_step", {"balancer": balancer}).balancer is not full.balancer  # each student its own

    resumed = _resumed_after(2, method(2), method(4), make, linear_splits, cache, tmp_path)
    torch.testing.assert_close(_params(full), _params(resumed))


def test_feature_dropout_consistency(linear_splits, train_both_engines):
    from stepdistill.terms import Consistency

    x = torch.ones(2000, 10)
    dropped = Consistency(kind="dropout", dropout=0.2).perturb(x, torch.Generator().manual_seed(0))
    assert abs(float((dropped == 0).float().mean()) - 0.2) < 0.01 and torch.allclose(dropped[dropped > 0], torch.tensor(1.25))

    cache = cache_model_outputs(_teacher(linear_splits, epochs=2), [linear_splits.train, linear_splits.val])
    method = build_method("enhanced", {"epochs": 2, "perturbation": "dropout", "feature_dropout": 0.3})
    linear, autograd = train_both_engines(method, _logistic(), linear_splits.train, linear_splits.val, cache)
    assert linear.history[-1]["terms"]["consistency"]["raw"] > 0


def _with_autograd_only(monkeypatch, use_autograd):
    import stepdistill.engines.tabular as train_module

    if use_autograd:
        monkeypatch.setattr(train_module.LinearEngine, "accepts", staticmethod(lambda state: False))


@pytest.mark.parametrize("engine", ["linear", "autograd"])
def test_a_student_trains_alike_whatever_it_is_stacked_with(linear_splits, engine, monkeypatch):
    """Under a curriculum, stacked with a student of fewer epochs, one that stops early and one
    with consistency noise, each student ends where it ends alone, its generator included."""
    _with_autograd_only(monkeypatch, engine == "autograd")
    cache = cache_model_outputs(_teacher(linear_splits, epochs=2), [linear_splits.train, linear_splits.val])
    curriculum = {"start_fraction": 0.25, "ramp_epochs": 3}
    specs = [
        ("traditional", {"epochs": 4}, 1),  # the student under test
        ("traditional", {"epochs": 2}, 2),
        ("traditional", {"epochs": 5, "lr": 30.0, "early_stopping_patience": 1}, 3),
        ("enhanced", {"epochs": 2}, 4),  # consistency 0.25: noise drawn from its generator
    ]

    def students():
        return [new_state(p, build_method(p, {**o, "curriculum": curriculum}), _logistic(), seed=s) for p, o, s in specs]

    alone = students()
    for state in alone:
        fit([state], TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))
    stacked = students()
    fit(stacked, TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))
    assert alone[2].stopped and len(alone[2].history) < 5  # it did stop early
    torch.testing.assert_close(_params(stacked[0]), _params(alone[0]), rtol=0, atol=1e-6)
    for solo, together in zip(alone, stacked):
        # A stacked matrix product rounds a little differently from a single one; lr 30 magnifies that.
        torch.testing.assert_close(_params(together), _params(solo), rtol=1e-4, atol=1e-6)
        assert torch.equal(together.generator.get_state(), solo.generator.get_state()), together.name
        assert [h["epoch"] for h in together.history] == [h["epoch"] for h in solo.history]


def test_students_at_different_epochs_under_a_curriculum_each_keep_their_own_pace(linear_splits, tmp_path):
    """A student resumed at epoch 2, stacked with a fresh one: each sees the rows of its own epoch."""
    cache = cache_model_outputs(_teacher(linear_splits, epochs=2), [linear_splits.train, linear_splits.val])
    method = lambda epochs: build_method("step_by_step", {"epochs": epochs, "curriculum": {"start_fraction": 0.2, "ramp_epochs": 3}})
    half = new_state("r", method(2), _logistic(), seed=2)
    fit([half], TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))

    def resumed():
        state = new_state("r", method(4), _logistic(), seed=99)
        state.load_state_dict(half.state_dict())
        return state

    alone = [resumed(), new_state("f", method(4), _logistic(), seed=5)]
    for state in alone:
        fit([state], TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))
    together = [resumed(), new_state("f", method(4), _logistic(), seed=5)]
    fit(together, TabularData(linear_splits.train, linear_splits.val, cache.take(linear_splits.train.ids)))
    for solo, stacked in zip(alone, together):
        torch.testing.assert_close(_params(stacked), _params(solo), rtol=0, atol=1e-6)
        assert stacked.epoch == 4
    assert not torch.allclose(_params(together[0]), _params(together[1]))


@pytest.mark.parametrize("engine", ["linear", "autograd"])
def test_a_diverging_student_is_marked_and_stopped(linear_splits, engine, monkeypatch):
    _with_autograd_only(monkeypatch, engine == "autograd")
    method = build_method("baseline", {"epochs": 5, "lr": 1e6, "early_stopping_patience": 3})
    blown, fine = new_state("blown", method, _logistic(), seed=0), new_state("fine", build_method("baseline", {"epochs": 2}), _logistic(), seed=0)
    fit([blown, fine], TabularData(linear_splits.train, linear_splits.val, None))
    assert blown.diverged is not None and "validation loss" in blown.diverged and "learning rate" in blown.diverged
    assert blown.done and blown.epoch == len(blown.history) == 1  # stopped after the first epoch
    # nothing restored: the model is the one that blew up (class-prior log-loss here is ln 2)
    from stepdistill.engines.tabular import validation_loss

    assert validation_loss(blown.model, linear_splits.val) == blown.history[-1]["val_loss"] > 10 * math.log(2)
    assert fine.diverged is None and fine.epoch == 2

    restored = new_state("blown", method, _logistic(), seed=1)
    restored.load_state_dict(blown.state_dict())
    assert restored.diverged == blown.diverged and restored.done


def test_the_divergence_threshold_uses_only_the_labels_students_may_see(linear_splits):
    from stepdistill.engines.tabular import TrainingRows

    train, val = linear_splits.train, linear_splits.val
    only_ones = train.y == 1
    data = TrainingRows.build(TabularData(train, val, None, only_ones), False, torch.device("cpu"))
    # the labelled rows are all class 1: the prior rule gives class 0 probability 0, an infinite log-loss
    assert data.divergence_threshold == math.inf
    labelled = torch.zeros(len(train), dtype=torch.bool)
    labelled[[int(torch.nonzero(train.y == 0)[0]), *torch.nonzero(train.y == 1)[:3].flatten().tolist()]] = True
    data = TrainingRows.build(TabularData(train, val, None, labelled), False, torch.device("cpu"))
    # shares 1/4 and 3/4: log-loss -(n0 ln 0.25 + n1 ln 0.75) / n on the validation rows
    n1 = int(val.y.sum())
    expected = -((len(val) - n1) * math.log(0.25) + n1 * math.log(0.75)) / len(val)
    assert data.divergence_threshold == pytest.approx(10 * expected)


SLEEP_PER_FORWARD = 0.01


class _SlowMLP(MLPModel):
    """An MLP that waits ``SLEEP_PER_FORWARD`` seconds in every forward pass, and counts them."""

    def __init__(self):
        super().__init__(10, 1, (8,))
        self.forwards = 0

    def forward(self, x):
        import time

        self.forwards += 1
        time.sleep(SLEEP_PER_FORWARD)
        return super().forward(x)


def test_seconds_are_measured_per_student_not_shared_out(linear_splits):
    slow = new_state("slow", build_method("baseline", {"epochs": 2}), _SlowMLP, seed=0)
    fast = new_state("fast", build_method("baseline", {"epochs": 2}), lambda: MLPModel(10, 1, (8,)), seed=0)
    fit([slow, fast], TabularData(linear_splits.train, linear_splits.val, None))  # one autograd group
    waited = SLEEP_PER_FORWARD * slow.model.forwards  # 2 epochs x (16 batches + 2 measurements): 0.36 s
    assert slow.seconds >= waited
    # The same work but for the waits: measured apart, the fast one is cheaper by about ``waited``
    # (shared out evenly, both would get the same seconds).
    assert slow.seconds - fast.seconds > waited / 2
    for state in (slow, fast):
        assert state.stacked_with == 1 and state.stacked_seconds == state.seconds

    stacked = [new_state(f"s{epochs}", build_method("baseline", {"epochs": epochs}), _logistic(), seed=0) for epochs in (1, 2, 2)]
    fit(stacked, TabularData(linear_splits.train, linear_splits.val, None))  # one linear stack
    assert [s.seconds for s in stacked] == [None, None, None] and [s.stacked_with for s in stacked] == [3, 3, 3]
    assert 0 < stacked[0].stacked_seconds < stacked[1].stacked_seconds == stacked[2].stacked_seconds

    alone = new_state("alone", build_method("baseline", {"epochs": 2}), _logistic(), seed=0)
    fit([alone], TabularData(linear_splits.train, linear_splits.val, None))
    assert alone.seconds == alone.stacked_seconds > 0 and alone.stacked_with == 1
    restored = new_state("alone", build_method("baseline", {"epochs": 2}), _logistic(), seed=1)
    restored.load_state_dict(stacked[1].state_dict())
    assert (restored.seconds, restored.stacked_seconds, restored.stacked_with) == (None, stacked[1].stacked_seconds, 3)
