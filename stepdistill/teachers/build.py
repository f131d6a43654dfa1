"""Building the configured teacher (teachers/config.py) for the data: trained here (on the encoded
training split, or the raw columns for tree ensembles), or loaded (a module, a pickled
scikit-learn model, a model file, a file of outputs, an LLM's answers)."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from functools import singledispatch
from pathlib import Path
from typing import Callable

from torch import nn

from stepdistill.data.llm_outputs import NAMED_IN_ERRORS, LLMOutputs, read_dsbs_outputs, read_llm_jsonl
from stepdistill.data.prepared import PreparedData
from stepdistill.data.table import Table
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.tabular import TabularData
from stepdistill.errors import StepDistillError
from stepdistill.evaluate import count_parameters
from stepdistill.students.cnn import CNNModel
from stepdistill.students.config import n_logits
from stepdistill.students.logistic import LogisticModel
from stepdistill.students.mlp import MLPModel
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.boosting import LightGBMTeacher, XGBoostTeacher, train_lightgbm, train_xgboost
from stepdistill.teachers.classes import relabelled
from stepdistill.teachers.common import classes_of_indices
from stepdistill.teachers.config import (
    CNNTeacher,
    FileTeacherConfig,
    LightGBMTeacherConfig,
    LLMTeacherConfig,
    LoadedTeacher,
    LogisticTeacher,
    MLPTeacher,
    SklearnTeacherConfig,
    TorchTeacher,
    TrainedHereTeacher,
    XGBoostTeacherConfig,
)
from stepdistill.teachers.file import FileTeacher
from stepdistill.teachers.llm import LLMTeacher, answers_as_choice_letters, outputs_notes
from stepdistill.teachers.module import ModuleTeacher, load_module_weights
from stepdistill.teachers.privileged import PrivilegedTeacher, privileged_features
from stepdistill.teachers.scikit import SklearnTeacher
from stepdistill.terms import method_of


@dataclass(frozen=True)
class BuiltTeacher:
    teacher: Teacher
    train_seconds: float | None  # None: trained elsewhere
    params: int | None  # None: not a parameter count (trees, a file)
    notes: tuple[str, ...] = ()  # what the user should know about its outputs (parse failures, ids the data lacks)


@singledispatch
def build_teacher(config, data: PreparedData, device) -> BuiltTeacher:
    """The teacher ``config`` describes, for ``data`` (trained on its training split when it
    trains here), on ``device``."""
    raise TypeError(f"no builder for teacher config {type(config).__name__}")


# --- trained here ----------------------------------------------------------------------------


@build_teacher.register
def _trained_here(config: TrainedHereTeacher, data: PreparedData, device) -> BuiltTeacher:
    state = new_state("teacher", method_of(config.method()), _model_factory(config, data), config.seed, device=device)
    fit([state], TabularData(data.splits.train, data.splits.val))
    state.model.eval()
    teacher = ModuleTeacher(state.model)
    if isinstance(state.model, LogisticModel):
        teacher.rationale_style = "score" if state.model.rationale_kind == "score" else "contributions"
    return BuiltTeacher(teacher, state.seconds, count_parameters(state.model))


@singledispatch
def _model_factory(config, data: PreparedData) -> Callable[[], nn.Module]:
    raise TypeError(f"no model for teacher config {type(config).__name__}")


@_model_factory.register
def _(config: LogisticTeacher, data: PreparedData) -> Callable[[], nn.Module]:
    d, k = data.splits.train.n_features, n_logits(len(data.classes))
    return lambda: LogisticModel(d, k, config.rationale)


@_model_factory.register
def _(config: MLPTeacher, data: PreparedData) -> Callable[[], nn.Module]:
    if not -len(config.hidden) <= config.rationale_layer < len(config.hidden):
        raise StepDistillError(
            f"teacher.rationale_layer {config.rationale_layer} does not exist: the teacher has {len(config.hidden)} hidden layers"
            f" (0..{len(config.hidden) - 1}, or -1 for the last)"
        )
    d, k = data.splits.train.n_features, n_logits(len(data.classes))
    return lambda: MLPModel(d, k, config.hidden, config.rationale_layer)


@_model_factory.register
def _(config: CNNTeacher, data: PreparedData) -> Callable[[], nn.Module]:
    if data.image_shape is None:
        raise StepDistillError("teacher.kind cnn needs images: set data.image_shape, e.g. [1, 28, 28]")
    if not -len(config.channels) <= config.rationale_layer < len(config.channels):
        raise StepDistillError(f"teacher.rationale_layer {config.rationale_layer} does not exist: the CNN has {len(config.channels)} conv blocks")
    k = n_logits(len(data.classes))
    return lambda: CNNModel(data.image_shape, k, config.channels, config.rationale, config.rationale_layer)


# --- loaded ----------------------------------------------------------------------------------


@build_teacher.register
def _torch(config: TorchTeacher, data: PreparedData, device) -> BuiltTeacher:
    config.require_consent(f"importing {config.module}", "give the teacher's outputs as a file (teacher.kind: file)")
    module = _import_factory(config.module)(**config.module_args)
    if not isinstance(module, nn.Module):
        raise StepDistillError(f"teacher.module {config.module} returned a {type(module).__name__}, not a torch nn.Module")
    if config.weights is not None:
        load_module_weights(module, config.weights)
    module.to(device).eval()
    return BuiltTeacher(_mapped(ModuleTeacher(module, config.rationale_layer, config.pool), config, data), None, count_parameters(module))


@build_teacher.register
def _sklearn(config: SklearnTeacherConfig, data: PreparedData, device) -> BuiltTeacher:
    import joblib

    _require_file(config.path, "teacher.path")
    config.require_consent(
        f"unpickling {config.path} with joblib",
        "give the teacher's outputs as a file (teacher.kind: file), or use a LightGBM or XGBoost model file",
    )
    try:
        estimator = joblib.load(config.path)
    except Exception as err:  # unpickling raises anything
        raise StepDistillError(f"cannot load teacher.path {config.path} with joblib ({type(err).__name__}: {err}); save it with joblib.dump") from err
    return BuiltTeacher(_mapped(SklearnTeacher(estimator, config.input, config.explain, config.explain_budget), config, data), None, None)


@build_teacher.register
def _lightgbm(config: LightGBMTeacherConfig, data: PreparedData, device) -> BuiltTeacher:
    def load(path: Path):
        import lightgbm

        return lightgbm.Booster(model_file=str(path))

    return _tree_ensemble(config, data, load, train_lightgbm, LightGBMTeacher)


@build_teacher.register
def _xgboost(config: XGBoostTeacherConfig, data: PreparedData, device) -> BuiltTeacher:
    def load(path: Path):  # JSON or UBJ
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))
        return booster

    return _tree_ensemble(config, data, load, train_xgboost, XGBoostTeacher)


def _tree_ensemble(config, data: PreparedData, load, train, adapter) -> BuiltTeacher:
    """A gradient-boosted ensemble loaded from ``config.path``, or trained here on the raw
    training columns with ``config.params``, on class indices: its classes are the data's."""
    if config.path is not None:
        _require_file(config.path, "teacher.path")
        return BuiltTeacher(_mapped(adapter(load(config.path)), config, data), None, None)
    rows = data.splits.train
    started = time.perf_counter()
    model = train(data.raw.loc[rows.ids.numpy()], rows.y.numpy(), config.params, config.seed)
    teacher = adapter(model)
    teacher.classes = classes_of_indices(model.classes_, data.classes)
    return BuiltTeacher(teacher, time.perf_counter() - started, None)


@build_teacher.register
def _file(config: FileTeacherConfig, data: PreparedData, device) -> BuiltTeacher:
    teacher = FileTeacher(config.path, config.id_column)
    beyond = teacher.ids_beyond(data.raw.index.to_numpy())
    notes = _outputs_beyond_data(beyond, teacher.n_ids, f"teacher file {config.path}", config.strict)
    return BuiltTeacher(_mapped(teacher, config, data), None, None, notes)


def _mapped(teacher: Teacher, config: LoadedTeacher, data: PreparedData) -> Teacher:
    """A loaded teacher with its classes mapped to the data's by ``teacher.classes``, when set;
    else as it is, for ``cache_teacher`` to check its classes against the data's."""
    return teacher if config.classes is None else relabelled(teacher, config.classes, data.classes)


def _outputs_beyond_data(beyond: list, total: int, where: str, strict: bool) -> tuple[str, ...]:
    """Outputs for ``beyond``, ids (of ``total``) the data lacks: a warning that they are ignored,
    or with ``teacher.strict`` an error. Such outputs are often a sign that the teacher was run on
    other data, or that the ids of one of the two were renumbered."""
    if not beyond:
        return ()
    examples = ", ".join(map(repr, beyond[:NAMED_IN_ERRORS]))
    if strict:
        raise StepDistillError(f"{where} holds outputs for {len(beyond)} ids the data lacks (e.g. {examples}); drop them, or set teacher.strict: false to ignore them")
    return (f"{where} holds outputs for {len(beyond)} of its {total} ids that the data lacks (e.g. {examples}); they were ignored (teacher.strict: true refuses them)",)


# --- an LLM's answers ------------------------------------------------------------------------


def read_llm_outputs(config: LLMTeacherConfig) -> LLMOutputs:
    """What the LLM wrote, from a JSONL file or the released distilling-step-by-step data."""
    if config.format == "jsonl":
        return read_llm_jsonl(config.outputs, config.id_field, config.label_field, config.rationale_field, config.distribution_field)
    if config.task is None:
        raise StepDistillError("teacher.format dsbs needs teacher.task: cqa, svamp or esnli")
    return read_dsbs_outputs(config.outputs, config.task, config.parse)


@build_teacher.register
def _llm(config: LLMTeacherConfig, data: PreparedData, device) -> BuiltTeacher:
    if data.text is None or data.record_ids is None:
        raise StepDistillError("teacher.kind llm teaches text records; set data.text to the text column(s)")
    outputs = read_llm_outputs(config)
    if unanswered := [record_id for record_id in data.pool_record_ids if record_id not in outputs.answers]:
        named = ", ".join(map(repr, unanswered[:NAMED_IN_ERRORS]))
        raise StepDistillError(
            f"the LLM teacher ({config.outputs}) has no answer for {len(unanswered)} of the unlabelled pool's {len(data.pool_record_ids)} records (e.g. {named});"
            " give each pool record an answer, or drop those records from data.unlabelled_path"
        )
    if data.choices is not None:
        outputs = answers_as_choice_letters(outputs, dict(zip(data.record_ids, data.choices)))
    llm = LLMTeacher(outputs, data.classes, data.text.sentence_encoder(), data.record_ids, config.eps)
    beyond = sorted(set(outputs.answers) - set(data.record_ids))
    notes = outputs_notes(outputs, llm) + _outputs_beyond_data(beyond, len(outputs.answers), f"the LLM teacher ({config.outputs})", config.strict)
    if config.privileged is None:
        return BuiltTeacher(llm, None, None, notes)
    started = time.perf_counter()
    model = _fit_privileged(config, llm, data, device)
    return BuiltTeacher(PrivilegedTeacher(llm, model), time.perf_counter() - started, count_parameters(model), notes)


def _fit_privileged(config: LLMTeacherConfig, llm: LLMTeacher, data: PreparedData, device) -> nn.Module:
    """The privileged MLP, trained on the training split's human labels (early stopping on the
    validation split); never on the test split."""
    tables = []
    for table in (data.splits.train, data.splits.val):
        rationale = llm.outputs(Samples(table.ids, table.X)).rationale
        seen = privileged_features(table.X, rationale)
        tables.append(Table(table.ids, seen, table.y, table.classes, tuple(f"privileged_{i}" for i in range(seen.shape[1]))))
    d, k = tables[0].n_features, n_logits(len(data.classes))
    privileged = config.privileged
    state = new_state("teacher", method_of(privileged.method()), lambda: MLPModel(d, k, privileged.hidden), config.seed, device=device)
    fit([state], TabularData(tables[0], tables[1]))
    return state.model.cpu().eval()


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
