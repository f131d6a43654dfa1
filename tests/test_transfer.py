"""Synthetic transfer sets: made from the training rows only, labelled by the teacher, learned
from by the terms that read the teacher and never by the hard term."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import one_error_line
from typer.testing import CliRunner

import stepdistill.experiment.loop as loop
import stepdistill.experiment.tabular as tabular
import stepdistill.experiment.unlabelled as unlabelled
from stepdistill.cli import app
from stepdistill.config import ExperimentConfig
from stepdistill.data import linear_binary
from stepdistill.data.table import Table
from stepdistill.data.transfer import gaussian_noise, munge, nearest_neighbours, source_rows
from stepdistill.engines.tabular import TabularData, TrainingRows
from stepdistill.teachers.cache import TeacherOutputs

FAST = {"epochs": 3, "lr": 0.05}


def _frame(n: int = 400) -> pd.DataFrame:
    frame = linear_binary(n, 3, seed=3)
    return frame.assign(city=np.where(frame["x0"] > 0, "north", "south"), grade=np.arange(n) % 4)


def test_munge_draws_each_attribute_from_the_row_or_its_nearest_neighbour():
    raw = pd.DataFrame({"x": [0.0, 1.0, 10.0, 11.0], "city": ["a", "b", "c", "d"]})
    encoded = raw[["x"]].to_numpy()
    assert nearest_neighbours(encoded).tolist() == [1, 0, 3, 2]
    rng = np.random.default_rng(0)
    kept = pd.concat(munge(raw, encoded, ["x"], 2.0, 1e-12, 1.0, rng))  # (almost) nothing changes
    pd.testing.assert_frame_equal(kept, pd.concat([raw, raw], ignore_index=True))
    swapped = pd.concat(munge(raw, encoded, ["x"], 250.0, 1.0, 1.0, np.random.default_rng(1)), ignore_index=True)  # everything does
    partner = {"a": "b", "b": "a", "c": "d", "d": "c"}
    assert (swapped["city"] == pd.concat([raw["city"]] * 250, ignore_index=True).map(partner)).all()
    # a number is drawn around the neighbour's value with sd |a - b| / spread = 1
    drawn = swapped["x"].to_numpy().reshape(250, 4)
    assert np.allclose(drawn.mean(0), [1.0, 0.0, 11.0, 10.0], atol=0.2)
    assert np.allclose(drawn.std(0), 1.0, atol=0.15)


def test_transfer_sizes_are_multiples_of_the_rows_and_seeded():
    rng = np.random.default_rng(0)
    rows = source_rows(10, 2.5, rng)
    assert len(rows) == 25 and (np.bincount(rows, minlength=10) >= 2).all() and len(set(rows[20:])) == 5
    raw = _frame(50)
    encoded = raw[["x0", "x1", "x2"]].to_numpy()
    first, again = (pd.concat(munge(raw.drop(columns="label"), encoded, ["x0", "x1", "x2", "grade"], 3, 0.5, 1.0, np.random.default_rng(7))) for _ in range(2))
    pd.testing.assert_frame_equal(first, again)
    chunked = list(munge(raw.drop(columns="label"), encoded, ["x0", "x1", "x2", "grade"], 3, 0.5, 1.0, np.random.default_rng(7), chunk_rows=40))
    assert [len(c) for c in chunked] == [40, 40, 40, 30] and pd.concat(chunked).columns.tolist() == first.columns.tolist()
    (noisy,) = gaussian_noise(raw.drop(columns="label"), ["x0"], 1, 0.5, np.random.default_rng(0))
    assert (noisy["city"] == raw["city"]).all() and not np.allclose(noisy["x0"], raw["x0"])
    assert (noisy["x0"] - raw["x0"]).std() == pytest.approx(0.5 * raw["x0"].std(), rel=0.25)


def test_transfer_rows_come_from_training_rows_only_and_never_reach_validation_or_test(monkeypatch):
    made, fit = unlabelled.munge, loop.fit
    sources, fitted = [], []

    def spy_munge(raw, *args, **kwargs):
        sources.append(set(raw.index))
        return made(raw, *args, **kwargs)

    def spy_fit(states, data, **kwargs):
        fitted.append(data)
        return fit(states, data, **kwargs)

    monkeypatch.setattr(unlabelled, "munge", spy_munge)
    monkeypatch.setattr(loop, "fit", spy_fit)
    config = ExperimentConfig.model_validate({"training": FAST, "evaluation": {"repeats": 2}, "transfer": {"size": 2}})
    experiment = tabular.run_tabular(config, _frame())
    assert len(sources) == 2  # once per run
    for data in fitted:
        train, val = set(data.train.ids.tolist()), set(data.val.ids.tolist())
        transfer = set(data.unlabelled.ids.tolist())
        assert train in sources  # made from this run's training rows, no others
        assert len(transfer) == 2 * len(train) and not transfer & set(range(400))  # new rows with ids of their own
        assert not transfer & val and data.unlabelled_teacher.logits.shape == (len(transfer), 1)
    recorded = experiment.results["config"]
    assert recorded["transfer"]["kind"] == "munge" and recorded["transfer"]["size"] == 2.0 and recorded["data"]["n_unlabelled"] == 2 * recorded["data"]["n_train"]


def test_students_that_read_no_teacher_train_as_if_there_were_no_transfer_set():
    """The control (hard term only) never sees a transfer row, so it trains bit for bit as without one;
    the distilled students learn from the teacher's outputs on the transfer rows."""
    sections = {"training": FAST, "evaluation": {"repeats": 2}, "teacher": {"kind": "mlp", "hidden": [16], "training": FAST}, "student": {"kind": "mlp", "hidden": [8]}}
    plain = tabular.run_tabular(ExperimentConfig.model_validate(sections), _frame()).results["methods"]
    transferred = tabular.run_tabular(ExperimentConfig.model_validate({**sections, "transfer": {"size": 3}}), _frame()).results["methods"]
    assert transferred["baseline"]["test"]["log_loss"]["values"] == plain["baseline"]["test"]["log_loss"]["values"]
    assert transferred["traditional"]["test"]["log_loss"]["values"] != plain["traditional"]["test"]["log_loss"]["values"]


def test_the_hard_term_reads_no_transfer_row():
    train = Table(torch.arange(4), torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), ("a", "b"), ("u", "v"))
    extra = Table(torch.arange(10, 16), torch.randn(6, 2), torch.ones(6, dtype=torch.int64), ("a", "b"), ("u", "v"))
    data = TabularData(train, train, TeacherOutputs(torch.zeros(4, 1), None), None, extra, TeacherOutputs(torch.ones(6, 1), None))
    rows = TrainingRows.build(data, True, torch.device("cpu"), with_unlabelled=True)
    assert rows.batch.labelled.tolist() == [True] * 4 + [False] * 6
    assert rows.batch.y[4:].eq(0).all() and rows.batch.teacher_logits[4:].eq(1).all()
    without = TrainingRows.build(data, True, torch.device("cpu"))
    assert len(without.batch.x) == 4 and without.batch.labelled is None


def test_run_learns_from_an_unlabelled_pool_through_the_command_line(tmp_path):
    """`run` with data.unlabelled_path: the pool's label column is ignored (and said so), its rows
    are labelled by the teacher and learned from by the distilled students only, and are neither
    validation nor test rows."""
    frame = _frame(600)
    frame.iloc[:300].to_csv(tmp_path / "data.csv", index=False)
    frame.iloc[300:].to_csv(tmp_path / "pool.csv", index=False)  # its labels must not matter
    flipped = frame.iloc[300:].assign(label=1 - frame["label"].iloc[300:])
    flipped.to_csv(tmp_path / "pool_flipped.csv", index=False)
    results = {}
    for name, pool in (("pool", "pool.csv"), ("flipped", "pool_flipped.csv"), ("none", None)):
        config = {
            "data": {"path": "data.csv", **({"unlabelled_path": pool} if pool else {})},
            "teacher": {"kind": "mlp", "hidden": [16], "training": FAST},
            "student": {"kind": "mlp", "hidden": [8]},
            "training": FAST,
            "evaluation": {"repeats": 2},
        }
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
        outcome = CliRunner().invoke(app, ["--quiet", "run", str(tmp_path / f"{name}.yaml"), "--out", str(tmp_path / name)])
        assert outcome.exit_code == 0, outcome.output
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
        splits = json.loads((tmp_path / name / "splits.json").read_text())
        assert all(max(map(int, run["validation"] + run["test"] + run["train"])) < 300 for run in splits["runs"])
    pool, flipped, none = (results[n] for n in ("pool", "flipped", "none"))
    assert pool["config"]["data"]["n_unlabelled"] == 300 and "n_unlabelled" not in none["config"]["data"]
    assert any("label column 'label' is ignored" in w for w in pool["warnings"])
    for metric in ("accuracy", "log_loss"):
        assert pool["methods"]["traditional"]["test"][metric] == flipped["methods"]["traditional"]["test"][metric]  # the pool's labels play no part
        assert pool["methods"]["baseline"]["test"][metric] == none["methods"]["baseline"]["test"][metric]  # nor its rows, for the control
    assert pool["methods"]["traditional"]["test"]["log_loss"] != none["methods"]["traditional"]["test"]["log_loss"]


def test_unlabelled_rows_the_cache_disk_has_no_room_for_are_refused_before_any_work(tmp_path, monkeypatch):
    _frame().to_csv(tmp_path / "data.csv", index=False)
    config = {"data": {"path": "data.csv"}, "training": FAST, "evaluation": {"repeats": 1}, "transfer": {"size": 3}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(unlabelled.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    outcome = CliRunner().invoke(app, ["--quiet", "--cache-dir", str(tmp_path / "cache"), "run", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "out")])
    line = one_error_line(outcome, alone=True)
    assert "the teacher's outputs on the unlabelled rows need about" in line and "pass --no-cache" in line
    assert not (tmp_path / "out").exists()
