"""Records with text fields as student inputs: the text columns a config names, turned into
features by a frozen sentence encoder, and for multiple choice the label as the position of the
right choice.

The encoder is pretrained and never fitted on the data, so features are computed once for every
row before any split is made: no split learns anything from another. What a student needs to
read new records (the columns, the layout, the encoder) travels with it as ``to_json``.
"""

from __future__ import annotations

import reprlib
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stepdistill.errors import StepDistillError
from stepdistill.text.encoders import SentenceEncoder
from stepdistill.text.features import Layout, TextFeaturizer, record_name

# Feature columns are named by position: the encoder's output has no names of its own.
FEATURE_PREFIX = "text_"
# Choice classes are letters, as multiple-choice questions name their answers.
CHOICE_LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class TextInputs:
    """``columns``: the text fields (one, or two for a pair such as premise and hypothesis; the
    question with ``choices``); ``choices``: the column holding each row's answer choices (a
    list of strings); ``encoder_model``: a sentence-transformers directory, None for the bundled
    all-MiniLM-L6-v2."""

    columns: tuple[str, ...]
    choices: str | None = None
    encoder_model: str | None = None

    def __post_init__(self):
        if not self.columns:
            raise StepDistillError("data.text names no column; name the text field(s), e.g. data.text: [premise, hypothesis]")
        if self.choices is not None and len(self.columns) != 1:
            raise StepDistillError(f"with data.choices, data.text names the question only (got {list(self.columns)}); give one column")
        if self.choices is None and len(self.columns) > 2:
            raise StepDistillError(f"data.text names {len(self.columns)} columns; give one text, or two for a pair (e.g. premise and hypothesis)")

    @property
    def layout(self) -> Layout:
        if self.choices is not None:
            return "choices"
        return "pair" if len(self.columns) == 2 else "single"

    @property
    def input_columns(self) -> tuple[str, ...]:
        """Every column the student reads."""
        return self.columns + ((self.choices,) if self.choices is not None else ())

    def sentence_encoder(self, say=None) -> SentenceEncoder:
        return SentenceEncoder(None if self.encoder_model is None else Path(self.encoder_model), say=say)

    def features(self, frame: pd.DataFrame, encoder: SentenceEncoder | None = None, ids: Sequence | None = None) -> pd.DataFrame:
        """The rows' features as float32 columns ``text_0 ... text_{F-1}``, in row order; for
        multiple choice the K choices' pair features one after the other (choice-major). Errors
        name a record by its position from 1 and its id in ``ids``, where given."""
        featurizer = TextFeaturizer(encoder or self.sentence_encoder(), self.layout)
        values = featurizer.features(frame, self.columns, self.choices, ids).flatten(1).numpy()
        return pd.DataFrame(values, columns=[f"{FEATURE_PREFIX}{i}" for i in range(values.shape[1])], index=frame.index)

    def cut_rows(self, frame: pd.DataFrame, encoder: SentenceEncoder) -> np.ndarray:
        """(N,) bool: the rows with a text (or a choice) longer than ``encoder``'s window, which
        their features were computed from the first ``encoder.window`` tokens of."""
        texts = [frame[column].astype(str).tolist() for column in self.columns]
        cut = np.zeros(len(frame), dtype=bool)
        for column in texts:
            cut |= encoder.cut(column)
        if self.choices is not None:
            lists = [[str(choice) for choice in row] for row in frame[self.choices]]
            choices_cut = encoder.cut([choice for row in lists for choice in row])
            starts = np.cumsum([0, *map(len, lists)])
            cut |= [any(choices_cut[a:b]) for a, b in zip(starts[:-1], starts[1:])]
        return cut

    def to_json(self) -> dict:
        return {"columns": list(self.columns), "choices": self.choices, "encoder_model": self.encoder_model}

    @classmethod
    def from_json(cls, record: dict) -> TextInputs:
        return cls(tuple(record["columns"]), record["choices"], record["encoder_model"])


def choice_labels(frame: pd.DataFrame, label: str, choices: str, ids: Sequence | None = None) -> tuple[pd.Series, list[str]]:
    """Each row's label as the letter of its position among the row's choices (A for the first),
    and the K letters; a label that is none of its row's choices is an error, naming the record
    by its position from 1 and its id in ``ids``, where given."""
    lists = frame[choices].tolist()
    n_choices = len(lists[0]) if lists and isinstance(lists[0], (list, tuple, np.ndarray)) else 0
    letters = list(CHOICE_LETTERS[:n_choices])
    positions = []
    for row, (answer, options) in enumerate(zip(frame[label], lists)):
        options = [str(option) for option in options] if isinstance(options, (list, tuple, np.ndarray)) else []
        if len(options) != n_choices or n_choices < 2:
            raise StepDistillError(
                f"{record_name(row, ids)} holds {reprlib.repr(options)} in choices column {choices!r}; give every record the same number (2 or more) of choices"
            )
        if answer not in options:
            raise StepDistillError(f"the label {reprlib.repr(answer)} of {record_name(row, ids)} is none of its choices {reprlib.repr(options)}; the label must spell one choice")
        positions.append(letters[options.index(answer)])
    return pd.Series(positions, index=frame.index, name=label), letters


def long_text_notes(counts: str, first: str, window: int, refuse: bool, student_budget: bool = False) -> list[str]:
    """The one line telling the user that ``counts`` (say "3 of 120 records") have a text longer
    than the sentence encoder's ``window`` tokens (``student_budget``: than the ``window`` tokens a
    student that fine-tunes its encoder reads, ``student.max_tokens``), ``first`` the first such
    record's id; with ``refuse``, raised as a one-line error instead."""
    limit = f"the student's {window} tokens (student.max_tokens)" if student_budget else f"the sentence encoder's {window}-token window"
    if refuse:
        longer = "raise student.max_tokens, " if student_budget else ""
        raise StepDistillError(
            f"{counts} have a text longer than {limit} (e.g. record {first!r}); shorten them, {longer}or set data.long_texts: cut to read their first {window} tokens"
        )
    return [f"{counts} have a text longer than {limit}, read from its first {window} tokens (e.g. record {first!r}); set data.long_texts: refuse to refuse them"]
