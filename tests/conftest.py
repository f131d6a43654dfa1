import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

# The suite's models are tiny; one thread keeps timings steady on a shared 2-core machine.
torch.set_num_threads(1)

from stepdistill.data import linear_binary, nonlinear_binary, prepare
from stepdistill.errors import StepDistillError

# The distilling-step-by-step release (datasets and PaLM's outputs), beside the project; read
# through the ``dsbs_dir`` fixture, which skips where it is absent.
DSBS_DIR = Path(__file__).parents[2] / "shared" / "data" / "dsbs"
# The environment variable that hands the xdist workers the run's shared models folder.
SHARED_MODELS = "STEPDISTILL_TEST_MODELS"


def pytest_configure(config):
    """The CLI caches teacher outputs in the user's cache directory; the suite (and the commands it
    starts) keeps them in a directory of each process (the xdist controller, each worker) instead.
    Its ``models`` folder, where SmolLM2 is converted (a minute), is shared by the whole run: the
    controller makes it before the workers start, and they inherit its name."""
    if not hasattr(config, "workerinput"):
        os.environ[SHARED_MODELS] = tempfile.mkdtemp(prefix="stepdistill-test-models-")
    cache = tempfile.mkdtemp(prefix="stepdistill-test-cache-")
    os.symlink(os.environ[SHARED_MODELS], Path(cache) / "models")
    os.environ["STEPDISTILL_CACHE_DIR"] = cache


def pytest_unconfigure(config):
    """Each process removes its cache; the controller, whose workers are done by then, the models."""
    shutil.rmtree(os.environ["STEPDISTILL_CACHE_DIR"], ignore_errors=True)
    if not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ.pop(SHARED_MODELS), ignore_errors=True)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The default model (SmolLM2-135M-Instruct) converted into the run's shared models folder by
    the first worker that needs it; the others wait for it under the lock rather than convert it
    again. Tests that reach it through lm-train (SmolLM2's tokenizer) request it first."""
    from filelock import FileLock

    from stepdistill.lm.smollm2 import converted_model_directory, models_directory

    with FileLock(models_directory() / "smollm2.lock"):
        return converted_model_directory()


@pytest.fixture(scope="session")
def dsbs_dir() -> Path:
    """The released data; tests that read it skip, saying where it was looked for, without it."""
    if not DSBS_DIR.is_dir():
        pytest.skip(f"the distilling-step-by-step release is not at {DSBS_DIR}")
    return DSBS_DIR


def error_lines(stderr: str) -> list[str]:
    """The lines of a command's standard error that tell of a failure: an error, an interruption
    or a traceback. Any other line is progress, of which there may be any number."""
    return [line for line in stderr.splitlines() if line.startswith(("error:", "interrupted")) or "Traceback" in line]


def one_error_line(result, alone: bool = False) -> str:
    """The line a command that refused its input (a ``CliRunner`` result) ends with: exit code 2,
    no traceback, and one error line, ``error: ...``, the last on standard error, after any
    progress; with ``alone``, the only line there. Returns it."""
    errors = error_lines(result.stderr)
    assert result.exit_code == 2, (result.output, result.exception)
    assert len(errors) == 1 and errors[0].startswith("error: ") and result.stderr.splitlines()[-1] == errors[0], result.stderr
    assert "Traceback" not in result.output
    assert not alone or result.stderr == errors[0] + "\n", result.stderr
    return errors[0]


@contextmanager
def raises_one_line(match: str):
    """Expect a StepDistillError whose message matches ``match`` (``re.search``) and is one line."""
    with pytest.raises(StepDistillError, match=match) as info:
        yield info
    assert "\n" not in str(info.value), str(info.value)


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
    """``train(method, make, train, val, cache, labelled=None) -> (linear, autograd)``: the same
    student (seed 1) trained by the linear engine and by autograd, and a check that they agree."""
    import stepdistill.engines.tabular as train_module
    from stepdistill.engines.base import fit, new_state
    from stepdistill.engines.tabular import TabularData

    def train(method, make, train_table, val_table, cache, labelled=None):
        linear = new_state("linear", method, make, seed=1)
        fit([linear], TabularData(train_table, val_table, cache.take(train_table.ids), labelled))
        with monkeypatch.context() as patch:
            patch.setattr(train_module.LinearEngine, "accepts", staticmethod(lambda state: False))
            autograd = new_state("autograd", method, make, seed=1)
            fit([autograd], TabularData(train_table, val_table, cache.take(train_table.ids), labelled))
        params = [torch.cat([p.detach().flatten() for p in s.model.parameters()]) for s in (linear, autograd)]
        torch.testing.assert_close(*params, rtol=1e-4, atol=1e-5)
        return linear, autograd

    return train


@pytest.fixture(scope="session")
def tiny_sentence_model(tmp_path_factory):
    """A sentence-transformers directory like the bundled all-MiniLM-L6-v2 (its tokenizer, mean
    pooling, a normalizing layer) around a randomly initialized 2-layer BERT of width 32: it
    encodes about twenty times faster, for tests of the plumbing rather than of the features."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    from stepdistill.text.encoders import bundled_model_directory

    directory = tmp_path_factory.mktemp("tiny-sentence-model")
    bert = directory / "bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)).save_pretrained(bert)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(bundled_model_directory() / name, bert / name)
    transformer = Transformer(str(bert), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(directory / "model"))
    return directory / "model"
