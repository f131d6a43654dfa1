"""The experiment's runs: what varies between them, what never reaches training, and what the
results say about each student."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import raises_one_line
from sklearn.datasets import make_classification

import stepdistill.experiment.loop as loop
import stepdistill.experiment.tabular as tabular
from stepdistill import stats
from stepdistill.config import ExperimentConfig
from stepdistill.data import linear_binary
from stepdistill.experiment.evidence import write_evidence

FAST = {"epochs": 3, "lr": 0.05}


def _config(**sections) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"training": FAST, "evaluation": {"repeats": 3}, **sections})


def run_experiment(config: ExperimentConfig, frame: pd.DataFrame, **options) -> dict:
    return tabular.run_tabular(config, frame, **options).results


@pytest.fixture
def spied(monkeypatch):
    """Every call of the experiment loop's ``fit`` and the tabular track's ``run_teacher`` and
    ``test_run``, in order: ``("fit", train ids, val ids)``, ``("teacher", the ids it learns from, run seed)``,
    ``("test", test ids)``."""
    calls = []
    fit, run_teacher, test_run = loop.fit, tabular.run_teacher, tabular.test_run

    def spy_fit(states, data, **kwargs):
        calls.append(("fit", set(data.train.ids.tolist()), set(data.val.ids.tolist())))
        return fit(states, data, **kwargs)

    def spy_teacher(config, data, run, loaded, *args, **kwargs):
        calls.append(("teacher", set((kwargs.get("fit_on") or data).splits.train.ids.tolist()), run.seed))
        return run_teacher(config, data, run, loaded, *args, **kwargs)

    def spy_test(at, trained):
        calls.append(("test", set(at.data.splits.test.ids.tolist())))
        return test_run(at, trained)

    monkeypatch.setattr(loop, "fit", spy_fit)
    monkeypatch.setattr(tabular, "run_teacher", spy_teacher)
    monkeypatch.setattr(tabular, "test_run", spy_test)
    return calls


def _runs(calls: list) -> list[list]:
    """The spied calls cut into runs, each ending with its test."""
    runs, current = [], []
    for call in calls:
        current.append(call)
        if call[0] == "test":
            runs.append(current)
            current = []
    return runs


def test_tuning_and_early_stopping_never_read_the_test_split(spied):
    config = _config(tune={"grid": {"temperature": [1.0, 4.0]}}, training={**FAST, "early_stopping_patience": 1})
    run_experiment(config, linear_binary(1500, 4, seed=0))
    runs = _runs(spied)
    assert len(runs) == 3
    for run in runs:
        *before, (_, test_ids) = run
        fits = [c for c in before if c[0] == "fit"]
        assert fits, "students trained"
        for _, train_ids, val_ids in fits:
            assert not (train_ids | val_ids) & test_ids
        assert all(c[0] != "test" for c in before)  # the test split is read once, after all training


def test_each_run_has_its_own_split_and_refits_the_teacher_on_its_training_rows(spied):
    run_experiment(_config(), linear_binary(1500, 4, seed=0))
    teachers = [c for c in spied if c[0] == "teacher"]
    tests = [c[1] for c in spied if c[0] == "test"]
    assert [seed for _, _, seed in teachers] == [0, 1, 2]
    assert len({frozenset(ids) for _, ids, _ in teachers}) == 3
    assert len({frozenset(ids) for ids in tests}) == 3
    for (_, train_ids, _), test_ids in zip(teachers, tests):
        assert not train_ids & test_ids


def test_repeated_cross_validation_tests_every_row_once_per_repetition(spied):
    config = _config(evaluation={"scheme": "cv", "repeats": 2, "folds": 3})
    results = run_experiment(config, linear_binary(900, 4, seed=0), compared_metrics=("accuracy",))
    tests = [c[1] for c in spied if c[0] == "test"]
    assert results["evaluation"]["runs"] == 6 and len(tests) == 6
    for repetition in (tests[:3], tests[3:]):
        assert set().union(*repetition) == set(range(900)) and sum(map(len, repetition)) == 900


def test_a_fixed_test_file_is_the_test_split_of_every_run(spied):
    frame = linear_binary(1600, 4, seed=0)
    config = ExperimentConfig.model_validate({"training": FAST, "evaluation": {"repeats": 2}, "data": {"test_path": "test.csv"}})
    results = run_experiment(config, frame.iloc[:1200], test_frame=frame.iloc[1200:])
    tests = [c[1] for c in spied if c[0] == "test"]
    assert tests[0] == tests[1] == set(range(1200, 1600))
    assert results["evaluation"]["scheme"] == "fixed test file"
    trains = [c[1] for c in spied if c[0] == "teacher"]
    assert trains[0] != trains[1]


def test_over_a_fixed_test_file_comparisons_carry_the_test_rows_variance_and_the_run_keeps_what_they_rest_on(tmp_path):
    frame = linear_binary(1000, 4, seed=1).assign(key=lambda f: 5000 + np.arange(len(f)))
    config = ExperimentConfig.model_validate({"training": FAST, "evaluation": {"repeats": 3}, "data": {"test_path": "test.csv", "id_column": "key"}})
    experiment = tabular.run_tabular(config, frame.iloc[:700], test_frame=frame.iloc[700:])
    results = experiment.results
    assert "fixed test file" in results["evaluation"]["test"]
    assert write_evidence(tmp_path, experiment) == ["test_predictions.csv", "splits.json"]
    predictions = pd.read_csv(tmp_path / "test_predictions.csv", dtype=str)
    methods = list(results["methods"])
    assert list(predictions.columns) == ["run", "id", "label", "teacher", *methods]
    splits = json.loads((tmp_path / "splits.json").read_text())["runs"]
    assert len(splits) == 3 and all(run["test"] == [str(5000 + i) for i in range(700, 1000)] for run in splits)
    for run in splits:
        assert not set(run["train"]) & set(run["validation"]) and len(run["train"]) + len(run["validation"]) == 700
        assert sorted(run["labelled"]) == sorted(run["train"] + run["validation"])
    by_run = [rows for _, rows in predictions.groupby(predictions["run"].astype(int))]
    correct = {name: np.stack([(rows[name] == rows["label"]).to_numpy(float) for rows in by_run]) for name in ["teacher", *methods]}
    assert results["teacher"]["test"]["accuracy"]["values"] == pytest.approx(correct["teacher"].mean(1).tolist())
    for name, entry in results["methods"].items():
        assert entry["test"]["accuracy"]["values"] == pytest.approx(correct[name].mean(1).tolist())
        if entry["control"] is None:
            continue
        # Every accuracy comparison is recomputed from the file: over runs and test rows.
        comparison = entry["vs_control"]["accuracy"]
        assert comparison["n"] == 3 and comparison["n_rows"] == 300
        ratio = np.mean([len(run["validation"]) / len(run["train"]) for run in splits])
        recomputed = stats.fixed_test_paired_t(correct[name], correct[entry["control"]], ratio)
        assert {k: comparison[k] for k in recomputed} == pytest.approx(recomputed)


def test_validation_sees_only_the_labelled_share_of_its_rows(spied):
    config = _config(data={"labelled_fraction": 0.2}, evaluation={"repeats": 1})
    run_experiment(config, linear_binary(2000, 4, seed=0))
    [(_, train_ids, val_ids)] = [c for c in spied if c[0] == "fit"][:1]
    assert len(val_ids) == 40  # ceil(0.2 * each class's rows) of 200 validation rows


def test_labelled_subsets_are_nested_across_fractions_and_read_no_label():
    from stepdistill.data.repeats import RunRows
    from stepdistill.experiment.loop import labelled_rows

    run = RunRows(0, 3, np.arange(100), np.arange(100, 120), np.arange(120, 130))
    masks = [labelled_rows(run, f) for f in (0.01, 0.1, 0.5)]
    for small, large in zip(masks, masks[1:]):
        assert not (small.train & ~large.train).any() and not (small.val & ~large.val).any()
    assert [int(m.train.sum()) for m in masks] == [1, 10, 50] and [int(m.val.sum()) for m in masks] == [1, 2, 10]
    assert labelled_rows(run, 1.0).train is None


def test_a_sweep_teacher_learns_each_fractions_labels_or_with_sees_all_every_label(spied):
    frame = linear_binary(2000, 4, seed=0)
    results = tabular.run_tabular(_config(evaluation={"repeats": 2}), frame, fractions=[0.05, 1.0]).results_by_fraction
    teachers = [c for c in spied if c[0] == "teacher"]
    assert len(teachers) == 4  # per run: one on all training rows (fraction 1), one on the 5%
    assert [len(ids) for _, ids, _ in teachers] == [1600, 80] * 2
    assert list(results) == [0.05, 1.0]
    assert results[0.05]["teacher"]["test"] != results[1.0]["teacher"]["test"]
    spied.clear()
    config = _config(evaluation={"repeats": 2}, teacher={"kind": "logistic", "sees": "all"})
    results = tabular.run_tabular(config, frame, fractions=[0.05, 1.0]).results_by_fraction
    assert [len(call[1]) for call in spied if call[0] == "teacher"] == [1600] * 2  # one per run, for every fraction
    assert results[0.05]["teacher"]["test"] == results[1.0]["teacher"]["test"]


def test_methods_with_another_recipe_get_a_control_trained_their_way():
    config = ExperimentConfig.model_validate({"methods": {"baseline": {}, "traditional": {}, "enhanced": {"optimizer": "sgd"}}})
    with_controls, control_of = config.with_matched_controls()
    assert control_of == {"baseline": None, "traditional": "baseline", "enhanced": "baseline@enhanced", "baseline@enhanced": None}
    control = with_controls.methods["baseline@enhanced"]
    assert control["preset"] == "baseline" and control["optimizer"] == "sgd"
    assert with_controls.recipe("baseline@enhanced") == with_controls.recipe("enhanced")

    article, control_of = ExperimentConfig(training="article").with_matched_controls()
    assert control_of["enhanced"] == "baseline@enhanced" and control_of["traditional"] == "baseline"
    assert article.recipe("baseline@enhanced")["optimizer"] == "adam" and article.recipe("baseline")["optimizer"] == "sgd"


def test_an_auto_learning_rate_is_chosen_on_validation_from_the_candidates():
    results = run_experiment(
        ExperimentConfig.model_validate({"training": {"epochs": 3}, "methods": {"baseline": {}}, "evaluation": {"repeats": 1}}),
        linear_binary(1500, 4, seed=0),
    )
    [tuning] = results["methods"]["baseline"]["tuning"]
    assert [t["settings"]["lr"] for t in tuning] == [0.003, 0.01, 0.03]
    best = min(tuning, key=lambda t: t["log_loss"])
    assert results["methods"]["baseline"]["settings"][0]["lr"] == best["settings"]["lr"]


def test_a_control_chooses_among_as_many_validation_draws_as_its_method():
    # traditional tunes temperature (2 values x 3 learning rates); the baseline takes no
    # temperature, so its 3 learning rates are each drawn twice, with another seed.
    config = ExperimentConfig.model_validate(
        {"training": {"epochs": 2}, "methods": {"baseline": {}, "traditional": {}}, "tune": {"grid": {"temperature": [1.0, 4.0]}}, "evaluation": {"repeats": 1}}
    )
    results = run_experiment(config, linear_binary(1500, 4, seed=0))
    [traditional], [baseline] = results["methods"]["traditional"]["tuning"], results["methods"]["baseline"]["tuning"]
    assert len(traditional) == len(baseline) == 6
    assert [(t["settings"]["lr"], t["settings"].get("draw")) for t in baseline] == [(lr, draw) for draw in (None, 1) for lr in (0.003, 0.01, 0.03)]
    # another seed: the same settings drawn again score differently
    assert baseline[0]["log_loss"] != baseline[3]["log_loss"]


def test_a_diverged_candidate_is_never_chosen_over_one_that_trained():
    config = ExperimentConfig.model_validate(
        {"training": {"epochs": 3, "optimizer": "sgd"}, "methods": {"baseline": {}}, "tune": {"grid": {"lr": [1e6, 0.05]}}, "evaluation": {"repeats": 1}}
    )
    results = run_experiment(config, linear_binary(1500, 4, seed=0))
    assert results["methods"]["baseline"]["settings"][0]["lr"] == 0.05
    assert results["methods"]["baseline"]["flags"]["diverged"] == 0


def test_a_diverged_student_is_marked_not_reported_as_a_result():
    config = ExperimentConfig.model_validate({"training": {"epochs": 3, "lr": 1e6, "optimizer": "sgd"}, "methods": {"baseline": {}, "traditional": {}}, "evaluation": {"repeats": 1}})
    results = run_experiment(config, linear_binary(1500, 4, seed=0))
    assert results["methods"]["baseline"]["flags"]["diverged"] == 1


def test_on_small_imbalanced_data_default_students_beat_the_majority_rule_or_say_so():
    """A new user's first run: 5,822 rows, 6% positives, a LightGBM teacher, every student setting
    at its default. (With the article's recipe, 10 epochs of SGD, every student ended below the
    majority-class rule, unflagged.)"""
    X, y = make_classification(n_samples=5822, n_features=12, n_informative=5, weights=[0.94, 0.06], flip_y=0.03, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(12)]).assign(label=y)
    config = ExperimentConfig.model_validate({"teacher": {"kind": "lightgbm", "params": {"n_estimators": 40}}, "evaluation": {"repeats": 2}})
    results = run_experiment(config, frame)
    majority = results["reference"]["majority"]["test"]["accuracy"]["mean"]
    for name, entry in results["methods"].items():
        accuracy = entry["test"]["accuracy"]["mean"]
        assert entry["flags"]["below_majority"] == (accuracy < majority)
        assert accuracy >= majority, f"{name} {accuracy:.4f} < majority {majority:.4f}"
        assert entry["test"]["ece"]["mean"] < 0.06


def test_a_loaded_teacher_is_not_refit_and_the_results_warn(tmp_path):
    frame = linear_binary(1200, 4, seed=0)
    logit = frame["x0"].to_numpy()
    pd.DataFrame({"id": range(1200), "logits": [[v] for v in logit]}).to_parquet(tmp_path / "teacher.parquet")
    config = _config(teacher={"kind": "file", "path": str(tmp_path / "teacher.parquet")}, methods={"baseline": {}, "traditional": {}})
    results = run_experiment(config, frame)
    assert results["teacher"]["refit"] is False
    assert any("loaded" in w for w in results["warnings"])


def test_default_methods_without_a_teacher_rationale_are_skipped_with_the_reason(tmp_path):
    frame = linear_binary(1200, 4, seed=0)
    pd.DataFrame({"id": range(1200), "logits": [[v] for v in frame["x0"]]}).to_parquet(tmp_path / "teacher.parquet")
    teacher = {"kind": "file", "path": str(tmp_path / "teacher.parquet")}
    results = run_experiment(_config(teacher=teacher), frame)
    assert set(results["methods"]) == {"baseline", "traditional"}
    assert any(w.startswith("skipped step_by_step, enhanced") for w in results["warnings"])
    with raises_one_line("step_by_step need a rationale"):
        run_experiment(_config(teacher=teacher, methods={"baseline": {}, "step_by_step": {}}), frame)
