"""Streaming benchmark: distilling on an unlabelled pool larger than memory, against the in-memory
path on a pool that fits.

Setting: 100,000 labelled rows x 20 features of ``nonlinear_binary`` data (80% train, 10%
validation, 10% test), an MLP teacher (64 hidden units) trained here, MLP students (32 hidden
units): the control (labels only) and traditional distillation, which also learns from the
teacher's outputs on the pool. One run, one epoch, batches of 4,096, Adam at lr 0.003, one thread.
The pool: rows of the same 20 features without a label (x ~ N(0, I), float32), made on the fly in
a Parquet file under ``--work-dir`` (never committed), and removed afterwards.

Three runs of ``stepdistill --no-cache run``, each in its own process (its peak resident memory
read from the operating system when it exits):

- ``streamed``: the ``--rows`` pool (default 20 million), ``data.stream_unlabelled: true``;
- ``streamed (small)`` and ``in memory (small)``: a pool of ``--small-rows`` (default 2 million)
  rows, streamed and held in memory.

Each reports its peak RSS, the teacher's labelling rate (pool rows per second spent reading,
encoding and labelling them, and, streamed, writing them to disk: results.json's
``unlabelled_seconds``) and the distilled student's training rate (training plus pool rows per
second of its training time).

    .venv/bin/python bench/stream_pool.py [--rows 20000000] [--small-rows 2000000] [--output bench/stream_pool.json]

Prints the table and writes the results file; the last line says whether the streamed run's peak
RSS stayed under the target (2 GB).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from stepdistill.data import nonlinear_binary

FEATURES = 20
LABELLED_ROWS = 100_000
ROW_GROUP = 1 << 20
TARGET_RSS_BYTES = 2 * 10**9
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "stream_pool.json"
TRAINING = {"epochs": 1, "lr": 0.003, "batch_size": 4096}


def write_pool(path: Path, rows: int, seed: int) -> None:
    """``rows`` x ``FEATURES`` standard normal float32 values in Parquet, a row group at a time."""
    rng = np.random.default_rng(seed)
    schema = pa.schema([(f"x{j}", pa.float32()) for j in range(FEATURES)])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            values = rng.standard_normal((min(ROW_GROUP, rows - start), FEATURES), dtype=np.float32)
            writer.write_table(pa.Table.from_arrays(list(values.T), schema=schema))


def run(work: Path, name: str, pool: Path, stream: bool, threads: int) -> dict:
    """One ``stepdistill run`` in its own process: its results and peak RSS."""
    config = {
        "data": {"path": str(work / "data.csv"), "unlabelled_path": str(pool), "stream_unlabelled": stream},
        "teacher": {"kind": "mlp", "hidden": [64], "training": {"epochs": 5, "lr": 0.003, "batch_size": 1024}},
        "student": {"kind": "mlp", "hidden": [32]},
        "methods": {"baseline": {}, "traditional": {}},
        "training": TRAINING,
        "evaluation": {"repeats": 1},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    out = work / name
    command = [sys.executable, "-m", "stepdistill", "--no-cache", "--quiet", "--threads", str(threads), "run", str(path), "--out", str(out), "--overwrite"]
    # Streamed rows without a cache go to a temporary directory: on the work directory's disk.
    env = {**os.environ, "TMPDIR": str(work)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name} failed:\n{output}")
    results = json.loads((out / "results.json").read_text())
    data, method = results["config"]["data"], results["methods"]["traditional"]
    return {
        "run": name,
        "pool_rows": data["n_unlabelled"],
        "streamed": stream,
        "peak_rss_mb": round(usage.ru_maxrss * 1024 / 1e6, 1),  # ru_maxrss is in KiB on Linux
        "label_rows_per_s": round(data["n_unlabelled"] / data["unlabelled_seconds"]),
        # One epoch (TRAINING), so no early stopping: every row was trained on once.
        "train_rows_per_s": round((data["n_train"] + data["n_unlabelled"]) * TRAINING["epochs"] / method["train_seconds"]),
        "label_s": round(data["unlabelled_seconds"], 1),
        "train_s": round(method["train_seconds"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--small-rows", type=int, default=2_000_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench-stream"))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    work = args.work_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        nonlinear_binary(LABELLED_ROWS, FEATURES, seed=0).to_csv(work / "data.csv", index=False)
        write_pool(work / "pool.parquet", args.rows, seed=1)
        write_pool(work / "small.parquet", args.small_rows, seed=2)
        rows = [
            run(work, "streamed", work / "pool.parquet", True, args.threads),
            run(work, "streamed_small", work / "small.parquet", True, args.threads),
            run(work, "in_memory_small", work / "small.parquet", False, args.threads),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'run':<16} {'pool rows':>12} {'peak RSS MB':>12} {'label rows/s':>13} {'train rows/s':>13}")
    for r in rows:
        print(f"{r['run']:<16} {r['pool_rows']:>12,} {r['peak_rss_mb']:>12,.0f} {r['label_rows_per_s']:>13,} {r['train_rows_per_s']:>13,}")
    report = {
        "command": "make bench (bench/stream_pool.py" + (f" --rows {args.rows}" if args.rows != 20_000_000 else "") + ")",
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads,
        "setting": {"features": FEATURES, "labelled_rows": LABELLED_ROWS, "training": TRAINING, "teacher": "mlp (64)", "student": "mlp (32)"},
        "runs": rows,
        "target_peak_rss_mb": TARGET_RSS_BYTES / 1e6,
    }
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    met = rows[0]["peak_rss_mb"] * 1e6 < TARGET_RSS_BYTES
    print(f"streamed peak RSS {rows[0]['peak_rss_mb']:,.0f} MB on {rows[0]['pool_rows']:,} pool rows: target < 2 GB {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
