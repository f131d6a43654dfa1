"""The teacher interface: any model that gives (logits, rationale) for a set of samples."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from stepdistill.teachers.cache import TeacherOutputs


@dataclass(frozen=True)
class Samples:
    """The same rows seen three ways.

    ids:   (N,) int64 sample ids; teacher outputs are stored under these.
    X:     (N, d) float32, the encoded features students train on (one-hot, scaled).
    frame: the raw feature columns as read, one row per id in the same order, or None. Teachers
           fitted outside stepdistill (scikit-learn, LightGBM, XGBoost) predict from these.
    """

    ids: torch.Tensor
    X: torch.Tensor
    frame: pd.DataFrame | None = None

    def __len__(self) -> int:
        return self.ids.shape[0]


class Teacher:
    """A model whose outputs a student learns from.

    ``outputs`` returns logits (N, K) in the data's class order (K = 1 for a binary task: the
    logit of class 1) and a rationale (N, R) or None. ``classes``, when the teacher knows them,
    names its output classes in order, so they can be checked against the data's.
    """

    classes: tuple[str, ...] | None = None

    def outputs(self, samples: Samples) -> TeacherOutputs:
        raise NotImplementedError
