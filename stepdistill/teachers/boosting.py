"""Teachers that are gradient-boosted trees (LightGBM, XGBoost): their raw scores are the logits,
their TreeSHAP contributions the rationale.

The contributions of a sample sum, with the expected value in their last column, to its raw
score; that column is kept because it is part of the explanation. Both libraries are optional
and imported only when such a teacher is built.

Both train and predict on torch's thread count (the CLI's --threads), unless the model's own
settings name one: left to themselves they take every core, which on a machine shared with other
work makes a small model wait on busy cores (a teacher that trains in 0.3 s took minutes).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from pandas.api.types import is_object_dtype, is_string_dtype

from stepdistill.errors import StepDistillError
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.cache import TeacherOutputs
from stepdistill.teachers.common import TeacherInput, as_rows, check_input, class_names, prediction_errors, teacher_input, user_threads
from stepdistill.teachers.libraries import import_optional
from stepdistill.teachers.scikit import require_fitted

if TYPE_CHECKING:
    from lightgbm import LGBMClassifier
    from xgboost import XGBClassifier

LIGHTGBM_DEFAULTS = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 31, "verbose": -1}
XGBOOST_DEFAULTS = {"n_estimators": 200, "learning_rate": 0.05, "max_depth": 6, "tree_method": "hist", "enable_categorical": True, "verbosity": 0}
# The names each library reads a thread count from (LightGBM's aliases included).
LIGHTGBM_THREAD_PARAMS = ("n_jobs", "num_threads", "num_thread", "nthread", "nthreads")
XGBOOST_THREAD_PARAMS = ("n_jobs", "nthread")


def as_categorical_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its text columns cast to pandas ``category``, the dtype both libraries read
    categorical features from. At prediction both map a frame's categories back onto the codes
    learned in training, so a split that lacks some category is still read correctly."""
    text = [c for c in frame.columns if not isinstance(frame[c].dtype, pd.CategoricalDtype) and (is_object_dtype(frame[c]) or is_string_dtype(frame[c]))]
    return frame.astype({c: "category" for c in text}) if text else frame


def train_lightgbm(frame: pd.DataFrame, y: np.ndarray, params: dict, seed: int) -> LGBMClassifier:
    """Fit a LightGBM teacher on the raw columns ``frame`` and the labels ``y`` (class indices
    into the data's classes, or the label values themselves). ``params`` override the defaults."""
    lightgbm = import_optional("lightgbm")
    with _refused_settings("LightGBM", (ValueError, TypeError, lightgbm.basic.LightGBMError)):
        model = lightgbm.LGBMClassifier(**_with_torch_threads({**LIGHTGBM_DEFAULTS, "random_state": seed, **params}, LIGHTGBM_THREAD_PARAMS))
        return model.fit(as_categorical_frame(frame), y)


def train_xgboost(frame: pd.DataFrame, y: np.ndarray, params: dict, seed: int) -> XGBClassifier:
    """Fit an XGBoost teacher on the raw columns ``frame`` and the labels ``y`` (class indices
    0..K-1 into the data's classes, the only labels XGBoost takes). ``params`` override the
    defaults."""
    xgboost = import_optional("xgboost")
    with _refused_settings("XGBoost", (ValueError, TypeError)):  # XGBoostError is a ValueError
        model = xgboost.XGBClassifier(**_with_torch_threads({**XGBOOST_DEFAULTS, "random_state": seed, **params}, XGBOOST_THREAD_PARAMS))
        return model.fit(as_categorical_frame(frame), y)


@contextmanager
def _refused_settings(library: str, errors: tuple[type[Exception], ...]) -> Iterator[None]:
    """A library's refusal to train (most often: a value in ``teacher.params`` out of its range)
    as one line naming the setting to fix. LightGBM also prints the reason straight to the
    process's standard error before raising it: that copy is held back, and passed on only when
    training succeeds."""
    sys.stderr.flush()
    saved = os.dup(2)
    held = tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    try:
        yield
        os.dup2(saved, 2)
        held.seek(0)
        sys.stderr.write(held.read().decode(errors="replace"))
    except errors as err:
        message = " ".join(str(err).split()) or type(err).__name__
        raise StepDistillError(f"{library} could not train the teacher: {message} — fix teacher.params") from err
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        held.close()


def _with_torch_threads(params: dict, names: tuple[str, ...]) -> dict:
    """``params`` with ``n_jobs`` = torch's thread count, unless they set a thread count."""
    return params if user_threads(params, names) is not None else {**params, "n_jobs": torch.get_num_threads()}


class TreeTeacher(Teacher):
    """What the tree teachers share: reading ``samples.frame`` (text columns as categories) or
    ``samples.X``, and shaping raw scores and contributions as rows. Subclasses predict, from
    the data as ``to_library`` hands it to their library, on ``thread_count`` threads."""

    library = ""
    rationale_style = "contributions_with_bias"
    # What the library raises when the data is unlike what the model was fitted on.
    prediction_failures: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError)
    # The thread count the model's own settings name, else None (torch's is taken).
    _threads: int | None = None

    def __init__(self, input: TeacherInput):
        check_input(input, self.library)
        self.input = input
        self.reads_raw_columns = input == "frame"

    def outputs(self, samples: Samples) -> TeacherOutputs:
        with prediction_errors(self.library, self.prediction_failures):
            data = self._library_data(samples)
            return TeacherOutputs(as_rows(self.raw_scores(data)), as_rows(self.contributions(data)))

    def predict_logits(self, samples: Samples) -> torch.Tensor:
        with prediction_errors(self.library, self.prediction_failures):
            return as_rows(self.raw_scores(self._library_data(samples)))

    def thread_count(self) -> int:
        return torch.get_num_threads() if self._threads is None else self._threads

    def _library_data(self, samples: Samples) -> object:
        data = teacher_input(samples, self.input, self.library)
        return self.to_library(as_categorical_frame(data) if isinstance(data, pd.DataFrame) else data)

    def to_library(self, data: pd.DataFrame | np.ndarray) -> object:
        """``data`` as the library predicts from it."""
        return data

    def raw_scores(self, data: object) -> np.ndarray:
        """Raw scores, (N,) or (N, K)."""
        raise NotImplementedError

    def contributions(self, data: object) -> np.ndarray:
        """TreeSHAP contributions, (N, d+1) or per class."""
        raise NotImplementedError


class LightGBMTeacher(TreeTeacher):
    """A ``lightgbm.Booster`` or fitted ``LGBMClassifier``. Logits: raw scores, (N, 1) binary or
    (N, K). Rationale: contributions, (N, d+1) binary or (N, K*(d+1)) class-major.
    ``classes``: the classifier's ``classes_`` as names (a Booster does not know them). Predicts
    on the classifier's thread count when its settings name one, else on torch's."""

    library = "LightGBM"

    def __init__(self, model: object, input: TeacherInput = "frame"):
        lightgbm = import_optional("lightgbm")
        super().__init__(input)
        if isinstance(model, lightgbm.LGBMClassifier):
            require_fitted(model, self.library)
            self.booster = model.booster_
            self.classes = class_names(model.classes_)
            self._threads = user_threads(model.get_params(), LIGHTGBM_THREAD_PARAMS)
        elif isinstance(model, lightgbm.Booster):
            self.booster = model
        else:
            raise StepDistillError(f"the LightGBM teacher must be a lightgbm.Booster or a fitted LGBMClassifier; got {type(model).__name__}")
        self.prediction_failures = (*TreeTeacher.prediction_failures, lightgbm.basic.LightGBMError)

    def raw_scores(self, data: pd.DataFrame | np.ndarray) -> np.ndarray:
        return self.booster.predict(data, raw_score=True, num_threads=self.thread_count())

    def contributions(self, data: pd.DataFrame | np.ndarray) -> np.ndarray:
        return self.booster.predict(data, pred_contrib=True, num_threads=self.thread_count())

    def identity(self) -> tuple:
        return self.input, self._model_text()

    def saved_bytes(self) -> int:
        return len(self._model_text())

    def _model_text(self) -> bytes:
        return self.booster.model_to_string().encode()


class XGBoostTeacher(TreeTeacher):
    """An ``xgboost.Booster`` or fitted ``XGBClassifier``. Logits: margins, (N, 1) binary or
    (N, K). Rationale: contributions, (N, d+1) binary or (N, K*(d+1)) class-major. A classifier
    trained with early stopping predicts with its best iteration, as its own ``predict`` does.
    ``classes``: the classifier's, the indices 0..K-1 XGBoost trains on (a Booster knows none),
    so they name the data's classes only where the data's labels are those numbers; otherwise
    whoever fitted it says what they stand for (``teacher.classes``, or stepdistill for the
    teachers it trains). Predicts on the classifier's thread count when its settings name one,
    else on torch's, with a copy of the booster, so that the caller's keeps its own."""

    library = "XGBoost"

    def __init__(self, model: object, input: TeacherInput = "frame"):
        xgboost = import_optional("xgboost")
        super().__init__(input)
        if isinstance(model, xgboost.XGBClassifier):
            require_fitted(model, self.library)
            self.booster = model.get_booster().copy()
            self.classes = class_names(model.classes_)
            self._threads = user_threads(model.get_params(), XGBOOST_THREAD_PARAMS)
            self._missing = model.missing
            try:
                self._iteration_range = (0, model.best_iteration + 1)
            except AttributeError:  # no early stopping: every tree
                self._iteration_range = (0, 0)
        elif isinstance(model, xgboost.Booster):
            self.booster = model.copy()
            self._missing = np.nan
            self._iteration_range = (0, 0)
        else:
            raise StepDistillError(f"the XGBoost teacher must be an xgboost.Booster or a fitted XGBClassifier; got {type(model).__name__}")

    def to_library(self, data: pd.DataFrame | np.ndarray) -> object:
        threads = self.thread_count()
        self.booster.set_param({"nthread": threads})
        return import_optional("xgboost").DMatrix(data, missing=self._missing, enable_categorical=True, nthread=threads)

    def raw_scores(self, matrix: object) -> np.ndarray:
        return self.booster.predict(matrix, output_margin=True, iteration_range=self._iteration_range)

    def contributions(self, matrix: object) -> np.ndarray:
        return self.booster.predict(matrix, pred_contribs=True, iteration_range=self._iteration_range)

    def identity(self) -> tuple:
        return self.input, self._iteration_range, self._missing, self._model_bytes()

    def saved_bytes(self) -> int:
        return len(self._model_bytes())

    def _model_bytes(self) -> bytes:
        return bytes(self.booster.save_raw("ubj"))
