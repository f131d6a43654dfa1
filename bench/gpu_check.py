"""CUDA check: the same experiments on the GPU and on the CPU, in one process.

Checks that both engines train on CUDA and agree with each other there, that the article demo
gives the same test accuracy on either device, and times both. Run on a machine with a GPU:

    python bench/gpu_check.py [--output gpu_check.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path
from unittest import mock

import torch

import stepdistill.engines.tabular as train_module
from stepdistill.data import linear_binary, prepare
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.tabular import TabularData
from stepdistill.experiment.tabular import run_tabular
from stepdistill.presets import demo
from stepdistill.students.logistic import LogisticModel
from stepdistill.teachers.cache import cache_model_outputs
from stepdistill.terms import build_method


def on_device(device: str, fn, *args):
    os.environ["STEPDISTILL_DEVICE"] = device
    started = time.perf_counter()
    result = fn(*args)
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def demo_accuracies(preset: str) -> dict:
    config, frame, _ = demo(preset, 3)
    results = run_tabular(config, frame).results
    return {
        "teacher": results["teacher"]["test"]["accuracy"]["mean"],
        **{name: m["test"]["accuracy"]["mean"] for name, m in results["methods"].items()},
    }


def engines_agree_on_cuda() -> dict:
    """Largest parameter difference between the linear engine and autograd, on CUDA."""
    splits, _ = prepare(linear_binary(10_000, 10, seed=1), "label")
    teacher = new_state("t", build_method("baseline", {"epochs": 2}), lambda: LogisticModel(10, 1), 0, device="cuda")
    fit([teacher], TabularData(splits.train, splits.val, None))
    cache = cache_model_outputs(teacher.model, [splits.train, splits.val])
    gaps = {}
    for preset in ["step_by_step", "enhanced"]:
        method = build_method(preset, {"epochs": 3})
        linear = new_state("a", method, lambda: LogisticModel(10, 1), 1, device="cuda")
        fit([linear], TabularData(splits.train, splits.val, cache.take(splits.train.ids)))
        with mock.patch.object(train_module.LinearEngine, "accepts", staticmethod(lambda state: False)):
            autograd = new_state("b", method, lambda: LogisticModel(10, 1), 1, device="cuda")
            fit([autograd], TabularData(splits.train, splits.val, cache.take(splits.train.ids)))
        a = torch.cat([p.detach().flatten() for p in linear.model.parameters()])
        b = torch.cat([p.detach().flatten() for p in autograd.model.parameters()])
        assert a.is_cuda and b.is_cuda
        gaps[preset] = float((a - b).abs().max())
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    report = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "engine_max_param_gap_cuda": engines_agree_on_cuda(),
    }
    print("engines on cuda, max parameter gap:", report["engine_max_param_gap_cuda"], flush=True)
    for preset in ["article", "nonlinear"]:
        for device in ["cuda", "cpu"]:
            accuracies, seconds = on_device(device, demo_accuracies, preset)
            report[f"{preset}_{device}"] = {"seconds": round(seconds, 2), "accuracy": accuracies}
            print(preset, device, f"{seconds:.2f}s", accuracies, flush=True)
    args.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
