"""The optional libraries of tree-ensemble teachers (LightGBM, XGBoost): importing one with a
one-line error naming the extra that installs it, and the parameter names each reads, so that a
misspelt one in a config is refused before anything runs. No torch: configs validate with this."""

from __future__ import annotations

import difflib
import importlib
import json
from functools import cache
from types import ModuleType

import numpy as np

from stepdistill.errors import StepDistillError


def import_optional(package: str) -> ModuleType:
    """Import an optional teacher library, or say which extra installs it."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise StepDistillError(f"teacher.kind {package} needs the {package} package; install stepdistill[{package}]") from err


def check_parameter_names(library: str, params: dict) -> None:
    """Refuse a name in ``params`` that ``library`` ("lightgbm" or "xgboost") does not read
    (libraries ignore an unknown one, or warn and go on), with the closest name it reads."""
    known = lightgbm_parameter_names() if library == "lightgbm" else xgboost_parameter_names()
    for name in params:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown {library} parameter '{name}'{hint}")


@cache
def lightgbm_parameter_names() -> frozenset[str]:
    """Every name LightGBM's classifier takes: its scikit-learn arguments, and each native
    parameter under all of its aliases (as the library lists them)."""
    lightgbm = import_optional("lightgbm")
    aliases = lightgbm.basic._ConfigAliases._get_all_param_aliases()  # the library's own table; no public one exists
    return frozenset(lightgbm.LGBMClassifier().get_params()) | {name for names in aliases.values() for name in names} | set(aliases)


@cache
def xgboost_parameter_names() -> frozenset[str]:
    """Every name XGBoost's classifier takes: its scikit-learn arguments, and the native
    parameters (aliases included) of a booster's configuration, read from a booster fitted on
    four rows: the library lists them nowhere else."""
    xgboost = import_optional("xgboost")
    booster = xgboost.XGBClassifier(n_estimators=1, n_jobs=1).fit(np.eye(4), [0, 1, 0, 1]).get_booster()

    def names(config: dict) -> set[str]:
        return {key for key, value in config.items() for key in ([key] if not isinstance(value, dict) else names(value))}

    return frozenset(xgboost.XGBClassifier().get_params()) | names(json.loads(booster.save_config()))
