"""What the teacher adapters share: choosing the input a fitted model predicts from, shaping its
outputs as float32 rows, turning probabilities into finite logits, naming its classes, running
libraries on torch's thread count, and reporting a library's failure on one line."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import joblib
import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from stepdistill.errors import StepDistillError
from stepdistill.teachers.base import Samples

TeacherInput = Literal["frame", "X"]


def check_input(input: str, teacher: str) -> None:
    if input not in ("frame", "X"):
        raise StepDistillError(f"unknown {teacher} teacher input '{input}'; use 'frame' (the raw columns) or 'X' (the encoded features)")


def teacher_input(samples: Samples, input: TeacherInput, teacher: str) -> pd.DataFrame | np.ndarray:
    """The raw columns (``"frame"``) or the encoded features (``"X"``) of ``samples``."""
    if input == "X":
        return samples.X.cpu().numpy()
    if samples.frame is None:
        raise StepDistillError(f"the {teacher} teacher reads the raw columns (input 'frame') but the samples carry none; give the samples their frame or use input 'X'")
    return samples.frame


def as_rows(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float32 (N, width): a 1-D output is one column; more dimensions are flattened per row."""
    values = torch.as_tensor(values, dtype=torch.float32)
    return values.unsqueeze(1) if values.ndim == 1 else values.flatten(1)


def nonfinite_rows(values: torch.Tensor) -> int:
    """How many rows of an (N, width) tensor hold a NaN or an infinity."""
    return int((~torch.isfinite(values)).any(1).sum())


def logits_from_probabilities(probs: np.ndarray, floor: float) -> np.ndarray:
    """Logits from (N, K) probabilities, finite however sure the model is: each row is clipped to
    ``[floor, 1 - floor]`` and renormalized, then logged. Two classes give one logit,
    log(p1 / p0), (N, 1); more give the log-probabilities, (N, K). Every row goes through the same
    clip, so all logits of a model share one scale."""
    clipped = np.clip(np.asarray(probs, dtype=np.float64), floor, 1 - floor)
    log_probs = np.log(clipped / clipped.sum(1, keepdims=True))
    return log_probs[:, 1:] - log_probs[:, :1] if log_probs.shape[1] == 2 else log_probs


def user_threads(params: dict, names: tuple[str, ...]) -> int | None:
    """The thread count ``params`` set under any of ``names`` (a library's aliases), else None."""
    return next((params[name] for name in names if params.get(name) is not None), None)


@contextmanager
def torch_thread_count() -> Iterator[None]:
    """Run scikit-learn (and what it calls) on torch's thread count, which the CLI's --threads
    sets: joblib's default n_jobs, which estimators whose n_jobs is None take (an n_jobs the user
    set is kept), and the OpenMP and BLAS pools of compiled code (k-NN, HistGradientBoosting),
    which take no n_jobs. Nothing about the model changes, so neither do its predictions."""
    threads = torch.get_num_threads()
    with joblib.parallel_config(n_jobs=threads), threadpool_limits(threads):
        yield


def class_names(classes: np.ndarray) -> tuple[str, ...]:
    """A fitted model's ``classes_`` named as the data names its classes (``frame_parts``): each
    value as text, whole floats as integers (1.0 is '1'). They are compared with the data's by
    these names, never matched by position: a model fitted on class indices (XGBoost always is)
    names 0..K-1, which are the data's classes only where its labels are those numbers."""
    values = np.asarray(classes)
    if np.issubdtype(values.dtype, np.floating) and np.all(np.mod(values, 1) == 0):
        values = values.astype(np.int64)
    return tuple(str(c) for c in values)


def classes_of_indices(indices: np.ndarray, data_classes: Sequence[str]) -> tuple[str, ...]:
    """The names of the classes of a model stepdistill fitted on class indices, as it fits the
    teachers it trains (index k is the data's k-th class)."""
    return tuple(data_classes[int(k)] for k in indices)


@contextmanager
def prediction_errors(teacher: str, errors: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError)) -> Iterator[None]:
    """Turn a library's failure to predict (most often: data unlike what the model was fitted
    on) into a one-line error."""
    try:
        yield
    except StepDistillError:
        raise
    except errors as err:
        message = " ".join(str(err).split()) or type(err).__name__
        raise StepDistillError(
            f"the {teacher} teacher could not predict on the data: {message}; check that its input"
            " ('frame': the raw columns, 'X': the encoded features) is what the model was fitted on"
        ) from err
