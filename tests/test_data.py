"""Data loading, checking, splitting, scaling and the synthetic generators."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import raises_one_line
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from stepdistill.data import (
    Splits,
    frame_parts,
    linear_binary,
    linear_weights,
    nonlinear_binary,
    prepare,
    read_frame,
    split_stratified,
    standardize,
)


def small_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": [0.5, 1.5, -2.0, 3.25, 0.0, 7.0],
            "b": [1, 2, 3, 4, 5, 6],
            "target": ["dog", "cat", "dog", "bird", "cat", "dog"],
        }
    )


# --- read_frame -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".pq"])
def test_round_trip_keeps_features_and_labels(tmp_path, suffix):
    frame = small_frame()
    path = tmp_path / f"data{suffix}"
    if suffix.startswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)

    features, y, classes, ids = frame_parts(read_frame(path), "target")
    features0, y0, classes0, ids0 = frame_parts(frame, "target")

    np.testing.assert_array_equal(features.to_numpy(np.float32), features0.to_numpy(np.float32))
    np.testing.assert_array_equal(y, y0)
    assert classes == classes0 == ["bird", "cat", "dog"]
    assert list(features.columns) == list(features0.columns) == ["a", "b"]
    np.testing.assert_array_equal(ids, np.arange(6))


def test_read_missing_file(tmp_path):
    with raises_one_line("not found"):
        read_frame(tmp_path / "nope.csv")


def test_read_unsupported_extension_names_supported_ones(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("a,b\n1,2\n")
    with raises_one_line(r"data\.xlsx.*\.csv, \.csv\.gz, \.parquet, \.pq"):
        read_frame(path)


@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.csv", b""),
        ("header_only.csv", b"a,b,label\n"),
        ("broken.parquet", b"this is not parquet\nat all\n"),
        ("broken.csv.gz", b"not gzip data"),
    ],
)
def test_read_unreadable_or_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with raises_one_line(name.replace(".", r"\.")):
        read_frame(path)


# --- frame_parts ------------------------------------------------------------------------------


def test_string_labels_are_encoded_in_sorted_order():
    features, y, classes, _ = frame_parts(small_frame(), "target")
    assert classes == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(y, [2, 1, 2, 0, 1, 2])
    assert (y.dtype, features.shape) == (np.int64, (6, 2))


def test_whole_float_labels_are_named_as_integers():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [1.0, 0.0, 1.0]})
    _, y, classes, _ = frame_parts(frame, "y")
    assert classes == ["0", "1"]
    np.testing.assert_array_equal(y, [1, 0, 1])


def test_id_column_is_used_and_excluded_from_features():
    frame = small_frame().assign(row_id=[10, 11, 12, 13, 14, 15])
    features, _, _, ids = frame_parts(frame, "target", id_column="row_id")
    assert list(features.columns) == ["a", "b"]
    np.testing.assert_array_equal(ids, [10, 11, 12, 13, 14, 15])
    assert ids.dtype == np.int64


@pytest.mark.parametrize(
    "frame, label, id_column, match",
    [
        (small_frame(), "label", None, r"label column 'label' not found.*columns are: a, b, target"),
        (small_frame(), "target", "row_id", r"id column 'row_id' not found"),
        (small_frame().assign(target=["a", None, "b", "a", "b", "a"]), "target", None, r"'target' has 1 missing"),
        (small_frame().assign(target="a"), "target", None, r"'target' has a single class \('a'\)"),
        (
            small_frame().assign(city=list("xyzxyz"), day=pd.Timestamp("2024-01-01")),
            "target",
            None,
            r"unsupported type \(dates, durations or complex numbers\): day; convert them to numbers or drop them",
        ),
        (
            small_frame().assign(a=[np.nan, 1, 2, 3, np.inf, 5], b=[1, 2, 3, -np.inf, 5, 6]),
            "target",
            None,
            r"columns: a, b \(3 rows\)",
        ),
        (small_frame().assign(row_id=[1, 2, 3, 3, 4, 5]), "target", "row_id", r"'row_id' has 1 duplicated"),
        (small_frame().assign(row_id=[0.5, 1, 2, 3, 4, 5]), "target", "row_id", r"'row_id' must hold integers"),
        (small_frame().assign(row_id=[1, None, 2, 3, 4, 5]), "target", "row_id", r"'row_id' has 1 missing"),
        (small_frame()[["target"]], "target", None, r"no feature columns.*label 'target'"),
    ],
    ids=[
        "label-missing",
        "id-missing",
        "label-nan",
        "single-class",
        "dates",
        "nan-inf",
        "id-duplicated",
        "id-not-integer",
        "id-nan",
        "no-features",
    ],
)
def test_frame_errors_are_one_line_and_name_the_column(frame, label, id_column, match):
    with raises_one_line(match):
        frame_parts(frame, label, id_column)


# --- splits -----------------------------------------------------------------------------------


def imbalanced_arrays(n: int = 10_000, seed: int = 0):
    """Three classes at 70% / 25% / 5%, with ids that are not row positions."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.70, 0.25, 0.05]).astype(np.int64)
    X = rng.normal(loc=5.0, scale=3.0, size=(n, 4)).astype(np.float32)
    ids = rng.permutation(n).astype(np.int64) + 1_000
    return ids, X, y, ["a", "b", "c"], ["f0", "f1", "f2", "f3"]


def test_stratified_split_keeps_class_ratios():
    ids, X, y, classes, names = imbalanced_arrays()
    splits = split_stratified(ids, X, y, classes, names, val_fraction=0.1, test_fraction=0.1, seed=3)
    overall = np.bincount(y, minlength=3) / len(y)
    sizes = []
    for table in (splits.train, splits.val, splits.test):
        ratios = torch.bincount(table.y, minlength=3).numpy() / len(table)
        np.testing.assert_allclose(ratios, overall, atol=0.01)
        sizes.append(len(table))
    assert sizes == [8_000, 1_000, 1_000]


def test_split_ids_are_disjoint_cover_all_and_stay_aligned():
    ids, X, y, classes, names = imbalanced_arrays()
    splits = split_stratified(ids, X, y, classes, names)
    parts = [t.ids.numpy() for t in (splits.train, splits.val, splits.test)]
    everything = np.concatenate(parts)
    assert len(set(everything)) == len(everything) == len(ids)
    assert set(everything) == set(ids)
    # Each row keeps its own features and label.
    row_of_id = {int(i): r for r, i in enumerate(ids)}
    for table in (splits.train, splits.val, splits.test):
        rows = np.array([row_of_id[int(i)] for i in table.ids])
        np.testing.assert_array_equal(table.X.numpy(), X[rows])
        np.testing.assert_array_equal(table.y.numpy(), y[rows])
        assert (table.X.dtype, table.y.dtype, table.ids.dtype) == (torch.float32, torch.int64, torch.int64)
        assert table.classes == ("a", "b", "c") and table.feature_names == ("f0", "f1", "f2", "f3")


def test_split_is_deterministic_by_seed():
    arrays = imbalanced_arrays(2_000)
    first, again, other = (split_stratified(*arrays, seed=s).test.ids for s in (1, 1, 2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_split_rejects_a_class_too_small_to_stratify():
    ids, X, y, classes, names = imbalanced_arrays(1_000)
    y[:] = 0
    y[:5] = 1
    with raises_one_line(r"class 'b' has only 5 rows.*at least 20"):
        split_stratified(ids, X, y, classes[:2], names)


@pytest.mark.parametrize("val_fraction, test_fraction", [(0.0, 0.1), (0.5, 0.5), (0.1, -0.2)])
def test_split_rejects_bad_fractions(val_fraction, test_fraction):
    with raises_one_line("val_fraction"):
        split_stratified(*imbalanced_arrays(1_000), val_fraction=val_fraction, test_fraction=test_fraction)


def test_standardize_fits_on_train_only():
    splits, scaler = standardize(split_stratified(*imbalanced_arrays()))
    train, test = splits.train.X.numpy(), splits.test.X.numpy()
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-4)
    # Test rows were not used for fitting, so their statistics are close but not exact.
    assert np.abs(test.mean(axis=0)).max() > 1e-3
    np.testing.assert_allclose(test.mean(axis=0), 0.0, atol=0.15)
    assert splits.test.X.dtype == torch.float32
    np.testing.assert_allclose(scaler.mean_, 5.0, atol=0.15)


def test_prepare_runs_the_whole_pipeline():
    frame = linear_binary(2_000, n_features=3, seed=1).assign(sample=np.arange(2_000) * 7)
    splits, encoder = prepare(frame, "label", id_column="sample", seed=4)
    assert isinstance(splits, Splits)
    assert splits.train.feature_names == ("x0", "x1", "x2") and splits.train.classes == ("0", "1")
    assert sum(len(t) for t in (splits.train, splits.val, splits.test)) == 2_000
    assert int(splits.val.ids.remainder(7).abs().sum()) == 0
    np.testing.assert_allclose(splits.train.X.mean(dim=0).numpy(), 0.0, atol=1e-5)
    assert encoder.feature_names == ("x0", "x1", "x2")


# --- synthetic --------------------------------------------------------------------------------


@pytest.mark.parametrize("generate", [linear_binary, nonlinear_binary])
def test_generators_are_deterministic_with_right_shape_and_balance(generate):
    frame = generate(5_000, n_features=8, seed=3)
    pd.testing.assert_frame_equal(frame, generate(5_000, n_features=8, seed=3))
    assert not frame.equals(generate(5_000, n_features=8, seed=4))
    assert list(frame.columns) == [f"x{j}" for j in range(8)] + ["label"]
    assert frame.shape == (5_000, 9)
    assert (frame.drop(columns="label").dtypes == np.float32).all()
    assert set(frame["label"].unique()) == {0, 1}
    assert 0.45 < frame["label"].mean() < 0.55


def test_linear_labels_follow_the_true_weights():
    frame = linear_binary(20_000, n_features=10, seed=5)
    X, y = frame.drop(columns="label").to_numpy(), frame["label"].to_numpy()
    bayes_accuracy = np.mean((X @ linear_weights(10, seed=5) > 0) == y)
    assert 0.85 < bayes_accuracy < 0.89


def test_nonlinear_needs_enough_features():
    with raises_one_line("n_features >= 7"):
        nonlinear_binary(100, n_features=3)


def test_small_mlp_beats_logistic_regression_on_nonlinear_data():
    frame = nonlinear_binary(15_000, n_features=10, seed=0)
    X, y = frame.drop(columns="label").to_numpy(), frame["label"].to_numpy()
    X_train, y_train, X_test, y_test = X[:10_000], y[:10_000], X[10_000:], y[10_000:]
    linear = LogisticRegression().fit(X_train, y_train).score(X_test, y_test)
    with warnings.catch_warnings():
        # Ten epochs on purpose: the gap must show up with a short, cheap training run.
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp = MLPClassifier((64, 64), max_iter=10, random_state=0).fit(X_train, y_train)
    assert mlp.score(X_test, y_test) >= linear + 0.08


def test_categorical_columns_are_one_hot_encoded_with_categories_from_train_only():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.normal(40, 10, 600),
            "city": rng.choice(["paris", "oslo", "rome"], 600),
            "member": rng.choice([True, False], 600),
            "label": rng.choice(["yes", "no"], 600),
        }
    )
    splits, encoder = prepare(frame, "label")
    assert encoder.feature_names == ("age", "city_oslo", "city_paris", "city_rome", "member_False", "member_True")
    assert encoder.feature_groups == (0, 1, 1, 1, 2, 2)
    X = splits.train.X.numpy()
    np.testing.assert_allclose(X[:, 1:4].sum(1), 1.0)  # exactly one city per row
    assert abs(X[:, 0].mean()) < 1e-5
    unseen = encoder.transform(frame.drop(columns="label").head(2).assign(city="lima"))
    np.testing.assert_array_equal(unseen[:, 1:4], 0.0)  # an unseen category encodes as all zeros


def test_a_categorical_column_that_is_really_an_identifier_is_refused():
    frame = pd.DataFrame({"name": [f"n{i}" for i in range(1_200)], "x": np.arange(1_200.0), "label": [0, 1] * 600})
    with raises_one_line(r"over 1000 distinct values: name \(1,200\)"):
        frame_parts(frame, "label")
