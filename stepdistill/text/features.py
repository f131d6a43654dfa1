"""Student features from the text columns of a frame: sentence embeddings of one text, of a pair
of texts, or of a question and each of its answer choices."""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch

from stepdistill.errors import StepDistillError
from stepdistill.text.encoders import SentenceEncoder, choice_features, pair_features, single_features

Layout = Literal["single", "pair", "choices"]
# How many text columns each layout reads (besides the choices column).
TEXT_COLUMN_COUNTS = {"single": 1, "pair": 2, "choices": 1}


class TextFeaturizer:
    """Turns text columns into features with one ``encoder``; ``layout`` says how the texts of a
    row relate: ``"single"`` one text, (N, D); ``"pair"`` two texts (say premise and hypothesis),
    ``pair_features`` (N, 4D); ``"choices"`` a question and a column of K choice strings per row
    (as CommonsenseQA), ``choice_features`` (N, K, 4D)."""

    def __init__(self, encoder: SentenceEncoder, layout: Layout):
        if layout not in TEXT_COLUMN_COUNTS:
            raise StepDistillError(f"unknown text layout {layout!r}; choose one of {', '.join(TEXT_COLUMN_COUNTS)}")
        self.encoder = encoder
        self.layout = layout

    def features(
        self, frame: pd.DataFrame, text_columns: Sequence[str], choices_column: str | None = None, ids: Sequence | None = None
    ) -> torch.Tensor:
        """float32 features of ``frame``'s rows, in order: (N, D), (N, 4D) or (N, K, 4D) by layout.
        ``text_columns``: the one text (single), the two texts (pair) or the question (choices);
        ``choices_column``: with layout ``"choices"`` only, the column holding each row's choices;
        ``ids``: each row's record id, which errors name (``record_name``)."""
        text_columns = list(text_columns)
        expected = TEXT_COLUMN_COUNTS[self.layout]
        if len(text_columns) != expected:
            raise StepDistillError(f"text layout {self.layout!r} reads {expected} text column(s) (got {len(text_columns)}: {', '.join(text_columns) or 'none'}); name exactly {expected}")
        if (self.layout == "choices") != (choices_column is not None):
            raise StepDistillError(f"text layout 'choices' needs a choices column and the others take none (layout {self.layout!r}, choices column {choices_column!r}); pass choices_column with layout 'choices' only")
        for column in [*text_columns, *([choices_column] if choices_column is not None else [])]:
            if column not in frame.columns:
                raise StepDistillError(f"text column {column!r} is not in the data (columns: {reprlib.repr(list(frame.columns))}); name a column the data has")
        # Every text is checked before any is encoded: a bad row fails at once, not after minutes.
        texts = [_checked_texts(frame[column], column, ids) for column in text_columns]
        if self.layout == "single":
            return single_features(self.encoder.encode(texts[0]))
        if self.layout == "pair":
            return pair_features(self.encoder.encode(texts[0]), self.encoder.encode(texts[1]))
        choices = _checked_choices(frame[choices_column], choices_column, ids)
        n_choices = len(choices[0]) if choices else 0
        embeddings = self.encoder.encode([text for row in choices for text in row])
        return choice_features(self.encoder.encode(texts[0]), embeddings.reshape(len(choices), n_choices, embeddings.shape[1]))


def record_name(position: int, ids: Sequence | None) -> str:
    """How an error names the record at ``position``: counted from 1, as errors count a table's
    data rows, with its id where the data has one (``ids``)."""
    return f"record {position + 1}" + ("" if ids is None else f" (id {ids[position]})")


def _text_problem(text) -> str | None:
    """What keeps ``text`` from being encoded, or None for a non-empty string."""
    if isinstance(text, str):
        return None if text.strip() else "an empty text"
    if pd.api.types.is_scalar(text) and pd.isna(text):
        return "missing"
    return f"a {type(text).__name__}, not a string"


def _checked_texts(column: pd.Series, name: str, ids: Sequence | None) -> list[str]:
    """The values of a text column as a list, each a non-empty string."""
    texts = list(column)
    for position, text in enumerate(texts):
        if problem := _text_problem(text):
            raise StepDistillError(f"the {name!r} text of {record_name(position, ids)} is {problem}; fill in or drop records without text first")
    return texts


def _checked_choices(column: pd.Series, name: str, ids: Sequence | None) -> list[list[str]]:
    """Each row's choices as a list of non-empty strings, every row with the same number K."""
    rows = []
    for position, choices in enumerate(column):
        if not isinstance(choices, (list, tuple, np.ndarray)) or not len(choices):
            raise StepDistillError(
                f"{record_name(position, ids)} holds {reprlib.repr(choices)} in choices column {name!r}, not a list of choice texts; give every record a list of strings"
            )
        for number, text in enumerate(choices, 1):
            if problem := _text_problem(text):
                raise StepDistillError(f"choice {number} of {record_name(position, ids)} in {name!r} is {problem}; give every choice a text")
        rows.append(list(choices))
    counts = sorted({len(row) for row in rows})
    if len(counts) > 1:
        raise StepDistillError(f"choices column {name!r} holds lists of differing lengths ({', '.join(map(str, counts))}); give every row the same number of choices")
    return rows
