import pytest

from stepdistill.data import linear_binary, nonlinear_binary, prepare


@pytest.fixture(scope="session")
def linear_splits():
    """8,000 / 1,000 / 1,000 rows of the article's linear setting."""
    splits, _ = prepare(linear_binary(10_000, 10, seed=1), "label")
    return splits


@pytest.fixture(scope="session")
def nonlinear_splits():
    splits, _ = prepare(nonlinear_binary(10_000, 10, seed=1), "label")
    return splits
