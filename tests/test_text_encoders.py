"""The sentence encoder (the real bundled all-MiniLM-L6-v2, a few sentences), its on-disk cache and
the features built from embeddings."""

import importlib.util

import pytest
import torch
from conftest import raises_one_line

from stepdistill.text import encoders
from stepdistill.text.encoders import SentenceEncoder, choice_features, model_identity, pair_features, single_features, text_keys

pytest.importorskip("sentence_transformers")
if importlib.util.find_spec(encoders.BUNDLED_MODULE) is None:
    pytest.skip("the bundled sentence encoder is not installed", allow_module_level=True)

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Two women are embracing while holding to go packages.",
    "A dog runs.",
    "A man is playing a guitar on stage.",
    "Children smiling and waving at the camera, in front of a large red building downtown.",
]


def count_model_calls(monkeypatch, encoder: SentenceEncoder) -> list[list[str]]:
    """The texts of every call the encoder makes to its model, from now on."""
    calls = []
    compute = encoder._compute

    def spy(texts):
        calls.append(list(texts))
        return compute(texts)

    monkeypatch.setattr(encoder, "_compute", spy)
    return calls


def forbid_model(monkeypatch, encoder: SentenceEncoder) -> None:
    def fail():
        raise AssertionError("the model was loaded although every text was cached")

    monkeypatch.setattr(encoder, "_load_model", fail)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sentences")


@pytest.fixture(scope="module")
def first(cache_dir):
    """An encoder over a fresh cache and its embeddings of SENTENCES, computed once for the module."""
    encoder = SentenceEncoder(cache_dir=cache_dir)
    return encoder, encoder.encode(SENTENCES)


def test_embeddings_shape_and_duplicates(first):
    _, embeddings = first
    assert embeddings.shape == (len(SENTENCES), 384) and embeddings.dtype == torch.float32
    assert torch.equal(embeddings[0], embeddings[3])
    # The bundled model ends in a normalizing layer; the encoder adds none of its own.
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(len(SENTENCES)))
    assert not torch.equal(embeddings[0], embeddings[1])


def test_cache_hit_is_bit_identical_and_skips_the_model(first, cache_dir, monkeypatch):
    _, embeddings = first
    again = SentenceEncoder(cache_dir=cache_dir)
    forbid_model(monkeypatch, again)
    assert torch.equal(again.encode(SENTENCES), embeddings)
    assert torch.equal(again.encode(SENTENCES[::-1]), embeddings.flip(0))


def test_only_new_texts_reach_the_model(first, monkeypatch):
    encoder, embeddings = first
    calls = count_model_calls(monkeypatch, encoder)
    mixed = encoder.encode([SENTENCES[2], "A brand new sentence.", SENTENCES[1], "A brand new sentence."])
    assert calls == [["A brand new sentence."]]
    assert torch.equal(mixed[0], embeddings[2]) and torch.equal(mixed[2], embeddings[1]) and torch.equal(mixed[1], mixed[3])


def test_deterministic(first, tmp_path):
    _, embeddings = first
    assert torch.equal(SentenceEncoder(cache_dir=tmp_path).encode(SENTENCES), embeddings)


def test_damaged_shard_is_recomputed(first, tmp_path, monkeypatch):
    encoder, embeddings = first
    fresh = SentenceEncoder(cache_dir=tmp_path)
    fresh._model = encoder.model  # the same model, loaded once
    fresh.encode(SENTENCES)
    (shard,) = (tmp_path / fresh.identity).glob("*.safetensors")
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the embeddings
    shard.write_bytes(bytes(data))

    heard = []
    reader = SentenceEncoder(cache_dir=tmp_path, say=heard.append)
    reader._model = encoder.model
    calls = count_model_calls(monkeypatch, reader)
    assert torch.equal(reader.encode(SENTENCES), embeddings)
    assert len(calls) == 1 and "damaged" in heard[0]

    # The shard written in its place reads back whole, without the model.
    after = SentenceEncoder(cache_dir=tmp_path)
    forbid_model(monkeypatch, after)
    after.encode(SENTENCES)

    (shard,) = (tmp_path / fresh.identity).glob("*.safetensors")
    shard.write_bytes(b"not a shard")
    truncated = SentenceEncoder(cache_dir=tmp_path)
    truncated._model = encoder.model
    assert truncated.encode(SENTENCES[:1]).shape == (1, 384)


def test_model_identity_separates_models(tmp_path):
    def fake_model(name: str, max_seq_length: int):
        directory = tmp_path / name
        (directory / "1_Pooling").mkdir(parents=True)
        (directory / "sentence_bert_config.json").write_text(f'{{"max_seq_length": {max_seq_length}}}')
        (directory / "model.safetensors").write_bytes(b"weights")
        (directory / "1_Pooling" / "config.json").write_text("{}")
        return directory

    short, long = fake_model("short", 128), fake_model("long", 256)
    assert model_identity(short) != model_identity(long)
    same = fake_model("copy", 128)
    assert model_identity(same) == model_identity(short)
    (same / "model.safetensors").write_bytes(b"weighty")
    assert model_identity(same) != model_identity(short)
    assert text_keys(model_identity(short), ["a"]) != text_keys(model_identity(long), ["a"])
    assert text_keys(model_identity(short), ["a", "b"])[0] == text_keys(model_identity(short), ["a"])[0]


def test_model_by_path_is_the_bundled_one(first, tmp_path):
    encoder, _ = first
    by_path = SentenceEncoder(encoder.model_directory, cache_dir=tmp_path)
    assert by_path.identity == encoder.identity


def test_missing_models_are_one_line_errors(monkeypatch, tmp_path):
    with raises_one_line("does not exist"):
        SentenceEncoder(tmp_path / "nowhere")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(encoders.importlib.util, "find_spec", lambda name: None if name == encoders.BUNDLED_MODULE else real_find_spec(name))
    with raises_one_line(r"pip install 'stepdistill\[text\]'"):
        SentenceEncoder()


def test_non_text_is_refused(first):
    encoder, _ = first
    with raises_one_line("text 1 .* float"):
        encoder.encode(["fine", float("nan")])


def test_pair_and_choice_features():
    u = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    v = torch.tensor([[3.0, 1.0], [0.5, 2.0]])
    expected = torch.tensor([[1.0, -2.0, 3.0, 1.0, 2.0, 3.0, 3.0, -2.0], [0.5, 0.0, 0.5, 2.0, 0.0, 2.0, 0.25, 0.0]])
    assert torch.equal(pair_features(u, v), expected)
    assert single_features(u) is u

    question = torch.randn(3, 5)
    choices = torch.randn(3, 4, 5)
    features = choice_features(question, choices)
    assert features.shape == (3, 4, 20)
    for k in range(4):
        assert torch.equal(features[:, k], pair_features(question, choices[:, k]))
    with raises_one_line(r"choice_features expects questions \(N, D\) and choices \(N, K, D\) \(got \(3, 5\) and \(2, 4, 5\)\)"):
        choice_features(question, torch.randn(2, 4, 5))
    with raises_one_line(r"pair_features needs embeddings of one shape \(got \(2, 2\) and \(1, 2\)\)"):
        pair_features(u, v[:1])
