"""Students that leave the run: saved with everything needed to use them, and loaded back.

A run directory holds, beside the report files::

    students/<method>/<run>/model.safetensors   the student's weights (but those in shared.safetensors)
    students/shared.safetensors                 the weights every run's student holds alike, once
                                                (a fine-tuned encoder's frozen layers); absent
                                                when there are none
    students/<method>/<run>/student.json        its architecture, the fitted preprocessing (JSON,
                                                never pickle), class names, the method's
                                                settings, its test metrics in that run and
                                                how its data files were read (read_options)
    student/                                    the student to deploy: the method chosen on the
                                                validation split (never the test split), run 0
    manifest.json                               config, package versions, data fingerprint, and
                                                what each file is

Loading runs no code from the directory: weights are safetensors, everything else JSON.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from stepdistill.data.encode import FeatureEncoder
from stepdistill.errors import StepDistillError
from stepdistill.evaluate import class_probabilities
from stepdistill.students.choice import ChoiceScorerModel
from stepdistill.students.cnn import CNNModel
from stepdistill.students.encoder import EncoderStudentModel
from stepdistill.students.logistic import LogisticModel
from stepdistill.students.mlp import MLPModel
from stepdistill.text.inputs import TextInputs
from stepdistill.text.tokens import encoder_directory, load_encoder_files, token_features, token_mode

STUDENTS_DIR = "students"
CHOSEN_DIR = "student"
MANIFEST_JSON = "manifest.json"
WEIGHTS = "model.safetensors"
STUDENT_JSON = "student.json"
TOKENIZER_DIR = "tokenizer"  # a student that fine-tuned its encoder: the tokenizer it reads texts with
SHARED_WEIGHTS = "shared.safetensors"
# Below this, every student keeps all its weights: sharing pays for large frozen parts only.
SHARED_MIN_BYTES = 1 << 20
MODEL_KINDS = {"logistic": LogisticModel, "mlp": MLPModel, "cnn": CNNModel, "choice_scorer": ChoiceScorerModel, "encoder": EncoderStudentModel}
VERSIONED_PACKAGES = ("stepdistill", "torch", "numpy", "pandas", "scikit-learn", "safetensors")


@dataclass
class RunStudents:
    """One run's trained students (by method name, on the CPU) and the encoder fitted on its
    training rows (None for students that read text, such as language models)."""

    index: int
    encoder: FeatureEncoder | None
    models: dict[str, nn.Module]


@dataclass
class SavedStudent:
    """A student loaded from its directory: ready to predict on raw feature columns (a student
    that fine-tuned its encoder: on texts, through the ``tokenizer`` saved with it)."""

    model: nn.Module
    encoder: FeatureEncoder
    classes: list[str]
    about: dict
    tokenizer: object | None = None

    @property
    def text(self) -> TextInputs | None:
        """How a text student turns its text columns into features; None for tabular students."""
        return None if self.about.get("text") is None else TextInputs.from_json(self.about["text"])

    @property
    def read_options(self) -> dict:
        """How new data files are read (``read_frame``'s options): as the training data was. A
        student saved before they were recorded reads them with the defaults, as it did then."""
        return self.about.get("read_options", {})

    @property
    def input_columns(self) -> list[str]:
        """The columns the student reads."""
        return list(self.text.input_columns) if self.text is not None else list(self.encoder.columns_)

    @functools.cached_property
    def sentence_encoder(self):
        """A text student's sentence encoder, checked to be the model it was trained with."""
        encoder = self.text.sentence_encoder()
        if encoder.identity != self.about["text_encoder_identity"]:
            raise StepDistillError(
                f"the sentence encoder at {encoder.model_directory} is not the one this student was trained with (its files differ); install that model"
            )
        return encoder

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """(N, C) class probabilities for the rows of ``features`` (the raw columns it was
        trained on, or for a text student its text columns); an unseen category or a missing
        value is a one-line error."""
        if self.tokenizer is not None:
            features = self._tokens(features)[0]
        elif self.text is not None:
            id_column = self.about["id_column"]
            ids = features[id_column].tolist() if id_column in features.columns else None
            features = self.text.features(features, self.sentence_encoder, ids)
        encoded = self.encoder.transform(features, unseen="error")
        if not np.isfinite(encoded).all():
            bad = [c for c in self.encoder.numeric_ if not np.isfinite(pd.to_numeric(features[c], errors="coerce")).all()]
            raise StepDistillError(f"column{'s' if len(bad) > 1 else ''} {', '.join(bad)} hold NaN or infinite values; fill or drop those rows")
        with torch.no_grad():
            return class_probabilities(self.model(torch.from_numpy(encoded)).logits)


    def _tokens(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """``token_features`` of ``frame``'s texts as the student was trained on them."""
        tokens = self.about["tokens"]
        return token_features(frame, self.text.columns, self.tokenizer, tokens["mode"], tokens["max_tokens"], self.text.choices)


def long_text_note(student: SavedStudent, frame: pd.DataFrame) -> str | None:
    """For a text student, a line saying how many of ``frame``'s rows have a text longer than its
    sentence encoder's window (or its own token budget), which it reads cut; None when none has
    (or it reads no text)."""
    if student.text is None:
        return None
    if student.tokenizer is not None:
        budget = student.about["tokens"]["max_tokens"]
        cut = student._tokens(frame)[1]
        return f"{int(cut.sum())} of {len(frame)} rows have a text longer than the student's {budget} tokens, predicted from their first {budget}" if cut.any() else None
    encoder = student.sentence_encoder
    if not (cut := student.text.cut_rows(frame, encoder)).any():
        return None
    return f"{int(cut.sum())} of {len(frame)} rows have a text longer than the sentence encoder's {encoder.window}-token window, predicted from its first {encoder.window} tokens"


def classifier_predictions(student: SavedStudent, frame: pd.DataFrame) -> pd.DataFrame:
    """The predicted class and each class's probability for every row, with the row's id (its
    id column, or its position)."""
    known = {*student.input_columns, student.about["label"], student.about["id_column"]}
    if extra := [str(c) for c in frame.columns if c not in known]:
        raise StepDistillError(f"INPUT has columns the student was not trained on: {', '.join(extra)}; drop them")
    id_column = student.about["id_column"]
    probabilities = student.predict_proba(frame.rename(columns=str))
    ids = frame[id_column] if id_column in frame.columns else pd.RangeIndex(len(frame))
    classes = student.classes
    return pd.DataFrame(
        {
            id_column or "row": ids.to_numpy() if hasattr(ids, "to_numpy") else np.asarray(ids),
            "prediction": [classes[i] for i in probabilities.argmax(1)],
            **{f"p_{c}": probabilities[:, i] for i, c in enumerate(classes)},
        }
    )


def save_student(
    directory: Path, model: nn.Module, encoder: FeatureEncoder, classes: list[str], about: dict, shared: Path | None = None, shared_names: frozenset[str] = frozenset()
) -> None:
    """The student into ``directory``; ``shared``: a weights file holding its tensors
    ``shared_names``, which its own file then leaves out (the record names it, relative to
    ``directory``)."""
    directory.mkdir(parents=True)
    save_file({name: t.detach().cpu().contiguous() for name, t in model.state_dict().items() if name not in shared_names}, directory / WEIGHTS)
    record = {"model": model.spec, "encoder": encoder.to_json(), "classes": list(classes), **about}
    if shared is not None:
        record["shared_weights"] = os.path.relpath(shared, directory)
    (directory / STUDENT_JSON).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def student_weights(directory: Path, record: dict) -> dict[str, torch.Tensor]:
    """A saved student's weights: its own file's, with those of the shared file it names."""
    weights = load_file(directory / WEIGHTS)
    if "shared_weights" in record:
        shared = directory / record["shared_weights"]
        if not shared.is_file():
            raise StepDistillError(f"{directory}'s student keeps some weights in {shared}, which is missing; copy the whole run directory, or use its student/")
        weights = load_file(shared) | weights
    return weights


def shared_tensors(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The tensors every one of two or more state dicts holds alike (same name, equal values)."""
    if len(states) < 2:
        return {}
    first, rest = states[0], states[1:]
    return {
        name: tensor.detach().cpu().contiguous()
        for name, tensor in first.items()
        if all(name in other and other[name].shape == tensor.shape and torch.equal(other[name].cpu(), tensor.cpu()) for other in rest)
    }


def load_student(directory: Path) -> SavedStudent:
    """The student saved in ``directory`` (a run directory's ``student/`` or ``students/<m>/<r>/``)."""
    if not (directory / STUDENT_JSON).is_file() or not (directory / WEIGHTS).is_file():
        raise StepDistillError(f"{directory} holds no saved student ({STUDENT_JSON} and {WEIGHTS}); pass a run directory written by stepdistill run or demo")
    record = json.loads((directory / STUDENT_JSON).read_text(encoding="utf-8"))
    model = model_from_spec(record["model"], directory / STUDENT_JSON)
    model.load_state_dict(student_weights(directory, record))
    about = {k: v for k, v in record.items() if k not in ("model", "encoder", "classes", "shared_weights")}
    tokenizer = None
    if "tokens" in about:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(directory / TOKENIZER_DIR)
    return SavedStudent(model.eval(), FeatureEncoder.from_json(record["encoder"]), record["classes"], about, tokenizer)


def model_from_spec(spec: dict, source: Path) -> nn.Module:
    """A fresh model as a student's ``spec`` describes it (read from ``source``)."""
    arguments = dict(spec)
    kind = arguments.pop("kind")
    if kind not in MODEL_KINDS:
        raise StepDistillError(f"{source} names an unknown model kind {kind!r}; it was saved by another version of stepdistill")
    return MODEL_KINDS[kind](**arguments)


def student_directory(run_dir: Path, method: str | None = None, run: int = 0) -> Path:
    """Where the student to use lives: the chosen one, or method ``method``'s in run ``run``."""
    if not run_dir.is_dir():
        raise StepDistillError(f"run directory not found: {run_dir}; pass the --out directory of stepdistill run or demo")
    if method is None:
        return run_dir / CHOSEN_DIR
    directory = run_dir / STUDENTS_DIR / method / str(run)
    if not directory.is_dir():
        saved = sorted(p.name for p in (run_dir / STUDENTS_DIR).iterdir()) if (run_dir / STUDENTS_DIR).is_dir() else []
        raise StepDistillError(f"no student of method '{method}' in run {run} under {run_dir}; saved methods: {', '.join(saved) or 'none'}")
    return directory


def write_students(staging_dir: Path, results: dict, runs: list[RunStudents], data_fingerprint: str, read_options: dict) -> list[str]:
    """Every run's students, the chosen one and the manifest into ``staging_dir``, each student
    with the ``read_options`` its training data was read with (``read_frame``'s, for new files);
    returns the top-level names written."""
    classes = results["config"]["data"]["classes"]
    data_config = results["config"]["data"]
    files = {}
    text = _text_about(data_config, results["config"]["student"])
    # A student that fine-tuned its encoder reads texts through its tokenizer, saved beside it.
    tokenizer = load_encoder_files(encoder_directory(text["tokens"]["model"]))[0] if "tokens" in text else None
    # What every student holds alike (a fine-tuned encoder's frozen layers) is written once.
    common = shared_tensors([model.state_dict() for run in runs for model in run.models.values()])
    shared, shared_names = None, frozenset()
    if sum(t.numel() * t.element_size() for t in common.values()) >= SHARED_MIN_BYTES:
        (staging_dir / STUDENTS_DIR).mkdir(parents=True, exist_ok=True)
        shared, shared_names = staging_dir / STUDENTS_DIR / SHARED_WEIGHTS, frozenset(common)
        save_file(common, shared)
        files[f"{STUDENTS_DIR}/{SHARED_WEIGHTS}"] = "the weights every run's student holds alike, written once"
    for run in runs:
        for name, model in run.models.items():
            entry = results["methods"][name]
            about = {
                "method": name,
                "run": run.index,
                "label": data_config["label"],
                "id_column": data_config["id_column"],
                "read_options": read_options,
                "settings": entry["settings"][run.index],
                "test": {metric: summary["values"][run.index] for metric, summary in entry["test"].items()},
            }
            directory = staging_dir / STUDENTS_DIR / name / str(run.index)
            save_student(directory, model, run.encoder, classes, about | text, shared, shared_names)
            if tokenizer is not None:
                tokenizer.save_pretrained(directory / TOKENIZER_DIR)
        files[f"{STUDENTS_DIR}/<method>/{run.index}/"] = f"run {run.index}'s student of each method: {WEIGHTS} and {STUDENT_JSON}"
    chosen = results["chosen"]["method"]
    shutil.copytree(staging_dir / STUDENTS_DIR / chosen / "0", staging_dir / CHOSEN_DIR)
    _self_contained(staging_dir / CHOSEN_DIR, staging_dir / STUDENTS_DIR / chosen / "0")
    files[f"{CHOSEN_DIR}/"] = f"the student to deploy: {chosen} (best mean {results['chosen']['metric']} on the validation split), run 0"
    manifest = {
        "config": results["config"],
        "versions": {package: _version(package) for package in VERSIONED_PACKAGES},
        "data_fingerprint": data_fingerprint,
        "chosen": results["chosen"],
        "files": files,
        "date": results["date"],
        "machine": results["machine"],
    }
    (staging_dir / MANIFEST_JSON).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return [STUDENTS_DIR, CHOSEN_DIR, MANIFEST_JSON]


def _self_contained(directory: Path, source: Path) -> None:
    """The student in ``directory``, copied from ``source``, with all its weights in its own
    file (the student to deploy leaves the run directory whole)."""
    record = json.loads((directory / STUDENT_JSON).read_text(encoding="utf-8"))
    if "shared_weights" not in record:
        return
    save_file(student_weights(source, record), directory / WEIGHTS)
    del record["shared_weights"]
    (directory / STUDENT_JSON).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _text_about(data_config: dict, student_config: dict) -> dict:
    """What a text student needs to read new records: its text columns and sentence encoder (and
    that encoder's identity, to refuse another model at prediction time), or for a student that
    fine-tuned its encoder how its texts become tokens; nothing for tabular ones."""
    if data_config.get("text") is None:
        return {}
    text = data_config["text"]
    inputs = TextInputs((text,) if isinstance(text, str) else tuple(text), data_config.get("choices"), data_config.get("text_encoder"))
    if student_config.get("kind") == "encoder":
        mode = token_mode(inputs.layout, student_config["pair"])
        return {"text": inputs.to_json(), "tokens": {"mode": mode, "max_tokens": student_config["max_tokens"], "model": student_config["model"]}}
    return {"text": inputs.to_json(), "text_encoder_identity": inputs.sentence_encoder().identity}


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the frame's values, column names and order: the same data gives the same print."""
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    # Lists (a multiple-choice row's choices) are hashed by their JSON text: pandas hashes scalars only.
    listed = [c for c in frame.columns if frame[c].dtype == object and frame[c].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any()]
    hashable = frame.assign(**{str(c): frame[c].map(_json_of_list) for c in listed}) if listed else frame
    digest.update(pd.util.hash_pandas_object(hashable, index=False).to_numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def _json_of_list(value: object) -> object:
    return json.dumps(list(value)) if isinstance(value, (list, tuple, np.ndarray)) else value


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
