"""``stepdistill predict`` for the student of an lm-train run: its greedy generations on new records.

The run directory's ``student/`` holds the model (``save_pretrained``), its tokenizer and
``manifest.json`` (``kind: generative student``, the task, its prompts' format, generation
settings). Each row of the input becomes the task's label prompt (and, for rationales, its
rationale prompt), token for token as in training (``lm.prompts.prompt_ids``: a causal student's
``<input>\\npredict:\\n``, a seq2seq student's ``predict: <input>\\n``); a student whose
manifest records another format (one trained before causal prompts put the tag after the input)
is refused rather than prompted in a way it never saw. The prediction is what the test split is
scored by: the cqa choice the answer names, the e-SNLI label word, the svamp value; the raw
generation is kept beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from stepdistill.errors import StepDistillError
from stepdistill.progress import without_transformers_bars
from stepdistill.run_dir import CHOSEN_DIR

# How an lm-train student says what it is, in its manifest (student/manifest.json).
LM_MANIFEST = "manifest.json"
LM_STUDENT_KIND = "generative student"
# The input columns a task's records are written from (lm/prompts.py record_text).
TASK_COLUMNS = {"cqa": ("question", "choices"), "esnli": ("premise", "hypothesis"), "svamp": ("input",)}
ID_COLUMN = "id"
GENERATION_BATCH = 16


def lm_manifest(run_dir: Path) -> dict | None:
    """The manifest of ``run_dir``'s student when it is a generative (lm-train) student, else None."""
    path = run_dir / CHOSEN_DIR / LM_MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    return manifest if manifest.get("kind") == LM_STUDENT_KIND else None


def lm_input_records(frame: pd.DataFrame, task: str) -> list:
    """The rows of ``frame`` as ``LMRecord``s of ``task`` (no label, no rationale); a missing
    column, or cqa choices that are not a list (a JSON list in a CSV cell), is a one-line error."""
    from stepdistill.lm.prompts import LMRecord, record_text

    columns = TASK_COLUMNS[task]
    if missing := [column for column in columns if column not in frame.columns]:
        raise StepDistillError(f"INPUT lacks column(s) {', '.join(missing)}, which a {task} student reads; give {', '.join(columns)}")
    records = []
    for position, row in enumerate(frame.to_dict("records")):
        if task == "cqa":
            row["choices"] = _choices(row["choices"], position)
        choices = tuple(row["choices"]) if task == "cqa" else ()
        records.append(LMRecord(str(position), record_text(task, row), "", "", choices))
    return records


def _choices(value, position: int) -> list[str]:
    """A cqa row's answer choices: a list (JSONL, Parquet) or a JSON list written in a CSV cell."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(choice, str) for choice in value):
        raise StepDistillError(f"row {position}: choices must be a list of answer texts (in a CSV cell, a JSON list such as [\"a\", \"b\"])")
    return list(value)


def lm_predictions(run_dir: Path, frame: pd.DataFrame, rationales: bool = False, warn=None) -> pd.DataFrame:
    """Each row's id (its ``id`` column, else ``row``: its position), ``prediction`` (empty where
    the generation names no label), ``generated`` (the raw label generation) and, with
    ``rationales``, ``rationale``: greedy generations of the student in ``run_dir``. ``warn``
    hears how many inputs are longer than the student's prompt budget, which it reads cut."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from stepdistill.device import default_device
    from stepdistill.lm.config import MAX_PROMPT_TOKENS
    from stepdistill.lm.evaluate import answer_of, generate
    from stepdistill.lm.prompts import LABEL_TASK, RATIONALE_TASK, input_cut, prompt_formats

    manifest = lm_manifest(run_dir)
    if manifest is None:
        raise StepDistillError(f"{run_dir / CHOSEN_DIR} holds no generative student; pass the --out directory of stepdistill lm-train")
    task, directory = manifest["task"], run_dir / CHOSEN_DIR
    records = lm_input_records(frame, task)
    if not records:
        raise StepDistillError("INPUT has no rows; give at least one record")
    seq2seq = AutoConfig.from_pretrained(directory).is_encoder_decoder
    expected = prompt_formats(seq2seq)
    if manifest.get("prompts", expected) != expected:
        raise StepDistillError(
            f"{directory} holds a student trained on prompts {manifest['prompts'].get('label')!r}, which this version no longer "
            f"writes ({expected['label']!r}); train it again with stepdistill lm-train"
        )
    loader = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    with without_transformers_bars():  # predict prints the predictions or one line, nothing else
        model, tokenizer = loader.from_pretrained(directory).to(default_device()).eval(), AutoTokenizer.from_pretrained(directory)
    settings = manifest.get("generation", {})
    max_new_tokens, max_prompt_tokens = settings.get("max_new_tokens", 64), settings.get("max_prompt_tokens", MAX_PROMPT_TOKENS)

    def written(task_id: int) -> list[str]:
        return generate(model, tokenizer, records, task_id, GENERATION_BATCH, max_new_tokens, max_prompt_tokens=max_prompt_tokens)

    labels = written(LABEL_TASK)
    if warn is not None and (cut := sum(input_cut(tokenizer, record, seq2seq, max_prompt_tokens) for record in records)):
        warn(f"{cut} of {len(records)} rows have an input longer than the student's {max_prompt_tokens}-token prompt budget, predicted from it cut")
    ids = frame[ID_COLUMN].to_numpy() if ID_COLUMN in frame.columns else range(len(frame))
    columns = {
        ID_COLUMN if ID_COLUMN in frame.columns else "row": list(ids),
        "prediction": [answer_of(task, text, record) or "" for text, record in zip(labels, records, strict=True)],
        "generated": labels,
    }
    if rationales:
        columns["rationale"] = written(RATIONALE_TASK)
    return pd.DataFrame(columns)
