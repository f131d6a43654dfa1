"""What a verdict rests on, kept in the run directory for error analysis and for anyone who wants
to recompute a comparison: every model's answer on every test row of every run
(test_predictions.csv), and which rows each run trained, validated and tested on, and whose labels
its students saw (splits.json). Rows are named by the data's id column, else by their row number
from 0 in their file (the data's, or the test file's)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from stepdistill.data.repeats import fraction_key
from stepdistill.experiment.loop import Experiment

TEST_PREDICTIONS_CSV = "test_predictions.csv"
SPLITS_JSON = "splits.json"


def write_evidence(staging_dir: Path, experiment: Experiment) -> list[str]:
    """test_predictions.csv: columns ``run``, ``id``, ``label``, ``teacher``, then one per method
    (named as in results.json), each model's predicted class ("" where it gave no answer); with
    several labelled fractions (a sweep) a ``fraction`` column after ``run``. splits.json:
    ``{"runs": [{"train", "validation", "test", "labelled": [ids]}, ...]}``, ``labelled`` at the
    largest fraction, and with several fractions ``labelled_by_fraction``. Returns the names."""
    fractions = sorted(experiment.results_by_fraction)
    several = len(fractions) > 1
    frames = []
    for run in experiment.runs:
        for fraction, result in zip(fractions, run.results):
            frame = pd.DataFrame(result.test_rows)
            frame.insert(0, "run", run.index)
            if several:
                frame.insert(1, "fraction", fraction_key(fraction))
            frames.append(frame)
    pd.concat(frames, ignore_index=True).to_csv(staging_dir / TEST_PREDICTIONS_CSV, index=False)
    runs = []
    for run in experiment.runs:
        labelled = run.split["labelled"]
        entry = {"train": run.split["train"], "validation": run.split["validation"], "test": run.split["test"], "labelled": labelled[fractions[-1]]}
        if several:
            entry["labelled_by_fraction"] = {fraction_key(f): labelled[f] for f in fractions}
        runs.append(entry)
    (staging_dir / SPLITS_JSON).write_text(json.dumps({"runs": runs}) + "\n", encoding="utf-8")
    return [TEST_PREDICTIONS_CSV, SPLITS_JSON]
