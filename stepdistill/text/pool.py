"""An unlabelled pool of text records (data.unlabelled_path with data.text): records with the
data's text columns (its choices column for multiple choice, its id column where it has one) and
no label, read through the data's sentence encoder. A teacher annotates them for the students that
learn from it, as Hsieh et al. (2023) distil an LLM's answers on records no human labelled: an LLM
teacher by record id (its answers written beforehand), a teacher trained here from their features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from stepdistill.errors import StepDistillError
from stepdistill.text.inputs import TextInputs, long_text_notes


@dataclass(frozen=True)
class TextPool:
    """The pool's P records: ``features`` (P, F), their sentence features in the data's feature
    columns; ``record_ids`` (P,), what an LLM teacher's answers are matched by (the id column's
    values; without one, the records' sample ids, which follow the data's); ``choices``, each
    record's answer choices (multiple choice, else None); ``notes``, what reading them found
    worth a warning."""

    features: pd.DataFrame
    record_ids: tuple[str, ...]
    choices: tuple[tuple[str, ...], ...] | None
    notes: tuple[str, ...]


def read_text_pool(
    pool: pd.DataFrame,
    text: TextInputs,
    label: str,
    id_column: str | None,
    data_ids: Sequence[str],
    n_choices: int | None,
    refuse_long: bool,
    say=None,
) -> TextPool:
    """The records of ``pool`` (as read) checked against the data's and encoded like them: its
    ``text`` columns, its ``id_column`` (whose values must differ from the data's record ids
    ``data_ids``), for multiple choice the data's ``n_choices`` choices each; a ``label`` column
    is ignored, with a note. Texts longer than the encoder's window are noted, or with
    ``refuse_long`` refused. Every problem is a one-line error; ``say`` hears about the sentence
    encoder's cache."""
    notes = []
    if label in pool.columns:
        notes.append(f"the unlabelled pool's label column {label!r} is ignored: its records teach through the teacher's outputs only")
        pool = pool.drop(columns=label)
    if not len(pool):
        raise StepDistillError("data.unlabelled_path holds no records; point it at a file of text records, or drop it")
    expected = [*text.input_columns, *([id_column] if id_column else [])]
    given = [str(c) for c in pool.columns]
    if missing := [c for c in expected if c not in given]:
        raise StepDistillError(f"the unlabelled pool lacks column(s) {', '.join(missing)} that the data's records have; give it the data's text, choices and id columns")
    if extra := [c for c in given if c not in expected]:
        raise StepDistillError(f"the unlabelled pool has columns {', '.join(extra)} besides the data's text, choices and id columns, and students read only data.text; drop them")
    record_ids = _pool_record_ids(pool, id_column, data_ids)
    named_ids = None if id_column is None else record_ids
    encoder = text.sentence_encoder(say)
    features = text.features(pool, encoder, named_ids)
    choices = None
    if text.choices is not None:
        choices = tuple(tuple(str(c) for c in row) for row in pool[text.choices])
        if len(choices[0]) != n_choices:
            raise StepDistillError(f"the unlabelled pool's records have {len(choices[0])} choices and the data's {n_choices}; give every record {n_choices} choices")
    cut = text.cut_rows(pool, encoder)
    if cut.any():
        counts = f"{int(cut.sum())} of the unlabelled pool's {len(pool)} records"
        notes += long_text_notes(counts, record_ids[int(cut.argmax())], encoder.window, refuse_long)
    return TextPool(features, record_ids, choices, tuple(notes))


def _pool_record_ids(pool: pd.DataFrame, id_column: str | None, data_ids: Sequence[str]) -> tuple[str, ...]:
    """The pool's record ids: its id column's values, each its own and none a data record's (a
    record in both would be labelled by hand and by the teacher, and could be a test record);
    without an id column, the sample ids after the data's."""
    if id_column is None:
        return tuple(str(len(data_ids) + i) for i in range(len(pool)))
    record_ids = tuple(str(v) for v in pool[id_column])
    if len(set(record_ids)) != len(record_ids):
        raise StepDistillError(f"the unlabelled pool's id column {id_column!r} has duplicated values; give every record its own id")
    known = set(data_ids)
    if shared := [record_id for record_id in record_ids if record_id in known]:
        raise StepDistillError(
            f"{len(shared)} records of the unlabelled pool have ids that records of the data have too (e.g. {shared[0]!r}); a record is in the data or in the pool,"
            " not both: drop them from the pool, or give pool records ids of their own"
        )
    return record_ids
