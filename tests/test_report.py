import json

import matplotlib.colors
import numpy as np
import pytest
from rich.console import Console

from stepdistill import stats
from stepdistill.evaluate import summarize
from stepdistill.report import plots, render_table, write_report
from stepdistill.report.markdown import verdict_sentence

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
            "log_loss": summarize([0.41, 0.43, 0.42]),
            "roc_auc": summarize(aucs),
            "ece": summarize([0.03, 0.05, 0.04]),
            "fidelity": summarize([0.90, 0.92, 0.91]),
        },
        "params": 1234,
        "train_seconds": 2.5,
        "history": [epoch_history(terms), epoch_history(terms)],
        "control": None,
        "flags": {"never_predicts": {}, "diverged": 0, "worse_than_control": [], "below_majority": False},
    }


def compared(entry: dict, control: dict, name: str = "baseline") -> None:
    """Give ``entry`` its comparisons with ``control`` (corrected t over its runs, Holm over the two)."""
    pairs = [stats.corrected_paired_t(entry["test"][m]["values"], control["test"][m]["values"], 0.125) for m in ("accuracy", "log_loss")]
    entry["control"] = name
    entry["vs_control"] = dict(zip(("accuracy", "log_loss"), stats.holm(pairs)))


@pytest.fixture
def results() -> dict:
    """Three runs, two methods, binary task."""
    results = {
        "teacher": {
            "kind": "logistic",
            "test": {"accuracy": summarize([0.88]), "log_loss": summarize([0.30]),
                     "roc_auc": summarize([0.93]), "ece": summarize([0.02])},
            "params": 21,
            "train_seconds": 0.4,
        },
        "reference": {"majority": {"test": {"accuracy": summarize([0.6, 0.6, 0.6]), "log_loss": summarize([0.67, 0.67, 0.67]),
                                            "roc_auc": summarize([0.5, 0.5, 0.5]), "ece": summarize([0.0, 0.0, 0.0])}}},
        "methods": {
            "baseline": method_entry([0.80, 0.82, 0.81], [0.85, 0.87, 0.86], {"hard": 0.7}),
            "step_by_step": method_entry([0.85, 0.87, 0.86], [0.90, 0.91, 0.9],
                                         {"hard": 0.7, "soft": 0.5, "rationale": 0.3}),
        },
        "chosen": {"method": "step_by_step", "metric": "log_loss", "split": "validation"},
        "evaluation": {"scheme": "holdout", "runs": 3, "labelled_fraction": 1.0, "confidence": 0.95,
                       "test": "corrected resampled t-test over runs (Nadeau & Bengio 2003)", "correction": "holm"},
        "warnings": [],
        "config": {"preset": "article",
                   "data": {"n_train": 800, "n_val": 100, "n_test": 100, "n_features": 20,
                            "classes": ["no", "yes"]}},
        "machine": "test machine",
        "date": "2024-01-02",
    }
    compared(results["methods"]["step_by_step"], results["methods"]["baseline"])
    return results


def test_write_report_writes_all_files(results, tmp_path):
    out_dir = tmp_path / "nested" / "report"
    paths = write_report(results, out_dir)

    # no calibration bins and no speed numbers in these results: no reliability or trade-off figure
    assert sorted(path.name for path in paths) == ["history.png", "metrics.png", "report.html", "report.md", "results.json"]
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
    assert "| model | accuracy | log_loss | roc_auc | ece | fidelity | params | train s | notes |" in report
    assert "| teacher (logistic) | 0.880 ± 0.000 |" in report
    assert "| majority class | 0.600 ± 0.000 |" in report
    assert "| step_by_step | 0.860 ± 0.010 |" in report and "chosen (validation) |" in report
    assert "0.020 ± 0.000 | — | 21 | 0.40 |" in report
    assert "800 train, 100 validation, 100 test" in report
    assert "Runs: 3 (holdout)" in report
    # +5 points, the same in every run: no spread, so no claim
    assert "| step_by_step | baseline | +5.00 (no spread) |" in report
    assert "**step_by_step**: no spread: no claim either way against baseline." in report
    assert "![Training history](history.png)" in report
    assert "![Test metrics](metrics.png)" in report


def test_verdicts_follow_the_corrected_comparisons():
    entry = {"control": "baseline", "vs_control": {}}
    base = {"diff": 0.0, "ci_low": -0.01, "ci_high": 0.01, "p_value": 0.5, "n": 5, "status": "ok"}
    entry["vs_control"] = dict(zip(("accuracy", "log_loss"), stats.holm([{**base, "diff": 0.02, "p_value": 0.001}, {**base, "diff": 0.03, "p_value": 0.001}])))
    assert verdict_sentence(entry) == "better than baseline on accuracy; worse than baseline on log_loss."
    entry["vs_control"] = dict(zip(("accuracy", "log_loss"), stats.holm([base, base])))
    assert verdict_sentence(entry) == "no detectable difference from baseline."
    two = stats.corrected_paired_t([0.81, 0.82], [0.80, 0.81], 0.25)
    entry["vs_control"] = dict(zip(("accuracy", "log_loss"), stats.holm([two, two])))
    assert verdict_sentence(entry) == "too few repeats: no claim either way against baseline."


def test_flags_show_in_the_notes(results):
    flags = results["methods"]["baseline"]["flags"]
    flags.update(never_predicts={"yes": 2}, diverged=1, below_majority=True)
    console = Console(record=True, width=300)
    console.print(render_table(results))
    text = console.export_text()
    assert "DIVERGED 1/3" in text and "never predicts yes (2/3)" in text and "below majority rule" in text


def test_render_table_rows_and_cells(results):
    table = render_table(results)
    assert [column.header for column in table.columns] == [
        "model", "accuracy", "log_loss", "roc_auc", "ece", "fidelity", "params", "train s", "notes"]
    assert table.row_count == 4

    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "teacher (logistic)" in text and "baseline" in text and "step_by_step" in text
    assert "0.810 ± 0.010" in text
    assert "1,234" in text
    assert "—" in text


def test_render_table_multiclass_uses_macro_f1(results):
    results["teacher"]["test"]["macro_f1"] = results["teacher"]["test"].pop("roc_auc")
    for entry in [*results["methods"].values(), results["reference"]["majority"]]:
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


@pytest.mark.parametrize("latencies_ms", [(0.2, 0.22, 0.25), (0.15, 0.3, 0.45), (2.8, 3.0, 3.4), (0.2, 3.0, 27.3)])
def test_the_latency_axis_labels_its_ticks_as_plain_distinct_numbers(results, latencies_ms):
    """Narrow ranges below 1 once read "2e-01" on every tick; each label must now be the number
    at its tick, written plainly, and no two alike."""
    for entry, latency in zip((results["teacher"], *results["methods"].values()), latencies_ms, strict=True):
        entry["speed"] = {"one_row_ms": latency}
    fig = plots.tradeoff_figure(results)
    fig.canvas.draw()
    [ax] = [ax for ax in fig.axes if ax.get_xscale() == "log"]
    low, high = ax.get_xlim()
    ticks = [(label.get_position()[0], label.get_text()) for label in ax.get_xticklabels() + ax.get_xticklabels(minor=True)]
    shown = [(at, text) for at, text in ticks if text and low <= at <= high]
    plots.plt.close(fig)
    assert len(shown) >= 2, ticks
    texts = [text for _, text in shown]
    assert len(set(texts)) == len(texts), texts
    for at, text in shown:
        assert "e" not in text and float(text) == pytest.approx(at, rel=1e-9), (at, text)


def test_terms_with_the_same_weight_schedule_each_show_their_weight_line(results):
    """step_by_step's three terms share one weight schedule (``epoch_history``), so their weight
    lines coincide: each term's color must still show on its panel's weight axis."""
    fig = plots.history_figure(results)
    [weight_ax] = [ax for ax in fig.axes if ax.get_ylabel() == "weight" and len(ax.get_lines()) == 3]
    for ax in fig.axes:  # the weight lines alone: no loss lines, no legend
        ax.set_visible(ax is weight_ax)
    fig.legends.clear()
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    colors = [line.get_color() for line in weight_ax.get_lines()]
    plots.plt.close(fig)
    assert len(set(colors)) == 3
    for color in colors:
        rgb = np.array(matplotlib.colors.to_rgb(color)) * 255
        drawn = (np.abs(pixels - rgb).max(axis=-1) <= 30).sum()
        assert drawn >= 50, (color, drawn)  # measured: about 170 each; drawn over, 0 (the last one alone: 500)
