"""Text records as token ids, for students that fine-tune their encoder (students/encoder.py):
each record's text (or pair of texts) tokenized once, before any split (the tokenizer learns
nothing from the data), into a row of ids the student reads as a table's row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stepdistill.errors import StepDistillError

# Token columns are named by position: ``token_0 ... token_{S*L-1}``.
TOKEN_PREFIX = "token_"


@dataclass(frozen=True)
class EncoderFiles:
    """A pretrained encoder's directory, what its tokenizer pads and separates with, and its
    Hugging Face config (a dict, what a student's model is built from)."""

    directory: Path
    pad_id: int
    sep_id: int
    config: dict


def encoder_directory(model: str | None) -> Path:
    """The directory of a student's encoder: ``model``, or the bundled all-MiniLM-L6-v2."""
    from stepdistill.text.encoders import bundled_model_directory

    return bundled_model_directory() if model is None else Path(model)


def load_encoder_files(directory: Path):
    """``directory``'s tokenizer and ``EncoderFiles``; a directory without an encoder model or a
    tokenizer is a one-line error."""
    from transformers import AutoConfig, AutoTokenizer

    if not (directory / "config.json").is_file():
        raise StepDistillError(f"{directory} holds no Hugging Face model (no config.json); point student.model at an encoder or sentence-transformers directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as err:
        raise StepDistillError(f"{directory} has no tokenizer the student can read ({str(err).splitlines()[0]}); give the model directory its tokenizer files") from err
    config = AutoConfig.from_pretrained(directory)
    if config.is_encoder_decoder or getattr(config, "is_decoder", False) or tokenizer.pad_token_id is None or tokenizer.sep_token_id is None:
        raise StepDistillError(f"{directory} is not an encoder with [SEP] and padding tokens (model type {config.model_type!r}); use an encoder such as BERT or MiniLM")
    return tokenizer, EncoderFiles(directory, int(tokenizer.pad_token_id), int(tokenizer.sep_token_id), config.to_dict())


def token_mode(layout: str, pair: str) -> str:
    """How a student that fine-tunes its encoder reads records of text ``layout`` (single, pair,
    choices; ``pair``: its siamese or cross setting for a pair): single, siamese, cross, or
    choices (each (question, choice) pair read together, as one sequence)."""
    return {"single": "single", "pair": pair, "choices": "choices"}[layout]


def token_features(
    frame: pd.DataFrame, columns: tuple[str, ...], tokenizer, mode: str, max_tokens: int, choices: str | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """The records' token ids as float32 columns ``token_*`` (``mode`` single and cross: one
    segment of ``max_tokens``; siamese: the two texts' segments one after the other; choices: a
    segment for each (question, choice) pair, the choices of column ``choices`` in their order),
    padded, and (N,) bool: the records with a text (a pair read together: the two) cut to fit."""
    texts = [frame[column].astype(str).tolist() for column in columns]
    if mode == "choices":
        options = [list(row) for row in frame[choices]]
        segments = [(texts[0], [str(row[k]) for row in options]) for k in range(len(options[0]))]
    elif mode == "cross":
        segments = [(texts[0], texts[1])]
    else:
        segments = [(column, None) for column in texts]
    ids, cut = [], np.zeros(len(frame), dtype=bool)
    for first, second in segments:
        full = tokenizer(first, second, truncation=False)["input_ids"]
        cut |= np.array([len(row) > max_tokens for row in full])
        encoded = tokenizer(first, second, truncation=True, max_length=max_tokens, padding="max_length")["input_ids"]
        ids.append(np.asarray(encoded, dtype=np.float32))
    values = np.concatenate(ids, axis=1)
    return pd.DataFrame(values, columns=[f"{TOKEN_PREFIX}{i}" for i in range(values.shape[1])], index=frame.index), cut
