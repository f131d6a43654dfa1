"""Students leave the run: saved in the run directory, loaded without pickle, predicting as they
did in the process that trained them."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import one_error_line
from typer.testing import CliRunner

from stepdistill.cli import app
from stepdistill.config import ExperimentConfig
from stepdistill.data import FeatureEncoder, linear_binary
from stepdistill.evaluate import class_probabilities
from stepdistill.experiment.tabular import run_tabular
from stepdistill.report import write_report
from stepdistill.run_dir import fingerprint, load_student, student_directory, write_students

runner = CliRunner()
FAST = {"epochs": 3, "lr": 0.05}


def _mixed(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = linear_binary(n, 3, seed=seed)
    frame["city"] = rng.choice(["oslo", "rome", "lima"], n)
    frame["label"] = np.where(frame["x0"] + (frame["city"] == "oslo") > 0.3, "yes", "no")
    return frame.assign(sample=np.arange(1000, 1000 + n))


def _run_and_save(tmp_path, frame, student=None):
    config = ExperimentConfig.model_validate(
        {"data": {"id_column": "sample"}, "training": FAST, "evaluation": {"repeats": 2}, "student": student or {"kind": "logistic"}}
    )
    experiment = run_tabular(config, frame)
    results, runs = experiment.results, experiment.students
    out = tmp_path / "run"
    write_report(results, out, lambda staging: write_students(staging, results, runs, fingerprint(frame), config.data.read_options()))
    return results, runs, out


@pytest.mark.parametrize("student", [{"kind": "logistic"}, {"kind": "mlp", "hidden": [8]}])
def test_a_saved_student_predicts_bit_for_bit_as_in_process(tmp_path, student):
    frame = _mixed(1500)
    results, runs, out = _run_and_save(tmp_path, frame, student)
    new = _mixed(300, seed=9).drop(columns="label")
    for run in runs:
        for name, model in run.models.items():
            saved = load_student(student_directory(out, name, run.index))
            with torch.no_grad():
                expected = class_probabilities(model(torch.from_numpy(run.encoder.transform(new))).logits)
            assert np.array_equal(saved.predict_proba(new), expected)
            assert saved.about["test"]["accuracy"] == results["methods"][name]["test"]["accuracy"]["values"][run.index]
    chosen = results["chosen"]["method"]
    assert (out / "student" / "model.safetensors").read_bytes() == (out / "students" / chosen / "0" / "model.safetensors").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["chosen"]["method"] == chosen and manifest["versions"]["torch"] in torch.__version__
    assert manifest["data_fingerprint"] == fingerprint(frame) != fingerprint(frame.iloc[1:])
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.joblib"))


def test_the_encoder_round_trips_through_json():
    frame = _mixed(400).drop(columns=["label", "sample"])
    encoder = FeatureEncoder().fit(frame)
    loaded = FeatureEncoder.from_json(json.loads(json.dumps(encoder.to_json())))
    assert np.array_equal(loaded.transform(frame), encoder.transform(frame))
    assert loaded.feature_names == encoder.feature_names and loaded.feature_groups == encoder.feature_groups
    assert encoder.feature_names == ("x0", "x1", "x2", "city_lima", "city_oslo", "city_rome")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """A run directory written by ``stepdistill run`` on a CSV, shared by the tests that read it."""
    directory = tmp_path_factory.mktemp("cli_run")
    _mixed(1200).to_csv(directory / "data.csv", index=False)
    config = {"data": {"path": "data.csv", "id_column": "sample"}, "training": FAST, "evaluation": {"repeats": 1}}
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(directory / "config.yaml"), "--out", str(directory / "run")])
    assert result.exit_code == 0, result.output
    assert "student to deploy" in result.stderr
    return directory / "run"


def test_predict_writes_the_class_and_probabilities_with_ids(tmp_path, cli_run):
    run_dir = cli_run
    new = _mixed(50, seed=3)
    new.to_csv(tmp_path / "new.csv", index=False)
    result = runner.invoke(app, ["predict", str(run_dir), str(tmp_path / "new.csv"), "--out", str(tmp_path / "preds.csv")])
    assert result.exit_code == 0, result.output
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert list(preds.columns) == ["sample", "prediction", "p_no", "p_yes"]
    assert preds["sample"].tolist() == new["sample"].tolist()
    assert np.allclose(preds[["p_no", "p_yes"]].sum(1), 1.0)
    assert (preds["prediction"] == np.where(preds["p_yes"] > preds["p_no"], "yes", "no")).all()
    assert (preds["prediction"] == new["label"]).mean() > 0.8

    result = runner.invoke(app, ["predict", str(run_dir), str(tmp_path / "new.csv"), "--method", "traditional"])
    assert result.exit_code == 0 and result.stdout.startswith("sample,prediction,p_no,p_yes")


def test_predict_refuses_an_existing_out_file_and_replaces_it_with_overwrite(tmp_path, cli_run):
    _mixed(50, seed=3).to_csv(tmp_path / "new.csv", index=False)
    preds = tmp_path / "preds.csv"
    preds.write_text("an earlier file\n")
    arguments = ["predict", str(cli_run), str(tmp_path / "new.csv"), "--out", str(preds)]
    assert f"{preds} exists; pass --overwrite to replace it" in one_error_line(runner.invoke(app, arguments), alone=True)
    assert preds.read_text() == "an earlier file\n"
    replaced = runner.invoke(app, [*arguments, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    # Only its own line on standard error, whole however long the path.
    assert replaced.stderr == f"wrote 50 predictions to {preds}\n" and replaced.stdout == ""
    assert pd.read_csv(preds)["sample"].tolist() == _mixed(50, seed=3)["sample"].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.csv", "preds.csv"]  # no temporary file left beside it
    into_directory = runner.invoke(app, [*arguments[:-1], str(tmp_path), "--overwrite"])
    assert "is a directory; pass a file name such as preds.csv" in one_error_line(into_directory, alone=True)


BAD_INPUTS = {
    "missing column": (lambda f: f.drop(columns="x1"), "feature columns missing: x1"),
    "extra column": (lambda f: f.assign(surprise=1), "not trained on: surprise"),
    "unseen category": (lambda f: f.assign(city="paris"), "categories the student never saw in training ('paris')"),
    "missing number": (lambda f: f.assign(x2=lambda d: d.x2.where(d.index != 3)), "x2 hold NaN"),
    "text in a number column": (lambda f: f.assign(x0=lambda d: d.x0.astype(object).where(d.index != 2, "abc")), "numeric column 'x0' holds text (e.g. 'abc')"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_prediction_input_is_one_line_exit_2(tmp_path, cli_run, case):
    run_dir = cli_run
    change, expected = BAD_INPUTS[case]
    change(_mixed(20, seed=4)).to_csv(tmp_path / "bad.csv", index=False)
    result = runner.invoke(app, ["predict", str(run_dir), str(tmp_path / "bad.csv"), "--out", str(tmp_path / "preds.csv")])
    assert expected in one_error_line(result)
    assert not (tmp_path / "preds.csv").exists()


def test_predict_names_what_is_missing(tmp_path, cli_run):
    result = runner.invoke(app, ["predict", str(tmp_path / "nowhere"), str(tmp_path / "x.csv")])
    assert "run directory not found" in one_error_line(result)
    result = runner.invoke(app, ["predict", str(cli_run), str(cli_run.parent / "data.csv"), "--method", "magic"])
    message = one_error_line(result)
    assert "no student of method 'magic'" in message and "baseline" in message
