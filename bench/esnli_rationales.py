"""What makes an LLM's rationales worth more to a small student, measured on e-SNLI.

The `esnli_frozen --full` preset (PaLM's labels and rationales; MLP students on frozen all-MiniLM-L6-v2 features;
train and validation carved from the released validation file, the test file fixed) is run with
three teachers, each with the paper's four settings, at 100% and 10% of the human labels:

  palm        PaLM's own answers: its label (as a smoothed distribution) and its rationale
  privileged  a privileged-information teacher (generalized distillation): an MLP trained on the
              training split's human labels that reads the input features *and* the embedding
              of PaLM's rationale; its soft labels teach the input-only students, and the
              rationale term still pulls toward PaLM's rationale
  features    its control without the rationale: the same MLP, trained the same way on the same
              human labels, reading the input features only (its rationale, for step-by-step, is
              its hidden layer). What privileged gains over features is what the rationale adds;
              what both gain over fine-tuning is a teacher trained on the same labels (whose
              soft labels on the training rows are in-sample: it learned from those rows)

Each setting is compared with standard fine-tuning (baseline) trained the same way, run by run
(corrected resampled t-test, Holm-corrected). At each fraction, the teacher to keep is the one
whose best distilled student (any method but baseline) has the lower validation log-loss: the
test split chooses nothing. With 10% of the labels, the privileged model learns from those 10%
only, as the students do.

    python bench/esnli_rationales.py [--repeats 3] [--data-dir ../shared/data/dsbs] [--threads 2]

Writes bench/esnli_rationales.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

from stepdistill import presets
from stepdistill.experiment.tabular import run_tabular
from stepdistill.teachers.config import PRIVILEGED_TRAINING, MLPTeacher, PrivilegedModel

FRACTIONS = [0.1, 1.0]
OUT = Path(__file__).with_name("esnli_rationales.json")


def teachers(config):
    palm, privileged = config.teacher, PrivilegedModel()
    features = MLPTeacher(kind="mlp", hidden=privileged.hidden, training=dict(PRIVILEGED_TRAINING))
    return {"palm": palm, "privileged": palm.model_copy(update={"privileged": privileged}), "features": features}


def summary(results: dict) -> dict:
    methods = {}
    for name, entry in results["methods"].items():
        test = entry["test"]["accuracy"]
        versus = entry.get("vs_control", {}).get("accuracy")
        methods[name] = {
            "validation_accuracy": entry["validation"]["accuracy"]["mean"],
            "validation_log_loss": entry["validation"]["log_loss"]["mean"],
            "test_accuracy": test["mean"],
            "test_accuracy_std": test["std"],
            "vs_baseline": None if versus is None else {k: versus.get(k) for k in ("diff", "ci_low", "ci_high", "p_holm", "verdict")},
        }
    teacher = results["teacher"]
    return {
        "teacher_test_accuracy": teacher["test"]["accuracy"]["mean"],
        "teacher_test_coverage": teacher["test"].get("coverage", {}).get("mean"),
        "teacher_accuracy_on": teacher.get("accuracy_on"),
        "methods": methods,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, frame, test_frame = presets.demo("esnli_frozen", args.repeats, args.data_dir, full=True)
    measured = {}
    for name, teacher in teachers(config).items():
        started = time.perf_counter()
        by_fraction = run_tabular(config.model_copy(update={"teacher": teacher}), frame, test_frame, fractions=FRACTIONS).results_by_fraction
        measured[name] = {str(f): summary(r) for f, r in by_fraction.items()} | {"seconds": round(time.perf_counter() - started, 1)}
        print(f"{name}: {measured[name]['seconds']} s", flush=True)
    kept = {}
    for fraction in map(str, FRACTIONS):
        distilled = {name: [e["validation_log_loss"] for method, e in m[fraction]["methods"].items() if method != "baseline"] for name, m in measured.items()}
        kept[fraction] = min(distilled, key=lambda name: min(distilled[name]))
    record = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "repeats": args.repeats,
        "kept_on_validation": kept,
        "teachers": measured,
    }
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print("| teacher | labels | method | val acc | test acc | vs baseline (test acc) |")
    print("|---|---:|---|---:|---:|---|")
    for name, by_fraction in measured.items():
        for fraction in map(str, FRACTIONS):
            for method, entry in by_fraction[fraction]["methods"].items():
                versus = entry["vs_baseline"]
                shown = "" if versus is None or versus["ci_low"] is None else f"{versus['diff']:+.3f} [{versus['ci_low']:+.3f}, {versus['ci_high']:+.3f}] {versus['verdict']}"
                print(f"| {name} | {fraction} | {method} | {entry['validation_accuracy']:.3f} | {entry['test_accuracy']:.3f} | {shown} |")
    print(f"kept on validation (by labelled fraction): {kept}")


if __name__ == "__main__":
    main()
