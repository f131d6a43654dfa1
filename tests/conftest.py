import atexit
import os
import shutil
import tempfile

import pytest
import torch

# The CLI keeps teacher outputs in the user's cache directory; the suite (and the commands it starts)
# keeps them in a directory of its own.
os.environ["STEPDISTILL_CACHE_DIR"] = tempfile.mkdtemp(prefix="stepdistill-test-cache-")
atexit.register(shutil.rmtree, os.environ["STEPDISTILL_CACHE_DIR"], ignore_errors=True)

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


@pytest.fixture
def train_both_engines(monkeypatch):
    """``train(method, make, train, val, cache, **fit_kwargs) -> (linear, autograd)``: the same
    student (seed 1) trained by the linear engine and by autograd, and a check that they agree."""
    import stepdistill.train as train_module
    from stepdistill.train import fit, new_state

    def train(method, make, train_table, val_table, cache, **fit_kwargs):
        linear = new_state("linear", method, make, seed=1)
        fit([linear], train_table, val_table, cache, **fit_kwargs)
        with monkeypatch.context() as patch:
            patch.setattr(train_module.LinearEngine, "accepts", staticmethod(lambda state: False))
            autograd = new_state("autograd", method, make, seed=1)
            fit([autograd], train_table, val_table, cache, **fit_kwargs)
        params = [torch.cat([p.detach().flatten() for p in s.model.parameters()]) for s in (linear, autograd)]
        torch.testing.assert_close(*params, rtol=1e-4, atol=1e-5)
        return linear, autograd

    return train
