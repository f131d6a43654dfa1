"""Exports of a saved student, checked against it: ONNX on the raw columns through onnxruntime and a
scikit-learn pipeline through skops (both usable without stepdistill), safetensors with its description."""

import json
import re
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
STUDENTS = {"logistic": {"kind": "logistic"}, "mlp": {"kind": "mlp", "hidden": [8]}}


def _saved_run(directory, frame, student: dict, data: dict | None = None):
    """``frame`` trained on (one run, 3 epochs) and its students saved in ``directory``."""
    config = ExperimentConfig.model_validate(
        {"data": {"id_column": "sample", **(data or {})}, "student": student, "training": {"epochs": 3, "lr": 0.05}, "evaluation": {"repeats": 1}}
    )
    experiment = run_tabular(config, frame)
    results, runs = experiment.results, experiment.students
    write_report(results, directory, lambda staging: write_students(staging, results, runs, fingerprint(frame), config.data.read_options()))
    return directory


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory):
    """A run directory per student kind, trained on mixed data, and rows it never saw."""
    frame = _mixed(1500)
    return {kind: _saved_run(tmp_path_factory.mktemp(kind), frame, student) for kind, student in STUDENTS.items()}, _mixed(500, seed=11).drop(columns="label")


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


def _with_gaps(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``frame`` with x0, on which the label depends, moved to a mean of 5, and about a tenth of x0
    and of city missing: a number filled with anything but its training mean, scaled as the
    student scales it, changes the probabilities."""
    rng = np.random.default_rng(seed)
    return frame.assign(x0=(frame["x0"] + 5).mask(rng.random(len(frame)) < 0.1), city=frame["city"].mask(rng.random(len(frame)) < 0.1))


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_a_student_trained_with_missing_impute_exports_to_onnx_and_fills_gaps_as_it_does(tmp_path, kind):
    run_dir = _saved_run(tmp_path / "run", _with_gaps(_mixed(1500), seed=0), STUDENTS[kind], {"missing": "impute"})
    student = load_student(student_directory(run_dir))
    assert student.encoder.missing == "impute" and "<missing>" in student.encoder.categories_[0]
    # The check before writing covers rows with gaps, in numbers and categories.
    probe = export.probe_frame(student)
    assert probe["x0"].isna().mean() == pytest.approx(export.PROBE_MISSING_SHARE, abs=0.03) and probe["city"].isna().any()
    result = runner.invoke(app, ["export", str(run_dir), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    rows = _with_gaps(_mixed(400, seed=5).drop(columns=["label", "sample"]), seed=6)
    gaps = rows.isna().any(axis=1).to_numpy()
    assert 40 < gaps.sum() < 120
    session = onnxruntime.InferenceSession(str(run_dir / "exports" / "student.onnx"), providers=["CPUExecutionProvider"])
    # Fed as the module's docstring says: numbers as float64 (NaN where missing), categories as strings, "<missing>" where missing.
    feed = {c: rows[[c]].to_numpy("float64") for c in ["x0", "x1", "x2"]} | {"city": rows[["city"]].fillna("<missing>").astype(str).to_numpy()}
    [probabilities] = session.run(["probabilities"], feed)
    expected = student.predict_proba(rows)
    assert np.abs(probabilities[gaps] - expected[gaps]).max() <= 1e-5 and np.abs(probabilities - expected).max() <= 1e-5
    # As the student fills them: a missing x0 is x0 at its training mean (about 5).
    assert student.encoder.fill_[0] == pytest.approx(5, abs=0.2)
    assert np.abs(probabilities - student.predict_proba(rows.assign(x0=rows["x0"].fillna(student.encoder.fill_[0])))).max() <= 1e-5


def test_a_logistic_student_trained_with_missing_impute_exports_as_a_pipeline_that_fills_gaps(tmp_path):
    run_dir = _saved_run(tmp_path / "run", _with_gaps(_mixed(1500), seed=0), {"kind": "logistic"}, {"missing": "impute"})
    path = tmp_path / "student.skops"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "sklearn", "--out", str(path)])
    assert result.exit_code == 0, result.output
    import skops.io

    pipeline = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    rows = _with_gaps(_mixed(400, seed=5).drop(columns=["label", "sample"]), seed=6)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    read_back = pd.read_csv(tmp_path / "rows.csv")  # gaps as a CSV gives them: NaN in numbers and in text
    assert read_back.isna().any(axis=1).sum() > 40
    student = load_student(student_directory(run_dir))
    assert np.abs(pipeline.predict_proba(read_back) - student.predict_proba(read_back)).max() <= 1e-5


def test_an_existing_export_is_refused_without_overwrite_and_replaced_with_it(saved_runs, onnx_exports, tmp_path):
    run_dirs, _ = saved_runs
    default = run_dirs["logistic"] / "exports" / "student.onnx"
    assert onnx_exports["logistic"].exit_code == 0
    before = default.read_bytes()
    again = runner.invoke(app, ["export", str(run_dirs["logistic"]), "--format", "onnx"])
    assert "student.onnx exists; pass --overwrite" in one_error_line(again, alone=True)
    assert default.read_bytes() == before and sorted(p.name for p in default.parent.iterdir()) == ["student.onnx"]

    path = tmp_path / "w.safetensors"
    path.write_bytes(b"an earlier file")
    arguments = ["export", str(run_dirs["mlp"]), "--format", "safetensors", "--out", str(path)]
    assert "--overwrite" in one_error_line(runner.invoke(app, arguments), alone=True)
    assert path.read_bytes() == b"an earlier file"
    replaced = runner.invoke(app, [*arguments, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()["classes"]) == ["no", "yes"]
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left beside it
    assert "is a directory; pass a file name such as student.safetensors" in one_error_line(runner.invoke(app, [*arguments[:-1], str(tmp_path), "--overwrite"]))


def test_export_prints_its_one_line_and_nothing_else(saved_runs, tmp_path):
    """In a process of its own, as a user runs it: torch's exporter logs through handlers made
    when torch is imported, which a CliRunner in this process (torch imported) does not capture."""
    run_dirs, _ = saved_runs
    path = tmp_path / "student.onnx"
    done = subprocess.run([sys.executable, "-m", "stepdistill", "export", str(run_dirs["mlp"]), "--format", "onnx", "--out", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert re.fullmatch(rf"wrote {re.escape(str(path))}; largest difference from the student on 1024 probe rows: \d\.\d\de-\d\d \(at most 1e-05\)", line), line
