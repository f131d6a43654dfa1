"""Unlabelled rows streamed from disk: written a chunk at a time, read back by row range, shuffled
in buffers, and, on a pool that fits in one buffer, the very students training in memory gives."""

import gc
import json
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import one_error_line
from typer.testing import CliRunner

import stepdistill.engines.tabular as engines
import stepdistill.experiment.unlabelled as unlabelled
from stepdistill.cli import app
from stepdistill.data import linear_binary
from stepdistill.data.io import count_rows, read_chunks, read_frame
from stepdistill.data.row_files import RowFiles, RowFilesWriter
from stepdistill.data.table import Table
from stepdistill.engines.tabular import StreamedRows, TabularData, TrainingRows
from stepdistill.teachers.cache import TeacherOutputs

FAST = {"epochs": 3, "lr": 0.05}


def _data(tmp_path, n_data=400, n_pool=500):
    frame = linear_binary(n_data + n_pool, 3, seed=3)
    frame = frame.assign(city=np.where(frame["x0"] > 0, "north", "south"))
    frame.iloc[:n_data].to_csv(tmp_path / "data.csv", index=False)
    frame.iloc[n_data:].drop(columns="label").to_parquet(tmp_path / "pool.parquet")


def _run(tmp_path, name, data=None, cli=(), **sections):
    config = {
        "data": {"path": "data.csv", "unlabelled_path": "pool.parquet", **(data or {})},
        "teacher": {"kind": "mlp", "hidden": [16], "training": FAST},
        "student": {"kind": "mlp", "hidden": [8]},
        "training": FAST,
        "evaluation": {"repeats": 2},
        **sections,
    }
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    return CliRunner().invoke(app, ["--quiet", *cli, "run", str(tmp_path / f"{name}.yaml"), "--out", str(tmp_path / name)])


def test_streamed_and_in_memory_training_give_the_same_students_on_a_small_pool(tmp_path, monkeypatch):
    """A pool and a transfer set that fit in one shuffle buffer: streaming them (read, encoded and
    labelled 64 rows at a time, written to disk, read back in chunks of 128) trains every student
    exactly as holding them in memory does; the control never sees them either way."""
    monkeypatch.setattr(unlabelled, "STREAM_READ_ROWS", 64)
    monkeypatch.setattr(engines, "STREAM_CHUNK_ROWS", 128)
    _data(tmp_path)
    transfer = {"transfer": {"size": 2}}
    for name, stream in (("memory", False), ("streamed", True)):
        outcome = _run(tmp_path, name, {"stream_unlabelled": stream}, ["--cache-dir", str(tmp_path / "cache")], **transfer)
        assert outcome.exit_code == 0, outcome.output
    memory, streamed = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("memory", "streamed"))
    assert streamed["config"]["data"]["n_unlabelled"] == memory["config"]["data"]["n_unlabelled"] == 500 + 2 * memory["config"]["data"]["n_train"]
    for method in memory["methods"]:
        for metric in ("accuracy", "log_loss"):
            assert streamed["methods"][method]["test"][metric]["values"] == memory["methods"][method]["test"][metric]["values"], method
    predictions = [(tmp_path / name / "test_predictions.csv").read_text() for name in ("memory", "streamed")]
    assert predictions[0] == predictions[1]
    # the streamed rows are kept in the teacher cache, and a second run reads them from there
    stored = list((tmp_path / "cache" / "unlabelled").iterdir())
    assert len(stored) == 2 and all((entry / "rows.json").is_file() for entry in stored)
    again = _run(tmp_path, "again", {"stream_unlabelled": True}, ["--cache-dir", str(tmp_path / "cache")], **transfer)
    assert again.exit_code == 0, again.output
    results = json.loads((tmp_path / "again" / "results.json").read_text())
    assert results["methods"]["traditional"]["test"]["log_loss"]["values"] == memory["methods"]["traditional"]["test"]["log_loss"]["values"]


def test_without_a_cache_streamed_rows_live_in_a_temporary_directory_removed_after_the_run(tmp_path, monkeypatch):
    _data(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    outcome = _run(tmp_path, "nocache", {"stream_unlabelled": True}, ["--no-cache"])
    assert outcome.exit_code == 0, outcome.output
    gc.collect()
    assert list((tmp_path / "tmp").iterdir()) == []


def _streamed(n_memory: int, n_disk: int, tmp_path, buffer: int) -> StreamedRows:
    """Rows whose first feature is their position: ``n_memory`` training rows, then ``n_disk`` on disk."""
    writer = RowFilesWriter(tmp_path / "rows")
    positions = np.arange(n_memory, n_memory + n_disk, dtype=np.float32)
    for start in range(0, n_disk, 100):
        block = positions[start : start + 100, None]
        writer.append(x=np.hstack([block, np.ones_like(block)]), logits=-block)
    files = writer.close()
    train = Table(torch.arange(n_memory), torch.stack([torch.arange(n_memory, dtype=torch.float32), torch.ones(n_memory)], 1), torch.ones(n_memory, dtype=torch.int64), ("a", "b"), ("u", "v"))
    data = TabularData(train, train, TeacherOutputs(-train.X[:, :1], None), None, unlabelled_files=files, shuffle_buffer=buffer)
    return StreamedRows.build(data, torch.device("cpu"))


def test_an_epoch_streams_every_row_once_in_shuffled_buffers_and_never_a_label_of_a_streamed_row(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "STREAM_CHUNK_ROWS", 50)
    rows = _streamed(120, 880, tmp_path, buffer=200)  # 20 chunks, 4 to a buffer
    batches = list(rows.epoch_batches(torch.Generator().manual_seed(0), 64, epoch=0))
    assert [len(b.x) for b in batches] == [64] * 15 + [40]  # the buffers' remainders start the next buffer's first batch
    seen = torch.cat([b.x[:, 0] for b in batches]).long()
    assert sorted(seen.tolist()) == list(range(1000))  # every row once
    assert seen[:200].max() - seen[:200].min() > 200  # chunks in a random order, not the file's
    for b in batches:
        assert torch.equal(b.teacher_logits[:, 0], -b.x[:, 0])  # each row keeps its own teacher outputs
        assert torch.equal(b.labelled, b.x[:, 0] < 120)  # only training rows are labelled ...
        assert b.y[~b.labelled].eq(0).all()  # ... and the streamed ones have no label to read
    assert torch.equal(rows.measurement_sample().x[:, 0], torch.arange(1000, dtype=torch.float32)[: engines.EVAL_CHUNK])


def test_rows_that_fit_one_buffer_are_streamed_in_the_order_memory_gives(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "STREAM_CHUNK_ROWS", 50)
    streamed = _streamed(120, 880, tmp_path, buffer=1000)
    in_memory = TrainingRows(streamed.read(0, 1000), streamed.val, streamed.divergence_threshold)
    a = list(streamed.epoch_batches(torch.Generator().manual_seed(3), 64, epoch=0))
    b = in_memory.epoch_batches(torch.Generator().manual_seed(3), 64, epoch=0)
    assert len(a) == len(b) and all(torch.equal(x.x, y.x) and torch.equal(x.labelled, y.labelled) for x, y in zip(a, b))


def test_row_files_read_back_by_range_and_damaged_ones_are_refused(tmp_path):
    writer = RowFilesWriter(tmp_path / "rows")
    values = np.arange(30, dtype=np.float32).reshape(10, 3)
    writer.append(x=values[:4], logits=values[:4, :1])
    writer.append(x=values[4:], logits=values[4:, :1])
    files = writer.close()
    assert np.array_equal(RowFiles.open(tmp_path / "rows").read(3, 7)["x"], values[3:7]) and files.read(8, 20)["logits"].shape == (2, 1)
    with open(tmp_path / "rows" / "x.f32", "r+b") as file:  # one value changed, the size kept
        file.seek(8)
        file.write(np.float32(99).tobytes())
    assert RowFiles.open(tmp_path / "rows") is None and not (tmp_path / "rows").exists()
    half = RowFilesWriter(tmp_path / "half")
    half.append(x=values, logits=values[:, :1])  # never closed: no index
    assert RowFiles.open(tmp_path / "half") is None
    with pytest.raises(ValueError, match="every block needs the widths"):
        half.append(x=values[:, :2], logits=values[:, :1])


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_a_file_read_in_chunks_is_the_file_read_whole(tmp_path, suffix):
    frame = pd.DataFrame({"a": np.arange(10.0), "b": list("abcdefghij")})
    path = tmp_path / f"pool.{suffix}"
    {"csv": lambda: frame.to_csv(path, index=False), "parquet": lambda: frame.to_parquet(path), "jsonl": lambda: frame.to_json(path, orient="records", lines=True)}[suffix]()
    chunks = list(read_chunks(path, 4))
    assert [len(c) for c in chunks] == [4, 4, 2] and count_rows(path) == 10
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), read_frame(path))


def test_bad_rows_deep_in_a_streamed_pool_and_a_curriculum_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(unlabelled, "STREAM_READ_ROWS", 64)
    _data(tmp_path)
    pool = pd.read_parquet(tmp_path / "pool.parquet")
    pool["x1"] = pool["x1"].astype(object)
    pool.loc[300, "x1"] = "abc"  # in the fifth chunk, long after the first rows were checked
    pool.to_csv(tmp_path / "pool.csv", index=False)
    line = one_error_line(_run(tmp_path, "bad", {"stream_unlabelled": True, "unlabelled_path": "pool.csv"}, ["--no-cache"]), alone=True)
    assert line == "error: the unlabelled pool's column 'x1' holds text where the data has numbers (e.g. 'abc'); fix those rows"
    curriculum = {"methods": {"baseline": {}, "paced": {"preset": "traditional", "curriculum": {"start_fraction": 0.5}}}}
    line = one_error_line(_run(tmp_path, "paced", {"stream_unlabelled": True}, ["--no-cache"], **curriculum), alone=True)
    assert "paced follows a curriculum, which orders every training row, and the unlabelled rows are streamed from disk" in line
