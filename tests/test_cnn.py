import pytest
import torch

from stepdistill.data import Table, mnist_5k
from stepdistill.data.bundled import IMAGE_SHAPE_MNIST
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.tabular import TabularData
from stepdistill.students.cnn import CNNModel
from stepdistill.terms import build_method


@pytest.mark.parametrize(
    ("rationale", "rationale_layer", "expected_width"),
    [
        ("pooled", 0, 16),
        ("pooled", -1, 32),
        ("spatial", 0, 16 * 14 * 14),
        ("spatial", 1, 32 * 7 * 7),
    ],
)
def test_cnn_output_shapes_and_rationale_width(rationale, rationale_layer, expected_width):
    model = CNNModel(IMAGE_SHAPE_MNIST, 10, rationale=rationale, rationale_layer=rationale_layer)
    out = model(torch.rand(5, 28 * 28))
    assert out.logits.shape == (5, 10)
    assert out.rationale.shape == (5, expected_width)
    assert model.rationale_width == expected_width


def test_cnn_binary_task_on_odd_sized_colour_images():
    # 3x15x9: each pool drops an odd last row or column, so widths come from floor division.
    model = CNNModel((3, 15, 9), 1, channels=(4, 6, 8), rationale="spatial", rationale_layer=1)
    out = model(torch.rand(2, 3 * 15 * 9))
    assert out.logits.shape == (2, 1)
    assert out.rationale.shape == (2, model.rationale_width) == (2, 6 * 3 * 2)


def test_cnn_blocks_are_named_by_position():
    names = {name for name, _ in CNNModel(IMAGE_SHAPE_MNIST, 10).named_children()}
    assert names == {"blocks", "head"}
    assert [name for name, _ in CNNModel(IMAGE_SHAPE_MNIST, 10).blocks.named_children()] == ["0", "1"]


def test_pooled_rationale_is_the_spatial_mean_of_the_same_map():
    x = torch.rand(3, 28 * 28)
    pooled, spatial = (CNNModel(IMAGE_SHAPE_MNIST, 10, rationale=kind) for kind in ("pooled", "spatial"))
    spatial.load_state_dict(pooled.state_dict())
    feature_map = spatial(x).rationale.unflatten(-1, (32, 7, 7))
    torch.testing.assert_close(pooled(x).rationale, feature_map.mean(dim=(-2, -1)))


def test_cnn_rejects_bad_settings():
    with pytest.raises(ValueError, match="rationale"):
        CNNModel(IMAGE_SHAPE_MNIST, 10, rationale="channels")
    with pytest.raises(ValueError, match="too small"):
        CNNModel((1, 3, 3), 10, channels=(4, 4))
    with pytest.raises(ValueError, match="at least one"):
        CNNModel(IMAGE_SHAPE_MNIST, 10, channels=())


def test_cnn_learns_digits_with_the_project_trainer():
    frame = mnist_5k()
    X = torch.from_numpy(frame.drop(columns="label").to_numpy(copy=True))
    y = torch.from_numpy(frame["label"].to_numpy(copy=True))
    digits = Table(torch.arange(len(y)), X, y, tuple(str(d) for d in range(10)), tuple(frame.columns[:-1]))
    # The file is sorted by digit, so the subsets are drawn from a shuffle.
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    train, val, test = digits.take(order[:1000]), digits.take(order[1000:1200]), digits.take(order[1200:2200])
    method = build_method("baseline", {"epochs": 3, "optimizer": "adam", "lr": 3e-3, "batch_size": 32})
    state = new_state("cnn", method, lambda: CNNModel(IMAGE_SHAPE_MNIST, 10), seed=0)
    fit([state], TabularData(train, val, None))
    state.model.eval()
    with torch.no_grad():
        accuracy = (state.model(test.X).logits.argmax(dim=1) == test.y).float().mean().item()
    assert accuracy > 0.8
