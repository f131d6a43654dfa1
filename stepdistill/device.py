"""Where models train and run."""

from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    """``STEPDISTILL_DEVICE`` if set (e.g. ``cpu`` to keep off a GPU), else CUDA when available."""
    chosen = os.environ.get("STEPDISTILL_DEVICE")
    if chosen:
        return torch.device(chosen)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
