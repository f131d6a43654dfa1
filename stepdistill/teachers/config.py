"""Teacher kinds as configured (``teacher.kind``), validated by pydantic and importing no torch;
teachers/build.py turns a validated one into a teacher.

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

from pathlib import Path
from typing import Annotated, Literal, Union, get_args

from pydantic import Field, ValidationError, field_validator, model_validator

from stepdistill.errors import StepDistillError, validation_message
from stepdistill.files import StrictModel
from stepdistill.methods import MethodSpec, method_spec
from stepdistill.teachers.libraries import check_parameter_names

ExplainChoice = Literal["auto", "tree", "linear", "sampled", "none"]
# Model evaluations (one row through the model each) a sampled explanation may take unasked. The
# model's time dominates: a k-NN over 3,000 training rows takes 60-120 us per evaluation on 2 busy
# cores, and each explained row adds two calls' fixed cost (1-20 ms for a pipeline), so this is
# under a minute for the rows it lets through: a few thousand of four columns (65 evaluations a
# row), about 2,000 of five (95), 750 of ten (265).
DEFAULT_EXPLAIN_BUDGET = 200_000


class _Teacher(StrictModel):
    sees: Literal["labelled", "all"] = Field(
        "labelled",
        description="a teacher trained here, with data.labelled_fraction below 1: learns from the labels the students see (labelled),"
        " or from every training label (all: a teacher trained on labels the students lack, as one trained elsewhere on more data)",
    )

    @model_validator(mode="after")
    def _sees_only_where_it_learns(self):
        if "sees" in self.model_fields_set and not self.trains_here:
            raise ValueError("teacher.sees is for a teacher trained here, which learns from labels; this one is loaded: drop teacher.sees")
        if self.sees == "all" and getattr(self, "privileged", None) is not None:
            raise ValueError("a privileged teacher learns from the labels the students see, no others; drop teacher.sees")
        return self

    @property
    def learns_from_labels(self) -> bool:
        """Whether, at a labelled fraction below 1, the teacher learns from the labelled rows only
        (the labels the students see): one trained here, unless ``sees: all``."""
        return self.trains_here and self.sees == "labelled"

    @property
    def trains_here(self) -> bool:
        """Whether stepdistill trains this teacher (so each run refits it on its own training rows,
        seeded with ``seed``) rather than loading it (its training rows then unknown here)."""
        return False

    @property
    def labels_new_rows(self) -> bool:
        """Whether the teacher can label rows other than the data's (an unlabelled pool, a
        transfer set): a model can; outputs computed elsewhere for the data's rows cannot."""
        return True

    @property
    def answers_by_record_id(self) -> bool:
        """Whether the teacher's outputs were written for text records by their ids (an LLM's
        answers), so that it can annotate an unlabelled pool of text records it answered too,
        though it labels no new rows."""
        return False

    def files(self) -> list[Path]:
        """The files the teacher is read from, as configured."""
        return []


class TrainedHereTeacher(_Teacher):
    seed: int = 0
    training: dict = Field(default_factory=dict, description="overrides of the teacher's training settings")

    @property
    def trains_here(self) -> bool:
        return True

    def training_defaults(self) -> dict:
        return {"epochs": 10, "optimizer": "adam", "lr": 0.003}

    def method(self) -> MethodSpec:
        """The teacher's training: the baseline method (hard labels) with its settings."""
        return _baseline_method({**self.training_defaults(), **self.training}, "teacher.training")


class LogisticTeacher(TrainedHereTeacher):
    kind: Literal["logistic"] = "logistic"
    rationale: Literal["contributions", "score"] = Field(
        "contributions", description="per-feature contributions, or the article's scalar score"
    )

    def training_defaults(self) -> dict:
        return {"epochs": 5}  # the reference article: 5 epochs of SGD at lr 0.01


class MLPTeacher(TrainedHereTeacher):
    kind: Literal["mlp"]
    hidden: tuple[int, ...] = Field((64, 64), min_length=1)
    rationale_layer: int = Field(-1, description="which hidden layer's activations are the rationale (0 = first, -1 = last)")


class CNNTeacher(TrainedHereTeacher):
    kind: Literal["cnn"]
    channels: tuple[int, ...] = Field((16, 32), min_length=1)
    rationale: Literal["pooled", "spatial"] = "pooled"
    rationale_layer: int = -1

    def training_defaults(self) -> dict:
        return {"epochs": 6, "optimizer": "adam", "lr": 0.001, "batch_size": 64}


class LoadedTeacher(_Teacher):
    """A teacher stepdistill can load, fitted elsewhere, whose classes it did not choose. They are
    matched to the data's by name, never by position: a teacher that names its classes (a
    fitted classifier's ``classes_``, a file's class names) must name the data's, in the data's
    order, unless ``classes`` maps each of them to the data's class it stands for (a teacher
    fitted on encoded labels: ``{0: malignant, 1: benign}``). A teacher that names none (a torch
    module, a LightGBM or XGBoost model file, a file without class names) gives its outputs in
    the data's class order; ``classes`` then maps its output positions 0..K-1."""

    classes: dict[str, str] | None = Field(
        None,
        description="the data's class each teacher class stands for, e.g. {0: malignant, 1: benign}; keys are the teacher's classes,"
        " or its output positions 0..K-1 when it names none",
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _one_class_each(cls, classes: object) -> object:
        """Names or integers, as the data names classes (a number as its digits), each teacher
        class once and each data class at most once: two teacher classes cannot be one."""
        if not isinstance(classes, dict):
            return classes  # None, or not a mapping: pydantic says so
        for name in (*classes, *classes.values()):
            if isinstance(name, bool) or not isinstance(name, (int, str)):
                raise ValueError(f"{name!r} is neither a class name nor an integer (YAML reads yes, no, true and false unquoted as booleans: quote class names)")
        named = {str(key): str(value) for key, value in classes.items()}
        if len(named) < len(classes):
            raise ValueError("names a teacher class twice, as a number and as text")
        values = list(named.values())
        if repeated := sorted({value for value in values if values.count(value) > 1}):
            raise ValueError(f"maps more than one teacher class to {repeated[0]!r} (each stands for a different class of the data)")
        return named


class _CodeRunningTeacher(LoadedTeacher):
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

    def files(self) -> list[Path]:
        return [] if self.weights is None else [self.weights]


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

    def files(self) -> list[Path]:
        return [self.path]


class _TreeEnsembleTeacher(LoadedTeacher):
    """A gradient-boosted ensemble: loaded from ``path``, or trained here on the raw training
    columns with ``params`` when there is none (then on the data's own classes, so ``classes``
    has nothing to map)."""

    path: Path | None = Field(None, description="a saved model; trained here on the raw columns when absent")
    params: dict = Field(default_factory=dict, description="the classifier's settings when trained here")
    seed: int = 0

    @property
    def trains_here(self) -> bool:
        return self.path is None

    def files(self) -> list[Path]:
        return [] if self.path is None else [self.path]

    @field_validator("params")
    @classmethod
    def _known_parameters(cls, params: dict) -> dict:
        """A misspelt parameter would be ignored by the library: refused here, before anything runs."""
        if params:
            check_parameter_names(get_args(cls.model_fields["kind"].annotation)[0], params)
        return params

    @model_validator(mode="after")
    def _classes_of_a_loaded_model(self) -> _TreeEnsembleTeacher:
        if self.classes is not None and self.path is None:
            raise ValueError("classes maps a loaded model's classes, and without path the teacher is trained here on the data's own (remove classes, or set path)")
        return self


class LightGBMTeacherConfig(_TreeEnsembleTeacher):
    kind: Literal["lightgbm"]


class XGBoostTeacherConfig(_TreeEnsembleTeacher):
    kind: Literal["xgboost"]


# Outputs for ids the data lacks most often mean a teacher run on other data, or ids renumbered
# on one side; they may also be a file covering more data than this run's on purpose, so by
# default they are a warning, and ``strict: true`` makes them an error.
STRICT_DESCRIPTION = "refuse outputs for ids the data lacks (by default they are ignored, with a warning giving their count)"


class FileTeacherConfig(LoadedTeacher):
    kind: Literal["file"]
    path: Path = Field(..., description="Parquet or NPZ: sample id, logits or probabilities, optional rationale")
    id_column: str = "id"
    strict: bool = Field(False, description=STRICT_DESCRIPTION)

    @property
    def labels_new_rows(self) -> bool:
        return False

    def files(self) -> list[Path]:
        return [self.path]


# Adam with early stopping on the validation split: the privileged model is a small MLP on
# sentence features, like the students.
PRIVILEGED_TRAINING = {"optimizer": "adam", "lr": 0.001, "epochs": 30, "batch_size": 128, "early_stopping_patience": 3}


class PrivilegedModel(StrictModel):
    """The privileged-information model of an LLM teacher: an MLP reading the student's features
    and the rationale's embedding, trained on the training split's human labels."""

    hidden: tuple[int, ...] = Field((256,), min_length=1)
    training: dict = Field(default_factory=dict, description="overrides of its training (baseline method settings)")

    def method(self) -> MethodSpec:
        return _baseline_method({**PRIVILEGED_TRAINING, **self.training}, "teacher.privileged.training")


class LLMTeacherConfig(_Teacher):
    """What a large language model wrote for each text record (data.text): a label (or label
    distribution) and one or more rationales. ``outputs``: a JSONL file (one object per record:
    id, label, rationale, optional label distribution; what ``stepdistill lm-teach`` writes), or
    with ``format: dsbs`` the folder holding the released distilling-step-by-step data
    (``datasets/<task>/``), every split of ``task`` read. Multiple choice: a label may be the
    choice's text or its letter. With ``privileged``, the teacher's labels come from a model
    trained here on the human labels that also reads the rationale's embedding (generalized
    distillation); without, from the LLM's own answers. Outputs for records the data lacks are
    ignored with a warning, or refused with ``strict``."""

    kind: Literal["llm"]
    outputs: Path = Field(..., description="teacher outputs: a JSONL file, or the distilling-step-by-step data folder (format: dsbs)")
    format: Literal["jsonl", "dsbs"] = "jsonl"
    task: Literal["cqa", "svamp", "esnli"] | None = Field(None, description="dsbs: which task's outputs")
    parse: Literal["careful", "paper"] = Field("careful", description="dsbs: match answers to classes ignoring case (careful) or exactly as the paper did")
    id_field: str = "id"
    label_field: str = "label"
    rationale_field: str = "rationale"
    distribution_field: str | None = "label_distribution"
    eps: float = Field(0.01, gt=0, lt=0.5, description="label distributions are clipped to [eps, 1 - eps] and renormalized, so logits stay finite")
    strict: bool = Field(False, description=STRICT_DESCRIPTION)
    privileged: PrivilegedModel | None = None
    seed: int = 0

    @property
    def trains_here(self) -> bool:
        return self.privileged is not None

    @property
    def labels_new_rows(self) -> bool:
        return False  # the LLM's answers, and the privileged model's rationale embeddings, exist for the records it answered only

    @property
    def answers_by_record_id(self) -> bool:
        return True

    def files(self) -> list[Path]:
        return [self.outputs]


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


def _baseline_method(settings: dict, where: str) -> MethodSpec:
    """The baseline method (hard labels) with ``settings``, a teacher's training; an invalid
    setting is a one-line error naming ``where`` it is configured."""
    try:
        return method_spec("baseline", settings, name="teacher")
    except ValidationError as err:
        raise StepDistillError(validation_message(err, prefix=where)) from err
