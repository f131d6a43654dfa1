import json
import re

import numpy as np
import pytest
import yaml
from scipy import stats
from typer.testing import CliRunner

import stepdistill.presets as presets
from stepdistill.cli import app
from stepdistill.config import ExperimentConfig, TuneConfig
from stepdistill.data import linear_binary
from stepdistill.errors import StepDistillError
from stepdistill.report.staged import write_staged
from stepdistill.studies import ablation_config, paired_comparison, parse_fractions, run_ablation

runner = CliRunner()
VARIANTS = [
    "full",
    "no_curriculum",
    "no_cosine",
    "no_margin",
    "no_consistency",
    "no_lr_schedule",
    "no_rationale",
    "baseline",
    "traditional",
    "step_by_step",
]
BINARY_METRICS = {"accuracy", "log_loss", "roc_auc", "ece", "fidelity"}


@pytest.fixture(autouse=True)
def small_demos(monkeypatch):
    """4,000 rows instead of 100,000: 3,200 training rows keep every study to seconds."""
    monkeypatch.setattr(presets, "DEMO_ROWS", 4000)


def _one_error_line(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    assert "Traceback" not in result.output
    return errors[0]


def test_ablate_on_the_article_preset_writes_every_variant_with_paired_statistics(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["ablate", "--preset", "article", "--seeds", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    ablation = json.loads((out / "ablation.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert list(ablation) == VARIANTS and list(results["methods"]) == VARIANTS
    for name in ["ablation.md", "ablation.png", "report.md", "history.png", "metrics.png"]:
        assert (out / name).is_file()

    full = results["methods"]["full"]["test"]
    for name, entry in ablation.items():
        assert set(entry) == {"test", "vs_full"}
        assert set(entry["test"]) == set(entry["vs_full"]) == BINARY_METRICS
        for metric in BINARY_METRICS:
            values = results["methods"][name]["test"][metric]["values"]
            assert len(values) == 3
            assert entry["test"][metric] == pytest.approx({"mean": np.mean(values), "std": np.std(values, ddof=1)})
            differences = np.array(values) - np.array(full[metric]["values"])
            low, high = (
                (differences.mean(), differences.mean())
                if differences.std() == 0  # scipy's interval is undefined for a zero scale
                else stats.t.interval(0.95, df=2, loc=differences.mean(), scale=stats.sem(differences))
            )
            comparison = entry["vs_full"][metric]
            assert set(comparison) == {"diff", "ci_low", "ci_high", "significant"}
            assert comparison["diff"] == pytest.approx(differences.mean(), abs=1e-12)
            assert (comparison["ci_low"], comparison["ci_high"]) == pytest.approx((low, high), abs=1e-12)
            assert comparison["significant"] == (low > 0 or high < 0)
    assert all(not c["significant"] and c["diff"] == 0 for c in ablation["full"]["vs_full"].values())

    # each removal reached the trained method
    described = {name: entry["method"]["training"] for name, entry in results["methods"].items()}
    assert described["full"]["scheduler"] == "plateau" and described["no_lr_schedule"]["scheduler"] == "none"
    assert "consistency" not in _term_names(results, "no_consistency") and "consistency" in _term_names(results, "full")
    assert {record["terms"]["rationale"]["weight"] for record in results["methods"]["no_rationale"]["history"][0]} == {0.0}
    first_epochs = {name: results["methods"][name]["history"][0][0] for name in ("full", "no_curriculum")}
    assert {name: record["terms"]["rationale"]["weight"] for name, record in first_epochs.items()} == {
        "full": 0.0,
        "no_curriculum": pytest.approx(0.1),
    }
    assert "| no_rationale |" in (out / "ablation.md").read_text()


def _term_names(results: dict, method: str) -> list[str]:
    return [term["name"] for term in results["methods"][method]["method"]["terms"]]


def test_a_removal_that_changes_nothing_has_zero_difference_and_is_not_significant():
    config, frame = presets.demo("article", 2)
    config = config.model_copy(update={"methods": {"enhanced": {"consistency": 0}}})
    results, ablation = run_ablation(config, frame)
    assert results["methods"]["no_consistency"]["test"] == results["methods"]["full"]["test"]
    for comparison in ablation["no_consistency"]["vs_full"].values():
        assert comparison == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "significant": False}


def test_ablation_variants_carry_the_configs_settings():
    config = ExperimentConfig(methods={"mine": {"preset": "enhanced", "lr": 0.01}, "baseline": {"epochs": 3}})
    methods = ablation_config(config).methods
    assert list(methods) == VARIANTS
    assert methods["full"] == {"preset": "enhanced", "lr": 0.01}
    assert methods["no_cosine"] == {"preset": "enhanced", "lr": 0.01, "rationale_distance": "mse", "margin": 0.0}
    assert methods["baseline"] == {"epochs": 3} and methods["traditional"] == {}


@pytest.mark.parametrize(
    "config, expected",
    [
        (ExperimentConfig(methods={"baseline": {}}), "found none"),
        (ExperimentConfig(methods={"a": {"preset": "enhanced"}, "b": {"preset": "enhanced"}}), "found several (a, b)"),
        (ExperimentConfig(tune=TuneConfig(grid={"margin": [0.0, 0.1], "lr": [0.01]})), "tune.grid tunes margin"),
    ],
)
def test_configs_that_cannot_be_ablated(config, expected):
    with pytest.raises(StepDistillError, match=re.escape(expected)):
        ablation_config(config)


def test_paired_comparison_with_one_seed_has_no_interval():
    assert paired_comparison([0.9], [0.8]) == {"diff": pytest.approx(0.1), "ci_low": None, "ci_high": None, "significant": False}


def test_sweep_data_on_the_article_preset_writes_every_fraction_and_the_teacher_helps_with_few_labels(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep-data", "--preset", "article", "--fractions", "1,0.02", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sweep = json.loads((out / "sweep.json").read_text())
    assert set(sweep) == {"baseline", "traditional", "step_by_step", "enhanced"}
    for by_fraction in sweep.values():
        assert list(by_fraction) == ["0.02", "1"]
        for metrics in by_fraction.values():
            assert set(metrics) == BINARY_METRICS and all(set(s) == {"mean", "std"} for s in metrics.values())
    accuracy = {name: by_fraction["0.02"]["accuracy"]["mean"] for name, by_fraction in sweep.items()}
    assert max(accuracy["traditional"], accuracy["enhanced"]) > accuracy["baseline"]
    # with every label, a linear student of a linear teacher has nothing left to learn from it
    assert sweep["baseline"]["1"]["accuracy"]["mean"] > accuracy["baseline"]
    assert (out / "sweep.png").is_file() and "| enhanced |" in (out / "sweep.md").read_text()


@pytest.mark.parametrize("fractions", ["0,0.5", "0.1,abc", "1.5", "0.1,0.1", ""])
def test_bad_fractions_are_one_line_exit_2(tmp_path, fractions):
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep-data", "--preset", "article", "--fractions", fractions, "--out", str(out)])
    assert "--fractions" in _one_error_line(result)
    assert not out.exists()


def test_a_fraction_that_leaves_a_class_unlabelled_is_one_line_exit_2(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep-data", "--preset", "article", "--fractions", "0.0001,1", "--out", str(out)])
    assert "labelled_fraction 0.0001 leaves some class without a labelled row" in _one_error_line(result)
    assert not out.exists()


@pytest.mark.parametrize("command", ["ablate", "sweep-data"])
@pytest.mark.parametrize("source", [["config.yaml", "--preset", "article"], []])
def test_a_study_needs_exactly_one_of_config_and_preset(tmp_path, command, source):
    result = runner.invoke(app, [command, *source, "--out", str(tmp_path / "out")])
    assert "exactly one" in _one_error_line(result)
    assert not (tmp_path / "out").exists()


def _csv_config(tmp_path, **config) -> str:
    """A config on 2,000 rows of linear data whose methods train for two epochs."""
    linear_binary(2000, 5, seed=2).to_csv(tmp_path / "data.csv", index=False)
    fast = {"epochs": 2, "optimizer": "adam", "lr": 0.05}
    base = {"data": {"path": "data.csv"}, "methods": {name: fast for name in ("baseline", "traditional", "step_by_step", "enhanced")}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**base, **config}))
    return str(path)


def test_seeds_come_from_the_flag_else_the_config_else_the_studys_default(tmp_path):
    listed = _csv_config(tmp_path, seeds=[4, 7])
    result = runner.invoke(app, ["sweep-data", listed, "--fractions", "0.5", "--out", str(tmp_path / "sweep")])
    assert result.exit_code == 0, result.output
    assert "seeds 4, 7;" in (tmp_path / "sweep" / "sweep.md").read_text()

    result = runner.invoke(app, ["ablate", listed, "--seeds", "1", "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    ablation = json.loads((tmp_path / "one" / "ablation.json").read_text())
    assert ablation["no_margin"]["vs_full"]["accuracy"]["ci_low"] is None
    assert not any(c["significant"] for entry in ablation.values() for c in entry["vs_full"].values())
    assert "With a single seed" in (tmp_path / "one" / "ablation.md").read_text()

    result = runner.invoke(app, ["ablate", _csv_config(tmp_path), "--out", str(tmp_path / "default")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "default" / "results.json").read_text())["config"]["seeds"] == [0, 1, 2, 3, 4]


def test_an_out_that_is_a_file_fails_before_training(tmp_path):
    out = tmp_path / "taken"
    out.write_text("keep me")
    result = runner.invoke(app, ["ablate", "--preset", "article", "--out", str(out)])
    assert "is a file" in _one_error_line(result) and "data:" not in result.stderr
    assert out.read_text() == "keep me"


def test_a_failure_while_writing_leaves_out_as_it_was(tmp_path):
    out = tmp_path / "out"

    def write_one_then_fail(staging_dir):
        (staging_dir / "ablation.json").write_text("{}")
        raise RuntimeError("plotting failed")

    with pytest.raises(RuntimeError):
        write_staged(out, write_one_then_fail)
    assert list(tmp_path.iterdir()) == []


def test_parse_fractions_sorts_them():
    assert parse_fractions("0.5, 0.01,1") == [0.01, 0.5, 1.0]
