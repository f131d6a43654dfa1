"""Teacher outputs kept on disk: a hit gives back exactly what was computed without running the
teacher; any change to the teacher, its explanation or the data is a miss; a damaged entry is
noticed, said and recomputed; and each teacher predicts its logits alone, identifies itself, and
knows how large it is saved."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import raises_one_line
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from stepdistill.students.logistic import LogisticModel
from stepdistill.students.mlp import MLPModel
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.boosting import LightGBMTeacher, XGBoostTeacher, train_lightgbm, train_xgboost
from stepdistill.teachers.cache import TeacherOutputs
from stepdistill.teachers.collect import cache_teacher
from stepdistill.teachers.file import FileTeacher
from stepdistill.teachers.module import ModuleTeacher
from stepdistill.teachers.scikit import SklearnTeacher
from stepdistill.teachers.store import TeacherStore, default_store_directory

CLASSES = ("benign", "malignant")


@pytest.fixture(scope="module")
def cancer() -> tuple[Samples, np.ndarray]:
    """200 rows: standardized X, the raw columns (five, and a text one) and each row's class."""
    data = load_breast_cancer()
    rows = np.random.default_rng(0).choice(len(data.data), 200, replace=False)
    frame = pd.DataFrame(data.data[rows, :5], columns=[f"f{i}" for i in range(5)])
    frame["size"] = pd.cut(frame["f0"], 3, labels=["small", "medium", "large"]).astype(str)
    X = torch.tensor(StandardScaler().fit_transform(data.data[rows, :5]), dtype=torch.float32)
    return Samples(torch.arange(200) * 3, X, frame), np.asarray(data.target_names)[data.target[rows]]


def splits(samples: Samples) -> list[Samples]:
    return [Samples(samples.ids[part], samples.X[part], samples.frame.iloc[part.numpy()]) for part in torch.arange(len(samples)).tensor_split(3)]


class CountingTeacher(Teacher):
    """Logits ``scale * X[:, :1]`` and the rationale ``X``; counts its ``outputs`` calls."""

    classes = CLASSES

    def __init__(self, scale: float = 1.0):
        self.scale = scale
        self.calls = 0

    def outputs(self, samples: Samples) -> TeacherOutputs:
        self.calls += 1
        return TeacherOutputs(self.scale * samples.X[:, :1], samples.X.clone())

    def identity(self) -> tuple:
        return (self.scale,)


def only_entry(store: TeacherStore):
    entries = list(store.directory.iterdir())
    assert len(entries) == 1, entries
    return entries[0]


def assert_same(first, second):
    assert torch.equal(first.logits, second.logits) and torch.equal(first.rationale, second.rationale)


# --- the store --------------------------------------------------------------------------------


def test_a_hit_gives_back_the_same_outputs_without_running_the_teacher(tmp_path, cancer):
    samples, _ = cancer
    store, teacher = TeacherStore(tmp_path), CountingTeacher()
    computed = cache_teacher(teacher, splits(samples), CLASSES, store)
    assert teacher.calls == 3
    again = CountingTeacher()
    stored = cache_teacher(again, splits(samples), CLASSES, store)
    assert again.calls == 0
    assert_same(stored.take(samples.ids), computed.take(samples.ids))
    assert_same(stored.take(samples.ids), cache_teacher(CountingTeacher(), splits(samples), CLASSES).take(samples.ids))
    # The class check runs on a hit too.
    with raises_one_line("ordered differently"):
        cache_teacher(again, splits(samples), CLASSES[::-1], store)


def test_changed_data_teacher_or_classes_miss(tmp_path, cancer):
    samples, _ = cancer
    store = TeacherStore(tmp_path)
    cache_teacher(CountingTeacher(), splits(samples), CLASSES, store)
    X = samples.X.clone()
    X[7, 2] += 1e-3
    frame = samples.frame.copy()
    frame.loc[frame.index[7], "size"] = "huge"
    changed = {
        "features": [Samples(samples.ids, X, samples.frame)],
        "raw columns": [Samples(samples.ids, samples.X, frame)],
        "ids": [Samples(samples.ids + 1, samples.X, samples.frame)],
        "split boundaries": [samples],
        "split order": splits(samples)[::-1],
        "no raw columns": [Samples(part.ids, part.X) for part in splits(samples)],
    }
    for what, parts in changed.items():
        teacher = CountingTeacher()
        cache_teacher(teacher, parts, CLASSES, store)
        assert teacher.calls == len(parts), what
    scaled = CountingTeacher(scale=2.0)
    cache_teacher(scaled, splits(samples), CLASSES, store)
    assert scaled.calls == 3
    renamed = CountingTeacher()
    renamed.classes = ("b", "m")
    cache_teacher(renamed, splits(samples), ("b", "m"), store)
    assert renamed.calls == 3
    assert len(list(tmp_path.iterdir())) == len(changed) + 3


def test_sklearn_teacher_params_and_explain_settings_change_the_fingerprint(cancer):
    samples, names = cancer
    X = samples.X.numpy()
    model = LogisticRegression(max_iter=500).fit(X, names)
    fitted = SklearnTeacher(model)
    fitted.fit_background(samples)
    fingerprint = fitted.fingerprint()
    same = SklearnTeacher(LogisticRegression(max_iter=500).fit(X, names))
    same.fit_background(samples)
    assert same.fingerprint() == fingerprint
    others = {
        "params": SklearnTeacher(LogisticRegression(C=0.01, max_iter=500).fit(X, names)),
        "explain": SklearnTeacher(model, explain="none"),
        "budget": SklearnTeacher(model, explain_budget=10),
        "background": SklearnTeacher(model),
    }
    for what in ("params", "explain", "budget"):
        others[what].fit_background(samples)
    others["background"].fit_background(Samples(samples.ids[:50], samples.X[:50]))
    fingerprints = [fingerprint, *(teacher.fingerprint() for teacher in others.values())]
    assert len(set(fingerprints)) == len(fingerprints)


def test_a_teacher_that_cannot_be_identified_is_never_stored(tmp_path, cancer):
    samples, _ = cancer

    class Anonymous(CountingTeacher):
        def identity(self):
            return None

    store = TeacherStore(tmp_path / "store")
    for _ in range(2):
        cache_teacher(Anonymous(), splits(samples), CLASSES, store)
    assert Anonymous().fingerprint() is None and not store.directory.exists()


def corrupt_by_flipping_a_value(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt_by_flipping_a_header_byte(path):
    data = bytearray(path.read_bytes())
    data[12] ^= 0x55
    path.write_bytes(bytes(data))


def corrupt_by_truncating(path):
    path.write_bytes(path.read_bytes()[:-100])


def corrupt_by_emptying(path):
    path.write_bytes(b"")


def corrupt_with_another_key(path):
    with safe_open(path, framework="pt") as entry:
        header, tensors = entry.metadata(), {name: entry.get_tensor(name) for name in entry.keys()}
    save_file(tensors, path, metadata={**header, "key": "0" * 64})


def corrupt_with_other_ids(path):
    """A whole entry, checksum and all, under the right key but for other sample ids."""
    with safe_open(path, framework="pt") as entry:
        tensors = {name: entry.get_tensor(name) for name in entry.keys()}
    TeacherStore(path.parent).save(path.stem, tensors["ids"] + 1, TeacherOutputs(tensors["logits"], tensors["rationale"]))


@pytest.mark.parametrize(
    "corrupt",
    [corrupt_by_flipping_a_value, corrupt_by_flipping_a_header_byte, corrupt_by_truncating, corrupt_by_emptying, corrupt_with_another_key, corrupt_with_other_ids],
)
def test_a_corrupt_entry_is_said_recomputed_and_overwritten(tmp_path, cancer, corrupt):
    samples, _ = cancer
    store = TeacherStore(tmp_path)
    expected = cache_teacher(CountingTeacher(), splits(samples), CLASSES, store).take(samples.ids)
    entry = only_entry(store)
    corrupt(entry)
    said, teacher = [], CountingTeacher()
    recomputed = cache_teacher(teacher, splits(samples), CLASSES, store, say=said.append)
    assert said == [f"teacher cache entry {entry} is corrupt; recomputing"]
    assert teacher.calls == 3
    assert_same(recomputed.take(samples.ids), expected)
    assert only_entry(store) == entry
    reread, said = CountingTeacher(), []
    assert_same(cache_teacher(reread, splits(samples), CLASSES, store, say=said.append).take(samples.ids), expected)
    assert reread.calls == 0 and said == []


def test_writes_leave_no_temporary_files_even_when_they_fail(tmp_path, cancer, monkeypatch):
    samples, _ = cancer
    store = TeacherStore(tmp_path / "made" / "here")
    cache_teacher(CountingTeacher(), splits(samples), CLASSES, store)
    assert only_entry(store).suffix == ".safetensors"

    def disk_full(_descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("stepdistill.files.os.fsync", disk_full)
    said, teacher = [], CountingTeacher(scale=3.0)
    outputs = cache_teacher(teacher, splits(samples), CLASSES, store, say=said.append).take(samples.ids)
    assert torch.equal(outputs.logits, 3.0 * samples.X[:, :1])
    assert len(said) == 1 and "No space left on device" in said[0] and "\n" not in said[0]
    only_entry(store)


def test_the_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPDISTILL_CACHE_DIR", str(tmp_path / "mine"))
    assert default_store_directory() == tmp_path / "mine" / "teachers"
    monkeypatch.delenv("STEPDISTILL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_store_directory() == tmp_path / "xdg" / "stepdistill" / "teachers"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_store_directory() == tmp_path / "home" / ".cache" / "stepdistill" / "teachers"


# --- each kind of teacher -----------------------------------------------------------------------


def sklearn_teachers(samples: Samples, names: np.ndarray) -> dict[str, Teacher]:
    X = samples.X.numpy()
    return {
        "logistic regression": SklearnTeacher(LogisticRegression(max_iter=500).fit(X, names)),
        "random forest": SklearnTeacher(RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(samples.frame.drop(columns="size"), names), input="frame"),
    }


def module_teacher(samples: Samples, rationale_layer: int = -1) -> ModuleTeacher:
    torch.manual_seed(0)
    return ModuleTeacher(MLPModel(samples.X.shape[1], 1, hidden=(8, 4), rationale_layer=rationale_layer))


def boosted_teachers(samples: Samples, names: np.ndarray) -> dict[str, Teacher]:
    labels = (names == CLASSES[1]).astype(int)
    return {
        "lightgbm": LightGBMTeacher(train_lightgbm(samples.frame, labels, {"n_estimators": 10, "min_child_samples": 5}, seed=0)),
        "xgboost": XGBoostTeacher(train_xgboost(samples.frame, labels, {"n_estimators": 10}, seed=0)),
    }


def test_every_kind_predicts_the_logits_its_outputs_give_and_identifies_itself(cancer):
    samples, names = cancer
    teachers = {**sklearn_teachers(samples, names), "torch module": module_teacher(samples), **boosted_teachers(samples, names)}
    numeric = Samples(samples.ids, samples.X, samples.frame.drop(columns="size"))
    for name, teacher in teachers.items():
        part = numeric if name == "random forest" else samples
        teacher.fit_background(part)
        assert teacher.rationale_unavailable is None, name
        fingerprint = teacher.fingerprint()
        out = teacher.outputs(part)
        assert out.rationale is not None, name
        assert torch.equal(teacher.predict_logits(part), out.logits), name
        assert teacher.fingerprint() == fingerprint, f"{name}: predicting changes nothing"
        assert teacher.saved_bytes() > 0, name
    assert len({teacher.fingerprint() for teacher in teachers.values()}) == len(teachers)


def test_explaining_is_skipped_when_only_logits_are_asked_for(cancer, monkeypatch):
    samples, names = cancer
    forest = sklearn_teachers(samples, names)["random forest"]
    numeric = Samples(samples.ids, samples.X, samples.frame.drop(columns="size"))
    monkeypatch.setattr(forest._explanation, "explain", lambda data: pytest.fail("explained"))
    forest.predict_logits(numeric)


def test_the_same_model_has_the_same_fingerprint_and_another_a_different_one(cancer):
    samples, names = cancer
    first, second = boosted_teachers(samples, names), boosted_teachers(samples, names)
    for name in first:
        assert first[name].fingerprint() == second[name].fingerprint(), name
    labels = (names == CLASSES[1]).astype(int)
    deeper = LightGBMTeacher(train_lightgbm(samples.frame, labels, {"n_estimators": 11, "min_child_samples": 5}, seed=0))
    assert deeper.fingerprint() != first["lightgbm"].fingerprint()
    module = module_teacher(samples)
    assert module_teacher(samples).fingerprint() == module.fingerprint()
    # Same weights, another hidden layer as the rationale: another teacher.
    first_layer = module_teacher(samples, rationale_layer=0)
    first_layer.module.load_state_dict(module.module.state_dict())
    assert first_layer.fingerprint() != module.fingerprint()
    with torch.no_grad():
        module.module.head.bias += 1
    assert module.fingerprint() != module_teacher(samples).fingerprint()
    assert ModuleTeacher(LogisticModel(5, 1, "score")).fingerprint() != ModuleTeacher(LogisticModel(5, 1)).fingerprint()


def test_a_torch_teachers_saved_size_is_its_weights_in_safetensors(tmp_path, cancer):
    samples, _ = cancer
    teacher = module_teacher(samples)
    save_file(teacher.module.state_dict(), tmp_path / "weights.safetensors")
    assert teacher.saved_bytes() == (tmp_path / "weights.safetensors").stat().st_size


def test_a_file_teacher_cannot_predict_and_is_identified_by_its_contents(tmp_path):
    ids = np.arange(6)
    np.savez(tmp_path / "teacher.npz", id=ids, logits=np.linspace(-1, 1, 6))
    teacher = FileTeacher(tmp_path / "teacher.npz")
    assert not teacher.can_predict and teacher.saved_bytes() is None
    with raises_one_line("a file of outputs cannot predict new rows"):
        teacher.predict_logits(Samples(torch.tensor(ids), torch.zeros(6, 1)))
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(tmp_path / "teacher.npz", tmp_path / "elsewhere" / "teacher.npz")
    assert FileTeacher(tmp_path / "elsewhere" / "teacher.npz").fingerprint() == teacher.fingerprint()
    np.savez(tmp_path / "other.npz", id=ids, logits=np.linspace(-1, 2, 6))
    assert FileTeacher(tmp_path / "other.npz").fingerprint() != teacher.fingerprint()
