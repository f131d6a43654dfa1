"""Text records with an LLM teacher, end to end: config, experiment, saved students, predict."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import one_error_line
from typer.testing import CliRunner

from stepdistill.cli import app
from stepdistill.config import ExperimentConfig
from stepdistill.data.llm_outputs import read_dsbs
from stepdistill.errors import StepDistillError
from stepdistill.experiment.tabular import run_tabular

METHODS = {
    "baseline": {},
    "traditional": {"alpha": 0.0, "temperature": 1.0},
    "step_by_step": {"alpha": 0.0, "beta": 0.5, "rationale_distance": "cosine", "temperature": 1.0},
}
runner = CliRunner()


def palm_accuracy(data_dir: Path, task: str, split: str, ids) -> float:
    """PaLM's label accuracy on records ``ids`` of a split, computed from the release directly.
    An unparsed answer is a wrong one (though it teaches the uniform distribution)."""
    frame, outputs = read_dsbs(data_dir, task, split)
    human = dict(zip(frame["id"], frame["label"]))
    return float(np.mean([outputs.answers[i].label == human[i] for i in ids]))


@pytest.fixture(scope="module")
def esnli_run(tmp_path_factory, tiny_sentence_model, dsbs_dir):
    """``stepdistill run`` on 300 e-SNLI validation records (train and validation carved from
    them) and 90 test records as a fixed test file, taught by PaLM's outputs."""
    directory = tmp_path_factory.mktemp("esnli")
    valid, _ = read_dsbs(dsbs_dir, "esnli", "valid")
    test, _ = read_dsbs(dsbs_dir, "esnli", "test")
    valid.iloc[:300].to_csv(directory / "train.csv", index=False)
    test.iloc[:90].to_json(directory / "test.jsonl", orient="records", lines=True)
    config = {
        "data": {"path": "train.csv", "test_path": "test.jsonl", "label": "label", "id_column": "id", "text": ["premise", "hypothesis"], "text_encoder": str(tiny_sentence_model)},
        "teacher": {"kind": "llm", "outputs": str(dsbs_dir), "format": "dsbs", "task": "esnli"},
        "student": {"kind": "mlp", "hidden": [16]},
        "methods": METHODS,
        "training": {"lr": 0.003, "epochs": 4},
        "evaluation": {"repeats": 2},
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(directory / "config.yaml"), "--out", str(directory / "out")])
    assert result.exit_code == 0, result.output
    return directory, json.loads((directory / "out" / "results.json").read_text()), test.iloc[:90]


def test_text_run_reports_the_teachers_accuracy_against_human_labels(esnli_run, dsbs_dir):
    directory, results, test = esnli_run
    assert set(results["methods"]) == set(METHODS)
    assert results["config"]["data"]["n_test"] == 90
    # 32 sentence features per text: [u, v, |u - v|, u * v].
    assert results["config"]["data"]["n_features"] == 4 * 32
    assert results["teacher"]["test"]["accuracy"]["mean"] == pytest.approx(palm_accuracy(dsbs_dir, "esnli", "test", test["id"]))
    _, outputs = read_dsbs(dsbs_dir, "esnli", "test")
    parsed = np.mean([outputs.answers[i].label is not None for i in test["id"]])
    assert results["teacher"]["test"]["coverage"]["mean"] == pytest.approx(parsed)
    accuracy_on = results["teacher"]["accuracy_on"]
    assert 0.5 < accuracy_on["train"] < 0.95 and 0.4 < accuracy_on["validation"] <= 1
    assert "Teacher accuracy against the human labels" in (directory / "out" / "report.md").read_text()


def test_a_text_student_predicts_from_text_and_exports_as_safetensors_only(esnli_run):
    directory, results, test = esnli_run
    # Hypotheses it has not embedded before: the sentence encoder loads, and shows no bar.
    rows = test.iloc[:7].assign(hypothesis=lambda frame: frame["hypothesis"] + " Really.")
    rows.to_csv(directory / "new.csv", index=False)
    result = runner.invoke(app, ["predict", str(directory / "out"), str(directory / "new.csv")])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # the predictions are on standard output
    predictions = pd.read_csv(pd.io.common.StringIO(result.stdout))
    assert list(predictions["id"]) == list(rows["id"])
    probabilities = predictions[[f"p_{c}" for c in results["config"]["data"]["classes"]]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-6)
    rows.drop(columns="hypothesis").to_csv(directory / "half.csv", index=False)
    missing = runner.invoke(app, ["predict", str(directory / "out"), str(directory / "half.csv")])
    assert "hypothesis" in one_error_line(missing)
    refused = runner.invoke(app, ["export", str(directory / "out"), "--format", "onnx"])
    assert "safetensors only" in one_error_line(refused)
    assert not (directory / "out" / "exports" / "student.onnx").exists()


@pytest.fixture(scope="module")
def esnli_jsonl(tmp_path_factory, dsbs_dir):
    """200 e-SNLI records and PaLM's outputs for them as generic JSONL."""
    directory = tmp_path_factory.mktemp("jsonl")
    frame, outputs = read_dsbs(dsbs_dir, "esnli", "valid")
    frame = frame.iloc[:200]
    frame.to_csv(directory / "data.csv", index=False)
    lines = [{"id": i, "label": outputs.answers[i].label, "rationale": outputs.answers[i].rationales} for i in frame["id"]]
    return directory, lines


def write_case(directory: Path, lines: list[dict], tiny_sentence_model, **teacher) -> Path:
    """The config of a run on the records in ``directory``'s data.csv, taught by ``lines`` as
    JSONL; ``teacher`` extends the teacher's settings."""
    with (directory / "teacher.jsonl").open("w") as file:
        file.writelines(json.dumps(line) + "\n" for line in lines)
    config = {
        "data": {"path": "data.csv", "label": "label", "id_column": "id", "text": ["premise", "hypothesis"], "text_encoder": str(tiny_sentence_model)},
        "teacher": {"kind": "llm", "outputs": "teacher.jsonl", **teacher},
        "student": {"kind": "mlp", "hidden": [8]},
        "training": {"lr": 0.01, "epochs": 1},
        "evaluation": {"repeats": 1},
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    return directory / "config.yaml"


@pytest.mark.parametrize(
    "break_it, says",
    [
        (lambda lines: lines[:-1], "lack 1 of 200 record ids"),
        (lambda lines: [{**lines[0], "label": "maybe"}, *lines[1:]], "teacher label 'maybe'"),
        (lambda lines: [{**lines[0], "rationale": ""}, *lines[1:]], "empty or missing rationale"),
        (
            lambda lines: [{**lines[0], "label": "Neutral "}, *lines[1:]],
            "teacher label 'Neutral ' of record 'valid-0' and the data's class 'neutral' differ only by case or surrounding spaces",
        ),
    ],
    ids=["missing record", "unknown label", "empty rationale", "label spelt with a capital and a space"],
)
def test_bad_teacher_outputs_are_one_line_errors_and_write_nothing(esnli_jsonl, tiny_sentence_model, tmp_path, break_it, says):
    directory, lines = esnli_jsonl
    (tmp_path / "data.csv").write_bytes((directory / "data.csv").read_bytes())
    config = write_case(tmp_path, break_it(lines), tiny_sentence_model)
    result = runner.invoke(app, ["--quiet", "run", str(config), "--out", str(tmp_path / "out")])
    assert says in one_error_line(result, alone=True)
    assert not (tmp_path / "out" / "results.json").exists()


def test_llm_outputs_for_records_the_data_lacks_are_named_in_a_warning_or_refused_when_strict(esnli_jsonl, tiny_sentence_model, tmp_path):
    directory, lines = esnli_jsonl
    (tmp_path / "data.csv").write_bytes((directory / "data.csv").read_bytes())
    elsewhere = [{**lines[0], "id": f"elsewhere-{i}"} for i in range(4)]
    refused = runner.invoke(app, ["--quiet", "run", str(write_case(tmp_path, lines + elsewhere, tiny_sentence_model, strict=True)), "--out", str(tmp_path / "out")])
    assert "holds outputs for 4 ids the data lacks (e.g. 'elsewhere-0', 'elsewhere-1', 'elsewhere-2'); drop them" in one_error_line(refused, alone=True)
    assert not (tmp_path / "out").exists()
    result = runner.invoke(app, ["--quiet", "run", str(write_case(tmp_path, lines + elsewhere, tiny_sentence_model)), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    warnings = json.loads((tmp_path / "out" / "results.json").read_text())["warnings"]
    assert f"the LLM teacher ({tmp_path / 'teacher.jsonl'}) holds outputs for 4 of its 204 ids that the data lacks (e.g. 'elsewhere-0', 'elsewhere-1', 'elsewhere-2'); they were ignored (teacher.strict: true refuses them)" in warnings


def test_multiple_choice_with_a_shared_scorer_and_palm_answers(tiny_sentence_model, tmp_path, dsbs_dir):
    """CommonsenseQA from JSONL through the CLI: classes are choice letters, PaLM's answers
    (choice texts) become letters, its accuracy is the release's, and the saved student predicts
    from a question and its choices."""
    train, _ = read_dsbs(dsbs_dir, "cqa", "train")
    frame = train.iloc[:200].reset_index(drop=True)
    frame.to_json(tmp_path / "cqa.jsonl", orient="records", lines=True)
    config = {
        "data": {"path": "cqa.jsonl", "label": "label", "id_column": "id", "text": "question", "choices": "choices", "text_encoder": str(tiny_sentence_model)},
        "teacher": {"kind": "llm", "outputs": str(dsbs_dir), "format": "dsbs", "task": "cqa"},
        "student": {"kind": "choice_scorer", "hidden": [16]},
        "methods": METHODS,
        "training": {"lr": 0.003, "epochs": 3},
        "evaluation": {"repeats": 1},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["--quiet", "run", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["data"]["classes"] == ["A", "B", "C", "D", "E"]
    assert results["methods"]["step_by_step"]["params"] == results["methods"]["baseline"]["params"]
    # The teacher's accuracy over the run's splits, as the release's labels say.
    accuracy_on, n = results["teacher"]["accuracy_on"], results["config"]["data"]
    combined = (accuracy_on["train"] * n["n_train"] + accuracy_on["validation"] * n["n_val"] + results["teacher"]["test"]["accuracy"]["mean"] * n["n_test"]) / len(frame)
    assert combined == pytest.approx(palm_accuracy(dsbs_dir, "cqa", "train", frame["id"]), abs=1e-9)
    frame.iloc[:3].drop(columns="label").to_json(tmp_path / "new.jsonl", orient="records", lines=True)
    predicted = runner.invoke(app, ["predict", str(tmp_path / "out"), str(tmp_path / "new.jsonl")])
    assert predicted.exit_code == 0, predicted.output
    predictions = pd.read_csv(pd.io.common.StringIO(predicted.stdout))
    assert list(predictions["id"]) == list(frame["id"][:3]) and set(predictions["prediction"]) <= set("ABCDE")
    np.testing.assert_allclose(predictions[[f"p_{c}" for c in "ABCDE"]].sum(1), 1, atol=1e-6)


def test_the_privileged_teacher_never_reads_test_labels(tiny_sentence_model, dsbs_dir):
    """The privileged-information teacher trains on the training split's human labels: its
    outputs on the test split are the same whatever the test labels are."""
    valid, _ = read_dsbs(dsbs_dir, "esnli", "valid")
    test, _ = read_dsbs(dsbs_dir, "esnli", "test")
    frame, test = valid.iloc[:200].reset_index(drop=True), test.iloc[:60].reset_index(drop=True)
    config = ExperimentConfig.model_validate(
        {
            "data": {"label": "label", "id_column": "id", "text": ["premise", "hypothesis"], "text_encoder": str(tiny_sentence_model)},
            "teacher": {"kind": "llm", "outputs": str(dsbs_dir), "format": "dsbs", "task": "esnli", "privileged": {"hidden": [16], "training": {"epochs": 3}}},
            "student": {"kind": "mlp", "hidden": [8]},
            "methods": {"baseline": {}, "traditional": {"alpha": 0.0}},
            "training": {"lr": 0.01, "epochs": 2},
            "evaluation": {"repeats": 1},
        }
    )
    shuffled = test.assign(label=test["label"].sample(frac=1, random_state=0).to_numpy())
    first = run_tabular(config, frame, test_frame=test).results
    second = run_tabular(config, frame, test_frame=shuffled).results
    assert first["teacher"]["params"] > 0 and first["teacher"]["train_seconds"] is not None
    assert first["teacher"]["accuracy_on"] == second["teacher"]["accuracy_on"]
    # Same teacher and students (the test split is read only once they are trained); only the
    # scores against the shuffled labels differ.
    assert first["methods"]["traditional"]["validation"] == second["methods"]["traditional"]["validation"]


def test_the_esnli_presets_read_the_release_or_its_first_records_and_carve_their_splits(dsbs_dir):
    from stepdistill import presets

    config, frame, test_frame = presets.demo("esnli", 3, dsbs_dir)
    assert (len(frame), len(test_frame)) == (1000, 1000) and config.student.kind == "encoder"
    full, whole, whole_test = presets.demo("esnli", 3, dsbs_dir, full=True)
    assert (len(whole), len(whole_test)) == (9842, 9824) and full.student == config.student and full.training == config.training
    frozen, frozen_frame, _ = presets.demo("esnli_frozen", 3, dsbs_dir)
    # the frozen-feature students are compared on the same records and splits
    assert frozen.student.kind == "mlp" and frozen_frame["id"].equals(frame["id"]) and frozen.data == config.data
    for each in (config, full, frozen):
        assert each.teacher.kind == "llm" and each.data.text == ["premise", "hypothesis"]
        assert set(each.methods) == {"baseline", "traditional", "step_by_step", "enhanced"}
        each.check()
    with pytest.raises(StepDistillError, match="preset 'cqa' always reads its data whole; --full is for esnli, esnli_frozen"):
        presets.demo("cqa", 3, dsbs_dir, full=True)


def test_a_missing_data_dir_names_the_option(tmp_path):
    result = runner.invoke(app, ["demo", "--preset", "esnli", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert "--data-dir" in one_error_line(result)
    assert not (tmp_path / "out").exists()
    result = runner.invoke(app, ["sweep-data", str(tmp_path / "config.yaml"), "--full", "--out", str(tmp_path / "out")])
    assert "--full reads a preset's data whole, and a config reads the files it names; leave out --full" in one_error_line(result)


def test_with_a_labelled_fraction_the_privileged_teacher_learns_from_those_labels_only(tiny_sentence_model, monkeypatch, dsbs_dir):
    from stepdistill.teachers import build

    valid, _ = read_dsbs(dsbs_dir, "esnli", "valid")
    config = ExperimentConfig.model_validate(
        {
            "data": {"label": "label", "id_column": "id", "text": ["premise", "hypothesis"], "text_encoder": str(tiny_sentence_model)},
            "teacher": {"kind": "llm", "outputs": str(dsbs_dir), "format": "dsbs", "task": "esnli", "privileged": {"hidden": [8], "training": {"epochs": 1}}},
            "student": {"kind": "mlp", "hidden": [8]},
            "methods": {"baseline": {}, "traditional": {"alpha": 0.0}},
            "training": {"lr": 0.01, "epochs": 1},
            "evaluation": {"repeats": 1},
        }
    )
    seen = []
    fit = build._fit_privileged
    monkeypatch.setattr(build, "_fit_privileged", lambda config, llm, data, device: seen.append((len(data.splits.train), len(data.splits.val))) or fit(config, llm, data, device))
    by_fraction = run_tabular(config, valid.iloc[:300].reset_index(drop=True), fractions=[0.5, 1.0]).results_by_fraction
    full = by_fraction[1.0]["config"]["data"]
    # One teacher on every label of the run, then one on the labelled half only.
    assert seen[0] == (full["n_train"], full["n_val"])
    assert seen[1][0] == pytest.approx(full["n_train"] / 2, abs=3) and seen[1][1] < full["n_val"]


def test_texts_longer_than_the_encoders_window_are_counted_or_refused(tmp_path, tiny_sentence_model, dsbs_dir):
    """The tiny sentence model reads 64 tokens of a text: longer premises are encoded from their
    beginning, which a warning counts (data and test file apart), or, with data.long_texts:
    refuse, one line refuses."""
    valid, _ = read_dsbs(dsbs_dir, "esnli", "valid")
    test, _ = read_dsbs(dsbs_dir, "esnli", "test")
    train = valid.iloc[:120].copy()
    long_premise = " ".join(["a dog runs across the wide green field"] * 20)  # far over 64 tokens
    train.loc[train.index[:3], "premise"] = long_premise
    held_out = test.iloc[:30].copy()
    held_out.loc[held_out.index[0], "premise"] = long_premise
    train.to_csv(tmp_path / "train.csv", index=False)
    held_out.to_csv(tmp_path / "test.csv", index=False)
    config = {
        "data": {"path": "train.csv", "test_path": "test.csv", "label": "label", "id_column": "id", "text": ["premise", "hypothesis"], "text_encoder": str(tiny_sentence_model)},
        "teacher": {"kind": "llm", "outputs": str(dsbs_dir), "format": "dsbs", "task": "esnli"},
        "student": {"kind": "mlp", "hidden": [8]},
        "methods": {"baseline": {}},
        "training": {"lr": 0.01, "epochs": 1},
        "evaluation": {"repeats": 1},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["--quiet", "run", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    [warning] = [w for w in json.loads((tmp_path / "out" / "results.json").read_text())["warnings"] if "window" in w]
    assert warning.startswith("3 of 120 records (and 1 of 30 of the test file) have a text longer than the sentence encoder's 64-token window")
    assert f"e.g. record {train['id'].iloc[0]!r}" in warning and warning in (tmp_path / "out" / "report.md").read_text()

    # predict says the same of the rows it reads cut, once, beside the predictions
    held_out[["id", "premise", "hypothesis"]].to_csv(tmp_path / "new.csv", index=False)
    predicted = runner.invoke(app, ["predict", str(tmp_path / "out"), str(tmp_path / "new.csv"), "--out", str(tmp_path / "preds.csv")])
    assert predicted.exit_code == 0, predicted.output
    assert predicted.stderr.splitlines() == [
        "warning: 1 of 30 rows have a text longer than the sentence encoder's 64-token window, predicted from its first 64 tokens",
        f"wrote 30 predictions to {tmp_path / 'preds.csv'}",
    ]

    config["data"]["long_texts"] = "refuse"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    refused = runner.invoke(app, ["--quiet", "run", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "refused")])
    assert "data.long_texts: cut" in one_error_line(refused, alone=True) and not (tmp_path / "refused").exists()
