"""Every teacher kind end to end through ``stepdistill run``, on small data."""

import json
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import one_error_line
from safetensors.torch import save_file
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from stepdistill.cli import app
from stepdistill.data import bundled, linear_binary, nonlinear_binary

runner = CliRunner()
FAST = {"epochs": 20, "optimizer": "adam", "lr": 0.05}
METHODS = {name: FAST for name in ["baseline", "traditional", "step_by_step", "enhanced"]}


def _run(tmp_path, frame, teacher, student=None, methods=METHODS, data=None):
    frame.to_csv(tmp_path / "data.csv", index=False)
    config = {
        "data": {"path": "data.csv", "label": "label", **(data or {})},
        "teacher": teacher,
        "student": student or {"kind": "logistic"},
        "methods": methods,
        "evaluation": {"repeats": 2},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(tmp_path / "config.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "results.json").read_text())


def _accuracy(results, name):
    entry = results["teacher"] if name == "teacher" else results["methods"][name]
    return entry["test"]["accuracy"]["mean"]


def _mixed_frame(n=3000, seed=0):
    """Numbers and a category that matters: a tree ensemble's natural ground."""
    rng = np.random.default_rng(seed)
    frame = linear_binary(n, 4, seed=seed)
    frame["city"] = rng.choice(["paris", "oslo", "rome", "lima"], n)
    score = frame["x0"] + frame["x1"] * frame["x2"] + frame["city"].map({"paris": 1.5, "oslo": -1.5, "rome": 0.5, "lima": -0.5})
    frame["label"] = np.where(score > 0, "yes", "no")
    return frame


def test_mlp_teacher(tmp_path):
    results = _run(tmp_path, nonlinear_binary(3000, 10, seed=2), {"kind": "mlp", "hidden": [32, 32], "training": {"epochs": 15}})
    assert _accuracy(results, "teacher") > _accuracy(results, "baseline") + 0.05


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost"])
def test_gradient_boosting_teachers_explain_raw_columns(tmp_path, kind):
    results = _run(tmp_path, _mixed_frame(), {"kind": kind, "params": {"n_estimators": 60}})
    assert _accuracy(results, "teacher") > 0.85
    for name in ["traditional", "step_by_step", "enhanced"]:
        assert results["methods"][name]["test"]["fidelity"]["mean"] > 0.8
    # the student's contributions are summed per raw column (5 of them) plus the bias: 6, like TreeSHAP
    assert results["methods"]["step_by_step"]["params"] == 9  # 8 encoded columns + bias
    step = results["methods"]["step_by_step"]["history"][0]
    assert step[-1]["terms"]["rationale"]["raw"] < step[0]["terms"]["rationale"]["raw"]


def test_saved_lightgbm_model_is_loaded(tmp_path):
    from stepdistill.teachers.boosting import train_lightgbm

    frame = _mixed_frame()
    model = train_lightgbm(frame.drop(columns="label"), (frame["label"] == "yes").to_numpy().astype(int), {"n_estimators": 40}, 0)
    model.booster_.save_model(str(tmp_path / "model.txt"))
    results = _run(tmp_path, frame, {"kind": "lightgbm", "path": "model.txt"}, methods={"traditional": FAST})
    assert _accuracy(results, "teacher") > 0.85 and results["teacher"]["train_seconds"] is None


def test_sklearn_teacher_from_joblib(tmp_path):
    frame = linear_binary(2000, 5, seed=4)
    teacher = LogisticRegression().fit(frame.drop(columns="label"), frame["label"])
    joblib.dump(teacher, tmp_path / "teacher.joblib")
    results = _run(tmp_path, frame, {"kind": "sklearn", "path": "teacher.joblib", "trust_pickle": True})
    assert results["methods"]["step_by_step"]["test"]["fidelity"]["mean"] > 0.95


def _fitted_teachers():
    """The commonest fitted classifiers, none of which gives a rationale of its own."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.preprocessing import OneHotEncoder

    columns = ColumnTransformer([("numbers", StandardScaler(), ["x0", "x1", "x2", "x3"]), ("city", OneHotEncoder(), ["city"])])
    return {
        "random forest": RandomForestClassifier(n_estimators=30, random_state=0),
        "gradient boosting in a pipeline": make_pipeline(columns, HistGradientBoostingClassifier(max_iter=30, random_state=0)),
        "k-NN in a pipeline": make_pipeline(ColumnTransformer([("numbers", StandardScaler(), ["x0", "x1", "x2", "x3"])]), KNeighborsClassifier()),
    }


@pytest.mark.parametrize("name", list(_fitted_teachers()))
def test_fitted_classifiers_run_the_default_four_methods(tmp_path, name):
    frame = _mixed_frame(600, seed=5)
    features = frame.drop(columns="label")
    model = _fitted_teachers()[name]
    if name == "random forest":
        features = features.drop(columns="city")
        frame = frame.drop(columns="city")
    joblib.dump(model.fit(features, frame["label"]), tmp_path / "teacher.joblib")
    frame.to_csv(tmp_path / "data.csv", index=False)
    config = {"data": {"path": "data.csv"}, "teacher": {"kind": "sklearn", "path": "teacher.joblib", "trust_pickle": True}, "training": FAST, "evaluation": {"repeats": 1}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["methods"]) == {"baseline", "traditional", "step_by_step", "enhanced"}
    assert results["teacher"]["refit"] is False and any("loaded" in w for w in results["warnings"])
    assert _accuracy(results, "step_by_step") > 0.6


def test_teachers_whose_loading_runs_code_need_consent(tmp_path, monkeypatch):
    frame = linear_binary(400, 3, seed=1)
    joblib.dump(LogisticRegression().fit(frame[["x0", "x1", "x2"]], frame["label"]), tmp_path / "teacher.joblib")
    message = _bad_run(tmp_path, frame, {"kind": "sklearn", "path": "teacher.joblib"})
    assert message.startswith("error: loading this teacher runs code: unpickling") and "--trust-pickle" in message and "teacher.kind: file" in message
    (tmp_path / "sneaky_teacher.py").write_text("raise SystemExit('imported without consent')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = _bad_run(tmp_path, frame, {"kind": "torch", "module": "sneaky_teacher:build"})
    assert "importing sneaky_teacher:build" in message
    # the flag gives the consent the config did not
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "data": {"path": "data.csv"}, "teacher": {"kind": "sklearn", "path": "teacher.joblib"},
        "methods": {"baseline": {}, "traditional": {}}, "training": {"epochs": 2, "lr": 0.05}, "evaluation": {"repeats": 1},
    }))
    result = runner.invoke(app, ["--trust-pickle", "run", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output


def test_torch_teacher_with_hooked_layer_and_safetensors(tmp_path, monkeypatch):
    (tmp_path / "my_teacher.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            def build(width=16):
                return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 1))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_teacher", None)
    import my_teacher

    frame = linear_binary(2000, 6, seed=5)
    module = my_teacher.build()
    x = torch.tensor(frame.drop(columns="label").to_numpy(), dtype=torch.float32)
    y = torch.tensor(frame["label"].to_numpy(), dtype=torch.float32)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(module(x).squeeze(1), y).backward()
        optimizer.step()
    save_file(module.state_dict(), tmp_path / "teacher.safetensors")
    # The teacher saw raw features; ours are standardized, so keep them as they are for this test.
    results = _run(
        tmp_path,
        frame,
        {"kind": "torch", "module": "my_teacher:build", "weights": "teacher.safetensors", "rationale_layer": "1", "trust_pickle": True},
        data={"scale_numeric": False},
    )
    assert _accuracy(results, "teacher") > 0.8
    assert results["methods"]["step_by_step"]["test"]["fidelity"]["mean"] > 0.9


def test_file_teacher(tmp_path):
    frame = linear_binary(2000, 4, seed=6).assign(sample=lambda f: np.arange(len(f)) * 3 + 11)
    logits = (frame[["x0", "x1", "x2", "x3"]].to_numpy() @ np.array([2.0, -1.0, 0.5, 0.0])).astype(np.float32)
    outputs = pd.DataFrame({"id": frame["sample"], "logit_0": logits})
    outputs["rationale"] = list(frame[["x0", "x1"]].to_numpy(np.float32))
    outputs.sample(frac=1.0, random_state=0).to_parquet(tmp_path / "teacher.parquet")
    results = _run(
        tmp_path,
        frame,
        {"kind": "file", "path": "teacher.parquet"},
        methods={"traditional": {**FAST, "alpha": 0.0}, "step_by_step": {**FAST, "alpha": 0.0, "beta": 0.5}},
        data={"id_column": "sample"},
    )
    assert results["teacher"]["params"] is None
    assert results["methods"]["traditional"]["test"]["fidelity"]["mean"] > 0.97  # pure soft targets: the teacher's own
    assert results["methods"]["step_by_step"]["test"]["fidelity"]["mean"] > 0.9


def test_a_file_teacher_with_ids_the_data_lacks_warns_with_their_count(tmp_path):
    frame = linear_binary(400, 3, seed=1)
    logits = frame[["x0", "x1", "x2"]].sum(axis=1).to_numpy(np.float32)
    pd.DataFrame({"id": np.arange(405), "logit_0": np.concatenate([logits, np.zeros(5, np.float32)])}).to_parquet(tmp_path / "teacher.parquet")
    results = _run(tmp_path, frame, {"kind": "file", "path": "teacher.parquet"}, methods={"traditional": FAST})
    assert (
        f"teacher file {tmp_path / 'teacher.parquet'} holds outputs for 5 of its 405 ids that the data lacks (e.g. 400, 401, 402);"
        " they were ignored (teacher.strict: true refuses them)"
    ) in results["warnings"]
    assert "of its 405 ids that the data lacks" in (tmp_path / "out" / "report.md").read_text()


def _breast_cancer_and_encoded_label_teacher(tmp_path):
    """The user audit's case: breast cancer rows labelled benign or malignant (469 as data, 100 as
    a fixed test file in test.csv) and a Pipeline teacher fitted on the data's rows with
    (y == 'benign') as its labels 0 and 1, saved with joblib."""
    dataset = load_breast_cancer(as_frame=True)
    rows = dataset.data.assign(label=np.asarray(dataset.target_names)[dataset.target])
    test = rows.sample(100, random_state=0)
    frame = rows.drop(test.index)
    test.to_csv(tmp_path / "test.csv", index=False)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(frame.drop(columns="label"), (frame["label"] == "benign").astype(int))
    joblib.dump(pipeline, tmp_path / "teacher.joblib")
    return frame, test, pipeline


def _encoded_label_run(tmp_path, classes):
    frame, test, pipeline = _breast_cancer_and_encoded_label_teacher(tmp_path)
    teacher = {"kind": "sklearn", "path": "teacher.joblib", "trust_pickle": True, "classes": classes}
    results = _run(tmp_path, frame, teacher, methods={"traditional": FAST}, data={"test_path": "test.csv"})
    return results, pipeline.score(test.drop(columns="label"), (test["label"] == "benign").astype(int))


def test_a_teacher_fitted_on_encoded_labels_is_as_accurate_as_itself_once_its_classes_are_mapped(tmp_path):
    results, pipeline_accuracy = _encoded_label_run(tmp_path, {0: "malignant", 1: "benign"})
    assert pipeline_accuracy > 0.9
    assert results["teacher"]["test"]["accuracy"]["values"] == [pytest.approx(pipeline_accuracy)] * 2
    assert _accuracy(results, "traditional") > 0.9
    assert not any("majority-class rule" in warning for warning in results["warnings"])


def test_a_teacher_below_the_majority_rule_on_validation_is_named_in_a_warning(tmp_path):
    """The same teacher with its classes mapped the wrong way round: the run goes on, but the
    warning (and the report) say the teacher is worse than predicting the majority class."""
    results, pipeline_accuracy = _encoded_label_run(tmp_path, {0: "benign", 1: "malignant"})
    assert results["teacher"]["test"]["accuracy"]["values"] == [pytest.approx(1 - pipeline_accuracy)] * 2
    validation = results["teacher"]["accuracy_on"]["validation"]
    assert validation < 0.1
    [warning] = [w for w in results["warnings"] if "majority-class rule" in w]
    assert warning.startswith(f"the teacher is below the majority-class rule on validation in 2 of 2 runs ({validation:.3f} against 0.6")
    assert warning.endswith("check its classes (teacher.classes maps them to the data's) and its input")
    assert f"- Warning: {warning}" in (tmp_path / "out" / "report.md").read_text()


def test_cnn_teacher_and_cnn_student_on_digits(tmp_path):
    frame = bundled.mnist_5k().sample(1500, random_state=0)
    results = _run(
        tmp_path,
        frame,
        {"kind": "cnn", "channels": [8, 16], "training": {"epochs": 3, "lr": 0.003, "batch_size": 32}},
        student={"kind": "cnn", "channels": [4, 8]},
        methods={name: {**FAST, "epochs": 4, "lr": 0.01, "batch_size": 32} for name in ["baseline", "step_by_step"]},
        data={"scale_numeric": False, "image_shape": [1, 28, 28]},
    )
    assert _accuracy(results, "teacher") > 0.8 and _accuracy(results, "step_by_step") > 0.6
    assert set(results["teacher"]["per_class"]) == {str(d) for d in range(10)}


def _bad_run(tmp_path, frame, teacher, **kwargs):
    frame.to_csv(tmp_path / "data.csv", index=False)
    config = {"data": {"path": "data.csv", "label": "label", **kwargs.get("data", {})}, "teacher": teacher,
              "student": kwargs.get("student", {"kind": "logistic"}), "methods": {"step_by_step": FAST}, "evaluation": {"repeats": 1}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "out")])
    message = one_error_line(result)
    assert not (tmp_path / "out").exists()
    return message


def test_teacher_file_with_missing_ids_nan_or_wrong_classes_is_refused(tmp_path):
    frame = linear_binary(400, 3, seed=1)
    outputs = pd.DataFrame({"id": np.arange(400), "logit_0": np.ones(400, np.float32)})
    outputs.iloc[:-5].to_parquet(tmp_path / "short.parquet")
    assert "of the data's sample ids" in _bad_run(tmp_path, frame, {"kind": "file", "path": "short.parquet"})
    outputs.assign(logit_0=lambda o: o.logit_0.where(o.id != 7)).to_parquet(tmp_path / "nan.parquet")
    assert "1 rows" in _bad_run(tmp_path, frame, {"kind": "file", "path": "nan.parquet"})
    three = pd.DataFrame({"id": np.arange(400), **{f"logit_{k}": np.zeros(400, np.float32) for k in range(3)}})
    three.to_parquet(tmp_path / "three.parquet")
    assert "logit" in _bad_run(tmp_path, frame, {"kind": "file", "path": "three.parquet"})


def test_teacher_classes_ordered_differently_are_refused(tmp_path):
    frame = linear_binary(400, 3, seed=1).assign(label=lambda f: np.where(f.label == 1, "yes", "no"))
    teacher = LogisticRegression().fit(frame[["x0", "x1", "x2"]], np.where(frame.label == "yes", "a-yes", "b-no"))
    joblib.dump(teacher, tmp_path / "teacher.joblib")
    assert "teacher classes" in _bad_run(tmp_path, frame, {"kind": "sklearn", "path": "teacher.joblib", "trust_pickle": True})


def test_an_explanation_the_sklearn_teacher_cannot_give_is_refused(tmp_path):
    frame = linear_binary(400, 3, seed=1)
    joblib.dump(KNeighborsClassifier().fit(frame[["x0", "x1", "x2"]], frame["label"]), tmp_path / "knn.joblib")
    message = _bad_run(tmp_path, frame, {"kind": "sklearn", "path": "knn.joblib", "explain": "tree", "trust_pickle": True})
    assert "teacher.explain tree cannot explain KNeighborsClassifier" in message and message.endswith("use auto or sampled")
    assert "explain_budget" in _bad_run(tmp_path, frame, {"kind": "sklearn", "path": "knn.joblib", "explain_budget": 0, "trust_pickle": True})


def test_missing_rationale_layer_lists_the_layers(tmp_path, monkeypatch):
    (tmp_path / "tiny_teacher.py").write_text("from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = _bad_run(tmp_path, linear_binary(400, 3), {"kind": "torch", "module": "tiny_teacher:build", "rationale_layer": "net.9", "trust_pickle": True})
    assert "'net.9' not found" in message and "0, 1, 2" in message


def test_rationale_width_mismatch_without_projection_is_refused(tmp_path):
    message = _bad_run(
        tmp_path, linear_binary(400, 3), {"kind": "mlp", "hidden": [8]}, student={"kind": "logistic", "projection": False}
    )
    assert "student.projection is off" in message


def test_adult_and_mnist_presets_print_their_tables(tmp_path, monkeypatch):
    import stepdistill.presets as presets

    adult, mnist = bundled.adult(), bundled.mnist_5k()
    # Adult's MLP students learn from a transfer set five times their rows: fewer rows keep it quick.
    monkeypatch.setattr(presets.bundled, "adult", lambda: adult.sample(500, random_state=0))
    monkeypatch.setattr(presets.bundled, "mnist_5k", lambda: mnist.sample(1000, random_state=0))
    logistic, _, _ = presets.demo("adult_logistic", 2)  # the same teacher and data, without the transfer set
    assert logistic.student.kind == "logistic" and logistic.transfer is None and logistic.teacher.kind == "lightgbm"
    for preset, teacher_row in [("adult", "teacher (lightgbm)"), ("mnist", "teacher (cnn)")]:
        result = runner.invoke(app, ["demo", "--preset", preset, "--repeats", "2", "--out", str(tmp_path / preset)])
        assert result.exit_code == 0, result.output
        assert teacher_row in result.stdout and "enhanced" in result.stdout
        results = json.loads((tmp_path / preset / "results.json").read_text())
        assert len(results["methods"]["baseline"]["test"]["accuracy"]["values"]) == 2
        assert all(len(m["tuning"]) == 2 and all(m["tuning"]) for m in results["methods"].values())  # chosen on validation, every run


def _comparable(results: dict) -> dict:
    """results.json without what differs between two identical runs: timings, date, machine."""
    results = json.loads(json.dumps(results))
    for entry in [results["teacher"], *results["methods"].values()]:
        entry.pop("train_seconds", None)
        entry.pop("speed", None)
    for key in ("date", "machine", "versions"):
        results.pop(key)
    return results


def test_flipping_every_hidden_training_label_changes_nothing(tmp_path):
    """At labelled_fraction 0.05 with a LightGBM teacher trained here: the rows whose labels no run
    reads (never labelled, never tested) get the other class, and results.json (apart from
    timings), every saved student and test_predictions.csv stay the same."""
    frame = _mixed_frame(1200, seed=4)
    config = {
        "data": {"path": "data.csv", "label": "label", "labelled_fraction": 0.05},
        "teacher": {"kind": "lightgbm", "params": {"n_estimators": 30, "min_child_samples": 5}},
        "student": {"kind": "logistic"},
        "methods": {name: {"epochs": 5, "lr": 0.05} for name in ["baseline", "traditional", "step_by_step", "enhanced"]},
        "evaluation": {"repeats": 3},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    def run(data: pd.DataFrame, out: str) -> Path:
        data.to_csv(tmp_path / "data.csv", index=False)
        result = runner.invoke(app, ["--quiet", "run", str(tmp_path / "config.yaml"), "--out", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
        return tmp_path / out

    first = run(frame, "first")
    runs = json.loads((first / "splits.json").read_text())["runs"]
    read = {int(i) for run_rows in runs for i in run_rows["labelled"] + run_rows["test"]}
    hidden = np.array(sorted(set(range(len(frame))) - read))
    assert len(hidden) > len(frame) / 3  # most rows: hidden in every run
    flipped = frame.copy()
    flipped.loc[hidden, "label"] = np.where(frame.loc[hidden, "label"] == "yes", "no", "yes")
    second = run(flipped, "second")

    results = [json.loads((out / "results.json").read_text()) for out in (first, second)]
    assert _comparable(results[0]) == _comparable(results[1])
    assert (first / "test_predictions.csv").read_bytes() == (second / "test_predictions.csv").read_bytes()
    assert (first / "splits.json").read_bytes() == (second / "splits.json").read_bytes()
    weights = sorted(first.glob("student*/**/model.safetensors"))
    assert len(weights) == 4 * 3 + 1
    for path in weights:
        assert path.read_bytes() == (second / path.relative_to(first)).read_bytes(), path
    # The labelled rows are few: each run's teacher learned from its 5% alone.
    assert all(len(run_rows["labelled"]) < 0.06 * (len(run_rows["train"]) + len(run_rows["validation"])) + 2 for run_rows in runs)

    # The check can fail: a teacher that sees every training label passes the flip on.
    config["teacher"]["sees"] = "all"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    seen_all = [json.loads((run(data, out) / "results.json").read_text()) for data, out in ((frame, "all_first"), (flipped, "all_second"))]
    assert seen_all[0]["teacher"]["test"] != seen_all[1]["teacher"]["test"]
