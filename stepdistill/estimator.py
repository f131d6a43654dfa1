"""A scikit-learn classifier that distills a teacher into a small student.

``fit`` runs the package's pipeline on (X, y): encode the features, build or adapt the teacher,
cache its outputs, train one student with the chosen method; ``predict`` and ``predict_proba``
run the student. It is a scikit-learn estimator, so it clones, pickles, and works in a
``Pipeline``, ``cross_val_score`` or a grid search (the method's settings are parameters too).
"""

from __future__ import annotations

import numbers
from typing import get_args

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from stepdistill.config import ExperimentConfig
from stepdistill.data.io import frame_parts
from stepdistill.data.prepared import PreparedData, encode_splits
from stepdistill.data.splits import MIN_CLASS_ROWS_PER_SPLIT
from stepdistill.device import default_device
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.tabular import TabularData
from stepdistill.errors import StepDistillError, validation_message
from stepdistill.evaluate import class_probabilities
from stepdistill.methods import PRESETS
from stepdistill.students.build import StudentShape, check_student_rationale, student_factory
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.boosting import LightGBMTeacher, XGBoostTeacher
from stepdistill.teachers.build import build_teacher
from stepdistill.teachers.collect import cache_teacher
from stepdistill.teachers.common import classes_of_indices, torch_thread_count
from stepdistill.teachers.config import TeacherConfig
from stepdistill.teachers.module import ModuleTeacher
from stepdistill.teachers.scikit import SklearnTeacher
from stepdistill.terms import method_of

# Every setting a method preset has: names set_params takes as overrides. Which of them the
# chosen preset has, and their values, are checked in fit, where the preset validates them.
OVERRIDE_NAMES = tuple(sorted({name for preset in PRESETS.values() for name in preset.model_fields}))

# Teacher kinds that take a seed, which is random_state unless their dict sets one; the others
# (a saved model, a file of outputs) refuse settings they do not have.
_SEEDED_TEACHER_KINDS = frozenset(
    get_args(kind.model_fields["kind"].annotation)[0] for kind in get_args(get_args(TeacherConfig)[0]) if "seed" in kind.model_fields
)

# Adapters for fitted models of the boosting libraries, by the top-level module of their type;
# any other fitted classifier is read through scikit-learn's interface.
_BOOSTING_ADAPTERS = {"lightgbm": LightGBMTeacher, "xgboost": XGBoostTeacher}


class StepDistillClassifier(ClassifierMixin, BaseEstimator):
    """Distill ``teacher`` into a ``student`` with ``method``, as a scikit-learn classifier.

    Parameters
    ----------
    teacher : str, dict, classifier or torch ``nn.Module``, default "mlp"
        A kind trained here on the encoded training rows ("logistic", "mlp"; "lightgbm" and
        "xgboost" train on the raw columns), or a dict of that kind's settings, e.g.
        ``{"kind": "mlp", "hidden": [32], "training": {"epochs": 40}}``; its seed is
        ``random_state`` unless the dict sets one. Or a scikit-learn, LightGBM or XGBoost
        classifier, read on X as given to ``fit`` (a clone is fitted on the training rows when
        it is not fitted yet; a fitted one's ``classes_`` must be y's labels, compared by value),
        or a torch module that maps the numeric X to logits, one per class of y in sorted order
        (one, class 1's, for two classes). Cloning this estimator (as cross-validation and grid
        searches do) clones a fitted teacher unfitted: wrap it in
        ``sklearn.frozen.FrozenEstimator`` to keep it as it is. For the methods that
        learn from a rationale, a scikit-learn classifier is explained as
        ``stepdistill.teachers.SklearnTeacher`` does by default: a linear model by its
        coefficients, a tree model (a Pipeline's included) by TreeSHAP, anything else (k-NN, say)
        by SHAP values sampled within the default budget of model evaluations; past it, or
        without shap (``stepdistill[explain]``), ``fit`` fails and says why. To choose the
        explanation or its budget, or to map the classes of a model fitted on encoded labels to
        y's, save the model with joblib and pass ``{"kind": "sklearn", "path": ..., "explain":
        ..., "explain_budget": ..., "classes": {0: ..., 1: ...}}``.
    student : str or dict, default "logistic"
        "logistic" or "mlp", or a dict of the student's settings, e.g. ``{"kind": "mlp", "hidden": [16]}``.
    method : str, default "enhanced"
        A preset: "baseline", "traditional", "step_by_step" or "enhanced".
    random_state : int, RandomState or None, default 0
        Seeds the validation split, the teacher trained here and the student.
    validation_fraction : float, default 0.1
        Share of the rows held out (stratified) for the learning-rate scheduler and early
        stopping. When a class is too small to give that split ``MIN_CLASS_ROWS_PER_SPLIT`` rows,
        or with 0, the training rows serve as validation.
    **overrides
        The preset's settings (``alpha``, ``temperature``, ``beta``, ``epochs``, ``lr``,
        ``optimizer``, ...; see ``stepdistill.methods``). Each becomes a parameter; values, and
        whether the preset has the setting, are checked in ``fit``. The presets' defaults suit
        thousands of rows (10 epochs in batches of 512); on a few hundred, take more or larger
        steps, e.g. ``epochs=30, lr=0.05``.

    Attributes
    ----------
    classes_ : the sorted class labels. n_features_in_, feature_names_in_ : as in scikit-learn.
    student_ : the trained torch model, in eval mode, on the CPU.
    teacher_ : the teacher's adapter (``stepdistill.teachers.Teacher``).
    encoder_ : the ``FeatureEncoder`` fitted on the training rows.
    history_ : one record per student epoch (learning rate, losses per term, validation loss).
    """

    def __init__(self, teacher="mlp", student="logistic", method="enhanced", random_state=0, validation_fraction=0.1, **overrides):
        self.teacher = teacher
        self.student = student
        self.method = method
        self.random_state = random_state
        self.validation_fraction = validation_fraction
        for name, value in overrides.items():
            setattr(self, name, value)
        # The signature does not name the overrides, so get_params needs to know which they are.
        self._override_names = tuple(overrides)

    def get_params(self, deep=True):
        """The signature's parameters and the overrides, so that ``clone`` carries both."""
        return {**super().get_params(deep), **self._overrides()}

    def set_params(self, **params):
        """Set parameters; a method setting (``alpha``, ``epochs``, ...) becomes an override."""
        overrides = {name: params.pop(name) for name in list(params) if name in OVERRIDE_NAMES or name in self._override_names}
        super().set_params(**params)
        for name, value in overrides.items():
            setattr(self, name, value)
        self._override_names = tuple(dict.fromkeys((*self._override_names, *overrides)))
        return self

    def _overrides(self) -> dict:
        return {name: getattr(self, name) for name in self._override_names}

    def fit(self, X, y):
        keeps_frame = isinstance(X, pd.DataFrame) and X.select_dtypes(exclude="number").shape[1] > 0
        checked, y = validate_data(self, X, y, **_check_params(keeps_frame))
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise StepDistillError(f"y holds one class ({classes[0]!r}); a classifier needs at least two")
        if not 0 <= self.validation_fraction < 0.5:
            raise StepDistillError(f"validation_fraction must be at least 0 and below 0.5 (got {self.validation_fraction}); 0 validates on the training rows")
        seed = self._seed()
        config = self._config(seed)
        method = method_of(config.method_spec(self.method, self._overrides()))
        data = self._prepared(self._frame(X, checked, keeps_frame), y, seed)
        teacher, samples = self._teacher(config, data, method.needs_rationale)
        train = data.splits.train
        teacher.fit_background(samples)
        cache = cache_teacher(teacher, [samples], data.classes)
        rationale = cache.take(train.ids).rationale
        if method.needs_rationale and rationale is None:
            reason = teacher.rationale_unavailable or f"{type(teacher).__name__} explains none of its predictions"
            raise StepDistillError(f"method '{self.method}' needs a rationale, which the teacher does not give: {reason}; methods 'baseline' and 'traditional' need none")
        shape = StudentShape(train.n_features, train.n_classes, data.encoder.feature_groups, None, teacher.rationale_style, teacher.reads_raw_columns)
        width = None if rationale is None else rationale.shape[1]
        make = student_factory(config.student, shape)
        check_student_rationale(config.student, make, [method.name] if method.needs_rationale else [], width)
        state = new_state(self.method, method, make, seed, width, default_device())
        fit([state], TabularData(train, data.splits.val, cache.take(train.ids)))
        self.classes_ = classes  # in the order of the student's outputs: frame_parts sorts labels alike
        self.student_ = state.model.cpu().eval()
        self.teacher_ = teacher
        self.encoder_ = data.encoder
        self.history_ = state.history
        return self

    def predict_proba(self, X):
        check_is_fitted(self)
        keeps_frame = bool(self.encoder_.categorical_)
        checked = validate_data(self, X, reset=False, **_check_params(keeps_frame))
        encoded = self.encoder_.transform(self._frame(X, checked, keeps_frame), unseen="error")
        # Only a kept frame can get here with them: the encoder passes missing numbers through.
        if not np.isfinite(encoded).all():
            raise StepDistillError("X has NaN or infinite values in its numeric columns; drop or fill them")
        with torch.no_grad():
            return class_probabilities(self.student_(torch.from_numpy(encoded)).logits)

    def predict(self, X):
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(axis=1)]

    def _seed(self) -> int:
        """``random_state`` as the package's integer seed (None or a RandomState draws one)."""
        if isinstance(self.random_state, numbers.Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _config(self, seed: int) -> ExperimentConfig:
        """The student, the method and a teacher trained here as the package configures them,
        validated there, so a bad setting fails with the package's one-line message."""
        sections = {
            "student": {"kind": self.student} if isinstance(self.student, str) else self.student,
            "methods": {self.method: self._overrides()},
        }
        if isinstance(self.teacher, (str, dict)):
            spec = {"kind": self.teacher} if isinstance(self.teacher, str) else self.teacher
            sections["teacher"] = {"seed": seed, **spec} if spec.get("kind", "logistic") in _SEEDED_TEACHER_KINDS else spec
        try:
            return ExperimentConfig(**sections)
        except ValidationError as err:
            raise StepDistillError(validation_message(err)) from err

    def _frame(self, X, checked, keeps_frame: bool) -> pd.DataFrame:
        """The raw feature columns: the frame as given when it has categorical columns, else the
        checked numbers under the feature names seen in fit (positions when there were none)."""
        frame = X if keeps_frame and isinstance(X, pd.DataFrame) else pd.DataFrame(checked, columns=getattr(self, "feature_names_in_", None))
        return frame.rename(columns=str)

    def _prepared(self, frame: pd.DataFrame, y: np.ndarray, seed: int) -> PreparedData:
        """The rows as the package's encoded tables: a training and a validation part (no test
        part: scoring is the caller's business), features encoded as fitted on the training part."""
        # A name longer than every column's, so that it is none of them.
        label = "_" * (1 + max(len(c) for c in frame.columns))
        features, y_index, classes, ids = frame_parts(frame.assign(**{label: y}), label)
        train_rows, val_rows = self._split(y_index, seed)
        splits, encoder = encode_splits(features, y_index, classes, ids, (train_rows, val_rows, train_rows[:0]))
        return PreparedData(splits, encoder, features)

    def _split(self, y_index: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Row positions of the training and validation parts. On data too small for every class
        to give the validation part its share, that part would be noise and starve training, so
        the training rows validate too."""
        rows = np.arange(len(y_index))
        if np.bincount(y_index).min() * self.validation_fraction < MIN_CLASS_ROWS_PER_SPLIT:
            return rows, rows
        return tuple(train_test_split(rows, test_size=self.validation_fraction, stratify=y_index, random_state=seed))

    def _teacher(self, config: ExperimentConfig, data: PreparedData, needs_rationale: bool) -> tuple[Teacher, Samples]:
        """The teacher's adapter, and the training rows as it reads them. A scikit-learn model is
        explained only for a method that learns from the explanation: it may cost more than
        the rest of the fit."""
        train = data.splits.train
        if isinstance(self.teacher, (str, dict)):
            return build_teacher(config.teacher, data, default_device()).teacher, Samples.of(train, data.raw)
        if isinstance(self.teacher, nn.Module):
            if data.encoder.categorical_:
                raise StepDistillError("a torch teacher reads X as numbers, but X has categorical columns; encode them as numbers first")
            raw = torch.tensor(data.raw.loc[train.ids.numpy()].to_numpy(), dtype=torch.float32)
            return ModuleTeacher(self.teacher), Samples(train.ids, raw)
        # Unwrapped, so that the adapter sees the model itself (a boosting model's, say).
        model = self.teacher.estimator if isinstance(self.teacher, FrozenEstimator) else self.teacher
        fitted_here = False
        try:
            check_is_fitted(model)
        except NotFittedError:
            model, fitted_here = _fitted_clone(model, data.raw.loc[train.ids.numpy()], train.y.numpy()), True
        except TypeError as err:
            raise StepDistillError(
                f"teacher must be a kind name ('logistic', 'mlp'), a dict of its settings, a classifier or a torch nn.Module, not a {type(model).__name__}"
            ) from err
        boosting = _BOOSTING_ADAPTERS.get(type(model).__module__.split(".")[0])
        teacher = boosting(model, "frame") if boosting else SklearnTeacher(model, "frame", explain="auto" if needs_rationale else "none")
        if fitted_here:  # on class indices, which name the data's classes in order
            teacher.classes = classes_of_indices(model.classes_, data.classes)
        # A model fitted without feature names is handed positional columns: scikit-learn reads
        # string column names as feature names and warns that they were not seen in fit.
        raw = data.raw if hasattr(model, "feature_names_in_") else data.raw.set_axis(range(data.raw.shape[1]), axis=1)
        return teacher, Samples.of(train, raw)


def _fitted_clone(model, frame: pd.DataFrame, y: np.ndarray):
    """An unfitted copy of ``model`` fitted on ``frame``, on torch's thread count: where it takes
    ``n_jobs`` and leaves it unset (LightGBM and XGBoost then take every core), it is set."""
    model = clone(model)
    if model.get_params().get("n_jobs", 0) is None:
        model.set_params(n_jobs=torch.get_num_threads())
    with torch_thread_count():
        return model.fit(frame, y)


def _check_params(keeps_frame: bool) -> dict:
    """How ``validate_data`` checks X: numbers, unless the frame is kept for its categorical
    columns, whose missing values are a category (its numeric columns are checked in fit by
    ``frame_parts``, in predict_proba once encoded)."""
    return {"dtype": None, "ensure_all_finite": False} if keeps_frame else {}
