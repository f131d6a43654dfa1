"""Feature encoding fitted on the training split: one-hot for categories, scaling for numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from stepdistill.errors import StepDistillError


class FeatureEncoder:
    """A ``ColumnTransformer``: numeric columns standardized (or passed through when
    ``scale_numeric`` is False, e.g. pixels already in [0, 1]), categorical columns (strings,
    categories, booleans) one-hot encoded, with categories unseen in training encoded as all
    zeros. Fit it on the training split only; it travels with the student, so new data is
    encoded the same way at predict time."""

    def __init__(self, scale_numeric: bool = True):
        self.scale_numeric = scale_numeric

    def fit(self, features: pd.DataFrame) -> FeatureEncoder:
        self.columns_ = [str(c) for c in features.columns]
        numeric = [c for c in features.columns if is_numeric_dtype(features[c]) and not is_bool_dtype(features[c])]
        categorical = [c for c in features.columns if c not in numeric]
        self.transformer_ = ColumnTransformer(
            [
                ("numeric", StandardScaler() if self.scale_numeric else "passthrough", numeric),
                ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32), categorical),
            ],
            verbose_feature_names_out=False,
        )
        self.transformer_.fit(_as_strings(features, categorical))
        self.categorical_ = categorical
        return self

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.columns_ if c not in features.columns]
        if missing:
            raise StepDistillError(f"feature columns missing: {', '.join(missing)}; pass the columns the student was trained on")
        encoded = self.transformer_.transform(_as_strings(features[self.columns_], self.categorical_))
        return np.ascontiguousarray(encoded, dtype=np.float32)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(str(n) for n in self.transformer_.get_feature_names_out())

    @property
    def feature_groups(self) -> tuple[int, ...]:
        """For each encoded column, the position of the raw column it comes from (the one-hot
        columns of a category share one): how per-raw-column explanations map onto the encoding."""
        groups: list[int] = []
        for name, _, columns in self.transformer_.transformers_:
            if name == "numeric":
                groups += [self.columns_.index(c) for c in columns]
            elif name == "categorical" and columns:
                encoder = self.transformer_.named_transformers_["categorical"]
                for column, categories in zip(columns, encoder.categories_):
                    groups += [self.columns_.index(column)] * len(categories)
        return tuple(groups)


def _as_strings(features: pd.DataFrame, categorical: list) -> pd.DataFrame:
    """Categorical columns as strings, so that mixed cell types and missing values encode as
    categories of their own instead of failing to sort."""
    if not categorical:
        return features
    return features.assign(**{str(c): features[c].astype("string").fillna("<missing>").astype(object) for c in categorical})
