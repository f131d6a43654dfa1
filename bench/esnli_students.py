"""Fine-tuned against frozen-feature students on e-SNLI, run by run and test row by test row.

``demo --preset esnli`` (students that fine-tune their encoder) and ``demo --preset esnli_frozen``
(MLP students on frozen sentence features) read the same records, carve the same splits from the
same seeds, teach the same four methods and score the same fixed test records, so their students
can be compared pairwise: every fine-tuned method against the frozen-feature method of the same
name, against the frozen-feature control (the MLP fine-tuned on the human labels, the student
to beat) and against the teacher (PaLM's answers to the same test records), accuracy by the
fixed-test paired t-test of the reports (runs and test rows both in the interval), Holm's
correction over the table.

    python bench/esnli_students.py RUN_ESNLI RUN_ESNLI_FROZEN [--output bench/esnli_students.json]

where the run directories are written by

    stepdistill demo --preset esnli --data-dir ../shared/data/dsbs --out RUN_ESNLI
    stepdistill demo --preset esnli_frozen --data-dir ../shared/data/dsbs --out RUN_ESNLI_FROZEN

(both with or both without ``--full``). Writes the JSON file and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from stepdistill import stats

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parent
DEFAULT_OUTPUT = HERE / "esnli_students.json"
METHODS = ("baseline", "traditional", "step_by_step", "enhanced")
CONTROL = "baseline"
TEACHER = "teacher"


def correct_rows(run_dir: Path) -> dict[str, np.ndarray]:
    """method: (R, N) 1/0 by run and test row, in the same row order every run."""
    rows = pd.read_csv(run_dir / "test_predictions.csv", dtype=str, keep_default_na=False)
    runs = sorted(rows["run"].astype(int).unique())
    by_run = [rows[rows["run"].astype(int) == r].set_index("id") for r in runs]
    order = by_run[0].index
    if any(not frame.index.sort_values().equals(order.sort_values()) for frame in by_run):
        raise SystemExit(f"error: the runs of {run_dir} score different test rows; they are not one fixed test file")
    return {m: np.stack([(frame.loc[order, m] == frame.loc[order, "label"]).to_numpy(float) for frame in by_run]) for m in (*METHODS, TEACHER)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fine_tuned", type=Path)
    parser.add_argument("frozen", type=Path)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    tuned, frozen = correct_rows(args.fine_tuned), correct_rows(args.frozen)
    made = [json.loads((run_dir / "manifest.json").read_text())["config"] for run_dir in (args.fine_tuned, args.frozen)]
    if [m.get("preset") for m in made] != ["esnli", "esnli_frozen"] or made[0].get("full") != made[1].get("full"):
        raise SystemExit("error: give the directories of demo --preset esnli and demo --preset esnli_frozen, in that order, both with or both without --full")
    full = " --full" if made[0]["full"] else ""
    splits = [json.loads((run_dir / "splits.json").read_text())["runs"] for run_dir in (args.fine_tuned, args.frozen)]
    if splits[0] != splits[1]:
        raise SystemExit("error: the two demos carved different splits; run both presets with the same --repeats, both with or both without --full")
    # What each run leaves out of training besides the fixed test rows: its validation split.
    ratio = float(np.mean([len(run["validation"]) / len(run["train"]) for run in splits[0]]))
    pending = []
    for method in METHODS:
        references = [(f"frozen-feature {name}", frozen[name]) for name in dict.fromkeys((method, CONTROL))]
        for reference, values in [*references, (TEACHER, tuned[TEACHER])]:
            pending.append((method, reference, values, stats.fixed_test_paired_t(tuned[method], values, ratio)))
    corrected = stats.holm([c for *_, c in pending])
    table = []
    for (method, reference, values, _), comparison in zip(pending, corrected):
        table.append(
            {
                "fine_tuned": method,
                "reference": reference,
                "fine_tuned_accuracy": round(float(tuned[method].mean()), 3),
                "reference_accuracy": round(float(values.mean()), 3),
                "diff_points": round(100 * comparison["diff"], 2),
                "ci_points": [round(100 * comparison["ci_low"], 2), round(100 * comparison["ci_high"], 2)],
                "p_holm": round(comparison["p_holm"], 3),
                "significant": comparison["significant"],
            }
        )
    command = "python bench/esnli_students.py RUN_ESNLI RUN_ESNLI_FROZEN"
    output = args.output.resolve()
    if output != DEFAULT_OUTPUT:  # named as from the repository root, where the README's commands run
        command += f" --output {output.relative_to(REPOSITORY) if output.is_relative_to(REPOSITORY) else args.output}"
    report = {
        "command": command,
        "run_dirs_from": [
            f"stepdistill demo --preset esnli{full} --data-dir ../shared/data/dsbs --out RUN_ESNLI",
            f"stepdistill demo --preset esnli_frozen{full} --data-dir ../shared/data/dsbs --out RUN_ESNLI_FROZEN",
        ],
        "runs": int(tuned[CONTROL].shape[0]),
        "test_rows": int(tuned[CONTROL].shape[1]),
        "comparisons": table,
    }
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print("| fine-tuned | accuracy | against | accuracy | difference (points) [95% CI] | Holm p |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for row in table:
        low, high = row["ci_points"]
        print(f"| {row['fine_tuned']} | {row['fine_tuned_accuracy']:.3f} | {row['reference']} | {row['reference_accuracy']:.3f} | {row['diff_points']:+.2f} [{low:+.2f}, {high:+.2f}] | {row['p_holm']:.3f} |")


if __name__ == "__main__":
    main()
