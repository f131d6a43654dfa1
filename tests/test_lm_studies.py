"""ablate and sweep-data take lm-train configs: generative students under the studies' shared
variants, summaries and reports; tiny random Llama students with the SmolLM2 tokenizer on the
released CommonsenseQA records."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from stepdistill.cli import app
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.lm import DistillationRecord, LMData, LMOptions
from stepdistill.experiment.lm import load_lm_data
from stepdistill.lm.config import LMTrainConfig
from stepdistill.lm.models import new_student, student_tokenizer
from stepdistill.studies import LM_REMOVALS, ablation_config
from stepdistill.terms import build_method

# lm-train reads SmolLM2's tokenizer: converted once for the whole run, before these tests.
pytestmark = pytest.mark.usefixtures("smollm2")
runner = CliRunner()
TINY = {"tiny": {"hidden": 16, "layers": 1}}
TRAINING = {"lr": 0.003, "epochs": 2, "batch_size": 4, "max_target_tokens": 24}


def write_config(path: Path, **sections) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "data": {"task": "cqa", "max_train_records": 16, "max_test_records": 6},
                "student": TINY,
                "training": TRAINING,
                "evaluation": {"max_new_tokens": 8, "rationales": False},
                **sections,
            }
        )
    )
    return path


def test_the_lm_ablation_removes_what_generative_students_train():
    config = LMTrainConfig.model_validate({"student": TINY})
    variants = ablation_config(config).methods
    assert list(variants) == ["full", *LM_REMOVALS, "baseline", "traditional", "step_by_step"]
    assert variants["no_weight_ramp"]["ramp_epochs"] == 0 and variants["no_rationale"]["beta"] == 0
    # Every variant is a method a generative student can train (no consistency, no curriculum).
    ablation_config(config).check()


def test_ablate_takes_an_lm_train_config(tmp_path, dsbs_dir):
    config = write_config(tmp_path / "lm.yaml")
    out = tmp_path / "out"
    result = runner.invoke(app, ["--quiet", "ablate", str(config), "--repeats", "2", "--out", str(out), "--data-dir", str(dsbs_dir)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "ablation.html", "ablation.json", "ablation.md", "ablation.png", "history.png", "metrics.png", "report.html", "report.md", "results.json",
        "splits.json", "test_predictions.csv",
    ]
    ablation = json.loads((out / "ablation.json").read_text())
    assert list(ablation) == ["full", "no_weight_ramp", "no_rationale", "baseline", "traditional", "step_by_step"]
    assert ablation["no_rationale"]["vs_full"]["label_accuracy"]["verdict"] == "too few repeats"
    results = json.loads((out / "results.json").read_text())
    assert results["evaluation"]["runs"] == 2
    assert {entry["control"] for name, entry in results["methods"].items() if name != "full"} == {"full"}
    losses = {
        name: [[(epoch["train_loss"], epoch["val_loss"], epoch["terms"]) for epoch in history] for history in entry["history"]]
        for name, entry in results["methods"].items()
    }
    # Same runs, seeds and recipe for every variant: full without its rationale (alpha 0, beta 0)
    # is the traditional method, and full without its ramp the step-by-step one, loss for loss.
    for removal, same in (("no_rationale", "traditional"), ("no_weight_ramp", "step_by_step")):
        assert losses[removal] == losses[same]
    assert losses["full"] != losses["step_by_step"]  # the ramp changes training
    assert "Ablation of the enhanced method" in (out / "ablation.md").read_text()
    assert "| full |" in (out / "report.md").read_text()


def test_sweep_data_takes_an_lm_train_config(tmp_path, dsbs_dir):
    config = write_config(tmp_path / "lm.yaml", methods={"baseline": {}, "traditional": {"alpha": 0}})
    out = tmp_path / "out"
    args = ["--quiet", "sweep-data", str(config), "--fractions", "0.25,1", "--repeats", "2", "--out", str(out), "--data-dir", str(dsbs_dir)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["splits.json", "sweep.html", "sweep.json", "sweep.md", "sweep.png", "test_predictions.csv"]
    sweep = json.loads((out / "sweep.json").read_text())
    assert list(sweep) == ["teacher", "baseline", "traditional"] and list(sweep["baseline"]) == ["0.25", "1"]
    assert sweep["traditional"]["0.25"]["vs_control"]["label_accuracy"]["verdict"] == "too few repeats"
    assert "Test label accuracy (mean ± std over runs)" in (out / "sweep.md").read_text()


@pytest.fixture(scope="module")
def records(dsbs_dir):
    config = LMTrainConfig.model_validate(
        {"data": {"task": "cqa", "data_dir": str(dsbs_dir), "max_train_records": 12, "max_test_records": 1}, "student": TINY}
    )
    return config, load_lm_data(config.data)


def _trained(config, tokenizer, train, val, labelled, method_name, overrides):
    method = build_method(method_name, {**overrides, "lr": 0.003, "epochs": 2, "batch_size": 4, "early_stopping_patience": None})
    state = new_state(method_name, method, lambda: new_student(config.student, tokenizer, seed=0), seed=0)
    fit([state], LMData(tokenizer, train, val, LMOptions(max_target_tokens=24), labelled=labelled))
    return state


def test_hidden_human_labels_never_reach_training(records):
    """At a labelled fraction, the hard term trains on the labelled records only: rewriting the
    other records' human labels changes no loss of any method, while the teacher's targets serve
    on every record."""
    config, data = records
    tokenizer = student_tokenizer(config.student)
    train, val = data.train[:10], [example.record for example in data.train[10:]]
    labelled = [True, False] * 5

    def hidden_rewritten(example: DistillationRecord) -> DistillationRecord:
        return dataclasses.replace(example, record=dataclasses.replace(example.record, label="a label nobody may read"))

    rewritten = [example if seen else hidden_rewritten(example) for example, seen in zip(train, labelled)]
    for name, overrides in (("baseline", {}), ("traditional", {"alpha": 0.5})):
        states = [_trained(config, tokenizer, records_, val, labelled, name, overrides) for records_ in (train, rewritten)]
        assert states[0].history == states[1].history
        for before, after in zip(states[0].model.parameters(), states[1].model.parameters()):
            torch.testing.assert_close(before, after)
    # With every label visible, the rewritten labels are read, and training changes.
    assert _trained(config, tokenizer, train, val, None, "baseline", {}).history != _trained(config, tokenizer, rewritten, val, None, "baseline", {}).history


def test_a_terms_epoch_value_is_its_mean_over_tokens_whatever_the_batches(records):
    """With weights that do not move (a learning rate of 1e-12), a term's epoch value is the mean
    of its token losses: the same from one batch of every record as from batches of two, some of
    which hold no labelled record (they add nothing to the hard term, not a zero)."""
    config, data = records
    tokenizer = student_tokenizer(config.student)
    train, val = data.train[:10], [example.record for example in data.train[10:]]
    labelled = [True, False, False, False, True, False, False, False, True, False]

    def epoch_terms(batch_size: int) -> dict:
        method = build_method("traditional", {"alpha": 0.5, "lr": 1e-12, "epochs": 1, "batch_size": batch_size, "early_stopping_patience": None})
        state = new_state("traditional", method, lambda: new_student(config.student, tokenizer, seed=0), seed=0)
        fit([state], LMData(tokenizer, train, val, LMOptions(max_target_tokens=24), labelled=labelled))
        return {name: term["raw"] for name, term in state.history[0]["terms"].items()}

    whole, in_pairs = epoch_terms(10), epoch_terms(2)
    assert set(whole) == {"hard", "soft"}
    for name in whole:
        assert in_pairs[name] == pytest.approx(whole[name], rel=1e-4), name
