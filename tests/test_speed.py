"""What a student buys: sizes and latencies measured beside the teacher's, from raw columns."""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression

import stepdistill.speed as speed
from stepdistill.config import ExperimentConfig
from stepdistill.data import FeatureEncoder, linear_binary
from stepdistill.experiment.tabular import run_tabular
from stepdistill.report.markdown import render_markdown
from stepdistill.report.results import SPEED_TITLE, format_bytes, speed_rows
from stepdistill.speed import BATCH_ROWS, measure_speed, median_ms, model_bytes
from stepdistill.students.logistic import LogisticModel
from stepdistill.students.mlp import MLPModel
from stepdistill.teachers.scikit import SklearnTeacher


def _frame(n: int = 400) -> tuple[pd.DataFrame, FeatureEncoder, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = linear_binary(n, 4, seed=0).drop(columns="label")
    frame["city"] = rng.choice(["oslo", "rome"], n)
    encoder = FeatureEncoder().fit(frame)
    y = (frame["x0"] > 0).to_numpy().astype(int)
    return frame, encoder, y


class _SlowTeacher(SklearnTeacher):
    """A scikit-learn teacher that takes at least 20 ms per prediction, whatever the rows."""

    def predict_logits(self, samples):
        time.sleep(0.02)
        return super().predict_logits(samples)


def test_a_slow_teacher_is_measured_slower_than_its_students_and_the_speedups_are_the_ratios():
    frame, encoder, y = _frame()
    X = encoder.transform(frame)
    teacher = _SlowTeacher(LogisticRegression().fit(X, y), input="X", explain="none")
    students = {"logistic": LogisticModel(X.shape[1], 1), "mlp": MLPModel(X.shape[1], 1, hidden=(16,))}
    speeds = measure_speed(teacher, None, students, encoder, frame)

    assert set(speeds) == {"teacher", "logistic", "mlp"}
    assert speeds["teacher"]["one_row_ms"] >= 20 and speeds["teacher"]["batch_ms"] >= 20
    for name in students:
        speed = speeds[name]
        assert speed["batch_rows"] == BATCH_ROWS
        assert 0 < speed["one_row_ms"] < speeds["teacher"]["one_row_ms"]
        assert speed["speedup_one_row"] == pytest.approx(speeds["teacher"]["one_row_ms"] / speed["one_row_ms"])
        assert speed["speedup_batch"] == pytest.approx(speeds["teacher"]["batch_ms"] / speed["batch_ms"])
    assert speeds["logistic"]["params"] == X.shape[1] + 1
    assert speeds["teacher"]["bytes"] > 0


def test_model_bytes_are_the_bytes_of_the_saved_weights(tmp_path):
    model = MLPModel(7, 3, hidden=(32, 16))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    assert model_bytes(model) == (tmp_path / "w.safetensors").stat().st_size


def test_median_ms_times_the_call():
    assert 5 <= median_ms(lambda: time.sleep(0.005)) < 50


def test_a_slow_call_is_timed_fewer_times(monkeypatch):
    monkeypatch.setattr(speed, "SLOW_CALL_SECONDS", 0.01)  # a 120 ms call counts as slow here
    calls = []
    assert 120 <= median_ms(lambda: calls.append(time.sleep(0.12))) < 1200
    assert len(calls) == 1 + speed.SLOW_REPEATS < 1 + speed.MIN_REPEATS  # the warm-up, then one timing (past 0.1 s already)


@pytest.fixture(scope="module")
def results():
    frame = linear_binary(600, 3, seed=2)
    config = ExperimentConfig.model_validate({"training": {"epochs": 2, "lr": 0.05}, "evaluation": {"repeats": 1}, "methods": {"baseline": {}, "traditional": {}}})
    return run_tabular(config, frame).results


def test_results_carry_the_speed_of_the_teacher_and_every_method(results):
    teacher = results["teacher"]["speed"]
    assert teacher["params"] == results["teacher"]["params"] and teacher["one_row_ms"] > 0
    for name, entry in results["methods"].items():
        assert entry["speed"]["params"] == entry["params"], name
        assert entry["speed"]["bytes"] > 0 and entry["speed"]["speedup_batch"] > 0


def test_the_reports_show_the_speed_table(results):
    headers, rows = speed_rows(results)
    assert [row[0] for row in rows] == ["teacher (logistic)", "baseline", "traditional"]
    assert rows[0][5] == "—"  # the teacher has no speed-up over itself
    speedup = results["methods"]["baseline"]["speed"]["speedup_one_row"]
    assert rows[1][5] == f"{speedup:.1f}x"
    markdown = render_markdown(results)
    assert SPEED_TITLE in markdown and f"| baseline | {rows[1][1]} |" in markdown


def test_bytes_read_as_people_read_file_sizes():
    assert [format_bytes(n) for n in (640, 1_500, 2_345_678, 3_000_000_000)] == ["640 B", "1.5 kB", "2.3 MB", "3.0 GB"]


def test_the_article_benchmark_runs_and_records_its_command(tmp_path):
    """`make bench`'s comparison, on a few rows: both paths train, accuracies agree, the file says how it was made."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
    import article_speed

    output = tmp_path / "article_speed.json"
    article_speed.main(["--rows", "6000", "--threads", "1", "--timings", "1", "--output", str(output)])
    record = json.loads(output.read_text())
    assert record["command"] == f"python bench/article_speed.py --rows 6000 --threads 1 --timings 1 --output {output}"
    assert record["ratio"] > 0 and abs(record["stepdistill_accuracy"] - record["baseline_accuracy"]) < 0.02
