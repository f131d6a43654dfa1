"""lm-train: generative students trained under the methods' own terms, schedules and balancers, on
the released CommonsenseQA records with PaLM's labels and rationales; tiny random Llama students
with the SmolLM2 tokenizer."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import one_error_line, raises_one_line
from typer.testing import CliRunner

from stepdistill.cli import app
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.lm import LMData, LMOptions
from stepdistill.experiment.lm import LMTrack, load_lm_data
from stepdistill.experiment.loop import run_fractions
from stepdistill.lm.config import LMTrainConfig
from stepdistill.lm.models import new_student, student_tokenizer
from stepdistill.terms import build_method
from stepdistill.weights import LinearRamp

# lm-train reads SmolLM2's tokenizer: converted once for the whole run, before these tests.
pytestmark = pytest.mark.usefixtures("smollm2")
runner = CliRunner()
TINY = {"tiny": {"hidden": 16, "layers": 1}}
# Small enough for seconds on one thread: short targets, a few tokens generated.
TRAINING = {"lr": 0.003, "epochs": 2, "batch_size": 4, "max_target_tokens": 24}


def lm_config(data_dir: Path, **sections) -> LMTrainConfig:
    return LMTrainConfig.model_validate(
        {
            "data": {"task": "cqa", "data_dir": str(data_dir), "max_train_records": 16, "max_test_records": 6},
            "student": TINY,
            "training": TRAINING,
            "evaluation": {"repeats": 1, "max_new_tokens": 8, "rationales": False},
            **sections,
        }
    )


@pytest.fixture(scope="module")
def config(dsbs_dir):
    return lm_config(dsbs_dir)


@pytest.fixture(scope="module")
def data(config):
    return load_lm_data(config.data)


@pytest.fixture(scope="module")
def tokenizer(config):
    """SmolLM2's tokenizer, as lm-train finds it (the default model, converted by ``smollm2``)."""
    return student_tokenizer(config.student)


def _run(config, data):
    """lm-train's experiment of ``config`` on the records ``data``."""
    track = LMTrack(config)
    track.data = data
    return run_fractions(track, [1.0])


def _train(method, config, data, tokenizer):
    """A tiny student of ``method`` trained on 8 records, validated on 2."""
    state = new_state(method.name, method, lambda: new_student(config.student, tokenizer, seed=0), seed=0)
    fit([state], LMData(tokenizer, data.train[:8], [example.record for example in data.train[8:10]], LMOptions(max_target_tokens=24)))
    return state


def test_weights_follow_the_methods_schedule_epoch_by_epoch(config, data, tokenizer):
    method = build_method(
        "enhanced",
        {"alpha": 0.0, "beta": 0.5, "ramp_epochs": 2, "consistency": 0.0, "lr": 0.003, "epochs": 3, "batch_size": 4,
         "early_stopping_patience": None},
    )
    rationale = next(t for t in method.terms if t.name == "rationale")
    assert rationale.weight == LinearRamp(0.5, 2)
    state = _train(method, config, data, tokenizer)
    weights = [epoch["weights"] for epoch in state.history]
    assert [w["rationale"] for w in weights] == [0.0, 0.25, 0.5]  # the linear ramp b(t) = 0.5 * min(1, t / 2)
    assert [w["soft"] for w in weights] == [1.0, 0.75, 0.5]  # the remainder 1 - a - b(t)
    assert [w["hard"] for w in weights] == [0.0, 0.0, 0.0]
    # Terms weighted 0 take no part; the others enter the loss with their weights.
    assert [sorted(epoch["terms"]) for epoch in state.history] == [["soft"], ["rationale", "soft"], ["rationale", "soft"]]
    for epoch in state.history:
        assert epoch["train_loss"] == pytest.approx(sum(w * epoch["terms"][name]["raw"] for name, w in epoch["weights"].items() if name in epoch["terms"]))


def test_lm_train_writes_results_report_and_a_loadable_student(tmp_path, dsbs_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = tmp_path / "lm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"task": "cqa", "max_train_records": 20, "max_test_records": 6},
                "student": TINY,
                "training": {**TRAINING, "epochs": 1},
                "evaluation": {"repeats": 2, "max_new_tokens": 8},
            }
        )
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["--quiet", "lm-train", str(config), "--out", str(out), "--data-dir", str(dsbs_dir)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == ["baseline", "traditional", "step_by_step", "enhanced"]
    for name, entry in results["methods"].items():
        assert len(entry["test"]["label_accuracy"]["values"]) == 2 and len(entry["history"]) == 2
        assert 0 <= entry["test"]["rationale_rouge_l"]["mean"] <= 1
        if name != "baseline":
            assert entry["vs_control"]["label_accuracy"]["verdict"] == "too few repeats"
    assert 0 <= results["teacher"]["test"]["label_accuracy"]["mean"] <= 1
    report = (out / "report.md").read_text()
    assert "| step_by_step |" in report and "chosen (validation)" in report
    manifest = json.loads((out / "student" / "manifest.json").read_text())
    assert manifest["chosen"]["method"] in results["methods"]
    student = AutoModelForCausalLM.from_pretrained(out / "student")
    assert student.config.hidden_size == 16 and len(AutoTokenizer.from_pretrained(out / "student")) == student.config.vocab_size


def test_a_method_with_consistency_is_refused_in_one_line(tmp_path):
    config = tmp_path / "lm.yaml"
    config.write_text(yaml.safe_dump({"student": TINY, "methods": {"baseline": {}, "enhanced": {"alpha": 0}}}))
    out = tmp_path / "out"
    result = runner.invoke(app, ["lm-train", str(config), "--out", str(out)])
    assert "consistency: 0 for enhanced" in one_error_line(result, alone=True) and result.stdout == ""
    assert not out.exists()


def test_the_test_split_never_reaches_training_or_early_stopping(data, tokenizer, dsbs_dir):
    config = lm_config(dsbs_dir, methods={"baseline": {}, "step_by_step": {"alpha": 0, "beta": 0.5}})
    shuffled_labels = [record.label for record in data.test][1:] + [data.test[0].label]
    shuffled = dataclasses.replace(data, test=[dataclasses.replace(r, label=label) for r, label in zip(data.test, shuffled_labels)])
    first, second = _run(config, data), _run(config, shuffled)
    for name in config.methods:
        # Every training and validation loss.
        assert first.results["methods"][name]["history"] == second.results["methods"][name]["history"]
    # The test labels did reach the test metrics: the teacher is scored against them.
    assert first.results["teacher"]["test"]["label_accuracy"]["mean"] != second.results["teacher"]["test"]["label_accuracy"]["mean"]


def test_a_balancer_rescales_the_scheduled_weights_as_in_the_tabular_engines(config, data, tokenizer):
    from stepdistill.balancers import DynamicWeightAverage

    method = build_method(
        "traditional", {"alpha": 0.5, "balancer": {"kind": "dwa"}, "lr": 0.003, "epochs": 3, "batch_size": 4, "early_stopping_patience": None}
    )
    state = _train(method, config, data, tokenizer)
    expected = DynamicWeightAverage()
    for epoch in state.history:
        assert epoch["weights"] == pytest.approx(expected.weights({"hard": 0.5, "soft": 0.5}))
        expected.observe_epoch({name: term["raw"] for name, term in epoch["terms"].items()})
    assert state.history[2]["weights"]["hard"] != 0.5  # DWA moved them once two epochs were seen


def test_token_distillation_compares_the_students_tokens_with_the_teachers(config, data, tokenizer):
    """The soft term under a TokenTeacher is the per-token KL to the teacher on the same targets:
    0 when the teacher is the student itself, while the hard term stays a cross-entropy."""
    from stepdistill.engines.lm import DistillationRecord, TermTokenSums, TokenTeacher, term_batch, term_item
    from stepdistill.engines.lm_batching import MultiTaskCollator

    method = build_method("traditional", {"alpha": 0.5})
    student = new_student(config.student, tokenizer, seed=0).eval()
    collator = MultiTaskCollator(tokenizer, False)
    items = [(*term_item(term.objective, example), j) for example in data.train[:4] for j, term in enumerate(method.terms)]
    batch = term_batch(collator, items)
    soft = next(j for j, term in enumerate(method.terms) if term.name == "soft")
    with torch.no_grad():
        sums, counts = TermTokenSums(student, len(method.terms), TokenTeacher(student, 2.0), [soft])(batch)
        plain, _ = TermTokenSums(student, len(method.terms))(batch)
    assert counts[soft] > 0 and sums[soft].abs() < 1e-4 and plain[soft] > 1
    hard = next(j for j, term in enumerate(method.terms) if term.name == "hard")
    assert sums[hard] == pytest.approx(plain[hard].item())
    assert isinstance(data.train[0], DistillationRecord)


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor in the safetensors files of the model directory ``directory``."""
    from safetensors.torch import load_file

    return {name: tensor for path in sorted(directory.glob("*.safetensors")) for name, tensor in load_file(path).items()}


def test_lm_train_with_a_token_teacher_and_one_with_another_vocabulary(tmp_path, tokenizer, dsbs_dir):
    from stepdistill.lm.config import LMStudentConfig, TinyStudent
    from stepdistill.text.encoders import bundled_model_directory

    teacher_dir = tmp_path / "teacher"
    new_student(LMStudentConfig(tiny=TinyStudent(hidden=16, layers=1)), tokenizer, seed=7).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    teacher_weights = _weights(teacher_dir)
    base = {
        "data": {"task": "cqa", "data_dir": str(dsbs_dir), "max_train_records": 12, "max_test_records": 4},
        "student": TINY,
        "methods": {"baseline": {}, "traditional": {"alpha": 0.0}},
        "training": {**TRAINING, "epochs": 1},
        "evaluation": {"repeats": 1, "max_new_tokens": 4, "rationales": False},
    }
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump({**base, "teacher": {"model": "teacher", "temperature": 2.0}}))
    result = runner.invoke(app, ["--quiet", "lm-train", str(tmp_path / "kd.yaml"), "--out", str(tmp_path / "kd")])
    assert result.exit_code == 0, result.output
    methods = json.loads((tmp_path / "kd" / "results.json").read_text())["methods"]
    soft = methods["traditional"]["history"][0][0]["terms"]["soft"]["raw"]
    cross_entropy = methods["baseline"]["history"][0][0]["terms"]["hard"]["raw"]
    # The soft term is T^2 times the KL to the teacher per target token: above 0 (the teacher is
    # another random model), and far below a cross-entropy over SmolLM2's 49,152 tokens (about
    # ln 49,152 = 10.8, as the baseline's hard term), which it would be were the teacher ignored.
    assert 0 < soft < cross_entropy / 100
    after = _weights(teacher_dir)  # the teacher is left as it was, tensor for tensor
    assert teacher_weights and after.keys() == teacher_weights.keys()
    assert all(torch.equal(after[name], tensor) for name, tensor in teacher_weights.items())
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({**base, "teacher": {"model": str(bundled_model_directory())}}))
    refused = runner.invoke(app, ["--quiet", "lm-train", str(tmp_path / "other.yaml"), "--out", str(tmp_path / "other")])
    message = one_error_line(refused, alone=True)
    assert "tokenizer" in message and "differ" in message and not (tmp_path / "other").exists()


def test_inputs_and_targets_cut_to_the_token_budgets_are_counted_or_refused(dsbs_dir, tokenizer):
    """A 24-token prompt budget cuts most CommonsenseQA questions with their five choices, a
    16-token target budget most of PaLM's rationales: each cut is counted in a warning, or, with
    data.long_texts: refuse, refused in one line before any training."""
    from stepdistill.lm.prompts import input_cut, target_cut

    config = lm_config(dsbs_dir, training={**TRAINING, "epochs": 1, "max_prompt_tokens": 24, "max_target_tokens": 16}, methods={"baseline": {}})
    track = LMTrack(config)
    experiment = run_fractions(track, [1.0])
    cut_inputs = sum(input_cut(tokenizer, example.record, False, 24) for example in track.data.train)
    cut_test = sum(input_cut(tokenizer, record, False, 24) for record in track.data.test)
    assert 0 < cut_inputs <= len(track.data.train) and 0 < cut_test
    warnings = experiment.results["warnings"]
    assert f"{cut_inputs} of {len(track.data.train)} training and {cut_test} of {len(track.data.test)} test records have an input longer than training.max_prompt_tokens (24 tokens)" in warnings[-2]
    cut_targets = sum(target_cut(tokenizer, e.record.rationale, 16) + target_cut(tokenizer, e.record.label, 16) + target_cut(tokenizer, e.teacher_label, 16) for e in track.data.train)
    assert warnings[-1].startswith(f"{cut_targets} of the {3 * len(track.data.train)} labels and rationales")
    # A budget that fits everything says nothing.
    assert not any("token" in w for w in run_fractions(LMTrack(lm_config(dsbs_dir, methods={"baseline": {}}, training={**TRAINING, "epochs": 1, "max_target_tokens": 256})), [1.0]).results["warnings"])

    refusing = config.model_copy(update={"data": config.data.model_copy(update={"long_texts": "refuse"})})
    with raises_one_line("set data.long_texts: cut"):
        run_fractions(LMTrack(refusing), [1.0])
