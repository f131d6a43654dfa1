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
