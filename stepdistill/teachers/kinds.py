"""Teacher kinds as configured (``teacher.kind``): each builds its teacher from the data.

logistic, mlp, cnn   trained here on the encoded training split (the baseline method)
torch                any nn.Module from an importable factory, weights from safetensors
sklearn              a fitted scikit-learn classifier saved with joblib, explained as ``explain`` says
lightgbm, xgboost    trained here on the raw training columns, or loaded from a model file
file                 precomputed outputs (Parquet or NPZ) for teachers that cannot run here
llm                  the labels and rationales a large language model wrote for text records
                     (JSONL, or the released distilling-step-by-step data), optionally through a
                     privileged-information model trained here on the human labels
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal, Union, get_args

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from stepdistill.data.prepared import PreparedData
from stepdistill.data.table import Table
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.tabular import TabularData
from stepdistill.errors import StepDistillError, validation_message
from stepdistill.evaluate import count_parameters
from stepdistill.methods import Method, build_method
from stepdistill.students.cnn import CNNModel
from stepdistill.students.kinds import n_logits
from stepdistill.students.logistic import LogisticModel
from stepdistill.students.mlp import MLPModel
from stepdistill.teachers import FileTeacher, LightGBMTeacher, ModuleTeacher, SklearnTeacher, XGBoostTeacher, load_module_weights, train_lightgbm, train_xgboost
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.boosting import check_parameter_names
from stepdistill.teachers.explain import DEFAULT_EXPLAIN_BUDGET, ExplainChoice
from stepdistill.teachers.llm import LLMTeacher, answers_as_choice_letters, outputs_notes
from stepdistill.teachers.privileged import PrivilegedTeacher, privileged_features
from stepdistill.data.llm_outputs import LLMOutputs, read_dsbs_outputs, read_llm_jsonl


@dataclass(frozen=True)
class BuiltTeacher:
    teacher: Teacher
    train_seconds: float | None  # None: trained elsewhere
    params: int | None  # None: not a parameter count (trees, a file)
    notes: tuple[str, ...] = ()  # what the user should know about its outputs (parse failures)


class _Teacher(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @property
    def learns_from_labels(self) -> bool:
        """Whether the teacher learns from the human labels of the rows students learn from, so
        that with a labelled fraction it must see only those: a privileged-information model. A
        tabular teacher trained here stands for one trained on all the labels there are, and
        annotates the rows whose labels the students do not see (see ``sweep-data``)."""
        return False

    @property
    def trains_here(self) -> bool:
        """Whether stepdistill trains this teacher (so each run refits it on its own training rows,
        seeded with ``seed``) rather than loading it (its training rows then unknown here)."""
        return False


class TrainedHereTeacher(_Teacher):
    seed: int = 0

    @property
    def trains_here(self) -> bool:
        return True
    training: dict = Field(default_factory=dict, description="overrides of the teacher's training settings")

    def training_defaults(self) -> dict:
        return {"epochs": 10, "optimizer": "adam", "lr": 0.003}

    def make_model(self, data: PreparedData) -> Callable[[], nn.Module]:
        raise NotImplementedError

    def method(self) -> Method:
        """The teacher's training: the baseline method (hard labels) with its settings."""
        try:
            return build_method("baseline", {**self.training_defaults(), **self.training}, name="teacher")
        except ValidationError as err:
            raise StepDistillError(validation_message(err, prefix="teacher.training")) from err

    def build(self, data: PreparedData, device) -> BuiltTeacher:
        state = new_state("teacher", self.method(), self.make_model(data), self.seed, device=device)
        fit([state], TabularData(data.splits.train, data.splits.val, None))
        state.model.eval()
        teacher = ModuleTeacher(state.model)
        if isinstance(state.model, LogisticModel):
            teacher.rationale_style = "score" if state.model.rationale_kind == "score" else "contributions"
        return BuiltTeacher(teacher, state.seconds, count_parameters(state.model))


class LogisticTeacher(TrainedHereTeacher):
    kind: Literal["logistic"] = "logistic"
    rationale: Literal["contributions", "score"] = Field(
        "contributions", description="per-feature contributions, or the article's scalar score"
    )

    def training_defaults(self) -> dict:
        return {"epochs": 5}  # the reference article: 5 epochs of SGD at lr 0.01

    def make_model(self, data: PreparedData) -> Callable[[], nn.Module]:
        d, k = data.splits.train.n_features, n_logits(len(data.classes))
        return lambda: LogisticModel(d, k, self.rationale)


class MLPTeacher(TrainedHereTeacher):
    kind: Literal["mlp"]
    hidden: tuple[int, ...] = Field((64, 64), min_length=1)
    rationale_layer: int = Field(-1, description="which hidden layer's activations are the rationale (0 = first, -1 = last)")

    def make_model(self, data: PreparedData) -> Callable[[], nn.Module]:
        if not -len(self.hidden) <= self.rationale_layer < len(self.hidden):
            raise StepDistillError(
                f"teacher.rationale_layer {self.rationale_layer} does not exist: the teacher has {len(self.hidden)} hidden layers"
                f" (0..{len(self.hidden) - 1}, or -1 for the last)"
            )
        d, k = data.splits.train.n_features, n_logits(len(data.classes))
        return lambda: MLPModel(d, k, self.hidden, self.rationale_layer)


class CNNTeacher(TrainedHereTeacher):
    kind: Literal["cnn"]
    channels: tuple[int, ...] = Field((16, 32), min_length=1)
    rationale: Literal["pooled", "spatial"] = "pooled"
    rationale_layer: int = -1

    def training_defaults(self) -> dict:
        return {"epochs": 6, "optimizer": "adam", "lr": 0.001, "batch_size": 64}

    def make_model(self, data: PreparedData) -> Callable[[], nn.Module]:
        if data.image_shape is None:
            raise StepDistillError("teacher.kind cnn needs images: set data.image_shape, e.g. [1, 28, 28]")
        if not -len(self.channels) <= self.rationale_layer < len(self.channels):
            raise StepDistillError(
                f"teacher.rationale_layer {self.rationale_layer} does not exist: the CNN has {len(self.channels)} conv blocks"
            )
        k = n_logits(len(data.classes))
        return lambda: CNNModel(data.image_shape, k, self.channels, self.rationale, self.rationale_layer)


class _CodeRunningTeacher(_Teacher):
    """A teacher whose loading runs code from outside stepdistill (unpickling, importing a module):
    only with the user's consent, ``trust_pickle: true`` here or ``--trust-pickle``."""

    trust_pickle: bool = Field(False, description="consent to run the code that loading this teacher runs")

    def require_consent(self, what: str, alternatives: str) -> None:
        if not self.trust_pickle:
            raise StepDistillError(
                f"loading this teacher runs code: {what}; if you trust it, set teacher.trust_pickle: true or pass --trust-pickle,"
                f" else {alternatives}"
            )


class TorchTeacher(_CodeRunningTeacher):
    kind: Literal["torch"]
    module: str = Field(..., description="'package.module:factory', a callable returning the nn.Module")
    module_args: dict = Field(default_factory=dict)
    weights: Path | None = Field(None, description="a safetensors file of the module's weights")
    rationale_layer: str | None = Field(None, description="name of the submodule whose output is the rationale, e.g. 'net.2'")
    pool: Literal["mean", "none"] = "mean"

    def build(self, data: PreparedData, device) -> BuiltTeacher:
        self.require_consent(f"importing {self.module}", "give the teacher's outputs as a file (teacher.kind: file)")
        module = _import_factory(self.module)(**self.module_args)
        if not isinstance(module, nn.Module):
            raise StepDistillError(f"teacher.module {self.module} returned a {type(module).__name__}, not a torch nn.Module")
        if self.weights is not None:
            load_module_weights(module, self.weights)
        module.to(device).eval()
        return BuiltTeacher(ModuleTeacher(module, self.rationale_layer, self.pool), None, count_parameters(module))


class SklearnTeacherConfig(_CodeRunningTeacher):
    kind: Literal["sklearn"]
    path: Path = Field(..., description="a fitted scikit-learn classifier saved with joblib")
    input: Literal["frame", "X"] = Field("frame", description="frame: the raw columns (e.g. a Pipeline); X: the encoded features")
    explain: ExplainChoice = Field(
        "auto",
        description="the rationale: auto (the model's own, linear coef_ or TreeSHAP, else sampled within explain_budget, else none),"
        " tree, linear, sampled (whatever it costs) or none",
    )
    explain_budget: int = Field(DEFAULT_EXPLAIN_BUDGET, gt=0, description="the most model evaluations explain: auto lets a sampled explanation take")

    def build(self, data: PreparedData, device) -> BuiltTeacher:
        import joblib

        _require_file(self.path, "teacher.path")
        self.require_consent(
            f"unpickling {self.path} with joblib",
            "give the teacher's outputs as a file (teacher.kind: file), or use a LightGBM or XGBoost model file",
        )
        try:
            estimator = joblib.load(self.path)
        except Exception as err:  # unpickling raises anything
            raise StepDistillError(f"cannot load teacher.path {self.path} with joblib ({type(err).__name__}: {err}); save it with joblib.dump") from err
        return BuiltTeacher(SklearnTeacher(estimator, self.input, self.explain, self.explain_budget), None, None)


class _TreeEnsembleTeacher(_Teacher):
    """A gradient-boosted ensemble: loaded from ``path``, or trained here on the raw training
    columns with ``params`` when there is none."""

    path: Path | None = Field(None, description="a saved model; trained here on the raw columns when absent")
    params: dict = Field(default_factory=dict, description="the classifier's settings when trained here")
    seed: int = 0

    @property
    def trains_here(self) -> bool:
        return self.path is None

    def load(self, path: Path) -> object:
        raise NotImplementedError

    def train(self, frame: pd.DataFrame, y: np.ndarray) -> object:
        raise NotImplementedError

    def adapter(self, model: object) -> Teacher:
        raise NotImplementedError

    @field_validator("params")
    @classmethod
    def _known_parameters(cls, params: dict) -> dict:
        """A misspelt parameter would be ignored by the library: refused here, before anything runs."""
        if params:
            check_parameter_names(get_args(cls.model_fields["kind"].annotation)[0], params)
        return params

    def build(self, data: PreparedData, device) -> BuiltTeacher:
        if self.path is not None:
            _require_file(self.path, "teacher.path")
            return BuiltTeacher(self.adapter(self.load(self.path)), None, None)
        train = data.splits.train
        started = time.perf_counter()
        model = self.train(data.raw.loc[train.ids.numpy()], train.y.numpy())
        return BuiltTeacher(self.adapter(model), time.perf_counter() - started, None)


class LightGBMTeacherConfig(_TreeEnsembleTeacher):
    kind: Literal["lightgbm"]

    def load(self, path: Path) -> object:
        import lightgbm

        return lightgbm.Booster(model_file=str(path))

    def train(self, frame: pd.DataFrame, y: np.ndarray) -> object:
        return train_lightgbm(frame, y, self.params, self.seed)

    def adapter(self, model: object) -> Teacher:
        return LightGBMTeacher(model)


class XGBoostTeacherConfig(_TreeEnsembleTeacher):
    kind: Literal["xgboost"]

    def load(self, path: Path) -> object:  # JSON or UBJ
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))
        return booster

    def train(self, frame: pd.DataFrame, y: np.ndarray) -> object:
        return train_xgboost(frame, y, self.params, self.seed)

    def adapter(self, model: object) -> Teacher:
        return XGBoostTeacher(model)


class FileTeacherConfig(_Teacher):
    kind: Literal["file"]
    path: Path = Field(..., description="Parquet or NPZ: sample id, logits or probabilities, optional rationale")
    id_column: str = "id"

    def build(self, data: PreparedData, device) -> BuiltTeacher:
        return BuiltTeacher(FileTeacher(self.path, self.id_column), None, None)


class PrivilegedModel(BaseModel):
    """The privileged-information model of an LLM teacher: an MLP reading the student's features
    and the rationale's embedding, trained on the training split's human labels."""

    model_config = ConfigDict(extra="forbid")

    hidden: tuple[int, ...] = Field((256,), min_length=1)
    training: dict = Field(default_factory=dict, description="overrides of its training (baseline method settings)")

    def method(self) -> Method:
        try:
            return build_method("baseline", {**PRIVILEGED_TRAINING, **self.training}, name="teacher")
        except ValidationError as err:
            raise StepDistillError(validation_message(err, prefix="teacher.privileged.training")) from err


# Adam with early stopping on the validation split: the privileged model is a small MLP on
# sentence features, like the students.
PRIVILEGED_TRAINING = {"optimizer": "adam", "lr": 0.001, "epochs": 30, "batch_size": 128, "early_stopping_patience": 3}


class LLMTeacherConfig(_Teacher):
    """What a large language model wrote for each text record (data.text): a label (or label
    distribution) and one or more rationales. ``outputs``: a JSONL file (one object per record:
    id, label, rationale, optional label distribution; what ``stepdistill lm-teach`` writes), or
    with ``format: dsbs`` the folder holding the released distilling-step-by-step data
    (``datasets/<task>/``), every split of ``task`` read. Multiple choice: a label may be the
    choice's text or its letter. With ``privileged``, the teacher's labels come from a model
    trained here on the human labels that also reads the rationale's embedding (generalized
    distillation); without, from the LLM's own answers."""

    kind: Literal["llm"]
    outputs: Path = Field(..., description="teacher outputs: a JSONL file, or the distilling-step-by-step data folder (format: dsbs)")
    format: Literal["jsonl", "dsbs"] = "jsonl"
    task: Literal["cqa", "svamp", "esnli"] | None = Field(None, description="dsbs: which task's outputs")
    parse: Literal["careful", "paper"] = Field("careful", description="dsbs: match answers to classes ignoring case (careful) or exactly as the paper did")
    id_field: str = "id"
    label_field: str = "label"
    rationale_field: str = "rationale"
    distribution_field: str | None = "label_distribution"
    eps: float = Field(0.01, gt=0, lt=0.5, description="label distributions are clipped to [eps, 1 - eps] so logits stay finite")
    privileged: PrivilegedModel | None = None
    seed: int = 0

    @property
    def trains_here(self) -> bool:
        return self.privileged is not None

    @property
    def learns_from_labels(self) -> bool:
        return self.privileged is not None

    def read_outputs(self) -> LLMOutputs:
        if self.format == "jsonl":
            return read_llm_jsonl(self.outputs, self.id_field, self.label_field, self.rationale_field, self.distribution_field)
        if self.task is None:
            raise StepDistillError("teacher.format dsbs needs teacher.task: cqa, svamp or esnli")
        return read_dsbs_outputs(self.outputs, self.task, self.parse)

    def build(self, data: PreparedData, device) -> BuiltTeacher:
        if data.text is None or data.record_ids is None:
            raise StepDistillError("teacher.kind llm teaches text records; set data.text to the text column(s)")
        outputs = self.read_outputs()
        if data.choices is not None:
            outputs = answers_as_choice_letters(outputs, dict(zip(data.record_ids, data.choices)))
        llm = LLMTeacher(outputs, data.classes, data.text.sentence_encoder(), data.record_ids, self.eps)
        notes = outputs_notes(outputs, llm)
        if self.privileged is None:
            return BuiltTeacher(llm, None, None, notes)
        started = time.perf_counter()
        model = self._fit_privileged(llm, data, device)
        return BuiltTeacher(PrivilegedTeacher(llm, model), time.perf_counter() - started, count_parameters(model), notes)

    def _fit_privileged(self, llm: LLMTeacher, data: PreparedData, device) -> nn.Module:
        """The privileged MLP, trained on the training split's human labels (early stopping on the
        validation split); never on the test split."""
        tables = []
        for table in (data.splits.train, data.splits.val):
            rationale = llm.outputs(Samples(table.ids, table.X)).rationale
            seen = privileged_features(table.X, rationale)
            tables.append(Table(table.ids, seen, table.y, table.classes, tuple(f"privileged_{i}" for i in range(seen.shape[1]))))
        d, k = tables[0].n_features, n_logits(len(data.classes))
        state = new_state("teacher", self.privileged.method(), lambda: MLPModel(d, k, self.privileged.hidden), self.seed, device=device)
        fit([state], TabularData(tables[0], tables[1], None))
        return state.model.cpu().eval()


TeacherConfig = Annotated[
    Union[
        LogisticTeacher,
        MLPTeacher,
        CNNTeacher,
        TorchTeacher,
        SklearnTeacherConfig,
        LightGBMTeacherConfig,
        XGBoostTeacherConfig,
        FileTeacherConfig,
        LLMTeacherConfig,
    ],
    Field(discriminator="kind"),
]


def _require_file(path: Path, setting: str) -> None:
    if not path.is_file():
        raise StepDistillError(f"{setting} not found: {path}; point it at the saved model")


def _import_factory(spec: str) -> Callable[..., nn.Module]:
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise StepDistillError(f"teacher.module '{spec}' must look like 'package.module:factory'")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise StepDistillError(f"cannot import teacher.module '{spec}' ({err}); make it importable from where you run stepdistill") from err
