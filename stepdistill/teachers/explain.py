"""Rationales for fitted scikit-learn classifiers: the explanation of each prediction that a
student learns to give alike.

Linear models explain themselves (``coef_``); tree models are explained exactly by TreeSHAP; any
other model by SHAP values sampled against a background of training rows, at a cost that is
estimated first and refused over a cap. A Pipeline's linear or tree model is explained on the
columns its earlier steps produce. shap is an optional extra (``stepdistill[explain]``), imported
only when a tree or sampled explanation is asked for.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import get_args

import numpy as np
import pandas as pd
import scipy.sparse
from sklearn.pipeline import Pipeline

from stepdistill.errors import StepDistillError
from stepdistill.teachers.base import RationaleStyle
from stepdistill.teachers.common import TeacherInput
from stepdistill.teachers.config import ExplainChoice

EXPLAIN_CHOICES: tuple[str, ...] = get_args(ExplainChoice)
# Training rows the sampled explanation masks columns with. Every evaluation is repeated over
# them, so they multiply its cost; a few are enough to sample against, and every row of the
# teacher is explained against the same ones.
BACKGROUND_ROWS = 5
EXPLAIN_EXTRA = "stepdistill[explain]"

Data = pd.DataFrame | np.ndarray
Logits = Callable[[Data], np.ndarray]


class Explanation:
    """How a teacher explains its predictions: ``explain`` gives (N, R) values or None, and
    ``unavailable`` says why there are none. ``rationale_style`` and ``reads_raw_columns`` are the
    teacher's (see ``Teacher``)."""

    unavailable: str | None = None

    def __init__(self, rationale_style: RationaleStyle = "representation", reads_raw_columns: bool = False):
        self.rationale_style = rationale_style
        self.reads_raw_columns = reads_raw_columns

    def fit_background(self, train: Data) -> None:
        """Learn from the training rows what explanations are measured against."""

    def explain(self, data: Data) -> np.ndarray | None:
        raise NotImplementedError

    def identity(self) -> tuple:
        """What, besides the model, decides the values ``explain`` gives (for the teacher's
        fingerprint): the kind of explanation, and what it has learned from the training rows."""
        return type(self).__name__, self.rationale_style, self.reads_raw_columns


class NoExplanation(Explanation):
    def __init__(self, reason: str):
        super().__init__()
        self.unavailable = reason

    def explain(self, data: Data) -> None:
        return None


class LinearContributions(Explanation):
    """``coef_ * (x - m)`` per column, (N, d) for one logit or (N, K*d) class-major, where m is the
    training mean once ``fit_background`` has seen the training rows (the linear model's SHAP
    values: a column at its average contributes nothing, as a student's standardized feature
    does) and 0 before; their sum plus ``intercept_ + coef_ @ m`` is ``decision_function``."""

    def __init__(self, coef: np.ndarray, columns: Callable[[Data], np.ndarray], rationale_style: RationaleStyle, reads_raw_columns: bool):
        super().__init__(rationale_style, reads_raw_columns)
        self._coef = coef
        self._columns = columns
        self._background: np.ndarray | float = 0.0

    def fit_background(self, train: Data) -> None:
        self._background = self._columns(train).mean(0)

    def explain(self, data: Data) -> np.ndarray:
        x = self._columns(data) - self._background
        return (x[:, None, :] * self._coef[None, :, :]).reshape(len(x), -1)  # (N, K, d) -> (N, K*d)

    def identity(self) -> tuple:
        return *super().identity(), self._background


class TreeContributions(Explanation):
    """TreeSHAP (``shap.TreeExplainer``, exact) of the model's raw output, per column plus the
    expected value: (N, d+1) for one logit, (N, K*(d+1)) class-major. The raw output is what the
    trees add up to: the log-odds of gradient boosting, the probabilities of a forest or a single
    tree (for two classes, class 1's). Path-dependent, so no background is needed."""

    def __init__(self, explainer: object, columns: Callable[[Data], np.ndarray], n_logits: int, rationale_style: RationaleStyle, reads_raw_columns: bool):
        super().__init__(rationale_style, reads_raw_columns)
        self._explainer = explainer
        self._columns = columns
        self._n_logits = n_logits

    def explain(self, data: Data) -> np.ndarray:
        # Additivity is checked by the tests; shap's own check would predict once more per call.
        values = self._explainer.shap_values(self._columns(data), check_additivity=False)
        return class_major(values, self._explainer.expected_value, self._n_logits)

    def identity(self) -> tuple:
        return *super().identity(), self._n_logits


class SampledContributions(Explanation):
    """SHAP values of the logits (class 1's log-odds, or each class's log-probability) sampled
    by ``shap.KernelExplainer`` against ``BACKGROUND_ROWS`` training rows, per input column plus
    the expected value, laid out as TreeSHAP's; they sum exactly to the logits.

    Each row takes ``_coalitions(d)`` coalitions of its d columns (every column alone and every
    column left out, plus two drawn), each evaluated on every background row, in two model calls:
    (rows to explain) x (coalitions) x ``BACKGROUND_ROWS`` model evaluations. ``fit_background``
    estimates that for the training rows (the validation and test rows add their share) and, when
    ``budget`` is set and exceeded, gives no rationale and says why instead of starting.
    """

    def __init__(self, shap: ModuleType, logits: Logits, n_logits: int, model_name: str, budget: int | None, reads_raw_columns: bool):
        super().__init__("contributions_with_bias", reads_raw_columns)
        self._shap = shap
        self._logits = logits
        self._n_logits = n_logits
        self._model_name = model_name
        self._budget = budget
        self._explainer = None
        self._background: Data | None = None
        self._frame_dtypes: pd.Series | None = None
        self.unavailable = "the sampled explanation is drawn against the training rows; call fit_background with them first"

    def fit_background(self, train: Data) -> None:
        rows, width = train.shape
        cost = rows * _coalitions(width) * min(BACKGROUND_ROWS, rows)
        if self._budget is not None and cost > self._budget:
            self.unavailable = (
                f"{self._model_name} has no native explanation, and sampling one for {rows:,} rows would take ~{cost:,} model"
                f" evaluations, over the cap of {self._budget:,}; raise teacher.explain_budget or set teacher.explain: sampled to pay it"
            )
            return
        # The explainer hands the model NumPy rows; a frame's columns and dtypes are put back.
        self._frame_dtypes = train.dtypes if isinstance(train, pd.DataFrame) else None
        self._background = self._shap.sample(train, BACKGROUND_ROWS, random_state=0)
        self._explainer = self._shap.KernelExplainer(self._logits_of_rows, self._background, link="identity")
        self.unavailable = None

    def explain(self, data: Data) -> np.ndarray | None:
        if self._explainer is None:
            return None
        with _global_numpy_seed(0):
            values = self._explainer.shap_values(data, nsamples=_coalitions(data.shape[1]), l1_reg=False, silent=True)
        return class_major(values, self._explainer.expected_value, self._n_logits)

    def identity(self) -> tuple:
        return *super().identity(), self._n_logits, self._budget, self._background

    def _logits_of_rows(self, rows: np.ndarray) -> np.ndarray:
        if self._frame_dtypes is None:
            return self._logits(rows)
        frame = pd.DataFrame(rows, columns=self._frame_dtypes.index)
        # Mixed columns come as objects and get their dtypes back; numbers come as numbers.
        return self._logits(frame.astype(self._frame_dtypes.to_dict()) if rows.dtype == object else frame)


def choose_explanation(estimator: object, input: TeacherInput, choice: str, budget: int, n_logits: int, logits: Logits) -> Explanation:
    """The explanation ``choice`` names for a fitted classifier (of a Pipeline's last step for
    ``linear`` and ``tree``). ``auto``: the model's own where it has one (linear ``coef_``, trees
    through TreeSHAP), else a sampled one when within ``budget`` model evaluations, else none,
    with the reason. A choice named explicitly that cannot be had is an error."""
    if choice not in EXPLAIN_CHOICES:
        raise StepDistillError(f"unknown teacher.explain '{choice}'; use one of: {', '.join(EXPLAIN_CHOICES)}")
    if choice == "none":
        return NoExplanation("teacher.explain is none")
    model, transform = final_step(estimator)
    name = type(model).__name__

    def columns(data: Data) -> np.ndarray:
        """The columns ``model`` reads, as floats (linear and tree models read only numbers)."""
        return _dense(data if transform is None else transform(data))

    # A Pipeline's model reads the columns its earlier steps make: neither the raw columns nor the
    # student's encoded ones, so no part of a student matches them column by column, and a
    # student reaches them through its learned projection, as it does a hidden layer.
    raw = transform is None and input == "frame"
    if choice in ("auto", "linear"):
        coef = linear_coefficients(model, n_logits)
        if coef is not None:
            return LinearContributions(coef, columns, "representation" if transform else "contributions", raw)
        if choice == "linear":
            raise StepDistillError(f"teacher.explain linear needs a linear model (coef_ with one row per logit), and {name} has none; use auto, tree or sampled")
    shap = import_shap(required=choice != "auto")
    if shap is None:
        return NoExplanation(f"{name} has no linear explanation, and TreeSHAP or a sampled one needs the shap package; install {EXPLAIN_EXTRA}")
    if choice in ("auto", "tree"):
        explainer, refusal = tree_explainer(shap, model)
        if explainer is not None:
            return TreeContributions(explainer, columns, n_logits, "representation" if transform else "contributions_with_bias", raw)
        if choice == "tree":
            raise StepDistillError(f"teacher.explain tree cannot explain {name}: {refusal}; use auto or sampled")
    # The sampled explanation runs the whole estimator, so it explains the columns that reads.
    return SampledContributions(shap, logits, n_logits, name, budget if choice == "auto" else None, input == "frame")


def final_step(estimator: object) -> tuple[object, Callable[[Data], object] | None]:
    """The model that predicts (a Pipeline's last step), and the transformation of the input into
    the columns it reads (None: it reads the input)."""
    if not isinstance(estimator, Pipeline):
        return estimator, None
    return estimator[-1], (estimator[:-1].transform if len(estimator) > 1 else None)


def linear_coefficients(model: object, n_logits: int) -> np.ndarray | None:
    """A linear model's ``coef_``, one row per logit, else None."""
    coef = getattr(model, "coef_", None)
    if coef is None or np.ndim(coef) != 2 or np.shape(coef)[0] != n_logits:
        return None
    return np.asarray(coef, dtype=np.float64)


def tree_explainer(shap: ModuleType, model: object) -> tuple[object | None, str]:
    """shap's TreeExplainer of ``model``'s raw output, or None and why TreeSHAP cannot read it."""
    if np.any(getattr(model, "is_categorical_", None)):
        return None, "TreeSHAP does not read HistGradientBoosting's native categorical splits"
    try:
        return shap.TreeExplainer(model, model_output="raw"), ""
    except ValueError as err:  # shap's InvalidModelError, which it does not export, is one
        return None, " ".join(str(err).split())


def import_shap(required: bool) -> ModuleType | None:
    """shap, or None when it is not installed; an error instead when ``required``."""
    try:
        return importlib.import_module("shap")
    except ImportError as err:
        if required:
            raise StepDistillError(f"the teacher's explanation needs the shap package; install {EXPLAIN_EXTRA}") from err
        return None


def class_major(values: np.ndarray | list, expected: np.ndarray | float, n_logits: int) -> np.ndarray:
    """SHAP values (N, d) or (N, d, outputs) and their expected value(s) as (N, n_logits*(d+1)):
    per logit, its d values then its expected value. A two-class model explained per class keeps
    class 1's (its logit is class 1 against class 0)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        values = values[:, :, None]
    expected = np.atleast_1d(np.asarray(expected, dtype=np.float64))
    values, expected = values[:, :, -n_logits:], expected[-n_logits:]
    n = len(values)
    per_logit = np.concatenate([values.transpose(0, 2, 1), np.broadcast_to(expected[None, :, None], (n, n_logits, 1))], axis=2)
    return per_logit.reshape(n, -1)


def _coalitions(width: int) -> int:
    """Coalitions of ``width`` columns KernelExplainer evaluates per row: the fewest with which it
    takes every column alone and every column left out, its exact first step (it gives those
    2(d-1) H(d-1) of its draws, H the harmonic number), plus two drawn at random."""
    harmonic = sum(1 / k for k in range(1, width))
    return math.ceil(2 * (width - 1) * harmonic) + 2


def _dense(columns: object) -> np.ndarray:
    """Columns as a float array (a ColumnTransformer may give a sparse matrix)."""
    return np.asarray(columns.toarray() if scipy.sparse.issparse(columns) else columns, dtype=np.float64)


@contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    """KernelExplainer draws its coalitions from NumPy's global generator and takes no seed: seed
    it for the call, so the same teacher explains the same rows alike, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
