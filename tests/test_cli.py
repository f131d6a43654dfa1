import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from typer.testing import CliRunner

from stepdistill.cli import app
from stepdistill.data import linear_binary

runner = CliRunner()
FAST = {"epochs": 2, "lr": 0.05}


def _write_config(tmp_path, frame):
    frame.to_csv(tmp_path / "data.csv", index=False)
    config = {
        "data": {"path": "data.csv", "label": "label"},
        "teacher": {"kind": "logistic", "training": FAST},
        "training": FAST,
        "evaluation": {"repeats": 2},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _three_class_frame(n=3000):
    frame = linear_binary(n, 5, seed=3)
    score = frame["x0"] + 0.5 * frame["x1"]
    frame["label"] = np.where(score < -0.5, "low", np.where(score > 0.5, "high", "mid"))
    return frame


def test_run_on_a_csv_with_string_labels_writes_the_results(tmp_path):
    config = _write_config(tmp_path, _three_class_frame())
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"baseline", "traditional", "step_by_step", "enhanced"}  # one recipe: no extra control
    assert results["config"]["data"]["classes"] == ["high", "low", "mid"]
    for entry in results["methods"].values():
        assert set(entry["test"]) == {"accuracy", "log_loss", "macro_f1", "ece", "fidelity"}
        assert len(entry["test"]["accuracy"]["values"]) == 2
        assert entry["test"]["accuracy"]["mean"] > 0.7  # three well-separated bands
        assert len(entry["history"]) == 2 and len(entry["history"][0]) == 2
    assert set(results["teacher"]["test"]["accuracy"]) == {"mean", "std", "values"}
    assert (out / "report.md").is_file() and (out / "history.png").is_file() and (out / "metrics.png").is_file()
    assert (out / "student" / "model.safetensors").is_file() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in (out / "students").iterdir()) == sorted(results["methods"])


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "stepdistill", "--debug", "run", str(tmp_path / "nope.yaml")], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_demo_nonlinear_runs_end_to_end(tmp_path, monkeypatch):
    import stepdistill.methods as methods
    import stepdistill.presets as presets

    monkeypatch.setattr(presets, "DEMO_ROWS", 4000)
    monkeypatch.setattr(methods, "LR_CANDIDATES", (0.01,))  # one learning rate to try keeps it to seconds
    result = runner.invoke(app, ["demo", "--preset", "nonlinear", "--repeats", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["teacher"]["kind"] == "mlp"
    # an MLP teacher beats the logistic control on data a linear model cannot fit
    assert results["teacher"]["test"]["accuracy"]["mean"] > results["methods"]["baseline"]["test"]["accuracy"]["mean"] + 0.05


def test_make_demo_twice_replaces_the_earlier_demo(tmp_path, monkeypatch):
    """The Makefile's demo command, run twice where make runs it (the project folder, here a
    temporary one): the second replaces what the first wrote."""
    import stepdistill.presets as presets

    [recipe] = [line.split() for line in (Path(__file__).parents[1] / "Makefile").read_text().splitlines() if line.startswith("\t$(BIN)/stepdistill demo")]
    monkeypatch.setattr(presets, "DEMO_ROWS", 3000)
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, ["--quiet", *recipe[1:]])
    assert first.exit_code == 0, first.output
    (tmp_path / "runs" / "demo" / "notes.png").write_bytes(b"left by the first demo")
    second = runner.invoke(app, ["--quiet", *recipe[1:]])
    assert second.exit_code == 0, second.output
    assert json.loads((tmp_path / "runs" / "demo" / "results.json").read_text())["config"]["preset"] == "article"
    assert not (tmp_path / "runs" / "demo" / "notes.png").exists()


def test_the_cli_names_the_presets_as_they_are_defined():
    from stepdistill import cli, presets
    from stepdistill.data import llm_outputs

    assert set(cli.PRESET_NAMES) == set(presets.DEMOS)
    assert cli.DSBS_DEFAULT_DIR == str(llm_outputs.DSBS_DEFAULT_DIR)


def test_help_imports_no_heavy_library():
    """--help and argument errors answer without importing torch, pandas or scikit-learn (their
    import takes seconds); each command imports what it uses."""
    import subprocess
    import sys

    probe = "import sys, stepdistill.cli; print(sorted(m for m in ('torch', 'pandas', 'sklearn', 'scipy', 'matplotlib') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
