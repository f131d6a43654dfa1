"""StepDistillClassifier: a scikit-learn estimator (its checks, Pipeline, cross-validation,
clone) that learns from the teacher it is given and fails on bad settings with one line."""

import sys

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import raises_one_line
from sklearn.base import clone
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score, cross_validate, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from stepdistill import StepDistillClassifier

# The presets' defaults are tuned for thousands of rows; the checks fit a few dozen to a few
# hundred, where more and larger steps are needed to learn the easy problems they pose.
SMALL_DATA = {"epochs": 30, "lr": 0.05}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These tests train tiny models hundreds of times. With several threads, each small torch
    op waits for the others to meet, which costs milliseconds on a busy machine: one is faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ESTIMATORS = [
    StepDistillClassifier(**SMALL_DATA),
    StepDistillClassifier(teacher="logistic", method="traditional"),
]


def expected_failed_checks(estimator):
    overrides = estimator.get_params().keys() - StepDistillClassifier().get_params().keys()
    if overrides:
        return {
            "check_no_attributes_set_in_init": "the method's settings are keyword arguments (**overrides), stored as"
            " parameters of their own name, which the check looks for in the signature only"
        }
    return {}


ALL_CHECKS = parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
# The array-API checks skip themselves unless SCIPY_ARRAY_API is set, and a torch student takes
# no array-API input anyway: they are left out, not run as skips.
NAMES, CHECK_PARAMS = ALL_CHECKS.args[:2]
APPLICABLE = [p for p in CHECK_PARAMS if "array_api" not in str(getattr(p, "values", p)[1])]


@pytest.mark.parametrize(NAMES, APPLICABLE, **ALL_CHECKS.kwargs)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def breast_cancer():
    data = load_breast_cancer()
    X = pd.DataFrame(StandardScaler().fit_transform(data.data), columns=data.feature_names)
    return train_test_split(X, data.target, test_size=0.3, stratify=data.target, random_state=0)


def test_cross_validates_in_a_pipeline():
    X, y = load_breast_cancer(return_X_y=True)
    scores = cross_val_score(make_pipeline(StandardScaler(), StepDistillClassifier()), X, y, cv=5)
    assert scores.mean() > 0.9


def fidelity(model, teacher_predictions, X) -> float:
    return float(np.mean(model.predict(X) == teacher_predictions))


# A frame handed to a model fitted on an array would make scikit-learn warn about feature names.
@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize("as_frame", [True, False], ids=["frame", "array"])
def test_student_agrees_with_a_fitted_scikit_learn_teacher(breast_cancer, as_frame):
    X_train, X_test, y_train, _ = (part if as_frame else np.asarray(part) for part in breast_cancer)
    teacher = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    # The preset's optimizer is SGD, which needs larger steps than Adam on a few hundred rows.
    model = StepDistillClassifier(teacher=teacher, method="step_by_step", epochs=50, lr=0.5).fit(X_train, y_train)
    assert model.teacher_.estimator is teacher
    assert fidelity(model, teacher.predict(X_test), X_test) > 0.95


def test_an_unfitted_teacher_is_fitted_on_a_clone(breast_cancer):
    X_train, _, y_train, _ = breast_cancer
    teacher = LogisticRegression()
    model = StepDistillClassifier(teacher=teacher, method="traditional").fit(X_train, y_train)
    assert not hasattr(teacher, "coef_") and hasattr(model.teacher_.estimator, "coef_")


def test_a_fitted_teacher_is_matched_to_y_by_class_value_not_position(breast_cancer, tmp_path):
    """A teacher fitted on 0/1 is refused for y named benign/malignant; the same model saved and
    given with its classes mapped teaches as well as one fitted on the names."""
    X_train, X_test, y_train, _ = breast_cancer
    names = np.array(["malignant", "benign"])  # load_breast_cancer's target_names: 0 is malignant
    encoded = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    with raises_one_line(r"teacher classes \('0', '1'\) do not match the data's \('benign', 'malignant'\)"):
        StepDistillClassifier(teacher=encoded, method="traditional").fit(X_train, names[y_train])
    joblib.dump(encoded, tmp_path / "teacher.joblib")
    mapped = {"kind": "sklearn", "path": str(tmp_path / "teacher.joblib"), "trust_pickle": True, "classes": {0: "malignant", 1: "benign"}}
    model = StepDistillClassifier(teacher=mapped, method="traditional", epochs=50, lr=0.5).fit(X_train, names[y_train])
    assert fidelity(model, names[encoded.predict(X_test)], X_test) > 0.95


def test_a_frozen_teacher_stays_fitted_through_cross_validation(breast_cancer):
    X_train, _, y_train, _ = breast_cancer
    teacher = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    model = StepDistillClassifier(teacher=FrozenEstimator(teacher), method="traditional")
    fitted = cross_validate(model, X_train, y_train, cv=3, return_estimator=True)["estimator"]
    assert all(fold.teacher_.estimator is teacher for fold in fitted)


def test_a_torch_teacher_reads_X_as_given(breast_cancer):
    X_train, X_test, y_train, _ = (np.asarray(part) for part in breast_cancer)
    fitted = LogisticRegression(max_iter=1000).fit(X_train, y_train)
    teacher = nn.Linear(X_train.shape[1], 1)  # the same linear model, in torch
    with torch.no_grad():
        teacher.weight.copy_(torch.from_numpy(fitted.coef_))
        teacher.bias.copy_(torch.from_numpy(fitted.intercept_))
    model = StepDistillClassifier(teacher=teacher, method="traditional", epochs=50, lr=0.5).fit(X_train, y_train)
    assert fidelity(model, fitted.predict(X_test), X_test) > 0.95


def test_frame_with_a_text_column_predicts_the_original_labels():
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], 300)
    size = rng.normal(size=300)
    frame = pd.DataFrame({"colour": colour, "size": size})
    labels = np.where((colour == "red") | (size > 1), "yes", "no")
    model = StepDistillClassifier(**SMALL_DATA).fit(frame, labels)
    assert list(model.classes_) == ["no", "yes"]
    assert list(model.feature_names_in_) == ["colour", "size"]
    assert set(model.predict(frame)) == {"no", "yes"}
    assert model.score(frame, labels) > 0.9


def test_overrides_are_parameters_that_clone_and_set():
    model = StepDistillClassifier(method="traditional", alpha=0.7)
    assert model.get_params()["alpha"] == 0.7
    assert clone(model).get_params() == model.get_params()
    model.set_params(alpha=0.2, temperature=4.0)
    assert (model.alpha, model.temperature) == (0.2, 4.0)
    assert clone(model).get_params()["temperature"] == 4.0
    with pytest.raises(ValueError, match="Invalid parameter"):
        model.set_params(alpah=0.2)


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"alpha": 2}, "alpha"),
        ({"alpah": 0.5}, "alpah"),
        ({"method": "traditional", "beta": 0.1}, "beta"),
        ({"method": "distill"}, "unknown method"),
        ({"validation_fraction": 0.6}, "validation_fraction"),
    ],
)
def test_bad_settings_fail_in_fit_with_one_line(breast_cancer, settings, match):
    X_train, _, y_train, _ = breast_cancer
    model = StepDistillClassifier(**settings)
    with raises_one_line(match) as err:
        model.fit(X_train, y_train)
    assert isinstance(err.value, ValueError)


# --- fitted scikit-learn teachers of every kind, with every method -----------------------------


def mixed_rows(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Three numbers and a city. x0 carries most of the label, which a logistic student can
    learn; an interaction and the city carry the rest."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(3)}).assign(city=rng.choice(["paris", "oslo", "rome"], n))
    score = 2 * frame["x0"] + frame["x1"] * frame["x2"] + frame["city"].map({"paris": 0.5, "oslo": -0.5, "rome": 0.0})
    return frame, np.where(score > 0, "yes", "no")


def forest_teacher(frame, y):
    """Fitted, on the numeric columns: a bare forest cannot read text."""
    numbers = frame.drop(columns="city")
    return RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(numbers, y), numbers


def boosting_pipeline_teacher(frame, y):
    encode = make_column_transformer((OneHotEncoder(sparse_output=False), ["city"]), remainder=StandardScaler())
    return make_pipeline(encode, HistGradientBoostingClassifier(max_iter=30, random_state=0)).fit(frame, y), frame


def knn_teacher(frame, y):
    """Unfitted: the estimator fits a clone on its training rows, and samples its explanation
    (180 training rows x 8 coalitions of 3 columns x 5 background rows: 7,200 evaluations,
    within the default budget)."""
    numbers = frame.drop(columns="city")
    return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=15)), numbers


@pytest.mark.parametrize("method", ["baseline", "traditional", "step_by_step", "enhanced"])
@pytest.mark.parametrize("make_teacher", [forest_teacher, boosting_pipeline_teacher, knn_teacher], ids=["forest", "hist_gradient_boosting_pipeline", "knn"])
def test_fitted_scikit_learn_teachers_distill_with_every_method(make_teacher, method):
    frame, y = mixed_rows(200)
    teacher, X = make_teacher(frame, y)
    model = StepDistillClassifier(teacher=teacher, method=method, epochs=20, optimizer="adam", lr=0.1).fit(X, y)
    assert set(model.predict(X)) == {"no", "yes"}
    assert model.score(X, y) > 0.75  # half the rows are "yes": the student learned
    learns_rationale = method in ("step_by_step", "enhanced")
    assert (model.history_[-1]["terms"].get("rationale") is not None) == learns_rationale
    assert model.teacher_.rationale_unavailable == (None if learns_rationale else "teacher.explain is none")


def test_a_rationale_method_names_why_the_teacher_gives_none(monkeypatch):
    frame, y = mixed_rows(120)
    teacher, X = knn_teacher(frame, y)
    monkeypatch.setitem(sys.modules, "shap", None)  # shap not installed: k-NN cannot be explained
    with raises_one_line(r"^method 'step_by_step' needs a rationale, which the teacher does not give: KNeighborsClassifier") as err:
        StepDistillClassifier(teacher=teacher, method="step_by_step").fit(X, y)
    message = str(err.value)
    assert "install stepdistill[explain]" in message and message.endswith("methods 'baseline' and 'traditional' need none")
    assert StepDistillClassifier(teacher=teacher, method="baseline", epochs=5).fit(X, y).score(X, y) > 0.6


def test_a_saved_teacher_takes_its_explanation_settings(tmp_path):
    frame, y = mixed_rows(120)
    teacher, X = knn_teacher(frame, y)
    joblib.dump(teacher.fit(X, y), tmp_path / "knn.joblib")
    spec = {"kind": "sklearn", "path": str(tmp_path / "knn.joblib"), "explain_budget": 100, "trust_pickle": True}
    with raises_one_line(r"over the cap of 100; raise teacher.explain_budget"):
        StepDistillClassifier(teacher=spec, method="enhanced").fit(X, y)
    model = StepDistillClassifier(teacher={**spec, "explain": "sampled"}, method="enhanced", epochs=20, optimizer="adam", lr=0.1).fit(X, y)
    assert model.teacher_.rationale_unavailable is None and model.score(X, y) > 0.75
