"""Loading, checking, splitting and scaling tabular classification data, and the released
distilling-step-by-step data.

The names below are imported from their modules on first use, so that a module of this package
(such as llm_outputs.py, which configs read) is imported without the others (torch among them).
"""

from __future__ import annotations

import importlib

_MODULES = {
    "adult": "bundled",
    "mnist_5k": "bundled",
    "FeatureEncoder": "encode",
    "frame_parts": "io",
    "read_frame": "io",
    "encode_splits": "prepared",
    "prepare": "prepared",
    "split_rows": "splits",
    "split_stratified": "splits",
    "standardize": "splits",
    "linear_binary": "synthetic",
    "linear_weights": "synthetic",
    "nonlinear_binary": "synthetic",
    "Splits": "table",
    "Table": "table",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(f"stepdistill.data.{_MODULES[name]}"), name)
    raise AttributeError(f"module 'stepdistill.data' has no attribute '{name}'")
