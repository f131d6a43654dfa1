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
(onnxruntime raises), and a student trained with ``data.missing: impute`` fills a NaN number
with its training mean; unlike the student, one trained without imputation does not refuse a NaN
number but returns NaN probabilities. The column types and class names are in the model's
metadata, so onnxruntime and pandas are all it takes to use it::

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
import safetensors.torch
import torch
from torch import nn

from stepdistill.data.encode import MISSING_CATEGORY
from stepdistill.errors import StepDistillError
from stepdistill.files import write_atomically
from stepdistill.progress import quiet_logger
from stepdistill.run_dir import SavedStudent
from stepdistill.students.logistic import LogisticModel

FORMATS = ("onnx", "sklearn", "safetensors")
SUFFIXES = {"onnx": ".onnx", "sklearn": ".skops", "safetensors": ".safetensors"}
# Float32 inference in two runtimes: differences beyond this are a wrong export, not rounding.
ONNX_TOLERANCE = 1e-5
# The pipeline computes in float64 where the student computes in float32.
SKLEARN_TOLERANCE = 1e-5
PROBE_ROWS = 1024
# The share of a probe's numbers left missing, for a student that fills them (data.missing: impute).
PROBE_MISSING_SHARE = 0.1
PROBABILITIES, LABEL = "probabilities", "label"
ROWS_DIM = "rows"
ONNX_USAGE = (
    "one input per raw column, shape (N, 1): numbers as double, categories as strings (a missing one as"
    f" '{MISSING_CATEGORY}'); outputs {PROBABILITIES} (N, C) float in the order of classes and {LABEL} (N,);"
    " an unseen category is an error, as with the student; a NaN number gives NaN probabilities where the student refuses it,"
    " and the training mean where the student was trained with data.missing: impute"
)


def probe_frame(student: SavedStudent, n: int = PROBE_ROWS, seed: int = 0, missing: bool = True) -> pd.DataFrame:
    """``n`` raw rows like the training rows: each number drawn around its training mean with its
    spread, each category among the student's (its missing level, where it has one, as a missing
    value). With ``missing``, a student that imputes (``data.missing: impute``) also gets missing
    numbers, a share ``PROBE_MISSING_SHARE`` of each column."""
    rng = np.random.default_rng(seed)
    encoder = student.encoder
    columns = {c: encoder.mean_[i] + encoder.scale_[i] * rng.standard_normal(n) for i, c in enumerate(encoder.numeric_)}
    if missing and encoder.missing == "impute":
        columns = {c: np.where(rng.random(n) < PROBE_MISSING_SHARE, np.nan, values) for c, values in columns.items()}
    for column, categories in zip(encoder.categorical_, encoder.categories_):
        drawn = rng.choice(np.asarray(categories, dtype=object), n)
        columns[column] = np.where(drawn == MISSING_CATEGORY, np.nan, drawn) if missing else drawn
    return pd.DataFrame(columns)[encoder.columns_]


class _Probabilities(nn.Module):
    """The student's class probabilities, (N, C) like ``class_probabilities``, from encoded rows
    in float64 (what the preprocessing graph gives), rounded to float32 as ``FeatureEncoder`` does.

    With ``fills`` (a student that imputes), a missing number, NaN after scaling, becomes its
    column's scaled training mean first: the ``FeatureEncoder``'s imputation, in float64 as there.
    It is done here rather than in the preprocessing graph because onnxruntime runs the ONNX
    imputation operator (ai.onnx.ml Imputer) on float32 only, which would round the raw numbers."""

    def __init__(self, model: nn.Module, fills: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.fills = fills

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.fills is not None:
            features = torch.where(torch.isnan(features), self.fills, features)
        return self.of(self.model(features.float()).logits)

    @staticmethod
    def of(logits: torch.Tensor) -> torch.Tensor:
        """(N, C) class probabilities from logits (N, 1) of a binary task or (N, C)."""
        if logits.shape[1] == 1:
            p1 = torch.sigmoid(logits)
            return torch.cat([1 - p1, p1], dim=1)
        return torch.softmax(logits, dim=1)


def export_student(student: SavedStudent, format: str, path: Path) -> dict:
    """Write ``student`` as ``format`` to ``path``, checked; returns what the check measured."""
    if format not in FORMATS:
        raise StepDistillError(f"unknown export format '{format}'; choose one of {', '.join(FORMATS)}")
    if student.tokenizer is not None and format == "onnx":
        return _encoder_onnx(student, path)
    if student.text is not None and format != "safetensors":
        # Its preprocessing starts with a transformer sentence encoder, which is not in these graphs.
        raise StepDistillError(f"a text student on sentence features exports as safetensors only ({format} would leave out its sentence encoder); pass --format safetensors")
    return {"onnx": _onnx, "sklearn": _sklearn, "safetensors": _safetensors}[format](student, path)


class _EncoderProbabilities(nn.Module):
    """A student that fine-tuned its encoder (students/encoder.py), from token ids to its class
    probabilities: ``input_ids`` and ``attention_mask`` (N, S, L) int64, S its segments (2 for a
    siamese pair, else 1), L any length; padding is masked rather than cut, which gives the same
    probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        segments = [self.model.masked_mean(input_ids[:, s], attention_mask[:, s]) for s in range(self.model.segments)]
        return _Probabilities.of(self.model.read(segments).logits)


# A few texts the ONNX export of a student that fine-tuned its encoder is checked on, through its tokenizer.
ENCODER_PROBES = ("a man is playing a guitar on stage", "nobody is outside", "two dogs run through a field of snow", "the food was cold", "it rained")


def _encoder_onnx(student: SavedStudent, path: Path) -> dict:
    """The student as ONNX from token ids (``_EncoderProbabilities``; the tokenizer stays outside
    the graph, saved beside the student), checked against the student on ``ENCODER_PROBES``."""
    _require("onnxruntime", "onnxscript", "onnx")
    import onnxruntime
    from onnx import helper

    model = student.model
    n = len(ENCODER_PROBES)
    frame = pd.DataFrame({column: [ENCODER_PROBES[(i + k) % n] for i in range(n)] for k, column in enumerate(student.text.columns)})
    if student.text.choices is not None:  # each probe question with the other probes as its choices
        frame[student.text.choices] = [[ENCODER_PROBES[(i + 1 + k) % n] for k in range(model.segments)] for i in range(n)]
    tokens = torch.tensor(student._tokens(frame)[0].to_numpy().copy()).long().view(len(frame), model.segments, model.max_tokens)
    mask = (tokens != model.pad_id).long()
    with warnings.catch_warnings(), quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _EncoderProbabilities(model).eval(),
            (tokens, mask),
            input_names=["input_ids", "attention_mask"],
            output_names=[PROBABILITIES],
            dynamic_shapes=({0: torch.export.Dim(ROWS_DIM), 2: torch.export.Dim("tokens")}, {0: torch.export.Dim(ROWS_DIM), 2: torch.export.Dim("tokens")}),
            dynamo=True,
            verbose=False,
        )
    exported = program.model_proto
    tokens_about = student.about["tokens"]
    helper.set_model_props(exported, {"classes": json.dumps(student.classes), "text": json.dumps(list(student.text.columns)), "tokens": json.dumps(tokens_about)})
    data = exported.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    [probabilities] = session.run([PROBABILITIES], {"input_ids": tokens.numpy(), "attention_mask": mask.numpy()})
    expected = student.predict_proba(frame)
    return _accept(data, path, float(np.abs(probabilities - expected).max()), 1e-4, "ONNX", len(frame))


def _onnx(student: SavedStudent, path: Path) -> dict:
    _require("onnxruntime", "onnxscript", "onnx", "skl2onnx")
    import onnxruntime

    exported = onnx_model(student).SerializeToString()
    probe = probe_frame(student)
    encoder = student.encoder
    # Fed as the module's docstring says to: a missing category as its level's name.
    feed = {c: probe[[c]].to_numpy(np.float64) for c in encoder.numeric_} | {c: probe[[c]].fillna(MISSING_CATEGORY).astype(str).to_numpy() for c in encoder.categorical_}
    session = onnxruntime.InferenceSession(exported, providers=["CPUExecutionProvider"])
    [probabilities] = session.run([PROBABILITIES], feed)
    difference = float(np.abs(probabilities - student.predict_proba(probe)).max())
    return _accept(exported, path, difference, ONNX_TOLERANCE, "ONNX (onnxruntime)")


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
    """The student's network as ONNX: encoded rows ``features`` (N, d) float64 to ``probabilities``,
    a missing number filled first where the student imputes."""
    encoder = student.encoder
    fills = None
    if encoder.missing == "impute":
        # Each number's training mean, scaled as the encoder scales it; the one-hot columns are never NaN.
        scaled = np.concatenate([(encoder.fill_ - encoder.mean_) / encoder.scale_, np.zeros(len(encoder.feature_names) - len(encoder.numeric_))])
        fills = torch.from_numpy(scaled)
    # The exporter's deprecation notices and its log lines about torchvision's operators (absent
    # here) are about torch's internals, not the user's model.
    with warnings.catch_warnings(), quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _Probabilities(student.model, fills).eval(),
            (torch.zeros(2, len(encoder.feature_names), dtype=torch.float64),),
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

    exported = skops.io.dumps(sklearn_pipeline(student))
    loaded = skops.io.loads(exported, trusted=skops.io.get_untrusted_types(data=exported))
    probe = probe_frame(student)
    difference = float(np.abs(loaded.predict_proba(probe) - student.predict_proba(probe)).max())
    return _accept(exported, path, difference, SKLEARN_TOLERANCE, "scikit-learn pipeline")


def sklearn_pipeline(student: SavedStudent):
    """The fitted Pipeline(ColumnTransformer, LogisticRegression) equal to a logistic student; it
    imputes missing values (NaN) as the student does where the student was trained to."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    weight = student.model.linear.weight.detach().double().numpy()
    bias = student.model.linear.bias.detach().double().numpy()
    classifier = LogisticRegression()
    classifier.classes_ = np.asarray(student.classes, dtype=object)
    classifier.coef_, classifier.intercept_ = weight, bias
    classifier.n_features_in_ = weight.shape[1]
    classifier.n_iter_ = np.zeros(1, dtype=np.int32)
    return Pipeline([("columns", column_transformer(student, impute=student.encoder.missing == "impute")), ("classifier", classifier)])


def column_transformer(student: SavedStudent, impute: bool = False):
    """The student's preprocessing as a fitted scikit-learn ColumnTransformer: standardized numbers
    then one-hot categories, in the encoder's order, refusing unseen categories as the student does.
    With ``impute``, missing values (NaN) are filled first as the encoder fills them: a number with
    its training mean, a category with its own level. (The ONNX model does without: its string
    inputs carry that level themselves, and its network graph fills the numbers.)"""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    encoder = student.encoder
    numeric, categorical = StandardScaler(), OneHotEncoder(categories=[list(c) for c in encoder.categories_], handle_unknown="error")
    if impute:
        numeric = make_pipeline(SimpleImputer(strategy="mean"), numeric)
        categorical = make_pipeline(SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY), categorical)
    columns = ColumnTransformer([("numeric", numeric, encoder.numeric_), ("categorical", categorical, encoder.categorical_)], verbose_feature_names_out=False)
    # Fitting on probe rows sets every fitted attribute; the scaler's statistics (and the imputer's)
    # are then the student's own (the categories were given explicitly above).
    probe = probe_frame(student, n=max(2, max((len(c) for c in encoder.categories_), default=2)), missing=False)
    columns.fit(probe.assign(**{c: probe[c].astype(object) for c in encoder.categorical_}))
    fitted = columns.named_transformers_["numeric"]
    scaler = fitted[-1] if impute else fitted
    scaler.mean_, scaler.scale_, scaler.var_ = encoder.mean_.copy(), encoder.scale_.copy(), encoder.scale_**2
    if impute:
        fitted[0].statistics_ = encoder.fill_.copy()
    return columns


def _safetensors(student: SavedStudent, path: Path) -> dict:
    """The weights, with the architecture, preprocessing and classes in the file's metadata."""
    metadata = {"model": json.dumps(student.model.spec), "encoder": json.dumps(student.encoder.to_json()), "classes": json.dumps(student.classes)}
    if student.text is not None:
        metadata["text"] = json.dumps(student.text.to_json())
    tensors = {name: t.detach().contiguous() for name, t in student.model.state_dict().items()}
    exported = safetensors.torch.save(tensors, metadata=metadata)
    reloaded = safetensors.torch.load(exported)
    difference = max(float((reloaded[name] - t).abs().max()) for name, t in tensors.items()) if tensors else 0.0
    return _accept(exported, path, difference, 0.0, "safetensors")


def _accept(exported: bytes, path: Path, difference: float, tolerance: float, what: str, probe_rows: int = PROBE_ROWS) -> dict:
    """Write the checked file (checked on ``probe_rows`` rows), replacing any file at ``path`` whole, or refuse it."""
    if not difference <= tolerance:
        raise StepDistillError(f"the {what} export differs from the student by {difference:.2e} (over {tolerance:g}); nothing was written")
    write_atomically(path, exported)
    return {"path": str(path), "max_abs_difference": difference, "tolerance": tolerance, "probe_rows": probe_rows}


def _require(*packages: str) -> None:
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError as err:
            raise StepDistillError(f"this export needs the {package} package; install stepdistill[export]") from err
