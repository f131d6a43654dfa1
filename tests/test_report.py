import json
import math

import pytest
from rich.console import Console

from stepdistill.evaluate import summarize
from stepdistill.report import plots, render_table, write_report
from stepdistill.report.markdown import accuracy_comparison

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def epoch_history(terms: dict[str, float], n_epochs: int = 4) -> list[dict]:
    """Epoch records where each term's raw value decays and its weight ramps up."""
    records = []
    for epoch in range(n_epochs):
        record_terms = {}
        for name, start in terms.items():
            raw, weight = start / (epoch + 1), 0.5 + 0.1 * epoch
            record_terms[name] = {"raw": raw, "weight": weight, "weighted": raw * weight}
        total = sum(term["weighted"] for term in record_terms.values())
        records.append({"epoch": epoch, "lr": 1e-3, "train_loss": total, "val_loss": 1.1 * total,
                        "terms": record_terms})
    return records


def method_entry(accuracies: list[float], aucs: list[float], terms: dict[str, float]) -> dict:
    return {
        "test": {
            "accuracy": summarize(accuracies),
            "log_loss": summarize([0.41, 0.43]),
            "roc_auc": summarize(aucs),
            "ece": summarize([0.03, 0.05]),
            "fidelity": summarize([0.90, 0.92]),
        },
        "params": 1234,
        "train_seconds": 2.5,
        "history": [epoch_history(terms), epoch_history(terms)],
    }


@pytest.fixture
def results() -> dict:
    """Two seeds, two methods, binary task."""
    return {
        "teacher": {
            "kind": "logistic",
            "test": {"accuracy": summarize([0.88]), "log_loss": summarize([0.30]),
                     "roc_auc": summarize([0.93]), "ece": summarize([0.02])},
            "params": 21,
            "train_seconds": 0.4,
        },
        "methods": {
            "baseline": method_entry([0.80, 0.82], [0.85, 0.87], {"hard": 0.7}),
            "step_by_step": method_entry([0.85, 0.87], [0.90, 0.91],
                                         {"hard": 0.7, "soft": 0.5, "rationale": 0.3}),
        },
        "config": {"preset": "article", "seeds": [0, 1],
                   "data": {"n_train": 800, "n_val": 100, "n_test": 100, "n_features": 20,
                            "classes": ["no", "yes"]}},
        "machine": "test machine",
        "date": "2024-01-02",
    }


def test_write_report_writes_all_files(results, tmp_path):
    out_dir = tmp_path / "nested" / "report"
    paths = write_report(results, out_dir)

    assert sorted(path.name for path in paths) == ["history.png", "metrics.png", "report.md", "results.json"]
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(path.name for path in paths)
    assert json.loads((out_dir / "results.json").read_text()) == results
    for name in ("history.png", "metrics.png"):
        image = (out_dir / name).read_bytes()
        assert image.startswith(PNG_SIGNATURE) and len(image) > 10_000
    # the staging directory is gone: only the report directory is left beside it
    assert list((tmp_path / "nested").iterdir()) == [out_dir]


def test_report_markdown_content(results, tmp_path):
    write_report(results, tmp_path)
    report = (tmp_path / "report.md").read_text()

    assert report.startswith("# ")
    assert "| model | accuracy | log_loss | roc_auc | ece | fidelity | params | train s |" in report
    assert "| teacher (logistic) | 0.880 ± 0.000 |" in report
    assert "| step_by_step | 0.860 ± 0.014 |" in report
    assert "0.020 ± 0.000 | — | 21 | 0.40 |" in report
    assert "800 train, 100 validation, 100 test" in report
    assert "Seeds: 0, 1" in report
    # +5 points against a combined std of 100 * sqrt(2) * 0.01414 = 2.0 points
    assert "**step_by_step**: 86.00% test accuracy, +5.00 points vs baseline (beyond seed noise" in report
    assert "![Training history](history.png)" in report
    assert "![Test metrics](metrics.png)" in report


def test_accuracy_comparison_within_noise():
    sentence = accuracy_comparison("traditional", summarize([0.81, 0.83]), summarize([0.80, 0.82]))
    combined = 100 * math.hypot(summarize([0.81, 0.83])["std"], summarize([0.80, 0.82])["std"])
    assert "+1.00 points vs baseline" in sentence
    assert f"within seed noise: combined std {combined:.2f} points" in sentence


def test_accuracy_comparison_single_seed_claims_no_noise_estimate():
    sentence = accuracy_comparison("enhanced", summarize([0.75]), summarize([0.80]))
    assert "-5.00 points vs baseline" in sentence
    assert "no estimate of seed noise" in sentence


def test_render_table_rows_and_cells(results):
    table = render_table(results)
    assert [column.header for column in table.columns] == [
        "model", "accuracy", "log_loss", "roc_auc", "ece", "fidelity", "params", "train s"]
    assert table.row_count == 3

    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "teacher (logistic)" in text and "baseline" in text and "step_by_step" in text
    assert "0.810 ± 0.014" in text
    assert "1,234" in text
    assert "—" in text


def test_render_table_multiclass_uses_macro_f1(results):
    results["teacher"]["test"]["macro_f1"] = results["teacher"]["test"].pop("roc_auc")
    for entry in results["methods"].values():
        entry["test"]["macro_f1"] = entry["test"].pop("roc_auc")
    headers = [column.header for column in render_table(results).columns]
    assert "macro_f1" in headers and "roc_auc" not in headers


def failing_plot(results, path):
    raise RuntimeError("plotting failed")


def test_plot_failure_leaves_new_out_dir_absent(results, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "plot_metrics", failing_plot)
    out_dir = tmp_path / "report"
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_report(results, out_dir)
    assert not out_dir.exists()
    assert list(tmp_path.iterdir()) == []


def test_plot_failure_leaves_existing_out_dir_untouched(results, tmp_path, monkeypatch):
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    (out_dir / "results.json").write_text("previous run")
    monkeypatch.setattr(plots, "plot_history", failing_plot)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_report(results, out_dir)
    assert [path.name for path in out_dir.iterdir()] == ["results.json"]
    assert (out_dir / "results.json").read_text() == "previous run"
    assert list(tmp_path.iterdir()) == [out_dir]


def test_accuracy_comparison_calls_tiny_differences_negligible():
    sentence = accuracy_comparison("traditional", summarize([0.8662, 0.8662]), summarize([0.8663, 0.8663]))
    assert "-0.01 points vs baseline (negligible" in sentence
