"""Feature encoding fitted on the training split: one-hot for categories, scaling for numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from stepdistill.errors import StepDistillError

MISSING_CATEGORY = "<missing>"


class FeatureEncoder:
    """Numeric columns standardized (or passed through when ``scale_numeric`` is False, e.g.
    pixels already in [0, 1]), then categorical columns (strings, categories, booleans) one-hot
    encoded. Fit it on the training split only; it travels with the student, so new data is
    encoded the same way at predict time.

    Fitting uses scikit-learn (``StandardScaler``, ``OneHotEncoder``); encoding uses only the fitted
    numbers (``mean_``, ``scale_``, ``categories_``), so the encoder saves as JSON (``to_json`` /
    ``from_json``), needs no pickle to load, and a loaded encoder encodes bit for bit as the one
    that was fitted.

    ``missing="impute"`` (``data.missing: impute``) fills a missing number with its column's
    mean on the training rows; a missing category is a category of its own either way (under
    the default ``"error"`` the data checks let none through)."""

    def __init__(self, scale_numeric: bool = True, missing: str = "error"):
        self.scale_numeric = scale_numeric
        self.missing = missing
        self._codes: list[dict[str, int]] | None = None

    def fit(self, features: pd.DataFrame) -> FeatureEncoder:
        self.columns_ = [str(c) for c in features.columns]
        self.numeric_ = [c for c in self.columns_ if is_numeric_dtype(features[c]) and not is_bool_dtype(features[c])]
        self.categorical_ = [c for c in self.columns_ if c not in self.numeric_]
        numbers = features[self.numeric_].to_numpy(dtype=np.float64)
        if self.missing == "impute":
            self.fill_ = features[self.numeric_].mean().fillna(0.0).to_numpy(dtype=np.float64)
            numbers = self._imputed(numbers)
        if self.scale_numeric and self.numeric_:
            scaler = StandardScaler().fit(numbers)
            self.mean_, self.scale_ = scaler.mean_, scaler.scale_
        else:
            self.mean_, self.scale_ = np.zeros(len(self.numeric_)), np.ones(len(self.numeric_))
        if self.categorical_:
            onehot = OneHotEncoder(handle_unknown="ignore").fit(_as_strings(features[self.categorical_]))
            self.categories_ = [[str(c) for c in categories] for categories in onehot.categories_]
        else:
            self.categories_ = []
        self._codes = None
        return self

    def transform(self, features: pd.DataFrame, unseen: str = "zeros") -> np.ndarray:
        """(N, d) float32. A category not seen in training encodes as all zeros (``unseen="zeros"``,
        as validation and test rows may hold one) or is refused (``unseen="error"``, for new data
        handed to a trained student)."""
        missing = [c for c in self.columns_ if c not in features.columns]
        if missing:
            raise StepDistillError(f"feature columns missing: {', '.join(missing)}; pass the columns the student was trained on")
        numbers = (self._imputed(_numbers(features[self.numeric_])) - self.mean_) / self.scale_
        parts = [numbers]
        for column, categories, codes in zip(self.categorical_, self.categories_, self._category_codes()):
            values = _column_strings(features[column])
            index = np.fromiter((codes.get(value, -1) for value in values), dtype=np.int64, count=len(values))
            if unseen == "error" and (index < 0).any():
                examples = ", ".join(repr(v) for v in pd.unique(values[index < 0])[:3])
                raise StepDistillError(
                    f"column '{column}' holds categories the student never saw in training ({examples});"
                    f" it knows {', '.join(repr(c) for c in categories[:8])}{', ...' if len(categories) > 8 else ''}"
                )
            onehot = np.zeros((len(values), len(categories)))
            rows = np.flatnonzero(index >= 0)
            onehot[rows, index[rows]] = 1.0
            parts.append(onehot)
        return np.ascontiguousarray(np.hstack(parts), dtype=np.float32)

    def _imputed(self, numbers: np.ndarray) -> np.ndarray:
        """``numbers`` with each missing value replaced by its column's training mean, under
        ``missing="impute"``; as they are otherwise."""
        if self.missing != "impute":
            return numbers
        return np.where(np.isnan(numbers), self.fill_, numbers)

    def _category_codes(self) -> list[dict[str, int]]:
        """Each categorical column's position of every category, built once: building it costs
        more than encoding a single row."""
        if self._codes is None:
            self._codes = [{category: i for i, category in enumerate(categories)} for categories in self.categories_]
        return self._codes

    @property
    def feature_names(self) -> tuple[str, ...]:
        categorical = [f"{column}_{category}" for column, categories in zip(self.categorical_, self.categories_) for category in categories]
        return (*self.numeric_, *categorical)

    @property
    def feature_groups(self) -> tuple[int, ...]:
        """For each encoded column, the position of the raw column it comes from (the one-hot
        columns of a category share one): how per-raw-column explanations map onto the encoding."""
        groups = [self.columns_.index(c) for c in self.numeric_]
        for column, categories in zip(self.categorical_, self.categories_):
            groups += [self.columns_.index(column)] * len(categories)
        return tuple(groups)

    def to_json(self) -> dict:
        return {
            "scale_numeric": self.scale_numeric,
            "columns": self.columns_,
            "numeric": self.numeric_,
            "mean": self.mean_.tolist(),
            "scale": self.scale_.tolist(),
            "categorical": self.categorical_,
            "categories": self.categories_,
            "missing": self.missing,
            **({"fill": self.fill_.tolist()} if self.missing == "impute" else {}),
        }

    @classmethod
    def from_json(cls, saved: dict) -> FeatureEncoder:
        encoder = cls(saved["scale_numeric"], saved.get("missing", "error"))  # older students have no policy
        if encoder.missing == "impute":
            encoder.fill_ = np.asarray(saved["fill"], dtype=np.float64)
        encoder.columns_, encoder.numeric_, encoder.categorical_ = saved["columns"], saved["numeric"], saved["categorical"]
        encoder.mean_, encoder.scale_ = np.asarray(saved["mean"], dtype=np.float64), np.asarray(saved["scale"], dtype=np.float64)
        encoder.categories_ = saved["categories"]
        return encoder


def _numbers(features: pd.DataFrame) -> np.ndarray:
    """The numeric columns as float64, or a one-line error naming a column that holds text."""
    try:
        return features.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        bad = next(c for c in features.columns if pd.to_numeric(features[c], errors="coerce").isna().sum() > features[c].isna().sum())
        raise StepDistillError(f"numeric column '{bad}' holds text (e.g. {features[bad][pd.to_numeric(features[bad], errors='coerce').isna()].iloc[0]!r}); pass numbers there") from None


def _as_strings(features: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as strings, so that mixed cell types and missing values encode as
    categories of their own instead of failing to sort."""
    return features.apply(lambda column: pd.Series(_column_strings(column), index=column.index))


def _column_strings(column: pd.Series) -> np.ndarray:
    """One categorical column as an object array of strings (see ``_as_strings``)."""
    values = column.to_numpy(dtype=object)
    if all(type(value) is str for value in values):  # the usual case, already what the conversion gives
        return values
    return column.astype("string").fillna(MISSING_CATEGORY).to_numpy(dtype=object)
