"""A teacher that is any fitted scikit-learn classifier."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from stepdistill.errors import StepDistillError
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.cache import TeacherOutputs
from stepdistill.teachers.common import TeacherInput, as_rows, check_input, class_names, prediction_errors, teacher_input


def require_fitted(model: object, teacher: str) -> None:
    """Raise a one-line error unless ``model`` (scikit-learn style) has been fitted."""
    try:
        check_is_fitted(model)
    except NotFittedError as err:
        raise StepDistillError(f"the {teacher} teacher ({type(model).__name__}) is not fitted; fit it before distilling from it") from err
    except TypeError as err:
        raise StepDistillError(f"the {teacher} teacher must be a fitted classifier; got {type(model).__name__}") from err


class SklearnTeacher(Teacher):
    """A fitted scikit-learn classifier (a pipeline included), reading ``samples.frame``
    (``input="frame"``, for pipelines fitted on raw columns) or ``samples.X`` (``input="X"``).

    Logits: ``predict_log_proba`` (binary: log p1 - log p0); when a probability is exactly zero
    its log is -inf, so those calls use ``decision_function`` instead (the scale then differs
    from the log-probabilities of other calls, which is why it is only a fallback). Without
    ``predict_log_proba``, ``decision_function``. Rationale, for linear models (``coef_`` of
    shape (1, d) or (K, d)): the per-feature contributions ``coef_ * (x - m)``, (N, d) binary or
    (N, K*d) class-major, where m is the training mean once ``fit_background`` has seen the
    training split (the linear model's SHAP values: a feature at its average contributes
    nothing, as a student's standardized feature does) and 0 before; their sum plus
    ``intercept_ + coef_ @ m`` is ``decision_function``. Other models give no rationale.
    """

    def __init__(self, estimator: object, input: TeacherInput = "X"):
        require_fitted(estimator, "scikit-learn")
        check_input(input, "scikit-learn")
        name = type(estimator).__name__
        if not hasattr(estimator, "classes_"):
            raise StepDistillError(f"the scikit-learn teacher {name} is not a classifier (it has no classes_); use a fitted classifier")
        if not (hasattr(estimator, "predict_log_proba") or hasattr(estimator, "decision_function")):
            raise StepDistillError(f"the scikit-learn teacher {name} has neither predict_log_proba nor decision_function; use a classifier that gives probabilities or scores")
        self.estimator = estimator
        self.input = input
        self.reads_raw_columns = input == "frame"
        self.classes = class_names(estimator.classes_)
        self._coef = _linear_coefficients(estimator)
        self._background = 0.0
        if self._coef is not None:
            self.rationale_style = "contributions"

    def fit_background(self, train: Samples) -> None:
        if self._coef is not None:
            self._background = np.asarray(teacher_input(train, self.input, "scikit-learn"), dtype=np.float64).mean(0)

    def outputs(self, samples: Samples) -> TeacherOutputs:
        data = teacher_input(samples, self.input, "scikit-learn")
        with prediction_errors("scikit-learn"):
            return TeacherOutputs(as_rows(self._logits(data)), self._contributions(data))

    def _logits(self, data: pd.DataFrame | np.ndarray) -> np.ndarray:
        if hasattr(self.estimator, "predict_log_proba"):
            with np.errstate(divide="ignore"):
                log_proba = self.estimator.predict_log_proba(data)
            zero_rows = int(np.isneginf(log_proba).any(1).sum())
            if not zero_rows:
                return log_proba[:, 1] - log_proba[:, 0] if log_proba.shape[1] == 2 else log_proba
            if not hasattr(self.estimator, "decision_function"):
                raise StepDistillError(
                    f"the scikit-learn teacher gives zero probabilities for {zero_rows} rows, whose logits are infinite;"
                    " use a teacher with a decision_function or whose probabilities are never exactly 0 or 1"
                )
        return self.estimator.decision_function(data)

    def _contributions(self, data: pd.DataFrame | np.ndarray) -> torch.Tensor | None:
        if self._coef is None:
            return None
        x = np.asarray(data, dtype=np.float64) - self._background
        return as_rows(x[:, None, :] * self._coef[None, :, :])  # (N, K, d) -> (N, K*d)


def _linear_coefficients(estimator: object) -> np.ndarray | None:
    """A linear model's ``coef_``, one row per score (1 binary, K multi-class), else None."""
    coef = getattr(estimator, "coef_", None)
    n_classes = len(estimator.classes_)
    if coef is None or np.ndim(coef) != 2 or coef.shape[0] != (1 if n_classes == 2 else n_classes):
        return None
    return np.asarray(coef)
