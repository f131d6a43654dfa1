"""``stepdistill lm-train``: generative students distilled from an LLM's labels and rationales (the
released distilling-step-by-step data), every method trained with the same recipe over several
runs and compared with the baseline run by run.

The runs are the tabular experiment's over a fixed test file (``data.repeats``): each draws its
own train/validation split of the training records (seed ``evaluation.seed + run``), which also
seeds the student's initialization (tiny students), batch order and dropout; the validation split
drives early stopping; the test split is generated on once per student, after training. Students
train through ``engines.base.fit`` (the LM engine), at one or more labelled fractions, and are
compared with a control run by run as the tabular experiment's are. The student with the lowest
validation loss over all methods and runs (of the largest fraction) is saved.

Under ``accelerate launch`` (or ``torchrun``) several processes share each student's batches and
generations (engines/processes.py); every process computes the same results and the main process
alone prints progress and writes files.
"""

from __future__ import annotations

import copy
import datetime
import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stepdistill import stats
from stepdistill.errors import StepDistillError, validation_message
from stepdistill.evaluate import summarize
from stepdistill.files import read_yaml_config
from stepdistill.lm.config import LM_METHODS, LMDataConfig, LMEvaluationConfig, LMTokenTeacherConfig, LMTrainConfig, LMStudentConfig
from stepdistill.lm.predict import LM_MANIFEST, LM_STUDENT_KIND
from stepdistill.lm.models import new_student, student_tokenizer, token_teacher_model
from stepdistill.methods import Method

CONTROL = "baseline"
# What an lm-train run directory holds, and how its student says what it is (stepdistill predict).
LM_RUN_FILES = ("results.json", "report.md", "student")
# The comparison's metric: test label accuracy of the greedy generations.
COMPARED = "label_accuracy"
SIGNIFICANT_MARK = "*"


# --- data ------------------------------------------------------------------------------------


@dataclass
class LMDataset:
    """The records of an experiment: ``train`` (``DistillationRecord``: both labels, the teacher's
    rationale), ``test`` (``LMRecord``: human labels, the teacher's rationale),
    ``test_teacher_labels`` (the teacher's label of each test record, None where it gave none),
    and warnings about records left out."""

    task: str
    train: list
    test: list
    test_teacher_labels: list[str | None]
    warnings: list[str]

    def teacher_test_accuracy(self) -> float:
        """The share of test records whose teacher label is the human one."""
        from stepdistill.lm.evaluate import label_correct

        return float(np.mean([label_correct(self.task, label or "", record) for label, record in zip(self.test_teacher_labels, self.test)]))


def load_lm_data(data: LMDataConfig) -> LMDataset:
    """The configured splits as records; a split with too few usable records is an error."""
    from stepdistill.engines.lm import distillation_records
    from stepdistill.presets import dsbs_directory
    from stepdistill.data.llm_outputs import read_dsbs
    from stepdistill.lm.prompts import lm_records

    directory = dsbs_directory(data.data_dir)
    frame, outputs = read_dsbs(directory, data.task, data.train_split)
    frame = frame.head(data.max_train_records) if data.max_train_records else frame
    human, no_rationale = lm_records(frame, outputs, data.task, "human")
    teacher, _ = lm_records(frame, outputs, data.task, "teacher")
    train, no_teacher_label = distillation_records(human, teacher)
    test_frame, test_outputs = read_dsbs(directory, data.task, data.test_split)
    test_frame = test_frame.head(data.max_test_records) if data.max_test_records else test_frame
    test, test_left_out = lm_records(test_frame, test_outputs, data.task, "human")
    if len(train) < 4 or not test:
        raise StepDistillError(
            f"{len(train)} usable training and {len(test)} test records; raise data.max_train_records (at least 4 usable) or max_test_records"
        )
    warnings = [
        f"{count} {split} records left out: {why}"
        for count, split, why in (
            (len(no_rationale), "training", "no teacher rationale"),
            (len(no_teacher_label), "training", "no teacher label (every method trains on the same records)"),
            (len(test_left_out), "test", "no teacher rationale"),
        )
        if count
    ]
    return LMDataset(data.task, train, test, [test_outputs.answers[record.id].label for record in test], warnings)


def lm_runs(evaluation: LMEvaluationConfig, data: LMDataset) -> list:
    """The runs (``data.repeats.RunRows``, positions in ``data.train`` and ``data.test``): the
    tabular experiment's runs over a fixed test file, each drawing its own train/validation split
    of the training records with seed ``evaluation.seed + run``. One stratum: the labels are
    free text (cqa's are answers, svamp's numbers), not classes to balance."""
    from stepdistill.data.repeats import fixed_test_runs

    n_train, n_test = len(data.train), len(data.test)
    if evaluation.val_fraction * n_train < 1:
        raise StepDistillError(
            f"evaluation.val_fraction {evaluation.val_fraction:g} of {n_train} training records leaves no validation record; raise it or data.max_train_records"
        )
    return fixed_test_runs(np.zeros(n_train + n_test, dtype=np.int64), ["records"], n_test, evaluation.repeats, evaluation.val_fraction, evaluation.seed)


# --- students --------------------------------------------------------------------------------


# --- the experiment --------------------------------------------------------------------------


@dataclass
class LMExperiment:
    """What ``run_lm_experiment`` produced: the results dict at each labelled fraction
    (JSON-ready, ascending), the chosen student (on the CPU: of the largest fraction, lowest
    validation loss) and its tokenizer and manifest."""

    results_by_fraction: dict[float, dict]
    student: object
    tokenizer: object
    manifest: dict

    @property
    def results(self) -> dict:
        """The results at the largest fraction (lm-train's only one)."""
        return self.results_by_fraction[max(self.results_by_fraction)]


def run_lm_experiment(
    config: LMTrainConfig,
    data: LMDataset,
    say: Callable[[str], None] | None = None,
    fractions: Sequence[float] = (1.0,),
    compare_with: str = CONTROL,
) -> LMExperiment:
    """Every method over ``evaluation.repeats`` runs on ``data`` (``load_lm_data(config.data)``),
    at each labelled ``fraction``: the share of each run's training records whose human labels
    the students may use, and of its validation records whose labels the validation loss reads
    (random, nested across fractions; the teacher's outputs serve on every record). Every
    method is compared with ``compare_with`` run by run at each fraction. ``say`` hears a line
    per trained student (on the main process)."""
    from stepdistill.data.repeats import labelled_mask, labelled_order
    from stepdistill.engines.base import fit, new_state
    from stepdistill.engines.lm import LMData
    from stepdistill.engines.processes import lm_accelerator, process_device
    from stepdistill.lm.evaluate import evaluate_generative_student

    if compare_with not in config.methods:
        raise StepDistillError(f"the methods have no {compare_with!r} to compare the others with; add it under methods")
    _without_library_progress_bars()
    fractions = sorted(fractions)
    run_rows = lm_runs(config.evaluation, data)  # before anything loads: a split too small is an error
    accelerator = lm_accelerator()
    # The default student is converted once, on first use: by one process, the others then read it.
    with accelerator.main_process_first():
        tokenizer = student_tokenizer(config.student)
    device = process_device(accelerator)
    teacher = None if config.teacher is None else _token_teacher(config.teacher, tokenizer, config.student, device)
    say = say if accelerator.is_main_process else None
    methods = {name: config.method(name) for name in config.methods}
    options = config.training.options()
    runs = {fraction: {name: [] for name in methods} for fraction in fractions}
    chosen = {"validation_loss": float("inf")}
    chosen_model = None
    warnings = list(data.warnings)
    for rows in run_rows:
        run, seed = rows.index, rows.seed
        train, val = [data.train[i] for i in rows.train], [data.train[i] for i in rows.val]
        # One stratum, as for the runs: the shares are of records.
        train_rank, val_rank = labelled_order(np.zeros(len(train)), seed), labelled_order(np.zeros(len(val)), seed + 1)
        for fraction in fractions:
            labelled = labelled_mask(np.zeros(len(train)), train_rank, fraction)
            val_seen = [example.record for example, seen in zip(val, labelled_mask(np.zeros(len(val)), val_rank, fraction)) if seen]
            training = LMData(tokenizer, train, val_seen, options, accelerator, teacher, None if fraction >= 1 else labelled.tolist())
            for name, method in methods.items():
                state = new_state(name, method, lambda: new_student(config.student, tokenizer, seed), seed, device=device)
                fit([state], training)
                scores = evaluate_generative_student(
                    state.model, tokenizer, data.test, config.data.task, config.evaluation.batch_size, config.evaluation.max_new_tokens,
                    config.evaluation.rationales, _generator(accelerator), max_prompt_tokens=config.training.max_prompt_tokens,
                )
                where = f"{name}, run {run}" + ("" if fraction >= 1 else f", labelled {fraction:g}")
                if state.diverged:
                    warnings.append(f"{where}: diverged ({state.diverged})")
                runs[fraction][name].append(
                    {"run": run, "seed": seed, "n_train": len(train), "n_labelled": int(labelled.sum()), "n_val": len(val_seen),
                     "n_test": len(data.test), "validation_loss": state.best_val_loss, "epochs": state.epoch,
                     "train_seconds": state.seconds, "test": scores, "history": state.history}
                )
                if say is not None:
                    shown = ", ".join(f"{metric} {value:.3f}" for metric, value in scores.items())
                    say(f"{where}: validation loss {state.best_val_loss:.4f}, {shown} ({state.seconds:.1f} s)")
                if fraction == fractions[-1] and state.best_val_loss < chosen["validation_loss"]:
                    chosen = {"method": name, "run": run, "seed": seed, "validation_loss": state.best_val_loss}
                    chosen_model = state.model.to("cpu")
                del state
    if chosen_model is None:
        raise StepDistillError("no student reached a finite validation loss; lower training.lr")
    by_fraction = {
        fraction: _results(config, data, methods, runs[fraction], fraction, compare_with, chosen, warnings, str(device)) for fraction in fractions
    }
    manifest = {
        "kind": LM_STUDENT_KIND,
        "task": config.data.task,
        "prompts": (
            {"label": "predict: <input>\n", "rationale": "explain: <input>\n"}
            if chosen_model.config.is_encoder_decoder
            else {"label": "<input>\npredict:\n", "rationale": "<input>\nexplain:\n"}
        ),
        "generation": {"max_new_tokens": config.evaluation.max_new_tokens, "max_prompt_tokens": config.training.max_prompt_tokens},
        "chosen": chosen,
        "student": config.student.model_dump(mode="json"),
        "date": by_fraction[fractions[-1]]["date"],
    }
    return LMExperiment(by_fraction, chosen_model, tokenizer, manifest)


def _token_teacher(teacher: LMTokenTeacherConfig, tokenizer, student: LMStudentConfig, device):
    from stepdistill.engines.lm import TokenTeacher
    from stepdistill.terms import Rationale, SoftTarget

    model = token_teacher_model(teacher, tokenizer, student, device)
    return TokenTeacher(model, teacher.temperature, (SoftTarget, Rationale) if teacher.rationale else (SoftTarget,))


def _without_library_progress_bars() -> None:
    """Silence transformers' own bars (loading and saving weights): lm-train speaks in lines of
    its own (``say``), and ``--quiet`` means quiet."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def _generator(accelerator) -> Callable[..., list[str]]:
    """``lm_eval.generate`` with its batches dealt to the processes and the texts gathered back in
    order on every one (each batch is the one a single process generates)."""
    from stepdistill.engines.processes import map_across
    from stepdistill.lm.evaluate import generate

    def generate_across(model, tokenizer, records, task, batch_size, max_new_tokens, *, max_prompt_tokens) -> list[str]:
        batches = [records[start : start + batch_size] for start in range(0, len(records), batch_size)]
        return map_across(
            accelerator, lambda batch: generate(model, tokenizer, batch, task, batch_size, max_new_tokens, max_prompt_tokens=max_prompt_tokens), batches
        )

    return generate_across


def _results(
    config, data: LMDataset, methods: dict[str, Method], runs: dict[str, list[dict]], fraction: float, control: str, chosen, warnings, device
) -> dict:
    """The results dict at one labelled fraction, in the layout of the tabular experiment's
    where they meet (``methods.*.test``, ``control``, ``vs_control``, ``teacher.test``,
    ``evaluation``), so that the ablation and sweep reports read both: per method its test
    metrics over runs, validation losses and comparison with ``control`` (corrected resampled
    t-test over runs, Holm over the table)."""
    entries = {}
    for name, method in methods.items():
        method_runs = runs[name]
        metrics = method_runs[0]["test"].keys()
        entries[name] = {
            "method": method.describe(),
            "test": {metric: summarize([r["test"][metric] for r in method_runs]) for metric in metrics},
            "validation_loss": summarize([r["validation_loss"] for r in method_runs]),
            "train_seconds": summarize([r["train_seconds"] for r in method_runs]),
            "control": None if name == control else control,
            "runs": method_runs,
        }
    _compare_with_control(entries, runs, control)
    return {
        "task": config.data.task,
        "records": {"train_and_validation": len(data.train), "test": len(data.test)},
        "teacher": {"kind": "llm outputs", "refit": False, "test": {COMPARED: summarize([data.teacher_test_accuracy()])}},
        "methods": entries,
        "chosen": chosen,
        "evaluation": {
            "scheme": "fixed test split",
            "runs": config.evaluation.repeats,
            "runs_vary": "each run its own train/validation carve and seed, the test split fixed",
            "labelled_fraction": fraction,
            "test": TEST_NAME,
            "compared": [COMPARED],
            "control": control,
            "confidence": stats.CONFIDENCE,
            "correction": "holm",
        },
        "warnings": warnings,
        "config": config.model_dump(mode="json"),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}, torch {torch.__version__}, {device}",
    }


TEST_NAME = "corrected resampled t-test over runs (Nadeau & Bengio 2003)"


def _compare_with_control(entries: dict, runs: dict[str, list[dict]], control: str) -> None:
    """Fill each method's ``vs_control`` (its test label accuracy against ``control``'s), Holm
    over the table."""
    others = [name for name in entries if name != control]
    pending = []
    for name in others:
        # The test split is fixed while the training records vary: the correction's n_test / n_train.
        ratio = float(np.mean([r["n_test"] / r["n_train"] for r in runs[name]]))
        values = [r["test"][COMPARED] for r in runs[name]]
        reference = [r["test"][COMPARED] for r in runs[control]]
        pending.append(stats.corrected_paired_t(values, reference, ratio))
    for name, comparison in zip(others, stats.holm(pending)):
        entries[name]["vs_control"] = {COMPARED: comparison}


# --- writing ---------------------------------------------------------------------------------


def render_lm_markdown(results: dict) -> str:
    """report.md: the setup, one row per method (test metrics mean ± std over runs, validation
    loss, the comparison with its control), the teacher's accuracy, warnings."""
    from stepdistill.report.markdown import markdown_table
    from stepdistill.report.results import format_mean_std

    config, methods = results["config"], results["methods"]
    runs = len(next(iter(methods.values()))["runs"])
    control = results["evaluation"]["control"]
    headers = ["method", "test label accuracy", "rationale ROUGE-L", "validation loss", f"Δ accuracy vs {control} (points)", "train s", "notes"]
    rows = []
    for name, entry in methods.items():
        comparison = entry.get("vs_control", {}).get(COMPARED)
        notes = "chosen (lowest validation loss)" if results["chosen"].get("method") == name else ""
        rows.append(
            [
                name,
                format_mean_std(entry["test"]["label_accuracy"]),
                format_mean_std(entry["test"].get("rationale_rouge_l")),
                format_mean_std(entry["validation_loss"]),
                _comparison_cell(comparison),
                f"{entry['train_seconds']['mean']:.1f}",
                notes,
            ]
        )
    student = config["student"]["model"] or (f"tiny {config['student']['tiny']}" if config["student"]["tiny"] else "SmolLM2-135M-Instruct")
    evaluation = results["evaluation"]
    fraction = "" if evaluation["labelled_fraction"] >= 1 else f"; students see the human labels of {evaluation['labelled_fraction']:g} of them"
    lines = [
        f"# Generative students on {results['task']}",
        "",
        (
            f"- student: {student}; {results['records']['train_and_validation']} training records (each run holds out "
            f"{config['evaluation']['val_fraction']:g} for validation){fraction}, {results['records']['test']} test records; {runs} runs"
        ),
        f"- recipe (every method): {config['training']}",
        f"- teacher's test label accuracy: {results['teacher']['test'][COMPARED]['mean']:.3f}",
        f"- comparison: {COMPARED} of each method against {control}, paired by run: {evaluation['test']}, Holm over the table; {SIGNIFICANT_MARK} significant after Holm",
        "",
        *markdown_table(headers, rows),
        "",
        *[f"- warning: {warning}" for warning in results["warnings"]],
        f"{results['date']}, {results['machine']}",
        "",
    ]
    return "\n".join(lines)


def _comparison_cell(comparison: dict | None) -> str:
    """The difference from the control in points, its interval and verdict; empty for the control."""
    from stepdistill.report.results import format_comparison

    if comparison is None:
        return ""
    cell = format_comparison("accuracy", comparison)
    # Untested verdicts ("too few repeats", "no spread") are already in the cell.
    return cell if comparison["verdict"] in cell else f"{cell} ({comparison['verdict']})"


def write_lm_results(results: dict, out_dir: Path) -> list[Path]:
    """results.json and report.md of an lm-train experiment into ``out_dir``."""
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, allow_nan=True))
    (out_dir / "report.md").write_text(render_lm_markdown(results))
    return [out_dir / "results.json", out_dir / "report.md"]


def write_lm_experiment(out_dir: Path, experiment: LMExperiment) -> list[Path]:
    """results.json, report.md and student/ (``save_pretrained`` model and tokenizer, and
    manifest.json) into ``out_dir``, all of them or, on an error, none. With several processes
    the main one writes, the others wait until it has, and all return the paths."""
    from accelerate import PartialState

    from stepdistill.report.staged import write_staged

    def write(staging: Path) -> list[str]:
        write_lm_results(experiment.results, staging)
        experiment.student.save_pretrained(staging / "student")
        experiment.tokenizer.save_pretrained(staging / "student")
        (staging / "student" / LM_MANIFEST).write_text(json.dumps(experiment.manifest, indent=2))
        return list(LM_RUN_FILES)

    processes = PartialState()
    processes.wait_for_everyone()
    if processes.is_main_process:
        write_staged(out_dir, write)
    processes.wait_for_everyone()
    return [out_dir / name for name in LM_RUN_FILES]
