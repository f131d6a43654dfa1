import json
import re

import pytest
import yaml
from conftest import one_error_line, raises_one_line
from typer.testing import CliRunner

import stepdistill.presets as presets
from stepdistill import stats
from stepdistill.cli import app
from stepdistill.config import ExperimentConfig
from stepdistill.data import linear_binary
from stepdistill.experiment.tabular import run_tabular
from stepdistill.methods import TuneConfig
from stepdistill.report.staged import write_staged
from stepdistill.studies import FULL, ablation_config, parse_fractions, summarize_ablation

runner = CliRunner()
VARIANTS = [
    "full",
    "no_weight_ramp",
    "no_cosine",
    "no_margin",
    "no_consistency",
    "no_lr_schedule",
    "no_rationale",
    "baseline",
    "traditional",
    "step_by_step",
]
SHOWN = {"accuracy", "log_loss"}


@pytest.fixture(autouse=True)
def small_demos(monkeypatch):
    """4,000 rows instead of 100,000: 3,200 training rows keep every study to seconds."""
    monkeypatch.setattr(presets, "DEMO_ROWS", 4000)


def test_ablate_on_the_article_preset_compares_every_variant_with_full_over_runs(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["ablate", "--preset", "article", "--repeats", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    ablation = json.loads((out / "ablation.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert list(ablation) == VARIANTS and list(results["methods"]) == VARIANTS
    for name in ["ablation.md", "ablation.png", "report.md", "history.png", "metrics.png"]:
        assert (out / name).is_file()

    # each comparison is the corrected resampled t-test over the three runs, Holm-corrected over the table
    full = results["methods"]["full"]["test"]
    ratio = results["config"]["data"]["n_test"] / results["config"]["data"]["n_train"]
    expected = []
    for name in VARIANTS[1:]:
        assert set(ablation[name]["test"]) == set(ablation[name]["vs_full"]) == SHOWN
        for metric in ("accuracy", "log_loss"):
            values = results["methods"][name]["test"][metric]["values"]
            assert len(values) == 3
            expected.append(stats.corrected_paired_t(values, full[metric]["values"], ratio))
    corrected = iter(stats.holm(expected))
    for name in VARIANTS[1:]:
        for metric in ("accuracy", "log_loss"):
            want, got = next(corrected), ablation[name]["vs_full"][metric]
            assert got["verdict"] == want["verdict"] and got["significant"] == want["significant"]
            assert got["diff"] == pytest.approx(want["diff"], abs=1e-9)
            if want["p_holm"] is not None:
                assert got["p_holm"] == pytest.approx(want["p_holm"], rel=0.02)
    assert "vs_full" not in ablation["full"]

    # each removal reached the trained method, and every variant trained with full's recipe
    described = {name: entry["method"]["training"] for name, entry in results["methods"].items()}
    assert described["full"]["scheduler"] == "plateau" and described["no_lr_schedule"]["scheduler"] == "none"
    assert {d["optimizer"] for d in described.values()} == {"adam"}
    assert "consistency" not in _term_names(results, "no_consistency") and "consistency" in _term_names(results, "full")
    assert {record["terms"]["rationale"]["weight"] for record in results["methods"]["no_rationale"]["history"][0]} == {0.0}
    first_epochs = {name: results["methods"][name]["history"][0][0] for name in ("full", "no_weight_ramp")}
    assert {name: record["terms"]["rationale"]["weight"] for name, record in first_epochs.items()} == {
        "full": 0.0,
        "no_weight_ramp": pytest.approx(0.1),
    }
    text = (out / "ablation.md").read_text()
    assert "| no_rationale |" in text and "Holm" in text and "No detectable difference" in text


def _term_names(results: dict, method: str) -> list[str]:
    return [term["name"] for term in results["methods"][method]["method"]["terms"]]


def test_a_removal_that_changes_nothing_has_no_spread_and_is_not_significant():
    config, frame, _ = presets.demo("article", 3)
    config = config.model_copy(update={"methods": {"enhanced": {"consistency": 0}}})
    results = run_tabular(ablation_config(config), frame, compare_with=FULL).results
    ablation = summarize_ablation(results)
    assert results["methods"]["no_consistency"]["test"] == results["methods"]["full"]["test"]
    for comparison in ablation["no_consistency"]["vs_full"].values():
        assert comparison["diff"] == 0.0 and comparison["verdict"] == "no spread" and not comparison["significant"]


def test_ablation_variants_carry_the_configs_settings():
    config = ExperimentConfig(methods={"mine": {"preset": "enhanced", "lr": 0.01}, "baseline": {"epochs": 3}})
    methods = ablation_config(config).methods
    assert list(methods) == VARIANTS
    assert methods["full"] == {"preset": "enhanced", "lr": 0.01}
    assert methods["no_cosine"] == {"preset": "enhanced", "lr": 0.01, "rationale_distance": "mse", "margin": 0.0}
    # the simpler methods train like full (its lr), under their own settings (baseline's epochs)
    assert methods["baseline"]["lr"] == methods["traditional"]["lr"] == 0.01
    assert methods["baseline"]["epochs"] == 3 and methods["traditional"]["epochs"] == 100


def test_the_sample_curriculum_is_ablated_when_full_has_one():
    curriculum = {"difficulty": "confidence", "start_fraction": 0.5, "ramp_epochs": 2}
    methods = ablation_config(ExperimentConfig(methods={"enhanced": {"curriculum": curriculum}})).methods
    assert methods["no_sample_curriculum"] == {"preset": "enhanced", "curriculum": None}
    assert methods["no_weight_ramp"] == {"preset": "enhanced", "curriculum": curriculum, "ramp_epochs": 0}


@pytest.mark.parametrize(
    "config, expected",
    [
        (ExperimentConfig(methods={"baseline": {}}), "found none"),
        (ExperimentConfig(methods={"a": {"preset": "enhanced"}, "b": {"preset": "enhanced"}}), "found several (a, b)"),
        (ExperimentConfig(tune=TuneConfig(grid={"margin": [0.0, 0.1], "lr": [0.01]})), "tune.grid tunes margin"),
    ],
)
def test_configs_that_cannot_be_ablated(config, expected):
    with raises_one_line(re.escape(expected)):
        ablation_config(config)


def test_sweep_data_on_the_article_preset_writes_every_fraction_and_the_teacher_helps_with_few_labels(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep-data", "--preset", "article", "--fractions", "1,0.02", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sweep = json.loads((out / "sweep.json").read_text())
    assert list(sweep) == ["teacher", "baseline", "traditional", "step_by_step", "enhanced", "baseline@enhanced"]
    for name, by_fraction in sweep.items():
        assert list(by_fraction) == ["0.02", "1"]
        for cell in by_fraction.values():
            assert SHOWN <= set(cell) and all(set(cell[m]) == {"mean", "std"} for m in SHOWN)
            assert ("vs_control" in cell) == (name not in ("teacher", "baseline", "baseline@enhanced"))
    # The preset's teacher saw every training label (teacher.sees: all): the same at each fraction.
    assert sweep["teacher"]["0.02"] == sweep["teacher"]["1"]
    accuracy = {name: by_fraction["0.02"]["accuracy"]["mean"] for name, by_fraction in sweep.items()}
    assert accuracy["traditional"] > accuracy["baseline"]
    assert sweep["baseline"]["1"]["accuracy"]["mean"] > accuracy["baseline"]
    assert sweep["enhanced"]["0.02"]["vs_control"]["accuracy"]["verdict"] in ("difference", "no detectable difference")
    text = (out / "sweep.md").read_text()
    assert (out / "sweep.png").is_file() and "| enhanced |" in text and "Holm-corrected over every comparison of the sweep" in text
    assert "trained on every training label, those the students lack too (teacher.sees: all)" in text


@pytest.mark.parametrize("fractions", ["0,0.5", "0.1,abc", "1.5", "0.1,0.1", ""])
def test_bad_fractions_are_one_line_exit_2(tmp_path, fractions):
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep-data", "--preset", "article", "--fractions", fractions, "--out", str(out)])
    assert "--fractions" in one_error_line(result)
    assert not out.exists()


def test_sweep_size_trains_every_method_at_each_size_on_the_same_runs(tmp_path):
    """Each size is a run of its own on the same splits and teachers: the teacher's row is the same
    at every size, students grow with their hidden layers, and one Holm family covers the sweep."""
    config = _csv_config(tmp_path, teacher={"kind": "mlp", "hidden": [16], "training": {"epochs": 2}}, methods={"baseline": {}, "traditional": {}})
    out = tmp_path / "out"
    result = runner.invoke(app, ["--quiet", "sweep-size", config, "--sizes", "2;16,16", "--repeats", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sizes = json.loads((out / "sizes.json").read_text())
    assert list(sizes) == ["teacher", "baseline", "traditional"] and all(list(by_size) == ["2", "16x16"] for by_size in sizes.values())
    assert sizes["teacher"]["2"] == sizes["teacher"]["16x16"]
    assert sizes["baseline"]["2"]["params"] < sizes["baseline"]["16x16"]["params"] == sizes["traditional"]["16x16"]["params"]
    comparisons = [sizes["traditional"][key]["vs_control"][metric] for key in ("2", "16x16") for metric in SHOWN]
    expected = stats.holm([{"p_value": c["p_value"]} for c in comparisons])
    assert [c["p_holm"] for c in comparisons] == pytest.approx([c["p_holm"] for c in expected])
    text = (out / "sizes.md").read_text()
    assert (out / "sizes.png").is_file() and (out / "sizes.html").is_file() and "| hidden 16x16 |" in text and "all sizes and metrics" in text


@pytest.mark.parametrize("sizes", ["0", "8;abc", "8;8", "8,,4"])
def test_bad_sizes_are_one_line_exit_2(tmp_path, sizes):
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep-size", "--preset", "article", "--sizes", sizes, "--out", str(out)])
    assert "--sizes" in one_error_line(result)
    assert not out.exists()


@pytest.mark.parametrize("command", ["ablate", "sweep-data", "sweep-size"])
@pytest.mark.parametrize("source", [["config.yaml", "--preset", "article"], []])
def test_a_study_needs_exactly_one_of_config_and_preset(tmp_path, command, source):
    result = runner.invoke(app, [command, *source, "--out", str(tmp_path / "out")])
    assert "exactly one" in one_error_line(result)
    assert not (tmp_path / "out").exists()


def _csv_config(tmp_path, **config) -> str:
    """A config on 2,000 rows of linear data whose methods train for two epochs."""
    linear_binary(2000, 5, seed=2).to_csv(tmp_path / "data.csv", index=False)
    base = {"data": {"path": "data.csv"}, "training": {"epochs": 2, "lr": 0.05}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**base, **config}))
    return str(path)


def test_repeats_come_from_the_flag_else_the_config_else_the_studys_default(tmp_path):
    listed = _csv_config(tmp_path, evaluation={"repeats": 2})
    result = runner.invoke(app, ["sweep-data", listed, "--fractions", "0.5", "--out", str(tmp_path / "sweep")])
    assert result.exit_code == 0, result.output
    assert "2 runs (holdout)" in (tmp_path / "sweep" / "sweep.md").read_text()

    result = runner.invoke(app, ["ablate", listed, "--repeats", "1", "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    ablation = json.loads((tmp_path / "one" / "ablation.json").read_text())
    assert "McNemar" in json.loads((tmp_path / "one" / "results.json").read_text())["evaluation"]["test"]
    assert ablation["no_margin"]["vs_full"]["accuracy"]["p_value"] is not None  # tested within the one split

    result = runner.invoke(app, ["ablate", _csv_config(tmp_path), "--out", str(tmp_path / "default")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "default" / "results.json").read_text())["evaluation"]["runs"] == 5


def test_an_out_that_is_a_file_fails_before_training(tmp_path):
    out = tmp_path / "taken"
    out.write_text("keep me")
    result = runner.invoke(app, ["ablate", "--preset", "article", "--out", str(out)])
    assert "is a file" in one_error_line(result) and "data:" not in result.stderr
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
