import pytest
import torch

# The suite's models are tiny; one thread keeps timings steady on a shared 2-core machine.
torch.set_num_threads(1)

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
