"""Exports of a saved student, checked against it: ONNX through onnxruntime, a scikit-learn pipeline
through skops (loadable without stepdistill), safetensors with its description."""

import json
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from stepdistill.cli import app
from stepdistill.config import ExperimentConfig
from stepdistill.evaluate import class_probabilities
from stepdistill.experiment import run_experiment
from stepdistill.export import sklearn_pipeline
from stepdistill.report import write_report
from stepdistill.run_dir import fingerprint, load_student, student_directory, write_students
from tests.test_run_dir import _mixed

runner = CliRunner()


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory):
    """A run directory per student kind, trained on mixed data, and rows it never saw."""
    out = {}
    frame = _mixed(1500)
    for kind, student in {"logistic": {"kind": "logistic"}, "mlp": {"kind": "mlp", "hidden": [8]}}.items():
        config = ExperimentConfig.model_validate(
            {"data": {"id_column": "sample"}, "student": student, "training": {"epochs": 3, "lr": 0.05}, "evaluation": {"repeats": 1}}
        )
        runs = []
        results = run_experiment(config, frame, on_run=runs.append)
        run_dir = tmp_path_factory.mktemp(kind)
        write_report(results, run_dir, lambda staging: write_students(staging, results, runs, fingerprint(frame)))
        out[kind] = run_dir
    return out, _mixed(500, seed=11).drop(columns="label")


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_onnx_gives_the_students_probabilities(saved_runs, kind):
    run_dirs, rows = saved_runs
    result = runner.invoke(app, ["export", str(run_dirs[kind]), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    student = load_student(student_directory(run_dirs[kind]))
    session = onnxruntime.InferenceSession(str(run_dirs[kind] / "exports" / "student.onnx"), providers=["CPUExecutionProvider"])
    [exported] = session.run(None, {"features": student.encoder.transform(rows, unseen="error")})
    assert exported.shape == (500, 2)
    assert np.abs(exported - student.predict_proba(rows)).max() <= 1e-5
    assert "largest difference from the student" in " ".join(result.stderr.split())
    assert "Warning" not in result.stderr


def test_a_logistic_student_exports_as_a_scikit_learn_pipeline_usable_without_stepdistill(saved_runs, tmp_path):
    run_dirs, rows = saved_runs
    path = tmp_path / "student.skops"
    result = runner.invoke(app, ["export", str(run_dirs["logistic"]), "--format", "sklearn", "--out", str(path)])
    assert result.exit_code == 0, result.output
    rows.to_csv(tmp_path / "rows.csv", index=False)
    script = (
        "import sys; sys.modules['stepdistill'] = None\n"  # any import of stepdistill would now fail
        "import numpy as np, pandas as pd, skops.io\n"
        f"path = {str(path)!r}\n"
        "model = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))\n"
        f"rows = pd.read_csv({str(tmp_path / 'rows.csv')!r})\n"
        "np.save(sys.argv[1], model.predict_proba(rows))\n"
        "print(type(model[-1]).__name__, list(model[-1].classes_))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "p.npy")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "LogisticRegression" and "['no', 'yes']" in done.stdout
    student = load_student(student_directory(run_dirs["logistic"]))
    assert np.abs(np.load(tmp_path / "p.npy") - student.predict_proba(rows)).max() <= 1e-5
    pipeline = sklearn_pipeline(student)
    assert np.array_equal(pipeline[-1].coef_, student.model.linear.weight.detach().double().numpy())


def test_only_a_logistic_student_becomes_a_pipeline(saved_runs):
    run_dirs, _ = saved_runs
    result = runner.invoke(app, ["export", str(run_dirs["mlp"]), "--format", "sklearn"])
    assert result.exit_code == 2 and "only logistic students export as a scikit-learn pipeline" in result.stderr
    assert not (run_dirs["mlp"] / "exports" / "student.skops").exists()
    result = runner.invoke(app, ["export", str(run_dirs["mlp"]), "--format", "tflite"])
    assert result.exit_code == 2 and "unknown --format 'tflite'" in result.stderr


def test_safetensors_carries_the_students_description(saved_runs, tmp_path):
    run_dirs, rows = saved_runs
    path = tmp_path / "w.safetensors"
    result = runner.invoke(app, ["export", str(run_dirs["mlp"]), "--method", "enhanced", "--format", "safetensors", "--out", str(path)])
    assert result.exit_code == 0, result.output
    student = load_student(student_directory(run_dirs["mlp"], "enhanced"))
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        weights = {name: f.get_tensor(name) for name in f.keys()}
    assert json.loads(metadata["model"]) == student.model.spec and json.loads(metadata["classes"]) == ["no", "yes"]
    rebuilt = type(student.model)(**{k: v for k, v in json.loads(metadata["model"]).items() if k != "kind"})
    rebuilt.load_state_dict(weights)
    encoded = torch.from_numpy(student.encoder.transform(rows))
    with torch.no_grad():
        assert np.array_equal(class_probabilities(rebuilt(encoded).logits), student.predict_proba(rows))
