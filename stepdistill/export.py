"""A saved student in formats other tools load: ONNX, a scikit-learn pipeline (skops), safetensors.

Every export is checked before it is written: the exported model's probabilities against the
student's own on probe rows drawn from what the student was trained on (numbers around their
training mean and spread, categories among those it knows), and refused when they differ by more
than a tolerance. onnx, onnxruntime, onnxscript and skops are the optional extra
``stepdistill[export]``, imported only here.
"""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from stepdistill.errors import StepDistillError
from stepdistill.run_dir import SavedStudent
from stepdistill.students import LogisticModel

FORMATS = ("onnx", "sklearn", "safetensors")
SUFFIXES = {"onnx": ".onnx", "sklearn": ".skops", "safetensors": ".safetensors"}
# Float32 inference in two runtimes: differences beyond this are a wrong export, not rounding.
ONNX_TOLERANCE = 1e-5
# The pipeline computes in float64 where the student computes in float32.
SKLEARN_TOLERANCE = 1e-5
PROBE_ROWS = 1024


def probe_frame(student: SavedStudent, n: int = PROBE_ROWS, seed: int = 0) -> pd.DataFrame:
    """``n`` raw rows like the training rows: each number drawn around its training mean with its
    spread, each category among the student's."""
    rng = np.random.default_rng(seed)
    encoder = student.encoder
    columns = {c: encoder.mean_[i] + encoder.scale_[i] * rng.standard_normal(n) for i, c in enumerate(encoder.numeric_)}
    columns |= {c: rng.choice(categories, n) for c, categories in zip(encoder.categorical_, encoder.categories_)}
    return pd.DataFrame(columns)[encoder.columns_]


class _Probabilities(nn.Module):
    """The student's class probabilities, (N, C) like ``class_probabilities``, from encoded rows."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.model(features).logits
        if logits.shape[1] == 1:
            p1 = torch.sigmoid(logits)
            return torch.cat([1 - p1, p1], dim=1)
        return torch.softmax(logits, dim=1)


def export_student(student: SavedStudent, format: str, path: Path) -> dict:
    """Write ``student`` as ``format`` to ``path``, checked; returns what the check measured."""
    if format not in FORMATS:
        raise StepDistillError(f"unknown export format '{format}'; choose one of {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"onnx": _onnx, "sklearn": _sklearn, "safetensors": _safetensors}[format](student, path)


def _onnx(student: SavedStudent, path: Path) -> dict:
    _require("onnxruntime", "onnxscript", "onnx")
    import onnxruntime

    module = _Probabilities(student.model).eval()
    width = len(student.encoder.feature_names)
    with warnings.catch_warnings():  # the exporter's deprecation notices are about torch's internals, not the user's model
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (torch.zeros(2, width),),
            input_names=["features"],
            output_names=["probabilities"],
            dynamic_shapes=({0: torch.export.Dim("rows")},),
            dynamo=True,
            verbose=False,
        )
    staged = path.with_name(path.name + ".partial")
    program.save(str(staged))
    encoded = student.encoder.transform(probe_frame(student))
    session = onnxruntime.InferenceSession(str(staged), providers=["CPUExecutionProvider"])
    exported = session.run(None, {"features": encoded})[0]
    with torch.no_grad():
        expected = module(torch.from_numpy(encoded)).numpy()
    return _accept(staged, path, float(np.abs(exported - expected).max()), ONNX_TOLERANCE, "ONNX (onnxruntime)")


def _sklearn(student: SavedStudent, path: Path) -> dict:
    """A logistic student as a scikit-learn Pipeline on the raw columns: its preprocessing
    (standardized numbers, one-hot categories) and a LogisticRegression carrying its weights."""
    if not isinstance(student.model, LogisticModel):
        raise StepDistillError(f"only logistic students export as a scikit-learn pipeline, this one is {student.model.spec['kind']}; use --format onnx")
    _require("skops")
    import skops.io

    pipeline = sklearn_pipeline(student)
    staged = path.with_name(path.name + ".partial")
    skops.io.dump(pipeline, staged)
    loaded = skops.io.load(staged, trusted=skops.io.get_untrusted_types(file=staged))
    probe = probe_frame(student)
    difference = float(np.abs(loaded.predict_proba(probe) - student.predict_proba(probe)).max())
    return _accept(staged, path, difference, SKLEARN_TOLERANCE, "scikit-learn pipeline")


def sklearn_pipeline(student: SavedStudent):
    """The fitted Pipeline(ColumnTransformer, LogisticRegression) equal to a logistic student."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    encoder = student.encoder
    columns = ColumnTransformer(
        [
            ("numeric", StandardScaler(), encoder.numeric_),
            ("categorical", OneHotEncoder(categories=[list(c) for c in encoder.categories_], handle_unknown="error"), encoder.categorical_),
        ],
        verbose_feature_names_out=False,
    )
    # Fitting on probe rows sets every fitted attribute; the scaler's statistics are then the
    # student's own (the categories were given explicitly above).
    probe = probe_frame(student, n=max(2, max((len(c) for c in encoder.categories_), default=2)))
    columns.fit(probe.assign(**{c: probe[c].astype(object) for c in encoder.categorical_}))
    scaler = columns.named_transformers_["numeric"]
    scaler.mean_, scaler.scale_, scaler.var_ = encoder.mean_.copy(), encoder.scale_.copy(), encoder.scale_**2
    weight = student.model.linear.weight.detach().double().numpy()
    bias = student.model.linear.bias.detach().double().numpy()
    classifier = LogisticRegression()
    classifier.classes_ = np.asarray(student.classes, dtype=object)
    classifier.coef_, classifier.intercept_ = weight, bias
    classifier.n_features_in_ = weight.shape[1]
    classifier.n_iter_ = np.zeros(1, dtype=np.int32)
    return Pipeline([("columns", columns), ("classifier", classifier)])


def _safetensors(student: SavedStudent, path: Path) -> dict:
    """The weights, with the architecture, preprocessing and classes in the file's metadata."""
    metadata = {"model": json.dumps(student.model.spec), "encoder": json.dumps(student.encoder.to_json()), "classes": json.dumps(student.classes)}
    tensors = {name: t.detach().contiguous() for name, t in student.model.state_dict().items()}
    staged = path.with_name(path.name + ".partial")
    save_file(tensors, staged, metadata=metadata)
    reloaded = load_file(staged)
    difference = max(float((reloaded[name] - t).abs().max()) for name, t in tensors.items()) if tensors else 0.0
    return _accept(staged, path, difference, 0.0, "safetensors")


def _accept(staged: Path, path: Path, difference: float, tolerance: float, what: str) -> dict:
    """Move the checked file into place, or remove it and refuse."""
    if not difference <= tolerance:
        staged.unlink(missing_ok=True)
        raise StepDistillError(f"the {what} export differs from the student by {difference:.2e} (over {tolerance:g}); nothing was written")
    staged.replace(path)
    return {"path": str(path), "max_abs_difference": difference, "tolerance": tolerance, "probe_rows": PROBE_ROWS}


def _require(*packages: str) -> None:
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError as err:
            raise StepDistillError(f"this export needs the {package} package; install stepdistill[export]") from err
