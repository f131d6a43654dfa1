"""How often a comparison over a fixed test file finds a difference: with none (false positives)
and with one of 3 test-row standard deviations (power), for the fixed-test t of ``stats`` and for
the runs' corrected resampled t alone.

Each simulated comparison draws the paired differences of every run on every test row: a row
effect shared by every run (the test file's draw: its mean has sd 0.004, as an audit found on
CommonsenseQA's 1,221 test rows), a run effect (sd ``run_sd``) and per-run row noise. 2,000
comparisons per setting without a difference, 500 with one; 3 and 5 runs, 500 and 2,000 rows,
run sds 0.001 and 0.004. tests/test_stats.py checks the same simulations.

    python bench/fixed_test_simulation.py        # writes bench/fixed_test_simulation.json
"""

from __future__ import annotations

import datetime
import json
import math
import sys
from pathlib import Path

import numpy as np

from stepdistill.stats import corrected_paired_t, fixed_test_paired_t

OUT = Path(__file__).with_name("fixed_test_simulation.json")
ROW_SD = 0.004
HOLDOUT_TRAIN_RATIO = 0.11
LEVEL = 0.05
RUNS, ROWS, RUN_SDS = (3, 5), (500, 2000), (0.001, 0.004)
SHIFT_IN_ROW_SDS = 3.0


def simulated_rejections(n_runs: int, n_rows: int, run_sd: float, shift_in_row_sds: float, rng, n_comparisons: int = 2000) -> np.ndarray:
    """Share of ``n_comparisons`` simulated comparisons that each test rejects at LEVEL: (the
    fixed-test t, the runs' corrected t alone); the true difference is ``shift_in_row_sds``
    test-row sds."""
    rejected = np.zeros(2)
    for _ in range(n_comparisons):
        rows = rng.normal(shift_in_row_sds * ROW_SD, ROW_SD * math.sqrt(n_rows), n_rows)
        runs = rng.normal(0.0, run_sd, n_runs)
        differences = rows + runs[:, None] + rng.normal(0.0, 0.001 * math.sqrt(n_rows), (n_runs, n_rows))
        zeros = np.zeros_like(differences)
        tests = fixed_test_paired_t(differences, zeros, HOLDOUT_TRAIN_RATIO), corrected_paired_t(differences.mean(1), zeros.mean(1), HOLDOUT_TRAIN_RATIO)
        rejected += [t["p_value"] is not None and t["p_value"] < LEVEL for t in tests]  # no spread: no claim
    return rejected / n_comparisons


def settings():
    """(runs, rows, run sd, rng) in the order both this script and the test draw them."""
    for n_runs in RUNS:
        for n_rows in ROWS:
            rng = np.random.default_rng(n_runs * n_rows)
            for run_sd in RUN_SDS:
                yield n_runs, n_rows, run_sd, rng


def main() -> None:
    rows = []
    for n_runs, n_rows, run_sd, rng in settings():
        false_positives, runs_only = simulated_rejections(n_runs, n_rows, run_sd, 0.0, rng)
        power, _ = simulated_rejections(n_runs, n_rows, run_sd, SHIFT_IN_ROW_SDS, rng, n_comparisons=500)
        rows.append({"runs": n_runs, "test_rows": n_rows, "run_sd": run_sd, "false_positive_rate": false_positives, "runs_only_false_positive_rate": runs_only, "power": power})
        print(f"{n_runs} runs, {n_rows} rows, run sd {run_sd}: false positives {false_positives:.3f} (runs alone {runs_only:.3f}), power {power:.3f}")
    record = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "level": LEVEL,
        "settings": rows,
    }
    OUT.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
