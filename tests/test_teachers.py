"""Teacher adapters: each one's cached outputs reproduce the model's own predictions, its
rationale has the documented shape (and sums to the score where it is a set of contributions),
and each misuse fails with a one-line StepDistillError."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import raises_one_line
from safetensors.torch import save_file
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from stepdistill.students.mlp import MLPModel
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.boosting import LightGBMTeacher, XGBoostTeacher, as_categorical_frame, train_lightgbm, train_xgboost
from stepdistill.teachers.cache import TeacherOutputs
from stepdistill.teachers.classes import check_teacher_classes, relabelled
from stepdistill.teachers.collect import cache_teacher
from stepdistill.teachers.common import class_names
from stepdistill.teachers.file import FileTeacher
from stepdistill.teachers.module import ModuleTeacher, load_module_weights
from stepdistill.teachers.scikit import SklearnTeacher


def labelled(dataset) -> tuple[Samples, np.ndarray, tuple[str, ...]]:
    """Samples (standardized X, raw frame with a text column) and each row's class name."""
    frame = pd.DataFrame(dataset.data, columns=[f"f{i}" for i in range(dataset.data.shape[1])])
    frame["size"] = pd.cut(frame["f0"], 3, labels=["small", "medium", "large"]).astype(str)
    X = StandardScaler().fit_transform(dataset.data)
    names = np.asarray(dataset.target_names)[dataset.target]
    classes = tuple(sorted(dataset.target_names))
    return Samples(torch.arange(len(frame)), torch.tensor(X, dtype=torch.float32), frame), names, classes


@pytest.fixture(scope="module")
def binary():
    return labelled(load_breast_cancer())


@pytest.fixture(scope="module")
def multiclass():
    return labelled(load_wine())


def cached(teacher: Teacher, samples: Samples, classes: tuple[str, ...]) -> TeacherOutputs:
    return cache_teacher(teacher, [samples], classes).take(samples.ids)


def by_index(classes: tuple[str, ...]) -> dict[str, str]:
    """``teacher.classes`` of a model fitted on class indices in the data's order."""
    return {str(k): name for k, name in enumerate(classes)}


def numeric(samples: Samples) -> Samples:
    return Samples(samples.ids, samples.X, samples.frame.drop(columns="size"))


# --- torch modules ---------------------------------------------------------------------------


def test_module_teacher_gives_logits_and_a_hooked_layers_activations():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    X = torch.randn(50, 4)
    out = ModuleTeacher(net, rationale_layer="1", batch_size=16).outputs(Samples(torch.arange(50), X))
    assert torch.allclose(out.logits, net(X))
    assert torch.allclose(out.rationale, torch.relu(net[0](X)))
    assert net.training, "the module's mode is restored"
    assert ModuleTeacher(net).outputs(Samples(torch.arange(50), X)).rationale is None


def test_module_teacher_reads_outputs_and_makes_a_1d_output_one_column():
    torch.manual_seed(0)
    X = torch.randn(20, 5)
    mlp = MLPModel(5, 3, hidden=(6, 4))
    own = ModuleTeacher(mlp).outputs(Samples(torch.arange(20), X))
    assert torch.allclose(own.logits, mlp(X).logits) and torch.allclose(own.rationale, mlp(X).rationale)
    first_block = ModuleTeacher(mlp, rationale_layer="blocks.0").outputs(Samples(torch.arange(20), X))
    assert torch.allclose(first_block.rationale, mlp.blocks[0](X))
    flat = nn.Sequential(nn.Linear(5, 1), nn.Flatten(0))
    assert ModuleTeacher(flat).outputs(Samples(torch.arange(20), X)).logits.shape == (20, 1)


def test_module_teacher_pools_a_feature_map():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Unflatten(1, (1, 4, 4)), nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 1))
    X = torch.randn(10, 16)
    feature_map = torch.relu(cnn[1](cnn[0](X)))
    pooled = ModuleTeacher(cnn, rationale_layer="2").outputs(Samples(torch.arange(10), X)).rationale
    assert pooled.shape == (10, 3) and torch.allclose(pooled, feature_map.mean(dim=(2, 3)))
    flat = ModuleTeacher(cnn, rationale_layer="2", pool="none").outputs(Samples(torch.arange(10), X)).rationale
    assert torch.allclose(flat, feature_map.flatten(1))


def test_module_teacher_names_the_layers_when_one_is_not_found():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with raises_one_line("rationale layer '9' not found") as info:
        ModuleTeacher(net, rationale_layer="9")
    message = str(info.value)
    assert message.endswith("the module has: 0, 1, 2")


def test_module_weights_round_trip_through_safetensors(tmp_path):
    torch.manual_seed(0)
    trained = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    save_file(trained.state_dict(), tmp_path / "teacher.safetensors")
    fresh = load_module_weights(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), tmp_path / "teacher.safetensors")
    X = torch.randn(30, 4)
    assert torch.equal(ModuleTeacher(fresh).outputs(Samples(torch.arange(30), X)).logits, trained(X).detach())
    unlike = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))
    with raises_one_line("do not match the module") as info:
        load_module_weights(unlike, tmp_path / "teacher.safetensors")
    message = str(info.value)
    assert "missing 1.weight, 1.bias;" in message and {"2.weight", "2.bias"} <= set(message.split("unexpected ")[1].split(";")[0].split(", "))
    wider = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5))
    with raises_one_line(r"other shapes .*2.weight \(3, 8\) vs \(5, 8\)"):
        load_module_weights(wider, tmp_path / "teacher.safetensors")
    with raises_one_line("not found"):
        load_module_weights(fresh, tmp_path / "absent.safetensors")


# --- scikit-learn -----------------------------------------------------------------------------


def test_linear_sklearn_teacher_binary_logit_and_contributions(binary):
    samples, names, classes = binary
    X = samples.X.numpy()
    model = LogisticRegression(max_iter=1000).fit(X, names)
    teacher = SklearnTeacher(model)
    assert teacher.classes == classes and teacher.rationale_style == "contributions" and not teacher.reads_raw_columns
    out = cached(teacher, samples, classes)
    assert np.allclose(torch.sigmoid(out.logits[:, 0]).numpy(), model.predict_proba(X)[:, 1], atol=1e-5)
    assert out.rationale.shape == (len(samples), X.shape[1])
    assert np.allclose(out.rationale.sum(1).numpy() + model.intercept_[0], model.decision_function(X), atol=1e-3)


def test_linear_sklearn_teacher_multiclass_logits_and_contributions(multiclass):
    samples, names, classes = multiclass
    X = samples.X.numpy()
    model = LogisticRegression(max_iter=1000).fit(X, names)
    out = cached(SklearnTeacher(model), samples, classes)
    assert np.array_equal(np.asarray(classes)[out.logits.argmax(1).numpy()], model.predict(X))
    assert np.allclose(torch.softmax(out.logits, 1).numpy(), model.predict_proba(X), atol=1e-5)
    K, d = model.coef_.shape
    assert out.rationale.shape == (len(samples), K * d)
    per_class = out.rationale.reshape(len(samples), K, d).sum(2).numpy() + model.intercept_
    assert np.allclose(per_class, model.decision_function(X), atol=1e-3)


def test_sklearn_pipeline_reads_the_raw_frame(binary):
    samples, names, classes = binary
    frame = samples.frame.drop(columns="size")
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(frame, names)
    out = cached(SklearnTeacher(pipeline, input="frame"), numeric(samples), classes)
    assert np.allclose(torch.sigmoid(out.logits[:, 0]).numpy(), pipeline.predict_proba(frame)[:, 1], atol=1e-5)
    # Its rationale is the linear model's contributions on the scaled columns it reads.
    assert out.rationale.shape == (len(samples), frame.shape[1])
    assert np.allclose(out.rationale.sum(1).numpy() + pipeline[-1].intercept_[0], pipeline.decision_function(frame), atol=1e-3)


def test_sklearn_teacher_errors(binary):
    samples, names, _ = binary
    with raises_one_line("is not fitted"):
        SklearnTeacher(LogisticRegression())
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(samples.X.numpy(), names)
    with raises_one_line("reads the raw columns"):
        SklearnTeacher(forest, input="frame").outputs(Samples(samples.ids, samples.X))
    with raises_one_line("reads the raw columns"):
        SklearnTeacher(forest, input="frame").fit_background(Samples(samples.ids, samples.X))


# --- gradient-boosted trees -------------------------------------------------------------------


def test_lightgbm_teacher_binary_raw_scores_and_contributions(binary):
    samples, names, classes = binary
    model = train_lightgbm(samples.frame, names, {"n_estimators": 30}, seed=0)
    teacher = LightGBMTeacher(model)
    assert teacher.classes == classes
    shuffled = Samples(samples.ids.flip(0), samples.X.flip(0), samples.frame.iloc[::-1].reset_index(drop=True))
    out = cached(teacher, shuffled, classes)
    frame = as_categorical_frame(shuffled.frame)
    assert np.allclose(out.logits[:, 0].numpy(), model.predict(frame, raw_score=True), atol=1e-4)
    assert np.allclose(torch.sigmoid(out.logits[:, 0]).numpy(), model.predict_proba(frame)[:, 1], atol=1e-5)
    assert out.rationale.shape == (len(samples), samples.frame.shape[1] + 1)
    assert torch.allclose(out.rationale.sum(1), out.logits[:, 0], atol=1e-4)
    from_booster = LightGBMTeacher(model.booster_)
    assert from_booster.classes is None
    assert torch.equal(from_booster.outputs(shuffled).logits, out.logits)


def test_lightgbm_teacher_multiclass(multiclass):
    samples, names, classes = multiclass
    model = train_lightgbm(samples.frame, names, {"n_estimators": 20, "min_child_samples": 5}, seed=0)
    out = cached(LightGBMTeacher(model), samples, classes)
    assert np.array_equal(np.asarray(classes)[out.logits.argmax(1).numpy()], model.predict(as_categorical_frame(samples.frame)))
    K, d = len(classes), samples.frame.shape[1]
    assert out.rationale.shape == (len(samples), K * (d + 1))
    assert torch.allclose(out.rationale.reshape(len(samples), K, d + 1).sum(2), out.logits, atol=1e-4)


def test_lightgbm_teacher_reads_a_split_that_lacks_a_category(binary):
    samples, names, _ = binary
    model = train_lightgbm(samples.frame, names, {"n_estimators": 30}, seed=0)
    rows = np.flatnonzero(samples.frame["size"].to_numpy() != "small")
    subset = Samples(samples.ids[rows], samples.X[rows], samples.frame.iloc[rows].reset_index(drop=True))
    whole = LightGBMTeacher(model).outputs(samples).logits[rows]
    assert torch.equal(LightGBMTeacher(model).outputs(subset).logits, whole)


def test_xgboost_teacher_binary_margins_and_contributions(binary):
    samples, names, classes = binary
    y = np.searchsorted(classes, names)
    model = train_xgboost(samples.frame, y, {"n_estimators": 30, "max_depth": 3}, seed=0)
    teacher = XGBoostTeacher(model)
    assert teacher.classes == ("0", "1") and teacher.reads_raw_columns and teacher.rationale_style == "contributions_with_bias"
    assert XGBoostTeacher(model.get_booster()).classes is None
    frame = as_categorical_frame(samples.frame)
    out = cached(relabelled(teacher, by_index(classes), classes), samples, classes)
    assert np.allclose(out.logits[:, 0].numpy(), model.predict(frame, output_margin=True), atol=1e-4)
    assert np.allclose(torch.sigmoid(out.logits[:, 0]).numpy(), model.predict_proba(frame)[:, 1], atol=1e-5)
    assert out.rationale.shape == (len(samples), frame.shape[1] + 1)
    assert torch.allclose(out.rationale.sum(1), out.logits[:, 0], atol=1e-4)
    assert torch.equal(XGBoostTeacher(model.get_booster()).outputs(samples).logits, out.logits)


def test_xgboost_teacher_multiclass(multiclass):
    import xgboost

    samples, names, classes = multiclass
    y = np.searchsorted(classes, names)
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(samples.X.numpy(), y)
    out = cached(relabelled(XGBoostTeacher(model, input="X"), by_index(classes), classes), samples, classes)
    assert np.array_equal(out.logits.argmax(1).numpy(), model.predict(samples.X.numpy()))
    K, d = len(classes), samples.X.shape[1]
    assert out.rationale.shape == (len(samples), K * (d + 1))
    assert torch.allclose(out.rationale.reshape(len(samples), K, d + 1).sum(2), out.logits, atol=1e-4)


# --- files of precomputed outputs -------------------------------------------------------------

IDS = np.array([40, 5, 17, 3, 8, 21])


def logits_of(n: int, k: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, k))


def asked(ids) -> Samples:
    return Samples(torch.tensor(np.ascontiguousarray(ids)), torch.zeros(len(ids), 2))


def test_file_teacher_parquet_list_columns_looked_up_by_id(tmp_path):
    logits, rationale = logits_of(6, 3), logits_of(6, 4)
    table = pa.table({"id": IDS, "logits": list(logits), "rationale": list(rationale)})
    table = table.replace_schema_metadata({b"classes": json.dumps(["a", "b", "c"]).encode()})
    pq.write_table(table, tmp_path / "teacher.parquet")
    teacher = FileTeacher(tmp_path / "teacher.parquet")
    assert teacher.classes == ("a", "b", "c")
    order = [3, 0, 5, 1]  # rows 2 and 4 of the file are not asked for
    out = cached(teacher, asked(IDS[order]), ("a", "b", "c"))
    assert np.allclose(out.logits.numpy(), logits[order], atol=1e-6)
    assert np.allclose(out.rationale.numpy(), rationale[order], atol=1e-6)


def test_file_teacher_parquet_numbered_binary_columns_become_one_logit(tmp_path):
    logits = logits_of(6, 2)
    pq.write_table(pa.table({"key": IDS, "logit_1": logits[:, 1], "logit_0": logits[:, 0]}), tmp_path / "teacher.pq")
    teacher = FileTeacher(tmp_path / "teacher.pq", id_column="key")
    out = teacher.outputs(asked(IDS[::-1]))
    assert out.logits.shape == (6, 1) and out.rationale is None
    assert teacher.rationale_unavailable.endswith("holds no rationale; store one as 'rationale' (or rationale_0, rationale_1, ...)")
    assert np.allclose(out.logits[:, 0].numpy(), (logits[:, 1] - logits[:, 0])[::-1], atol=1e-6)


def test_file_teacher_npz_probabilities_become_log_probabilities(tmp_path):
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=6)
    np.savez(tmp_path / "multi.npz", id=IDS, probs=probs, rationale=logits_of(6, 2), classes=np.array(["x", "y", "z"]))
    teacher = FileTeacher(tmp_path / "multi.npz")
    assert teacher.classes == ("x", "y", "z")
    out = teacher.outputs(asked(IDS))
    assert np.allclose(torch.softmax(out.logits, 1).numpy(), probs, atol=1e-6)
    p1 = probs[:, 0]
    np.savez(tmp_path / "binary.npz", id=IDS, probs=p1)
    binary = FileTeacher(tmp_path / "binary.npz").outputs(asked(IDS))
    assert np.allclose(torch.sigmoid(binary.logits[:, 0]).numpy(), p1, atol=1e-6)


def test_file_teacher_errors(tmp_path):
    np.savez(tmp_path / "teacher.npz", id=IDS, logits=logits_of(6, 3))
    with raises_one_line("lacks 2 of the data's sample ids") as info:
        FileTeacher(tmp_path / "teacher.npz").outputs(asked([5, 99, 17, 98]))
    message = str(info.value)
    assert "(e.g. 98, 99)" in message or "(e.g. 99, 98)" in message
    np.savez(tmp_path / "duplicates.npz", id=np.array([1, 2, 2, 3]), logits=logits_of(4, 3))
    with raises_one_line(r"duplicate sample ids \(e.g. 2\)"):
        FileTeacher(tmp_path / "duplicates.npz")
    with_nan = logits_of(6, 3)
    with_nan[[1, 4], 2] = np.nan
    pq.write_table(pa.table({"id": IDS, "logits": list(with_nan)}), tmp_path / "nan.parquet")
    with raises_one_line("NaN or infinite logits in 2 rows"):
        FileTeacher(tmp_path / "nan.parquet")
    pq.write_table(pa.table({"id": IDS, "prob_0": [0.5, 1.5, 0.2, 0.1, 0.3, 0.4], "prob_1": [0.5, -0.5, 0.8, 0.9, 0.7, 0.6]}), tmp_path / "outside.parquet")
    with raises_one_line(r"probabilities outside \[0, 1\] in 1 rows"):
        FileTeacher(tmp_path / "outside.parquet")
    with raises_one_line("not found"):
        FileTeacher(tmp_path / "teacher.csv")


# --- classes and caching ----------------------------------------------------------------------


def test_check_teacher_classes():
    check_teacher_classes(("a", "b"), ("a", "b"))
    check_teacher_classes(None, ("a", "b"))
    with raises_one_line(r"teacher classes \('b', 'a'\) are ordered differently from the data's \('a', 'b'\); map them .* \(\{'b': 'b', 'a': 'a'\}\)"):
        check_teacher_classes(("b", "a"), ("a", "b"))
    with raises_one_line("names classes the data lacks: 'c'"):
        check_teacher_classes(("a", "b", "c"), ("a", "b"))
    with raises_one_line("lacks classes the data has: 'b'"):
        check_teacher_classes(("a",), ("a", "b"))


def test_integer_classes_are_names_not_positions():
    """A model fitted on class indices names 0..K-1, which are the data's classes only where its
    labels are those numbers; anywhere else the fix is a mapping, not the order."""
    check_teacher_classes(class_names(np.array([0, 1])), ("0", "1"))
    check_teacher_classes(class_names(np.array([1.0, 2.0])), ("1", "2"))  # whole floats, as the data names them
    with raises_one_line(
        r"teacher classes \('0', '1'\) do not match the data's \('benign', 'malignant'\): the teacher names classes the data lacks: '0', '1'"
        r" and lacks classes the data has: 'benign', 'malignant'; if it was fitted on encoded labels, .* teacher.classes \(\{0: <data class>, 1: <data class>, ...\}\)"
    ):
        check_teacher_classes(class_names(np.array([0, 1])), ("benign", "malignant"))
    with raises_one_line(r"only by case or surrounding spaces: 'No' and 'no', 'yes ' and 'yes'"):
        check_teacher_classes(("No", "yes "), ("no", "yes"))


def test_a_mapped_binary_teacher_is_the_model_fitted_on_the_data_labels(binary):
    """A model fitted on (y == 'benign') has benign as its class 1, the data's class 0: mapped,
    its logit and its contributions are negated and it predicts as the model fitted on the names."""
    samples, names, classes = binary
    X = samples.X.numpy()
    encoded = LogisticRegression(max_iter=1000).fit(X, (names == "benign").astype(int))
    named = LogisticRegression(max_iter=1000).fit(X, names)
    teacher = SklearnTeacher(encoded)
    assert classes == ("benign", "malignant") and teacher.classes == ("0", "1")
    mapped = relabelled(teacher, {"0": "malignant", "1": "benign"}, classes)
    assert mapped.classes == classes and mapped.order == (1, 0)
    out, own = cached(mapped, samples, classes), teacher.outputs(samples)
    assert torch.equal(out.logits, -own.logits) and torch.equal(out.rationale, -own.rationale)
    assert np.array_equal(np.asarray(classes)[(out.logits[:, 0] > 0).long().numpy()], named.predict(X))
    assert torch.equal(mapped.predict_logits(samples), out.logits)
    assert mapped.fingerprint() not in (None, teacher.fingerprint(), relabelled(teacher, {"0": "benign", "1": "malignant"}, classes).fingerprint())


def test_a_mapped_multiclass_teacher_reorders_its_logits_and_rationale_blocks(multiclass):
    samples, names, classes = multiclass
    X = samples.X.numpy()
    codes = {"class_0": 2, "class_1": 0, "class_2": 1}  # an encoding other than the data's order
    model = LogisticRegression(max_iter=1000).fit(X, [codes[name] for name in names])
    mapped = relabelled(SklearnTeacher(model), {str(code): name for name, code in codes.items()}, classes)
    assert mapped.order == (2, 0, 1)
    out, own = cached(mapped, samples, classes), SklearnTeacher(model).outputs(samples)
    name_of = {code: name for name, code in codes.items()}
    assert np.array_equal(np.asarray(classes)[out.logits.argmax(1).numpy()], [name_of[code] for code in model.predict(X)])
    assert torch.equal(out.logits, own.logits[:, [2, 0, 1]])
    d = X.shape[1]
    assert torch.equal(out.rationale.reshape(-1, 3, d), own.rationale.reshape(-1, 3, d)[:, [2, 0, 1]])


def test_a_teacher_naming_no_classes_is_mapped_by_output_position():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1))
    samples = Samples(torch.arange(30), torch.randn(30, 4))
    mapped = relabelled(ModuleTeacher(net, rationale_layer="1"), {"0": "yes", "1": "no"}, ("no", "yes"))
    own = ModuleTeacher(net, rationale_layer="1").outputs(samples)
    out = cached(mapped, samples, ("no", "yes"))
    assert torch.equal(out.logits, -own.logits) and torch.equal(out.rationale, own.rationale)  # a representation is kept


def test_a_mapping_that_does_not_fit_the_teacher_or_the_data_is_one_line(binary):
    samples, names, classes = binary
    teacher = SklearnTeacher(LogisticRegression().fit(samples.X.numpy(), (names == "benign").astype(int)))
    with raises_one_line(r"teacher.classes maps \('1', '2'\) but the teacher's classes are \('0', '1'\); give one entry for each of them"):
        relabelled(teacher, {"1": "benign", "2": "malignant"}, classes)
    with raises_one_line(r"teacher's output positions \(it names no classes\) are \('0', '1'\)"):
        relabelled(ModuleTeacher(nn.Linear(3, 1)), {"a": "benign", "b": "malignant"}, classes)
    with raises_one_line(r"maps to \('Benign', 'malignant'\) but the data's classes are \('benign', 'malignant'\) \(differing only by case or surrounding spaces: 'Benign' and 'benign'\)"):
        relabelled(teacher, {"0": "Benign", "1": "malignant"}, classes)


class FixedTeacher(Teacher):
    """Gives the same logits whatever it is asked."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def outputs(self, samples: Samples) -> TeacherOutputs:
        return TeacherOutputs(self.logits, None)


def test_cache_teacher_checks_rows_width_and_values():
    samples = asked([1, 2, 3])
    with raises_one_line("gives 2 logits per sample but the data has 2 classes"):
        cache_teacher(FixedTeacher(torch.zeros(3, 2)), [samples], ("a", "b"))
    with raises_one_line("for 3 samples"):
        cache_teacher(FixedTeacher(torch.zeros(2, 3)), [samples], ("a", "b", "c"))
    with raises_one_line("NaN or infinite logits for 1 of 3"):
        cache_teacher(FixedTeacher(torch.tensor([[0.0], [float("inf")], [1.0]])), [samples], ("a", "b"))
    cache = cache_teacher(FixedTeacher(torch.arange(3.0)[:, None]), [samples, asked([7, 8, 9])], ("a", "b"))
    assert torch.equal(cache.take(torch.tensor([8, 1])).logits, torch.tensor([[1.0], [0.0]]))
