"""A teacher that is any fitted scikit-learn classifier."""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.validation import check_is_fitted

from stepdistill.errors import StepDistillError
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.cache import TeacherOutputs
from stepdistill.teachers.common import (
    TeacherInput,
    as_rows,
    check_input,
    class_names,
    logits_from_probabilities,
    prediction_errors,
    teacher_input,
    torch_thread_count,
)
from stepdistill.teachers.config import DEFAULT_EXPLAIN_BUDGET, ExplainChoice
from stepdistill.teachers.explain import choose_explanation, final_step


def require_fitted(model: object, teacher: str) -> None:
    """Raise a one-line error unless ``model`` (scikit-learn style) has been fitted."""
    try:
        check_is_fitted(model)
    except NotFittedError as err:
        raise StepDistillError(f"the {teacher} teacher ({type(model).__name__}) is not fitted; fit it before distilling from it") from err
    except TypeError as err:
        raise StepDistillError(f"the {teacher} teacher must be a fitted classifier; got {type(model).__name__}") from err


# The probability floor of a model's logits when its probabilities are not a count of votes.
DEFAULT_PROBABILITY_FLOOR = 1e-6


class SklearnTeacher(Teacher):
    """A fitted scikit-learn classifier (a pipeline included), reading ``samples.frame``
    (``input="frame"``, for pipelines fitted on raw columns) or ``samples.X`` (``input="X"``).

    Logits, from ``predict_proba`` when the model has it: each row clipped to ``[eps, 1 - eps]``
    and renormalized, so that a probability of exactly 0 or 1 (a tree, a forest, k-NN) still has
    a finite logit and every row is on the same scale; two classes give log(p1 / p0), more the
    log-probabilities. ``eps`` (``probability_floor``) is half of one vote where probabilities
    are shares of votes: 1 / (2 * n_estimators) for a random forest or extra trees, 1 /
    (2 * n_neighbors) for k-NN; else ``DEFAULT_PROBABILITY_FLOOR`` (1e-6, logits within about
    +-13.8). A Pipeline's is its last step's. A model without ``predict_proba`` gives its
    ``decision_function``.

    Rationale, as ``explain`` chooses (see ``stepdistill.teachers.explain``): ``"auto"`` (the
    default) explains a linear model by ``coef_ * (x - m)`` (style ``"contributions"``), a tree
    model (forests, extra trees, gradient boosting, HistGradientBoosting, a single tree) by
    TreeSHAP per column plus the expected value (``"contributions_with_bias"``: the log-odds of
    boosting, the probabilities of forests and trees), and anything else by SHAP values of its
    logits sampled against training rows, when that takes at most ``explain_budget`` model
    evaluations; else there is no rationale and ``rationale_unavailable`` says why (as it does
    when shap, the ``stepdistill[explain]`` extra, is missing). A Pipeline's linear or tree last
    step is explained on the columns its earlier steps produce (style ``"representation"``).
    ``"linear"``, ``"tree"`` and ``"sampled"`` insist (``"sampled"`` whatever it costs), and fail
    when they cannot be had; ``"none"`` gives no rationale.
    """

    def __init__(self, estimator: object, input: TeacherInput = "X", explain: ExplainChoice = "auto", explain_budget: int = DEFAULT_EXPLAIN_BUDGET):
        require_fitted(estimator, "scikit-learn")
        check_input(input, "scikit-learn")
        name = type(estimator).__name__
        if not hasattr(estimator, "classes_"):
            raise StepDistillError(f"the scikit-learn teacher {name} is not a classifier (it has no classes_); use a fitted classifier")
        if not (hasattr(estimator, "predict_proba") or hasattr(estimator, "decision_function")):
            raise StepDistillError(f"the scikit-learn teacher {name} has neither predict_proba nor decision_function; use a classifier that gives probabilities or scores")
        self.estimator = estimator
        self.input = input
        self.explain = explain
        self.explain_budget = explain_budget
        self.classes = class_names(estimator.classes_)
        self.probability_floor = probability_floor(estimator) if hasattr(estimator, "predict_proba") else None
        n_logits = 1 if len(estimator.classes_) == 2 else len(estimator.classes_)
        self._explanation = choose_explanation(estimator, input, explain, explain_budget, n_logits, self._logits)
        self.rationale_style = self._explanation.rationale_style
        self.reads_raw_columns = self._explanation.reads_raw_columns

    @property
    def rationale_unavailable(self) -> str | None:
        return self._explanation.unavailable

    def fit_background(self, train: Samples) -> None:
        data = teacher_input(train, self.input, "scikit-learn")
        with prediction_errors("scikit-learn"), torch_thread_count():
            self._explanation.fit_background(data)

    def outputs(self, samples: Samples) -> TeacherOutputs:
        data = teacher_input(samples, self.input, "scikit-learn")
        with prediction_errors("scikit-learn"), torch_thread_count():
            logits, rationale = self._logits(data), self._explanation.explain(data)
        return TeacherOutputs(as_rows(logits), None if rationale is None else as_rows(rationale))

    def predict_logits(self, samples: Samples) -> torch.Tensor:
        data = teacher_input(samples, self.input, "scikit-learn")
        with prediction_errors("scikit-learn"), torch_thread_count():
            return as_rows(self._logits(data))

    def identity(self) -> tuple:
        return joblib.hash(self.estimator), self.input, self.explain, self.explain_budget, self._explanation.identity()

    def saved_bytes(self) -> int | None:
        """The length of the model saved with skops (which loads without running code), or
        pickled when skops is missing or cannot save it; None when neither can."""
        try:
            import skops.io

            return len(skops.io.dumps(self.estimator))
        except Exception:  # skops is missing, or fails on a type it cannot save (in as many ways as they differ)
            return _pickled_size(self.estimator)

    def _logits(self, data: pd.DataFrame | np.ndarray) -> np.ndarray:
        if self.probability_floor is None:
            return self.estimator.decision_function(data)
        return logits_from_probabilities(self.estimator.predict_proba(data), self.probability_floor)


def _pickled_size(model: object) -> int | None:
    try:
        return len(pickle.dumps(model))
    except (pickle.PicklingError, TypeError, AttributeError):
        return None


def probability_floor(estimator: object) -> float:
    """The smallest probability a logit is taken from (see ``SklearnTeacher``)."""
    model, _ = final_step(estimator)
    if isinstance(model, (RandomForestClassifier, ExtraTreesClassifier)):
        return 1 / (2 * model.n_estimators)
    if isinstance(model, KNeighborsClassifier):
        return 1 / (2 * model.n_neighbors)
    return DEFAULT_PROBABILITY_FLOOR
