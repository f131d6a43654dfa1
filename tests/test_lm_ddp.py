"""lm-train in several processes (accelerate launch, DDP over gloo) gives one process's results and
writes each file once; ``stepdistill predict`` reads an lm-train run. Released CommonsenseQA
records, tiny random Llama students with the SmolLM2 tokenizer."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import one_error_line
from typer.testing import CliRunner

from stepdistill.cli import app
from stepdistill.lm.evaluate import answer_of
from stepdistill.lm.prompts import LMRecord

N_TEST = 6
# 16 records: 13 train in batches of 4, 4, 4, 1 (the last leaves the second process without a
# record), 3 validation; two batches per optimizer step.
CONFIG = {
    "data": {"task": "cqa", "max_train_records": 16, "max_test_records": N_TEST},
    "student": {"tiny": {"hidden": 16, "layers": 1}},
    "methods": {"baseline": {}, "step_by_step": {"alpha": 0.0, "beta": 0.5}},
    "training": {"lr": 0.003, "epochs": 2, "batch_size": 4, "grad_accumulation": 2, "max_target_tokens": 24},
    "evaluation": {"repeats": 1, "max_new_tokens": 8, "rationales": False},
}
# Several processes add up the same numbers in another order: float32 rounding, far below this.
RELATIVE_TOLERANCE = 1e-3
RUN_FILES = {"results.json", "report.md", "report.html", "history.png", "metrics.png", "student", "test_predictions.csv", "splits.json"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def lm_train_arguments(config: Path, out: Path, data_dir: Path) -> list[str]:
    return ["--quiet", "lm-train", str(config), "--out", str(out), "--data-dir", str(data_dir)]


def launch_lm_train(config: Path, out: Path, data_dir: Path, processes: int) -> subprocess.CompletedProcess:
    """``stepdistill lm-train`` in ``processes`` processes started by ``accelerate launch``, on the
    CPU (STEPDISTILL_DEVICE=cpu: gloo), one thread each. (``--multi_gpu`` names accelerate's
    launcher of several processes; ``--cpu`` would start one.)"""
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()), "-m", "stepdistill",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STEPDISTILL_DEVICE": "cpu"}
    return subprocess.run(launch + lm_train_arguments(config, out, data_dir), check=False, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dsbs_dir, smollm2):
    """``{processes: run directory}``: the same lm-train in this process, and in two launched ones
    (which start after SmolLM2, whose tokenizer they read, is converted: ``smollm2``)."""
    root = tmp_path_factory.mktemp("lm_ddp")
    config = root / "lm.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    directories = {processes: root / f"processes_{processes}" for processes in (1, 2)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEPDISTILL_DEVICE", "cpu")
        alone = CliRunner().invoke(app, lm_train_arguments(config, directories[1], dsbs_dir))
    assert alone.exit_code == 0, alone.output
    launched = launch_lm_train(config, directories[2], dsbs_dir, processes=2)
    assert launched.returncode == 0, launched.stderr[-3000:]
    return directories


def test_two_processes_reproduce_one_and_write_each_file_once(runs):
    one, two = (json.loads((runs[n] / "results.json").read_text()) for n in (1, 2))
    for name in CONFIG["methods"]:
        history_one, history_two = one["methods"][name]["history"][0], two["methods"][name]["history"][0]
        assert len(history_one) == len(history_two) == 2
        for epoch_one, epoch_two in zip(history_one, history_two, strict=True):
            assert epoch_two["weights"] == epoch_one["weights"]
            assert epoch_two["val_loss"] == pytest.approx(epoch_one["val_loss"], rel=RELATIVE_TOLERANCE)
            for term, values in epoch_one["terms"].items():
                assert epoch_two["terms"][term]["raw"] == pytest.approx(values["raw"], rel=RELATIVE_TOLERANCE)
        # Greedy generations of (nearly) the same weights: at most one test record apart.
        accuracy_one, accuracy_two = (results["methods"][name]["test"]["label_accuracy"]["values"][0] for results in (one, two))
        assert abs(accuracy_two - accuracy_one) <= 1 / N_TEST
    assert two["chosen"]["method"] == one["chosen"]["method"]
    for directory in runs.values():
        assert {path.name for path in directory.iterdir()} == RUN_FILES
    # No second copy, and no staging directory left behind by a process that also tried to write.
    assert sorted(path.name for path in runs[2].parent.iterdir()) == ["lm.yaml", "processes_1", "processes_2"]


def test_predict_writes_the_students_generations_for_new_records(runs, tmp_path, dsbs_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from stepdistill.data.llm_outputs import read_dsbs
    from stepdistill.lm.evaluate import generate
    from stepdistill.lm.prompts import LABEL_TASK, lm_records

    frame, outputs = read_dsbs(dsbs_dir, "cqa", "test")
    frame = frame.head(N_TEST)
    new = tmp_path / "new.jsonl"
    frame[["id", "question", "choices"]].to_json(new, orient="records", lines=True)
    out = tmp_path / "predictions.csv"
    # transformers' bars on, as in a process of its own (lm-train, run in this one, turned them off).
    transformers_logging.enable_progress_bar()
    try:
        result = CliRunner().invoke(app, ["predict", str(runs[1]), str(new), "--rationale", "--out", str(out)])
    finally:
        transformers_logging.disable_progress_bar()
    assert result.exit_code == 0, result.output
    assert result.stderr == f"wrote {N_TEST} predictions to {out}\n"  # its own line: no bar of the model's loading
    predictions = pd.read_csv(out, keep_default_na=False)
    assert list(predictions.columns) == ["id", "prediction", "generated", "rationale"]
    assert list(predictions["id"]) == list(frame["id"])
    # The prompts are the training prompts: the generations are those the test split was scored on.
    student = AutoModelForCausalLM.from_pretrained(runs[1] / "student")
    records, _ = lm_records(frame, outputs, "cqa")
    expected = generate(student, AutoTokenizer.from_pretrained(runs[1] / "student"), records, LABEL_TASK, max_new_tokens=8, max_prompt_tokens=512)
    assert list(predictions["generated"]) == expected

    # A question longer than the student's prompt budget (512 tokens) is predicted cut, and said so.
    long = frame.head(2).assign(question=lambda f: [q + " and" * 600 if i == 0 else q for i, q in enumerate(f["question"])])
    long[["id", "question", "choices"]].to_json(new, orient="records", lines=True)
    result = CliRunner().invoke(app, ["predict", str(runs[1]), str(new)])
    assert result.exit_code == 0, result.output
    assert result.stderr == "warning: 1 of 2 rows have an input longer than the student's 512-token prompt budget, predicted from it cut\n"

    missing = tmp_path / "missing.csv"
    frame[["id", "question"]].to_csv(missing, index=False)
    refused = CliRunner().invoke(app, ["predict", str(runs[1]), str(missing)])
    assert "lacks column(s) choices" in one_error_line(refused)


@pytest.mark.parametrize(
    ("task", "generated", "choices", "expected"),
    [
        ("cqa", "(b)", ("fridge", "oven"), "oven"),
        ("cqa", "Fridge.", ("fridge", "oven"), "fridge"),
        ("cqa", "the moon", ("fridge", "oven"), None),
        ("esnli", "Neutral", (), "neutral"),
        ("svamp", "( 84.0 / 2.0 )", (), "42"),
        ("svamp", "many", (), None),
    ],
)
def test_an_answer_is_the_label_a_generation_names(task, generated, choices, expected):
    assert answer_of(task, generated, LMRecord("0", "", "", "", choices)) == expected
