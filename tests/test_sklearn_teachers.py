"""Fitted scikit-learn classifiers as teachers: finite logits on one scale whatever their
probabilities, and a rationale for every kind of model (its own, TreeSHAP or sampled), or the
reason there is none."""

import sys

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import raises_one_line
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from stepdistill.teachers.base import Samples
from stepdistill.teachers.boosting import LightGBMTeacher, train_lightgbm, train_xgboost
from stepdistill.teachers.collect import cache_teacher
from stepdistill.teachers.file import FileTeacher
from stepdistill.teachers.scikit import SklearnTeacher


def clipped_log_odds(p1: np.ndarray, eps: float) -> np.ndarray:
    p1 = np.clip(p1, eps, 1 - eps)
    return np.log(p1 / (1 - p1))


def standardized(dataset) -> tuple[Samples, np.ndarray]:
    X = StandardScaler().fit_transform(dataset.data)
    return Samples(torch.arange(len(X)), torch.tensor(X, dtype=torch.float32)), dataset.target


@pytest.fixture(scope="module")
def cancer():
    return standardized(load_breast_cancer())


@pytest.fixture(scope="module")
def wine():
    return standardized(load_wine())


def mixed_frame(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x0": rng.normal(size=n), "city": rng.choice(["paris", "oslo", "rome"], n), "x1": rng.normal(size=n)})
    score = frame["x0"] * frame["x1"] + frame["city"].map({"paris": 1.0, "oslo": -1.0, "rome": 0.0})
    return frame, np.where(score > 0, "yes", "no")


# --- logits -----------------------------------------------------------------------------------


def test_a_forest_with_certain_rows_gives_finite_logits_on_one_scale(cancer):
    samples, y = cancer
    X = samples.X.numpy()
    forest = RandomForestClassifier(n_estimators=8, random_state=0).fit(X, y)
    p1 = forest.predict_proba(X)[:, 1]
    assert ((p1 == 0) | (p1 == 1)).any() and ((p1 > 0) & (p1 < 1)).any()  # some rows certain, some not
    teacher = SklearnTeacher(forest, explain="none")
    assert teacher.probability_floor == 1 / 16
    logits = teacher.outputs(samples).logits[:, 0].numpy()
    assert np.isfinite(logits).all()
    assert np.allclose(logits, clipped_log_odds(p1, 1 / 16), atol=1e-5)  # every row, certain or not
    assert logits.max() == pytest.approx(np.log(15), abs=1e-5)


def test_a_linear_model_that_is_sure_is_clipped_at_the_default_floor(cancer):
    samples, y = cancer
    model = LogisticRegression(max_iter=1000).fit(samples.X.numpy(), y)
    extreme = Samples(samples.ids, samples.X * 1000)  # scores in the thousands: p is exactly 0 or 1
    logits = SklearnTeacher(model, explain="none").outputs(extreme).logits[:, 0].numpy()
    assert np.allclose(np.abs(logits), np.log((1 - 1e-6) / 1e-6), atol=1e-4)


def test_calibrated_and_knn_teachers_are_accepted(wine, cancer):
    samples, y = cancer
    X = samples.X.numpy()
    calibrated = CalibratedClassifierCV(LogisticRegression(max_iter=1000), method="isotonic").fit(X, y)
    logits = SklearnTeacher(calibrated, explain="none").outputs(samples).logits[:, 0].numpy()
    assert np.allclose(logits, clipped_log_odds(calibrated.predict_proba(X)[:, 1], 1e-6), atol=1e-4)
    samples, y = wine
    X = samples.X.numpy()
    knn = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=7)).fit(X, y)
    teacher = SklearnTeacher(knn, explain="none")
    assert teacher.probability_floor == 1 / 14
    clipped = np.clip(knn.predict_proba(X), 1 / 14, 1 - 1 / 14)
    expected = np.log(clipped / clipped.sum(1, keepdims=True))
    assert np.allclose(teacher.outputs(samples).logits.numpy(), expected, atol=1e-5)


def test_file_teacher_clips_zero_probabilities(tmp_path):
    ids = np.array([4, 8, 15, 16])
    np.savez(tmp_path / "binary.npz", id=ids, probs=np.array([[0.5, 0.5], [0.0, 1.0], [1.0, 0.0], [0.2, 0.8]]))
    logits = FileTeacher(tmp_path / "binary.npz").outputs(Samples(torch.tensor(ids), torch.zeros(4, 1))).logits[:, 0].numpy()
    assert np.allclose(logits, clipped_log_odds(np.array([0.5, 1.0, 0.0, 0.8]), 1e-6), atol=1e-4)
    np.savez(tmp_path / "three.npz", id=ids[:2], probs=np.array([[0.0, 0.3, 0.7], [1.0, 0.0, 0.0]]))
    three = FileTeacher(tmp_path / "three.npz").outputs(Samples(torch.tensor(ids[:2]), torch.zeros(2, 1))).logits
    assert torch.isfinite(three).all() and torch.allclose(torch.softmax(three, 1)[0], torch.tensor([1e-6, 0.3, 0.7]), atol=1e-6)
    np.savez(tmp_path / "outside.npz", id=ids[:2], probs=np.array([1.2, 0.5]))
    with raises_one_line(r"outside \[0, 1\] in 1 rows"):
        FileTeacher(tmp_path / "outside.npz")


# --- rationales ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, explained",
    [
        (RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0), "predict_proba"),
        (HistGradientBoostingClassifier(max_iter=15, random_state=0), "decision_function"),
        (GradientBoostingClassifier(n_estimators=15, random_state=0), "decision_function"),
    ],
    ids=["forest", "hist_gradient_boosting", "gradient_boosting"],
)
def test_tree_models_are_explained_by_treeshap_per_column_plus_expected_value(cancer, model, explained):
    samples, y = cancer
    X = samples.X.numpy()
    model.fit(X, y)
    teacher = SklearnTeacher(model)
    assert teacher.rationale_style == "contributions_with_bias" and teacher.rationale_unavailable is None
    rationale = cache_teacher(teacher, [samples], ("0", "1")).take(samples.ids).rationale.numpy()
    assert rationale.shape == (len(X), X.shape[1] + 1)
    output = getattr(model, explained)(X)
    output = output[:, 1] if output.ndim == 2 else output  # a forest explains class 1's probability
    assert np.allclose(rationale.sum(1), output, atol=1e-5)


@pytest.mark.parametrize("model, explained", [(RandomForestClassifier(n_estimators=10, random_state=0), "predict_proba"), (HistGradientBoostingClassifier(max_iter=10), "decision_function")])
def test_multiclass_tree_explanations_are_class_major(wine, model, explained):
    samples, y = wine
    X = samples.X.numpy()
    model.fit(X, y)
    rationale = SklearnTeacher(model).outputs(samples).rationale.numpy()
    K, d = 3, X.shape[1]
    assert rationale.shape == (len(X), K * (d + 1))
    assert np.allclose(rationale.reshape(len(X), K, d + 1).sum(2), getattr(model, explained)(X), atol=1e-5)


def test_a_pipelines_tree_model_is_explained_on_its_transformed_columns():
    frame, y = mixed_frame()
    pipeline = make_pipeline(
        make_column_transformer((OneHotEncoder(sparse_output=False), ["city"]), (StandardScaler(), ["x0", "x1"])),
        HistGradientBoostingClassifier(max_iter=20, random_state=0),
    ).fit(frame, y)
    teacher = SklearnTeacher(pipeline, input="frame")
    assert teacher.rationale_style == "representation" and not teacher.reads_raw_columns
    samples = Samples(torch.arange(len(frame)), torch.zeros(len(frame), 1), frame)
    rationale = cache_teacher(teacher, [samples], ("no", "yes")).take(samples.ids).rationale.numpy()
    assert rationale.shape == (len(frame), 3 + 2 + 1)  # three cities, two numbers, the expected value
    assert np.allclose(rationale.sum(1), pipeline.decision_function(frame), atol=1e-5)


def test_a_pipelines_linear_model_is_explained_on_its_transformed_columns(cancer):
    samples, y = cancer
    frame = pd.DataFrame(samples.X.numpy(), columns=[f"f{i}" for i in range(samples.X.shape[1])])
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(frame, y)
    samples = Samples(samples.ids, samples.X, frame)
    teacher = SklearnTeacher(pipeline, input="frame")
    assert teacher.rationale_style == "representation" and not teacher.reads_raw_columns
    teacher.fit_background(samples)
    rationale = teacher.outputs(samples).rationale.numpy()
    scaled = pipeline[0].transform(frame)
    coef = pipeline[-1].coef_[0]
    assert np.allclose(rationale, coef * (scaled - scaled.mean(0)), atol=1e-4)


def test_knn_is_sampled_within_the_budget_and_refused_over_it():
    frame, y = mixed_frame(150)
    knn = make_pipeline(make_column_transformer((OneHotEncoder(), ["city"]), remainder=StandardScaler()), KNeighborsClassifier(10)).fit(frame, y)
    samples = Samples(torch.arange(len(frame)), torch.zeros(len(frame), 1), frame)
    capped = SklearnTeacher(knn, input="frame", explain_budget=1000)
    capped.fit_background(samples)
    assert capped.outputs(samples).rationale is None
    # 150 rows x 8 coalitions of 3 columns x 5 background rows
    assert capped.rationale_unavailable.startswith("KNeighborsClassifier has no native explanation, and sampling one for 150 rows would take ~6,000")
    assert "over the cap of 1,000; raise teacher.explain_budget or set teacher.explain: sampled" in capped.rationale_unavailable
    teacher = SklearnTeacher(knn, input="frame", explain_budget=6000)
    assert teacher.rationale_style == "contributions_with_bias" and teacher.reads_raw_columns
    teacher.fit_background(samples)
    out = cache_teacher(teacher, [samples], ("no", "yes")).take(samples.ids)
    assert teacher.rationale_unavailable is None
    assert out.rationale.shape == (len(frame), 3 + 1)  # per raw column, plus the expected value
    assert torch.allclose(out.rationale.sum(1), out.logits[:, 0], atol=1e-4)  # sampled values add up to the logit
    # Asked for, it is paid whatever it costs; the draws are the same each time.
    asked = SklearnTeacher(knn, input="frame", explain="sampled", explain_budget=1)
    asked.fit_background(samples)
    first = Samples(samples.ids[:20], samples.X[:20], frame.iloc[:20])
    assert torch.equal(asked.outputs(first).rationale, out.rationale[:20])


def test_without_shap_there_is_no_rationale_unless_one_is_asked_for(cancer, monkeypatch):
    samples, y = cancer
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(samples.X.numpy(), y)
    monkeypatch.setitem(sys.modules, "shap", None)  # import shap now fails
    teacher = SklearnTeacher(forest)
    assert teacher.outputs(samples).rationale is None and "install stepdistill[explain]" in teacher.rationale_unavailable
    with raises_one_line(r"needs the shap package; install stepdistill\[explain\]"):
        SklearnTeacher(forest, explain="tree")
    assert SklearnTeacher(LogisticRegression().fit(samples.X.numpy(), y)).rationale_style == "contributions"  # needs no shap


def test_explanations_asked_for_that_cannot_be_had_are_errors(wine):
    samples, y = wine
    X = samples.X.numpy()
    with raises_one_line("needs a linear model"):
        SklearnTeacher(RandomForestClassifier(n_estimators=3).fit(X, y), explain="linear")
    with raises_one_line("cannot explain GradientBoostingClassifier"):
        SklearnTeacher(GradientBoostingClassifier(n_estimators=3).fit(X, y), explain="tree")
    with raises_one_line("unknown teacher.explain 'shapley'"):
        SklearnTeacher(LogisticRegression().fit(X, y), explain="shapley")
    assert SklearnTeacher(LogisticRegression(max_iter=1000).fit(X, y), explain="none").outputs(samples).rationale is None


# --- threads ------------------------------------------------------------------------------------


@pytest.fixture
def torch_threads():
    """Set torch's thread count for a test, as the CLI's --threads does, then restore it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_boosting_teachers_train_and_predict_on_torchs_threads(cancer, torch_threads):
    samples, y = cancer
    frame = pd.DataFrame(samples.X.numpy()[:, :5])
    torch_threads(1)
    model = train_lightgbm(frame, y, {"n_estimators": 5}, seed=0)
    assert model.get_params()["n_jobs"] == 1 and model.booster_.params["num_threads"] == 1
    assert train_lightgbm(frame, y, {"n_estimators": 5, "num_threads": 2}, seed=0).booster_.params["num_threads"] == 2
    assert train_xgboost(frame, y, {"n_estimators": 5}, seed=0).get_params()["n_jobs"] == 1
    assert train_xgboost(frame, y, {"n_estimators": 5, "n_jobs": 2}, seed=0).get_params()["n_jobs"] == 2
    booster = train_lightgbm(frame, y, {"n_estimators": 5, "n_jobs": None}, seed=0).booster_
    asked = []
    predict = booster.predict
    booster.predict = lambda data, **kwargs: asked.append(kwargs["num_threads"]) or predict(data, **kwargs)
    torch_threads(2)
    LightGBMTeacher(booster, input="X").outputs(Samples(samples.ids, torch.tensor(frame.to_numpy())))
    assert asked == [2, 2]


class ThreadRecorder(ClassifierMixin, BaseEstimator):
    """Records joblib's default n_jobs and the OpenMP limit while it predicts."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        from threadpoolctl import threadpool_info

        self.seen_ = (joblib.effective_n_jobs(None), {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"})
        return np.full((len(X), 2), 0.5)


def test_scikit_learn_teachers_predict_on_torchs_threads(cancer, torch_threads):
    samples, y = cancer
    recorder = ThreadRecorder().fit(samples.X.numpy(), y)
    torch_threads(2)
    SklearnTeacher(recorder, explain="none").outputs(samples)
    assert recorder.seen_ == (2, {2})
    torch_threads(1)
    SklearnTeacher(recorder, explain="none").outputs(samples)
    assert recorder.seen_ == (1, {1})
