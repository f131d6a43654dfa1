"""The teacher interface: any model that gives (logits, rationale) for a set of samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch

from stepdistill.data.table import Table
from stepdistill.teachers.cache import TeacherOutputs
from stepdistill.teachers.digest import digest


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

    @classmethod
    def of(cls, table: Table, raw: pd.DataFrame | None) -> Samples:
        """A split's rows, with their raw columns looked up by id in ``raw`` (indexed by id)."""
        return cls(table.ids, table.X, None if raw is None else raw.loc[table.ids.numpy()])


RationaleStyle = Literal["contributions", "contributions_with_bias", "score", "representation"]


class Teacher:
    """A model whose outputs a student learns from.

    ``outputs`` returns logits (N, K) in the data's class order (K = 1 for a binary task: the
    logit of class 1) and a rationale (N, R) or None. ``classes``, when the teacher knows them,
    names its output classes in order, so they can be checked against the data's.

    ``rationale_style`` says what the rationale is, so a student can explain itself in kind:
    per-feature contributions to the logit (as a linear model's ``w_j * x_j``), the same plus
    the expected value per class (TreeSHAP), the logit itself ("score"), or an internal
    representation (hidden activations, feature maps) that a student reaches through a learned
    projection. ``reads_raw_columns``: whether the teacher's features are the raw columns (so its
    contributions are per raw column) rather than the encoded ones students see.

    ``rationale_unavailable``: when the teacher gives no rationale, a one-line reason (and the
    fix, where there is one), for the methods that need a rationale to report; None otherwise.

    ``can_predict``: whether the teacher can predict rows it has not seen (a file of outputs
    computed elsewhere cannot).
    """

    classes: tuple[str, ...] | None = None
    rationale_style: RationaleStyle = "representation"
    reads_raw_columns: bool = False
    rationale_unavailable: str | None = None
    can_predict: bool = True

    def outputs(self, samples: Samples) -> TeacherOutputs:
        raise NotImplementedError

    def predict_logits(self, samples: Samples) -> torch.Tensor:
        """The logits (N, K) that ``outputs`` gives, as the teacher serves predictions: teachers
        whose rationale costs work of its own (an explanation) skip that work."""
        return self.outputs(samples).logits

    def answered(self, samples: Samples) -> torch.Tensor | None:
        """(N,) bool: which samples the teacher named a class for (an LLM's answer can name none);
        None: every one, as a model always does. An unanswered sample counts as wrong in the
        teacher's accuracy, whatever its logits."""
        return None

    def fingerprint(self) -> str | None:
        """A hash of everything that decides this teacher's outputs (its fitted model, and the
        settings and background its rationale is computed with), the same on any machine, so
        that outputs stored under it can be reused; None when the teacher cannot be identified
        (then nothing is stored). Read after ``fit_background``: the background is part of it."""
        identity = self.identity()
        if identity is None:
            return None
        return digest(type(self).__name__, self.classes, self.rationale_style, self.reads_raw_columns, *identity)

    def identity(self) -> tuple | None:
        """What, besides its classes and rationale style, decides this teacher's outputs, as
        values ``digest`` takes; None (the default) when that cannot be known."""
        return None

    def saved_bytes(self) -> int | None:
        """Bytes the teacher takes on disk when saved as it would be deployed, or None when it
        is not a model that can be saved (a file of outputs) or the size cannot be known."""
        return None

    def fit_background(self, train: Samples) -> None:
        """Learn from the training split what explanations are measured against (e.g. the
        feature means of linear contributions). Most teachers need nothing."""
