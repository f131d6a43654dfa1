"""Exports of a saved student, checked against it: ONNX on the raw columns through onnxruntime and a
scikit-learn pipeline through skops (both usable without stepdistill), safetensors with its description."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import pytest
import torch
from conftest import one_error_line, raises_one_line
from safetensors import safe_open
from typer.testing import CliRunner

from stepdistill import export
from stepdistill.cli import app
from stepdistill.config import ExperimentConfig
from stepdistill.data import FeatureEncoder
from stepdistill.evaluate import class_probabilities
from stepdistill.experiment.tabular import run_tabular
from stepdistill.export import export_student, sklearn_pipeline
from stepdistill.report import write_report
from stepdistill.run_dir import SavedStudent, fingerprint, load_student, student_directory, write_students
from stepdistill.students.cnn import CNNModel
from stepdistill.students.logistic import LogisticModel
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
        experiment = run_tabular(config, frame)
        results, runs = experiment.results, experiment.students
        run_dir = tmp_path_factory.mktemp(kind)
        write_report(results, run_dir, lambda staging: write_students(staging, results, runs, fingerprint(frame), config.data.read_options()))
        out[kind] = run_dir
    return out, _mixed(500, seed=11).drop(columns="label")


@pytest.fixture(scope="module")
def onnx_exports(saved_runs):
    """Each run directory's student exported as ONNX by the command line, and what it printed."""
    run_dirs, _ = saved_runs
    return {kind: runner.invoke(app, ["export", str(run_dir), "--format", "onnx"]) for kind, run_dir in run_dirs.items()}


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_onnx_takes_the_raw_columns_and_runs_as_documented_without_stepdistill(saved_runs, onnx_exports, kind, tmp_path):
    run_dirs, rows = saved_runs
    result = onnx_exports[kind]
    assert result.exit_code == 0, result.output
    assert "largest difference from the student" in " ".join(result.stderr.split())
    assert "Warning" not in result.stderr
    shutil.copy(run_dirs[kind] / "exports" / "student.onnx", tmp_path)
    rows.to_csv(tmp_path / "new_rows.csv", index=False)
    # The module docstring's example, run where it says: beside student.onnx and new_rows.csv.
    script = (
        "import sys; sys.modules['stepdistill'] = None\n"  # any import of stepdistill would now fail
        + textwrap.dedent(export.__doc__.split("::\n")[1])
        + "import numpy as np\n"
        "np.save('p.npy', probabilities); predictions.to_csv('predictions.csv', index=False)\n"
        "print(json.dumps([[i.name, i.type, i.shape] for i in session.get_inputs()] + [[o.name, o.type] for o in session.get_outputs()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    student = load_student(student_directory(run_dirs[kind]))
    probabilities = np.load(tmp_path / "p.npy")
    assert probabilities.shape == (500, 2)
    assert np.abs(probabilities - student.predict_proba(rows)).max() <= 1e-5
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions.columns) == ["no", "yes", "label"]
    assert predictions["label"].tolist() == [student.classes[i] for i in probabilities.argmax(1)]
    *inputs, probabilities_output, label_output = json.loads(done.stdout)
    assert inputs == [["x0", "tensor(double)", [None, 1]], ["x1", "tensor(double)", [None, 1]], ["x2", "tensor(double)", [None, 1]], ["city", "tensor(string)", [None, 1]]]
    assert probabilities_output == ["probabilities", "tensor(float)"] and label_output == ["label", "tensor(string)"]


def test_onnx_names_its_columns_and_classes_and_refuses_an_unseen_category_as_the_student_does(saved_runs, onnx_exports):
    run_dirs, rows = saved_runs
    path = run_dirs["logistic"] / "exports" / "student.onnx"
    assert onnx_exports["logistic"].exit_code == 0
    onnx.checker.check_model(str(path), full_check=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["columns"]) == {"x0": "double", "x1": "double", "x2": "double", "city": "string"}
    assert json.loads(metadata["classes"]) == ["no", "yes"]
    unseen = rows.head(3).assign(city="paris")
    feed = {c: unseen[[c]].to_numpy("float64") for c in ["x0", "x1", "x2"]} | {"city": unseen[["city"]].to_numpy().astype(str)}
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.Fail, match="Unknown Category"):
        session.run(None, feed)
    with raises_one_line("never saw in training"):
        load_student(student_directory(run_dirs["logistic"])).predict_proba(unseen)


def test_a_cnn_student_exports_on_its_pixel_columns(tmp_path):
    pixels = pd.DataFrame(np.random.default_rng(0).random((20, 16)), columns=[f"pixel{i}" for i in range(16)])
    student = SavedStudent(CNNModel((1, 4, 4), 3, (2,)).eval(), FeatureEncoder(scale_numeric=False).fit(pixels), ["a", "b", "c"], {})
    checked = export_student(student, "onnx", tmp_path / "cnn.onnx")
    assert checked["max_abs_difference"] <= 1e-5
    session = onnxruntime.InferenceSession(checked["path"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(pixels.columns)
    [probabilities] = session.run(["probabilities"], {c: pixels[[c]].to_numpy("float64") for c in pixels.columns})
    assert np.abs(probabilities - student.predict_proba(pixels)).max() <= 1e-5


def test_a_feature_named_like_an_onnx_output_is_refused(tmp_path):
    frame = pd.DataFrame({"label": [0.0, 1.0], "x": [1.0, 2.0]})
    student = SavedStudent(LogisticModel(2, 1).eval(), FeatureEncoder().fit(frame), ["no", "yes"], {})
    with raises_one_line("feature column label; rename that column"):
        export_student(student, "onnx", tmp_path / "student.onnx")
    assert not list(tmp_path.iterdir())


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
    assert "only logistic students export as a scikit-learn pipeline" in one_error_line(result)
    assert not (run_dirs["mlp"] / "exports" / "student.skops").exists()
    result = runner.invoke(app, ["export", str(run_dirs["mlp"]), "--format", "tflite"])
    assert "unknown --format 'tflite'" in one_error_line(result)


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
