import pytest
import torch

from stepdistill.data import Table
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.tabular import LinearEngine, TabularData
from stepdistill.students.choice import ChoiceScorerModel
from stepdistill.teachers.cache import InMemoryTeacherCache
from stepdistill.terms import build_method

N_CHOICES, N_FEATURES, TEACHER_RATIONALE_WIDTH = 4, 5, 8


def _pairs(n: int, seed: int = 0) -> torch.Tensor:
    """(n, K, F) pair features; the right choice is the one with the largest first feature."""
    return torch.randn(n, N_CHOICES, N_FEATURES, generator=torch.Generator().manual_seed(seed))


def _table(pairs: torch.Tensor, first_id: int = 0) -> Table:
    n = pairs.shape[0]
    return Table(
        torch.arange(first_id, first_id + n),
        pairs.flatten(1),
        pairs[..., 0].argmax(-1),
        tuple(f"choice_{k}" for k in range(N_CHOICES)),
        tuple(f"c{k}_f{j}" for k in range(N_CHOICES) for j in range(N_FEATURES)),
    )


def _splits() -> tuple[Table, Table, Table]:
    table = _table(_pairs(400))
    return table.take(torch.arange(0, 300)), table.take(torch.arange(300, 350)), table.take(torch.arange(350, 400))


def _accuracy(model: ChoiceScorerModel, table: Table) -> float:
    with torch.no_grad():
        return float((model(table.X).logits.argmax(-1) == table.y).float().mean())


@pytest.mark.parametrize(("hidden", "rationale_layer", "width"), [((16,), -1, 16), ((16, 12), 0, 16), ((16, 12), -1, 12)])
def test_logits_and_rationale_shapes_flat_or_paired(hidden, rationale_layer, width):
    model = ChoiceScorerModel(N_FEATURES, N_CHOICES, hidden, rationale_layer)
    pairs = _pairs(7)
    flat, paired = model(pairs.flatten(1)), model(pairs)
    assert flat.logits.shape == (7, N_CHOICES)
    assert flat.rationale.shape == (7, width) == (7, model.rationale_width)
    torch.testing.assert_close(flat.logits, paired.logits)
    torch.testing.assert_close(flat.rationale, paired.rationale)


def test_rows_of_the_wrong_width_are_refused():
    model = ChoiceScorerModel(N_FEATURES, N_CHOICES)
    with pytest.raises(ValueError, match="4 choices x 5 features"):
        model(torch.zeros(2, N_CHOICES, N_FEATURES + 1))


def test_permuting_choices_permutes_logits_exactly_and_keeps_the_rationale():
    model = ChoiceScorerModel(N_FEATURES, N_CHOICES, (16, 16))
    pairs = _pairs(6)
    order = torch.tensor([2, 0, 3, 1])
    out, permuted = model(pairs), model(pairs[:, order])
    assert torch.equal(permuted.logits, out.logits[:, order])
    torch.testing.assert_close(permuted.rationale, out.rationale)


def test_parameter_count_does_not_depend_on_the_number_of_choices():
    counts = {sum(p.numel() for p in ChoiceScorerModel(N_FEATURES, k, (16,)).parameters()) for k in (2, 4, 9)}
    assert counts == {N_FEATURES * 16 + 16 + 16 + 1}


def test_spec_rebuilds_the_model():
    model = ChoiceScorerModel(N_FEATURES, N_CHOICES, (16, 8), 0)
    arguments = dict(model.spec)
    assert arguments.pop("kind") == "choice_scorer"
    rebuilt = ChoiceScorerModel(**arguments)
    rebuilt.load_state_dict(model.state_dict())
    x = _pairs(3).flatten(1)
    assert torch.equal(rebuilt(x).logits, model(x).logits)


def test_trains_with_hard_labels_through_the_project_trainer():
    train, val, test = _splits()
    method = build_method("baseline", {"epochs": 5, "lr": 0.01, "optimizer": "adam", "batch_size": 32})
    state = new_state("choice", method, lambda: ChoiceScorerModel(N_FEATURES, N_CHOICES, (32,)), seed=0)
    assert not LinearEngine.accepts(state)
    fit([state], TabularData(train, val, None))
    assert state.diverged is None and len(state.history) == 5
    assert _accuracy(state.model, test) > 0.8


@pytest.mark.parametrize("preset", ["traditional", "step_by_step"])
def test_distils_from_a_teacher_with_a_projected_rationale(preset):
    train, val, _ = _splits()
    pairs = train.X.unflatten(-1, (N_CHOICES, N_FEATURES))
    teacher_logits = 3.0 * pairs[..., 0]
    # The teacher explains its pick: the features of the choice it scores highest, projected to R.
    picked = pairs[torch.arange(len(train)), teacher_logits.argmax(-1)]
    projection = torch.randn(N_FEATURES, TEACHER_RATIONALE_WIDTH, generator=torch.Generator().manual_seed(1))
    cache = InMemoryTeacherCache(train.ids, teacher_logits, picked @ projection)
    method = build_method(preset, {"epochs": 3, "lr": 0.01, "optimizer": "adam", "batch_size": 64})
    state = new_state(
        preset,
        method,
        lambda: ChoiceScorerModel(N_FEATURES, N_CHOICES, (16,)),
        seed=0,
        teacher_rationale_width=TEACHER_RATIONALE_WIDTH,
    )
    assert (state.head is not None) == (preset == "step_by_step")
    assert not LinearEngine.accepts(state)
    fit([state], TabularData(train, val, cache.take(train.ids)))
    assert state.diverged is None and len(state.history) == 3
    terms = state.history[-1]["terms"]
    assert set(terms) == ({"hard", "soft", "rationale"} if preset == "step_by_step" else {"hard", "soft"})
    assert all(torch.isfinite(torch.tensor(t["raw"])) for t in terms.values())
