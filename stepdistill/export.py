"""A saved student in formats other tools load: ONNX, a scikit-learn pipeline (skops), safetensors.

Every export is checked before it is written: the exported model's probabilities against the
student's own on probe rows drawn from what the student was trained on (numbers around their
training mean and spread, categories among those it knows), and refused when they differ by more
than a tolerance. onnx, onnxruntime, onnxscript, skl2onnx and skops are the optional extra
``stepdistill[export]``, imported only here.

The ONNX model takes the raw columns, preprocessing included: one input per column, shape (N, 1),
double for a numeric column and string for a categorical one (a missing category as
``"<missing>"``); its outputs are ``probabilities`` (N, C), in the order of the classes, and
``label`` (N,), the most probable class. Like the student, it refuses a category it never saw
(onnxruntime raises); unlike the student, it does not refuse a NaN number but returns NaN
probabilities. The column types and class names are in the model's metadata, so onnxruntime and
pandas are all it takes to use it::

    import json

    import onnxruntime
    import pandas as pd

    session = onnxruntime.InferenceSession("student.onnx", providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    columns, classes = json.loads(metadata["columns"]), json.loads(metadata["classes"])
    rows = pd.read_csv("new_rows.csv")
    feed = {
        name: rows[[name]].to_numpy("float64") if kind == "double" else rows[[name]].fillna("<missing>").astype(str).to_numpy()
        for name, kind in columns.items()
    }
    probabilities, labels = session.run(["probabilities", "label"], feed)
    predictions = pd.DataFrame(probabilities, columns=classes).assign(label=labels)
"""

from __future__ import annotations

import importlib
import json
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from stepdistill.data.encode import MISSING_CATEGORY
from stepdistill.errors import StepDistillError
from stepdistill.run_dir import SavedStudent
from stepdistill.students.logistic import LogisticModel

FORMATS = ("onnx", "sklearn", "safetensors")
SUFFIXES = {"onnx": ".onnx", "sklearn": ".skops", "safetensors": ".safetensors"}
# Float32 inference in two runtimes: differences beyond this are a wrong export, not rounding.
ONNX_TOLERANCE = 1e-5
# The pipeline computes in float64 where the student computes in float32.
SKLEARN_TOLERANCE = 1e-5
PROBE_ROWS = 1024
PROBABILITIES, LABEL = "probabilities", "label"
ROWS_DIM = "rows"
ONNX_USAGE = (
    "one input per raw column, shape (N, 1): numbers as double, categories as strings (a missing one as"
    f" '{MISSING_CATEGORY}'); outputs {PROBABILITIES} (N, C) float in the order of classes and {LABEL} (N,);"
    " an unseen category is an error, as with the student; a NaN number gives NaN probabilities where the student refuses it"
)


def probe_frame(student: SavedStudent, n: int = PROBE_ROWS, seed: int = 0) -> pd.DataFrame:
    """``n`` raw rows like the training rows: each number drawn around its training mean with its
    spread, each category among the student's."""
    rng = np.random.default_rng(seed)
    encoder = student.encoder
    columns = {c: encoder.mean_[i] + encoder.scale_[i] * rng.standard_normal(n) for i, c in enumerate(encoder.numeric_)}
    columns |= {c: rng.choice(categories, n) for c, categories in zip(encoder.categorical_, encoder.categories_)}
    return pd.DataFrame(columns)[encoder.columns_]


class _Probabilities(nn.Module):
    """The student's class probabilities, (N, C) like ``class_probabilities``, from encoded rows
    in float64 (what the preprocessing graph gives), rounded to float32 as ``FeatureEncoder`` does."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.model(features.float()).logits
        if logits.shape[1] == 1:
            p1 = torch.sigmoid(logits)
            return torch.cat([1 - p1, p1], dim=1)
        return torch.softmax(logits, dim=1)


def export_student(student: SavedStudent, format: str, path: Path) -> dict:
    """Write ``student`` as ``format`` to ``path``, checked; returns what the check measured."""
    if format not in FORMATS:
        raise StepDistillError(f"unknown export format '{format}'; choose one of {', '.join(FORMATS)}")
    if student.text is not None and format != "safetensors":
        # Its preprocessing starts with a transformer sentence encoder, which is not in these graphs.
        raise StepDistillError(f"a text student exports as safetensors only ({format} would leave out its sentence encoder); pass --format safetensors")
    if student.encoder.missing == "impute" and format != "safetensors":
        # The converted preprocessing has no imputation step: the graph would pass NaN on.
        raise StepDistillError(f"a student trained with data.missing: impute exports as safetensors only ({format} would not fill missing values); pass --format safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"onnx": _onnx, "sklearn": _sklearn, "safetensors": _safetensors}[format](student, path)


def _onnx(student: SavedStudent, path: Path) -> dict:
    _require("onnxruntime", "onnxscript", "onnx", "skl2onnx")
    import onnx
    import onnxruntime

    staged = path.with_name(path.name + ".partial")
    onnx.save(onnx_model(student), str(staged))
    probe = probe_frame(student)
    encoder = student.encoder
    feed = {c: probe[[c]].to_numpy(np.float64) for c in encoder.numeric_} | {c: probe[[c]].astype(str).to_numpy() for c in encoder.categorical_}
    session = onnxruntime.InferenceSession(str(staged), providers=["CPUExecutionProvider"])
    [exported] = session.run([PROBABILITIES], feed)
    difference = float(np.abs(exported - student.predict_proba(probe)).max())
    return _accept(staged, path, difference, ONNX_TOLERANCE, "ONNX (onnxruntime)")


def onnx_model(student: SavedStudent):
    """The student on its raw columns as one ONNX model (inputs and outputs in the module's
    docstring): the preprocessing (``column_transformer``, converted) in front of the student's
    network, then the most probable class. Inputs follow the training column order."""
    import onnx
    from onnx import compose, helper, version_converter
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    encoder = student.encoder
    if taken := sorted({PROBABILITIES, LABEL} & set(encoder.columns_)):
        raise StepDistillError(f"the ONNX model's outputs are named {PROBABILITIES} and {LABEL}, and so is the feature column {taken[0]}; rename that column and train again")
    network = _network_graph(student)
    opset = next(o.version for o in network.opset_import if o.domain == "")
    types = {c: "double" if c in encoder.numeric_ else "string" for c in encoder.columns_}
    tensor_types = {"double": DoubleTensorType, "string": StringTensorType}
    with warnings.catch_warnings():  # notices about the converter's internals, not the user's model
        warnings.simplefilter("ignore")
        preprocessing = convert_sklearn(column_transformer(student), initial_types=[(c, tensor_types[t]([None, 1])) for c, t in types.items()], target_opset=opset)
    # Both graphs must share one opset and IR version to merge; the converter uses the oldest that suffice.
    preprocessing = version_converter.convert_version(preprocessing, opset)
    preprocessing.ir_version = network.ir_version
    model = compose.merge_models(
        compose.add_prefix(preprocessing, "preprocessing/", rename_inputs=False),
        compose.add_prefix(network, "network/", rename_outputs=False),
        io_map=[("preprocessing/" + preprocessing.graph.output[0].name, "network/features")],
        producer_name="stepdistill",
        producer_version=metadata.version("stepdistill"),
        doc_string=f"stepdistill student ({student.model.spec['kind']}) on the raw columns",
    )
    graph = model.graph
    graph.initializer.append(helper.make_tensor("label/classes", onnx.TensorProto.STRING, [len(student.classes)], [c.encode() for c in student.classes]))
    graph.node.extend(
        [
            helper.make_node("ArgMax", [PROBABILITIES], ["label/index"], axis=1, keepdims=0),
            helper.make_node("Gather", ["label/classes", "label/index"], [LABEL]),
        ]
    )
    graph.output.append(helper.make_tensor_value_info(LABEL, onnx.TensorProto.STRING, [ROWS_DIM]))
    helper.set_model_props(model, {"columns": json.dumps(types), "classes": json.dumps(student.classes), "usage": ONNX_USAGE})
    return model


def _network_graph(student: SavedStudent):
    """The student's network as ONNX: encoded rows ``features`` (N, d) float64 to ``probabilities``."""
    with warnings.catch_warnings():  # the exporter's deprecation notices are about torch's internals, not the user's model
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _Probabilities(student.model).eval(),
            (torch.zeros(2, len(student.encoder.feature_names), dtype=torch.float64),),
            input_names=["features"],
            output_names=[PROBABILITIES],
            dynamic_shapes=({0: torch.export.Dim(ROWS_DIM)},),
            dynamo=True,
            verbose=False,
        )
    return program.model_proto


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
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    weight = student.model.linear.weight.detach().double().numpy()
    bias = student.model.linear.bias.detach().double().numpy()
    classifier = LogisticRegression()
    classifier.classes_ = np.asarray(student.classes, dtype=object)
    classifier.coef_, classifier.intercept_ = weight, bias
    classifier.n_features_in_ = weight.shape[1]
    classifier.n_iter_ = np.zeros(1, dtype=np.int32)
    return Pipeline([("columns", column_transformer(student)), ("classifier", classifier)])


def column_transformer(student: SavedStudent):
    """The student's preprocessing as a fitted scikit-learn ColumnTransformer: standardized numbers
    then one-hot categories, in the encoder's order, refusing unseen categories as the student does."""
    from sklearn.compose import ColumnTransformer
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
    return columns


def _safetensors(student: SavedStudent, path: Path) -> dict:
    """The weights, with the architecture, preprocessing and classes in the file's metadata."""
    metadata = {"model": json.dumps(student.model.spec), "encoder": json.dumps(student.encoder.to_json()), "classes": json.dumps(student.classes)}
    if student.text is not None:
        metadata["text"] = json.dumps(student.text.to_json())
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
