"""Every failure is one clear line: bad data, configs and output directories, each through the
command line, stop with exit code 2, one line on standard error naming the problem and the fix,
no traceback, and nothing in --out. Plus property-based tests: whatever bytes a data file holds
and whatever a config says, the only exception that escapes is StepDistillError."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import one_error_line, raises_one_line
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from stepdistill import StepDistillClassifier
from stepdistill.cli import app
from stepdistill.config import ExperimentConfig, load_config
from stepdistill.data import FeatureEncoder, frame_parts, linear_binary, read_frame
from stepdistill.errors import StepDistillError
from stepdistill.run_dir import load_student

runner = CliRunner()
FAST = {"epochs": 1, "lr": 0.05}


def _frame(n: int = 200) -> pd.DataFrame:
    return linear_binary(n, 3, seed=0)


def _config(tmp_path, frame: pd.DataFrame | None = None, text: str | None = None, **sections) -> list[str]:
    """``run CONFIG`` arguments for a tiny experiment on ``frame`` (or the file contents
    ``text``) in data.csv; ``sections`` replace the config's (data's extend it)."""
    if frame is not None:
        frame.to_csv(tmp_path / "data.csv", index=False)
    if text is not None:
        (tmp_path / "data.csv").write_text(text)
    config = {
        "data": {"path": "data.csv"},
        "teacher": {"kind": "logistic", "training": FAST},
        "training": FAST,
        "evaluation": {"repeats": 1},
        "methods": {"baseline": {}},
    }
    for key, value in sections.items():
        config[key] = {**config[key], **value} if key == "data" else value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return ["run", str(path)]


def _lm_config(tmp_path, data_dir, command: str = "lm-train", **sections) -> list[str]:
    """``lm-train CONFIG`` arguments (the config is checked before --out, the data after), or
    another command's on an lm-train config, the released data found by --data-dir."""
    config = {"data": {"task": "cqa"}, "student": {"tiny": {"hidden": 16, "layers": 1}}, **sections}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return [command, str(tmp_path / "config.yaml"), "--data-dir", str(data_dir)]


def _with_cell(column: str, row: int, value) -> pd.DataFrame:
    frame = _frame().astype({column: object})
    frame.loc[row, column] = value
    return frame


def _yaml_file(tmp_path, text: str) -> list[str]:
    _frame().to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "config.yaml").write_text(text)
    return ["run", str(tmp_path / "config.yaml")]


def _thousands(frame: pd.DataFrame, column: str, decimal: str = ".", thousands: str = ",") -> pd.DataFrame:
    """``frame`` with ``column`` times 10,000 as text written with ``thousands`` between groups of
    three digits and ``decimal`` before two decimals ("-12,047.74")."""
    written = [f"{v:,.2f}".translate(str.maketrans(",.", thousands + decimal)) for v in frame[column] * 10_000]
    return frame.assign(**{column: written})


def _latin1(tmp_path, **data) -> list[str]:
    """``run CONFIG`` arguments for data.csv in latin-1, its accented categories not utf-8;
    ``data`` extends the config's data."""
    _frame().assign(city=["café", "naïve"] * 100).to_csv(tmp_path / "data.csv", index=False, encoding="latin-1")
    return _config(tmp_path, data=data)


def _jsonl(tmp_path, lines: list[str], **data) -> list[str]:
    """``run CONFIG`` arguments for data.jsonl holding ``lines``; ``data`` extends the config's data."""
    (tmp_path / "data.jsonl").write_text("".join(line + "\n" for line in lines))
    return _config(tmp_path, data={"path": "data.jsonl", **data})


def _questions(answer_of_the_third: str) -> list[str]:
    """Multiple-choice records q1..q4, the third answered ``answer_of_the_third``."""
    answers = ["a", "b", answer_of_the_third, "a"]
    return [json.dumps({"id": f"q{i + 1}", "question": f"which {i}?", "choices": ["a", "b"], "label": answer}) for i, answer in enumerate(answers)]


def _named_classes() -> pd.DataFrame:
    return _frame().assign(label=lambda f: np.where(f.label == 1, "benign", "malignant"))


def _joblib_teacher(tmp_path, labels_of, **settings) -> list[str]:
    """``run CONFIG`` arguments with a scikit-learn Pipeline teacher, fitted on ``labels_of`` the
    data's labels (benign, malignant) and saved with joblib; ``settings`` extend the teacher's."""
    frame = _named_classes()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame.drop(columns="label"), labels_of(frame["label"]))
    joblib.dump(pipeline, tmp_path / "teacher.joblib")
    return _config(tmp_path, frame, teacher={"kind": "sklearn", "path": "teacher.joblib", "trust_pickle": True, **settings})


def _is_benign(labels: pd.Series) -> pd.Series:
    return (labels == "benign").astype(int)


def _file_teacher(tmp_path, n_extra: int, **settings) -> list[str]:
    """``run CONFIG`` arguments with a file teacher holding outputs for the data's 200 sample ids
    and ``n_extra`` more."""
    pd.DataFrame({"id": np.arange(200 + n_extra), "logit_0": np.zeros(200 + n_extra, np.float32)}).to_parquet(tmp_path / "teacher.parquet")
    return _config(tmp_path, _frame(), teacher={"kind": "file", "path": "teacher.parquet", **settings})


def _earlier_run(tmp_path) -> None:
    """An --out directory that an earlier run wrote."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.json").write_text("{}")


# case -> (arguments before --out, given tmp_path; the --out to pass, or None for tmp_path/out;
# a fragment the error line must hold)
CASES = {
    # --- the data ------------------------------------------------------------------------------
    "text in a numeric column": (lambda p: _config(p, _with_cell("x1", 7, "abc")), None, "column 'x1' holds numbers but also text in 1 rows: 'abc' (data row 8)"),
    "duplicate column names": (lambda p: _config(p, text="x0,x1,x1,label\n" + "1,2,3,0\n4,5,6,1\n" * 20), None, "more than one column named 'x1'"),
    "a value too large for float32": (lambda p: _config(p, _with_cell("x2", 3, 1e300)), None, "too large for the float32"),
    "a continuous float label": (
        lambda p: _config(p, _frame().assign(label=np.random.default_rng(0).normal(size=200).round(2))),
        None,
        "looks like a regression target",
    ),
    "the data path is a directory": (lambda p: (p / "folder.csv").mkdir() or _config(p, data={"path": "folder.csv"}), None, "is a directory"),
    "a missing data file, relative to the config": (lambda p: _config(p), None, "relative paths start at the folder of the config file"),
    "a semicolon-separated CSV": (lambda p: _config(p, text=_frame().to_csv(index=False, sep=";")), None, "set data.sep: ';'"),
    "a tab-separated CSV": (lambda p: _config(p, text=_frame().to_csv(index=False, sep="\t")), None, "set data.sep: '\\t'"),
    "a missing value in a categorical column": (
        lambda p: _config(p, _frame().assign(city=["a", "b"] * 99 + [None, "a"])),
        None,
        "in columns: city (1 rows), e.g. data rows 199",
    ),
    "a missing value in a numeric column": (lambda p: _config(p, _with_cell("x1", 5, np.nan)), None, "x1 (1 rows)"),
    "an infinite value": (lambda p: _config(p, _with_cell("x0", 2, np.inf)), None, "infinite feature values"),
    "an infinite value under data.missing impute": (lambda p: _config(p, _with_cell("x0", 2, np.inf), data={"missing": "impute"}), None, "infinite feature values"),
    "data.categorical names no column": (lambda p: _config(p, _frame(), data={"categorical": ["town"]}), None, "data.categorical names columns that are not features: town"),
    "an unknown data.missing policy": (lambda p: _config(p, _frame(), data={"missing": "drop"}), None, "data.missing"),
    "an unknown label column": (lambda p: _config(p, _frame(), data={"label": "target"}), None, "label column 'target' not found"),
    "a single class": (lambda p: _config(p, _frame().assign(label=1)), None, "single class"),
    "missing labels": (lambda p: _config(p, _with_cell("label", 4, np.nan)), None, "'label' has 1 missing"),
    "an identifier-like category": (lambda p: _config(p, linear_binary(1200, 3).assign(name=[f"n{i}" for i in range(1200)])), None, "over 1000 distinct values: name"),
    "a header without rows": (lambda p: _config(p, text="x0,x1,label\n"), None, "no rows"),
    "an unsupported file type": (lambda p: _config(p, _frame(), data={"path": "config.yaml"}), None, "unsupported data file type"),
    "duplicated ids": (lambda p: _config(p, _frame().assign(row=[1] * 200), data={"id_column": "row"}), None, "duplicated"),
    "every feature column with decimal commas (sep ';')": (
        lambda p: _config(p, text=_frame().to_csv(index=False, sep=";", decimal=","), data={"sep": ";"}),
        None,
        "column 'x0' holds numbers written with commas, which pandas' defaults read as text: '0,059693195' (data row 1), "
        "'1,2047737' (data row 2), '0,76982784' (data row 3) — set data.decimal: ',' if they are decimal commas;"
        " or list 'x0' in data.categorical",
    ),
    "commas between thousands": (
        lambda p: _config(p, _thousands(_frame(), "x1")),
        None,
        "— set data.thousands: ',' if they separate thousands; or list 'x1' in data.categorical",
    ),
    "decimal commas and dots between thousands": (
        lambda p: _config(p, text=_thousands(_frame(), "x2", decimal=",", thousands=".").to_csv(index=False, sep=";"), data={"sep": ";"}),
        None,
        "set data.decimal: ',' and data.thousands: '.' if they are decimal commas",
    ),
    "data.thousands reading a decimal comma": (
        lambda p: _config(p, text=_frame().to_csv(index=False, sep=";", decimal=","), data={"sep": ";", "thousands": ","}),
        None,
        "column 'x0' holds '0,059693195' (data row 1), which data.thousands: ',' reads as 59693195: the separator does not stand"
        " between groups of three digits — if ',' is the decimal mark, set data.decimal: ',' instead",
    ),
    "data.decimal the same as data.thousands": (lambda p: _config(p, _frame(), data={"decimal": ",", "thousands": ","}), None, "data.decimal and data.thousands are both ','"),
    "an unknown data.encoding": (lambda p: _config(p, _frame(), data={"encoding": "latin-11"}), None, "data.encoding 'latin-11' is not an encoding Python knows"),
    "a latin-1 CSV": (lambda p: _latin1(p), None, "is not utf-8 text (it holds the byte 0xe9, which utf-8 does not allow) — set data.encoding"),
    "a broken JSON Lines line": (
        lambda p: _jsonl(p, ['{"x": 1, "label": 0}', "", '{"x": 2, "label": 1}', '{"x": 3, "label": '], label="label"),
        None,
        "line 4 is not valid JSON (Expecting value at column 19)",
    ),
    "a JSON Lines line that is a list": (lambda p: _jsonl(p, ['{"x": 1, "label": 0}', "[1, 0]"]), None, "line 2 holds a JSON list, not an object"),
    "a record without text": (
        lambda p: _config(p, text="id,premise,label\n11,a cat,0\n17,,1\n", data={"text": "premise", "id_column": "id"}),
        None,
        "the 'premise' text of record 2 (id 17) is missing",
    ),
    "a multiple-choice label that is none of the choices": (
        lambda p: _jsonl(p, _questions("z"), text="question", choices="choices", id_column="id"),
        None,
        "the label 'z' of record 3 (id q3) is none of its choices",
    ),
    "a class spelt two ways": (
        lambda p: _config(p, _frame().assign(label=["yes", "no", "Yes "] * 66 + ["no", "yes"])),
        None,
        "label column 'label' spells one class 2 ways, 'Yes ' and 'yes', which differ only by case or surrounding spaces",
    ),
    # --- the config ----------------------------------------------------------------------------
    "a YAML syntax error": (lambda p: _yaml_file(p, "data:\n  path: data.csv\n  label: [a\nteacher: {}\n"), None, "line 4, column"),
    "a config that is not a mapping": (lambda p: _yaml_file(p, "- data\n- teacher\n"), None, "must be a YAML mapping"),
    "a missing config file": (lambda p: ["run", str(p / "nope.yaml")], None, "config file not found"),
    "no data.path": (lambda p: _yaml_file(p, "data: {label: label}\n"), None, "has no data.path"),
    "a misspelt section": (lambda p: _config(p, _frame(), teachr={"kind": "mlp"}), None, "unknown key 'teachr'; did you mean 'teacher'?"),
    "a misspelt data key": (lambda p: _config(p, _frame(), data={"labl": "label"}), None, "did you mean 'label'?"),
    "a misspelt teacher key": (lambda p: _config(p, _frame(), teacher={"kind": "mlp", "hiden": [4]}), None, "at teacher.hiden: unknown key 'hiden'; did you mean 'hidden'?"),
    "a misspelt method setting": (lambda p: _config(p, _frame(), methods={"enhanced": {"ramp_epoch": 2}}), None, "did you mean 'ramp_epochs'?"),
    "a key nothing is close to": (lambda p: _config(p, _frame(), evaluation={"zzzz": 1}), None, "the keys there are: folds, repeats, scheme, seed"),
    "an unknown method": (lambda p: _config(p, _frame(), methods={"magic": {}}), None, "magic"),
    "an unknown teacher kind": (lambda p: _config(p, _frame(), teacher={"kind": "forest"}), None, "teacher.kind"),
    "an unknown student kind": (lambda p: _config(p, _frame(), student={"kind": "transformer"}), None, "student.kind"),
    "alpha above one": (lambda p: _config(p, _frame(), methods={"traditional": {"alpha": 1.5}}), None, "alpha"),
    "alpha plus beta above one": (lambda p: _config(p, _frame(), methods={"step_by_step": {"alpha": 0.8, "beta": 0.3}}), None, "alpha + beta must be at most 1"),
    "zero temperature": (lambda p: _config(p, _frame(), methods={"traditional": {"temperature": 0}}), None, "temperature"),
    "a weight that goes negative": (
        lambda p: _config(p, _frame(), methods={"traditional": {"weights": {"hard": {"kind": "constant", "value": 3}}}}),
        None,
        "methods.traditional",
    ),
    "a negative learning rate": (lambda p: _config(p, _frame(), training={"lr": -1}), None, "lr must be positive"),
    "zero repeats": (lambda p: _config(p, _frame(), evaluation={"repeats": 0}), None, "evaluation.repeats"),
    "a validation share above one half": (lambda p: _config(p, _frame(), data={"val_fraction": 0.7}), None, "data.val_fraction"),
    "an unknown tuning setting": (lambda p: _config(p, _frame(), tune={"grid": {"temprature": [1, 2]}}), None, "unknown setting 'temprature'"),
    "a missing rationale layer": (lambda p: _config(p, _frame(), teacher={"kind": "mlp", "hidden": [4], "rationale_layer": 2}), None, "rationale_layer 2 does not exist"),
    "cv with a fixed test file": (
        lambda p: _config(p, _frame(), data={"test_path": "data.csv"}, evaluation={"scheme": "cv", "repeats": 1}),
        None,
        "scheme cv",
    ),
    # --- the teacher ---------------------------------------------------------------------------
    "a teacher fitted on encoded labels": (
        lambda p: _joblib_teacher(p, _is_benign),
        None,
        "teacher classes ('0', '1') do not match the data's ('benign', 'malignant')",
    ),
    "teacher classes spelt with capitals": (
        lambda p: _joblib_teacher(p, lambda labels: labels.str.title()),
        None,
        "only by case or surrounding spaces: 'Benign' and 'benign', 'Malignant' and 'malignant'",
    ),
    "a teacher.classes naming classes the teacher lacks": (
        lambda p: _joblib_teacher(p, _is_benign, classes={1: "benign", 2: "malignant"}),
        None,
        "teacher.classes maps ('1', '2') but the teacher's classes are ('0', '1')",
    ),
    "a teacher.classes mapping two classes to one": (
        lambda p: _joblib_teacher(p, _is_benign, classes={0: "benign", 1: "benign"}),
        None,
        "maps more than one teacher class to 'benign'",
    ),
    "a teacher.classes of unquoted yes and no": (
        lambda p: _joblib_teacher(p, _is_benign, classes={0: False, 1: True}),
        None,
        "False is neither a class name nor an integer (YAML reads yes, no, true and false unquoted as booleans: quote class names)",
    ),
    "a teacher.classes for a teacher trained here": (
        lambda p: _config(p, _named_classes(), teacher={"kind": "lightgbm", "classes": {0: "benign", 1: "malignant"}}),
        None,
        "trained here on the data's own (remove classes, or set path)",
    ),
    "a strict teacher file with ids the data lacks": (
        lambda p: _file_teacher(p, 5, strict=True),
        None,
        "holds outputs for 5 ids the data lacks (e.g. 200, 201, 202); drop them",
    ),
    # --- the model libraries -------------------------------------------------------------------
    "LightGBM n_estimators -5": (lambda p: _config(p, _frame(), teacher={"kind": "lightgbm", "params": {"n_estimators": -5}}), None, "LightGBM could not train the teacher"),
    "LightGBM num_leaves -1": (lambda p: _config(p, _frame(), teacher={"kind": "lightgbm", "params": {"num_leaves": -1}}), None, "fix teacher.params"),
    "a misspelt LightGBM parameter": (
        lambda p: _config(p, _frame(), teacher={"kind": "lightgbm", "params": {"n_estimatorz": 200}}),
        None,
        "unknown lightgbm parameter 'n_estimatorz' (did you mean 'n_estimators'?)",
    ),
    "a misspelt XGBoost parameter": (
        lambda p: _config(p, _frame(), teacher={"kind": "xgboost", "params": {"max_dept": 3}}),
        None,
        "unknown xgboost parameter 'max_dept' (did you mean 'max_depth'?)",
    ),
    "an XGBoost value out of range": (lambda p: _config(p, _frame(), teacher={"kind": "xgboost", "params": {"max_depth": -3}}), None, "XGBoost could not train the teacher"),
    # --- transfer sets ---------------------------------------------------------------------------
    "a transfer size of 0": (lambda p: _config(p, _frame(), transfer={"size": 0}), None, "transfer.size"),
    "a transfer kind that does not exist": (lambda p: _config(p, _frame(), transfer={"kind": "smote"}), None, "transfer.kind"),
    "gaussian transfer rows without numeric columns": (
        lambda p: _config(p, pd.DataFrame({"city": ["a", "b", "c", "d"] * 50, "label": [0, 1] * 100}), transfer={"kind": "gaussian"}),
        None,
        "transfer kind gaussian adds noise to numeric columns, and the data has none; use transfer kind munge",
    ),
    "transfer rows for a file of teacher outputs": (
        lambda p: _config(p, _frame(), teacher={"kind": "file", "path": "outputs.csv"}, transfer={"size": 1}),
        None,
        "a transfer set needs a teacher that labels new rows, and a teacher of kind 'file' gives outputs for the data's rows only",
    ),
    "an unlabelled pool with other columns": (
        lambda p: _frame().drop(columns="x1").to_csv(p / "pool.csv", index=False) or _config(p, _frame(), data={"unlabelled_path": "pool.csv"}),
        None,
        "the unlabelled pool's columns differ from the data's features: it lacks x1; give it the data's feature columns",
    ),
    "an empty unlabelled pool": (
        lambda p: ((p / "pool.csv").write_text("x0,x1,x2\n"), _config(p, _frame(), data={"unlabelled_path": "pool.csv"}))[1],
        None,
        "has no rows",
    ),
    "text in an unlabelled pool's numeric column": (
        lambda p: _with_cell("x1", 3, "abc").drop(columns="label").to_csv(p / "pool.csv", index=False) or _config(p, _frame(), data={"unlabelled_path": "pool.csv"}),
        None,
        "the unlabelled pool's column 'x1' holds text where the data has numbers (e.g. 'abc'); fix those rows",
    ),
    "a transfer set for text records": (
        lambda p: _config(p, _frame(), data={"text": "x0"}, transfer={"size": 1}),
        None,
        "a transfer set is made of a table's rows, and data.text records are read through sentence features; drop transfer",
    ),
    # --- the output directory and the command line ---------------------------------------------
    "--out on a read-only file system": (lambda p: _config(p, _frame()), "/proc/stepdistill-test/out", "cannot write --out"),
    "--out under a file": (lambda p: _config(p, _frame()), "data.csv/out", "cannot write --out"),
    "--out is a file": (lambda p: _config(p, _frame()), "data.csv", "is a file"),
    "--out is empty": (lambda p: _config(p, _frame()), "", "--out is empty"),
    "--out is not empty": (lambda p: _earlier_run(p) or _config(p, _frame()), None, "is not empty"),
    "--overwrite of files no run wrote": (
        lambda p: (p / "out").mkdir() or (p / "out" / "notes.txt").write_text("mine") and _config(p, _frame()) + ["--overwrite"],
        None,
        "not an earlier run's results",
    ),
    "both a config and --resume": (lambda p: _config(p, _frame()) + ["--resume", str(p)], None, "exactly one"),
    "ablate into a --out that is not empty": (lambda p: _earlier_run(p) or ["ablate", _config(p, _frame())[1]], None, "is not empty"),
    "sweep-data into a --out that is not empty": (lambda p: _earlier_run(p) or ["sweep-data", _config(p, _frame())[1]], None, "is not empty"),
    "an unknown preset": (lambda p: ["demo", "--preset", "imagenet"], None, "unknown preset 'imagenet'"),
}
# The same, for commands on an lm-train config: (arguments, given tmp_path and the released
# data's folder; the --out; the fragment).
LM_CASES = {
    "lm-train into a --out that is not empty": (lambda p, data: _earlier_run(p) or _lm_config(p, data), None, "is not empty"),
    "ablate of an lm-train config into a --out that is not empty": (lambda p, data: _earlier_run(p) or _lm_config(p, data, "ablate"), None, "is not empty"),
    "lm-train with too few records for a validation split": (
        lambda p, data: _lm_config(p, data, data={"task": "cqa", "max_train_records": 4}, evaluation={"val_fraction": 0.1}),
        None,
        "leaves no validation record",
    ),
}


def _snapshot(folder) -> dict:
    return {path: path.read_bytes() if path.is_file() else None for path in folder.rglob("*")}


def _refused_alone(tmp_path, args: list[str], out: str | None, expected: str) -> None:
    """``args`` with --quiet and --out (None: tmp_path/out) stop with one line holding
    ``expected`` and nothing else on standard error, and write nothing: every file and folder
    under tmp_path, --out included, as it was."""
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["--quiet", *args, "--out", str(tmp_path / "out") if out is None else out])
    assert expected in one_error_line(result, alone=True)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, case):
    make, out, expected = CASES[case]
    monkeypatch.chdir(tmp_path)  # relative --out values land here
    _refused_alone(tmp_path, make(tmp_path), out, expected)


@pytest.mark.parametrize("case", LM_CASES)
def test_bad_lm_input_is_one_line_exit_2_and_writes_nothing(tmp_path, dsbs_dir, case):
    make, out, expected = LM_CASES[case]
    _refused_alone(tmp_path, make(tmp_path, dsbs_dir), out, expected)


@pytest.mark.parametrize("case", ["an unknown label column", "a missing value in a numeric column", "a single class", "an identifier-like category", "a missing rationale layer"])
def test_without_quiet_progress_comes_first_and_the_error_line_last(tmp_path, case):
    """Errors found once the data is read or the teacher fitted: the progress lines printed by
    then stay, and the error is still one line, the last."""
    make, _, expected = CASES[case]
    result = runner.invoke(app, [*make(tmp_path), "--out", str(tmp_path / "out")])
    assert expected in one_error_line(result) and len(result.stderr.splitlines()) > 1
    assert not (tmp_path / "out").exists()


def test_a_library_message_on_the_process_stderr_is_not_a_second_line(tmp_path):
    """LightGBM prints its fatal error straight to file descriptor 2 before raising it."""
    args = _config(tmp_path, _frame(), teacher={"kind": "lightgbm", "params": {"num_leaves": -1}})
    proc = subprocess.run([sys.executable, "-m", "stepdistill", "--quiet", *args, "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: LightGBM") and proc.stderr.count("\n") == 1, proc.stderr


def test_a_diverging_student_is_stopped_flagged_and_named(tmp_path):
    args = _config(tmp_path, _frame(), training={"epochs": 3, "lr": 1e6})
    result = runner.invoke(app, ["--quiet", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "DIVERGED 1/1" in result.stdout
    assert "warning: baseline diverged in 1 of 1 runs (" in result.stderr.replace("\n", " ")
    entry = json.loads((tmp_path / "out" / "results.json").read_text())["methods"]["baseline"]
    assert entry["flags"]["diverged"] == 1 and "lower the learning rate" in entry["divergence"][0]
    assert len(entry["history"][0]) == 1  # stopped at the epoch it blew up


def test_overwrite_replaces_an_earlier_run_and_removes_its_stale_files(tmp_path):
    _earlier_run(tmp_path)
    (tmp_path / "out" / "stale.png").write_bytes(b"old")
    args = _config(tmp_path, _frame())
    result = runner.invoke(app, ["--quiet", *args, "--out", str(tmp_path / "out"), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out" / "stale.png").exists()
    assert "methods" in json.loads((tmp_path / "out" / "results.json").read_text())


def test_declared_categorical_columns_take_text_and_numeric_codes():
    frame = _with_cell("x1", 7, "abc").assign(code=[1, 2] * 100)
    features, *_ = frame_parts(frame, "label", categorical=("x1", "code"))
    assert features["x1"].dtype == "string" and features["code"].iloc[0] == "1"
    assert FeatureEncoder().fit(features).categorical_ == ["x1", "code"]


def test_a_csv_of_decimal_commas_dots_between_thousands_and_latin1_runs_and_predicts(tmp_path):
    """Numbers written 1.234,5 in a latin-1 file separated by ';' read as the numbers they are,
    with data.sep, data.decimal, data.thousands and data.encoding; the saved student reads new
    rows written alike with the same options, and predicts from those numbers."""
    frame = _thousands(linear_binary(400, 3, seed=0), "x1", decimal=",", thousands=".").assign(city=["café", "naïve"] * 200)
    options = {"sep": ";", "decimal": ",", "thousands": ".", "encoding": "latin-1"}
    frame.to_csv(tmp_path / "data.csv", index=False, sep=";", decimal=",", encoding="latin-1")
    args = _config(tmp_path, data=options)
    result = runner.invoke(app, ["--quiet", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["data"]["n_features"] == 5  # x0, x1, x2 and the two cities
    assert results["teacher"]["test"]["accuracy"]["mean"] >= 0.9
    assert json.loads((tmp_path / "out" / "student" / "student.json").read_text())["read_options"] == options

    rows = frame.drop(columns="label").head(50)
    rows.to_csv(tmp_path / "new.csv", index=False, sep=";", decimal=",", encoding="latin-1")
    result = runner.invoke(app, ["--quiet", "predict", str(tmp_path / "out"), str(tmp_path / "new.csv")])
    assert result.exit_code == 0, result.output
    predicted = pd.read_csv(io.StringIO(result.stdout))
    numbers = rows.assign(x1=[float(text.replace(".", "").replace(",", ".")) for text in rows["x1"]])
    expected = load_student(tmp_path / "out" / "student").predict_proba(numbers)
    np.testing.assert_allclose(predicted[["p_0", "p_1"]].to_numpy(), expected, atol=1e-6)


@pytest.mark.parametrize(
    "write, options",
    [
        (lambda frame, path: frame.to_csv(path, index=False, sep=";", decimal=","), {"sep": ";", "decimal": ","}),
        (lambda frame, path: _thousands(frame, "x0").to_csv(path, index=False), {"thousands": ","}),
    ],
    ids=["decimal comma", "commas between thousands"],
)
def test_numbers_read_as_numbers_with_the_files_separators(tmp_path, write, options):
    frame = _frame()
    write(frame, tmp_path / "data.csv")
    config = ExperimentConfig.model_validate({"data": {"path": tmp_path / "data.csv", **options}})
    features, y, _, _ = frame_parts(read_frame(config.data.path, **config.data.read_options()), "label")
    expected = frame.drop(columns="label")
    if "thousands" in options:
        expected["x0"] = [float(text.replace(",", "")) for text in _thousands(frame, "x0")["x0"]]
    assert list(features.dtypes) == [np.float64] * 3
    np.testing.assert_allclose(features.to_numpy(), expected.to_numpy(), rtol=1e-6)  # the frame is float32
    np.testing.assert_array_equal(y, frame["label"])


def test_a_latin1_csv_reads_with_data_encoding(tmp_path):
    _latin1(tmp_path)
    frame = read_frame(tmp_path / "data.csv", encoding="latin-1")
    assert list(frame["city"][:2]) == ["café", "naïve"]


def test_a_mostly_numeric_column_listed_in_data_categorical_is_a_category():
    """Codes written with a comma ("39,1") are refused as numbers unless declared categories."""
    frame = _frame(8).assign(code=["39,1", "40,2"] * 4)
    with raises_one_line(r"column 'code' holds numbers written with commas.*set data\.decimal: ','"):
        frame_parts(frame, "label")
    features, *_ = frame_parts(frame, "label", categorical=("code",))
    assert features["code"].dtype == "string" and sorted(features["code"].unique()) == ["39,1", "40,2"]


def test_features_that_are_all_categories_are_checked():
    """With no numeric feature column the missing-value check still runs (it once crashed)."""
    frame = pd.DataFrame({"city": ["oslo", "rome", "lima", "oslo"], "colour": ["red", "blue", "red", "blue"], "label": [0, 1, 0, 1]})
    features, y, _, _ = frame_parts(frame, "label")
    assert list(features.columns) == ["city", "colour"] and list(y) == [0, 1, 0, 1]
    with raises_one_line(r"missing or infinite feature values in columns: colour \(1 rows\), e\.g\. data rows 3"):
        frame_parts(frame.assign(colour=["red", "blue", None, "blue"]), "label")


def test_imputed_missing_values_take_the_training_mean_and_a_category_of_their_own():
    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0, 5.0], "city": ["a", None, "b", "a"], "label": [0, 1, 0, 1]})
    features, *_ = frame_parts(frame, "label", missing="impute")
    encoder = FeatureEncoder(scale_numeric=False, missing="impute").fit(features)
    encoded = encoder.transform(features)
    assert encoded[1, 0] == 3.0 and "city_<missing>" in encoder.feature_names
    restored = FeatureEncoder.from_json(json.loads(json.dumps(encoder.to_json())))
    np.testing.assert_array_equal(restored.transform(features), encoded)


def test_the_estimator_refuses_a_category_it_never_saw():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=120), "city": rng.choice(["a", "b"], size=120)})
    y = (X["x"] > 0).astype(int)
    model = StepDistillClassifier(teacher="logistic", method="baseline", epochs=1).fit(X, y)
    with raises_one_line(r"column 'city' holds categories the student never saw in training \('c'\)"):
        model.predict(X.assign(city="c"))


# --- property-based: only StepDistillError escapes ------------------------------------------

CELLS = st.sampled_from(["1", "2.5", "-3", "abc", "", "nan", "inf", "1e300", "True", ";", "|", '"', "a,b", "0", "x y", "\t"])
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _read_and_check(path) -> None:
    """What stepdistill does with a data file before training: read it, split off the label (its
    last column) and check the features."""
    frame = read_frame(path)
    frame_parts(frame, str(frame.columns[-1]))


@FUZZ
@given(data=st.binary(max_size=300))
def test_any_bytes_as_a_csv_fail_only_with_one_line(tmp_path, data):
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    try:
        _read_and_check(path)
    except StepDistillError as err:
        assert "\n" not in str(err)


@FUZZ
@given(
    header=st.lists(st.sampled_from(["a", "b", "label", "a", ""]), min_size=1, max_size=4),
    rows=st.lists(st.lists(CELLS, min_size=1, max_size=5), max_size=12),
    sep=st.sampled_from([",", ";", "\t"]),
)
@example(header=["a"], rows=[['"'], ['"']], sep=",")  # a quoted line break as the only label: the class is "\n"
def test_any_csv_shape_fails_only_with_one_line(tmp_path, header, rows, sep):
    path = tmp_path / "data.csv"
    path.write_text("\n".join(sep.join(cells) for cells in [header, *rows]) + "\n")
    try:
        _read_and_check(path)
    except StepDistillError as err:
        assert "\n" not in str(err)


SECTIONS = ["data", "teacher", "student", "methods", "training", "evaluation", "tune", "teachr"]
KEYS = ["kind", "hidden", "lr", "epochs", "repeats", "scheme", "alpha", "temperature", "params", "label", "grid", "weights", "missing", "sep", "categorical", "path", "lightgbm", "enhanced", "baseline"]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True) | st.sampled_from(KEYS + ["mlp", "auto", "cv", "logistic", "xgboost"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(config=st.dictionaries(st.sampled_from(SECTIONS), VALUES, max_size=4))
def test_any_config_fails_only_with_one_line(tmp_path, config):
    _frame(40).to_csv(tmp_path / "data.csv", index=False)
    path = tmp_path / "config.yaml"
    data = config.get("data")
    config["data"] = {**(data if isinstance(data, dict) else {}), "path": "data.csv"}
    path.write_text(yaml.safe_dump(config))
    try:
        load_config(path)
    except StepDistillError as err:
        assert "\n" not in str(err)
