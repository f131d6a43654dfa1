"""Unlabelled pools of text records: an LLM teacher's answers on records no human labelled, learned
from by the students that read the teacher, never by the control, and never validation or test rows."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import one_error_line, raises_one_line
from typer.testing import CliRunner

from stepdistill.cli import app
from stepdistill.text.inputs import TextInputs
from stepdistill.text.pool import read_text_pool

runner = CliRunner()
FAST = {"epochs": 3, "lr": 0.05}
N_DATA, N_POOL = 120, 60


def _records(prefix: str, n: int, seed: int) -> pd.DataFrame:
    """``n`` short reviews, ids ``prefix0``...: a positive one says good things, a negative one bad."""
    rng = np.random.default_rng(seed)
    label = rng.choice(["pos", "neg"], n)
    good, bad, filler = ["good", "bright", "lovely"], ["bad", "dull", "awful"], ["film", "plot", "cast", "music", "ending"]
    text = [f"the {rng.choice(filler)} was {rng.choice(good if y == 'pos' else bad)} and the {rng.choice(filler)} {rng.choice(good if y == 'pos' else bad)}" for y in label]
    return pd.DataFrame({"id": [f"{prefix}{i}" for i in range(n)], "text": text, "label": label})


def _answers(records: pd.DataFrame, unparsed: int = 0) -> list[dict]:
    """The LLM's answers: the right label (none for the first ``unparsed``), and a rationale."""
    return [
        {"id": row.id, "label": None if i < unparsed else row.label, "rationale": f"it calls the {row.text.split()[1]} {row.text.split()[3]}"}
        for i, row in enumerate(records.itertuples())
    ]


def _case(directory: Path, tiny_sentence_model, pool: pd.DataFrame | None, answers: list[dict], data: dict | None = None, **sections) -> Path:
    """A run config in ``directory`` on ``N_DATA`` labelled records, with ``pool`` as its
    unlabelled pool (None: none) and ``answers`` as the LLM teacher's outputs."""
    directory.mkdir(exist_ok=True)
    _records("r", N_DATA, 0).to_csv(directory / "data.csv", index=False)
    with (directory / "teacher.jsonl").open("w") as file:
        file.writelines(json.dumps(line) + "\n" for line in answers)
    if pool is not None:
        pool.to_csv(directory / "pool.csv", index=False)
    config = {
        "data": {
            "path": "data.csv",
            "label": "label",
            "id_column": "id",
            "text": "text",
            "text_encoder": str(tiny_sentence_model),
            **({"unlabelled_path": "pool.csv"} if pool is not None else {}),
            **(data or {}),
        },
        "teacher": {"kind": "llm", "outputs": "teacher.jsonl"},
        "student": {"kind": "mlp", "hidden": [8]},
        "methods": {"baseline": {}, "traditional": {}, "step_by_step": {}},
        "training": FAST,
        "evaluation": {"repeats": 1},
        **sections,
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    return directory / "config.yaml"


def _run(config: Path) -> tuple[dict, dict]:
    out = config.parent / "out"
    result = runner.invoke(app, ["--quiet", "run", str(config), "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads((out / "results.json").read_text()), json.loads((out / "splits.json").read_text())


@pytest.fixture(scope="module")
def pool_runs(tmp_path_factory, tiny_sentence_model):
    """The same experiment without a pool, with one whose labels are given, and with the same
    pool without its label column; two pool records' answers are unparsed."""
    data, pool = _records("r", N_DATA, 0), _records("p", N_POOL, 1)
    answers = _answers(data) + _answers(pool, unparsed=2)
    root = tmp_path_factory.mktemp("text-pool")
    cases = {"none": None, "pool": pool, "unlabelled": pool.drop(columns="label")}
    return {name: _run(_case(root / name, tiny_sentence_model, frame, answers)) for name, frame in cases.items()}


def test_pool_records_teach_the_distilled_students_only_and_are_never_evaluated_on(pool_runs):
    (none, _), (pool, splits) = pool_runs["none"], pool_runs["pool"]
    assert pool["config"]["data"]["n_unlabelled"] == N_POOL and "n_unlabelled" not in none["config"]["data"]
    for run in splits["runs"]:
        named = run["train"] + run["validation"] + run["test"]
        assert not [name for name in named if name.startswith("p")] and len(named) == N_DATA
    for metric in ("accuracy", "log_loss"):
        assert pool["methods"]["baseline"]["test"][metric] == none["methods"]["baseline"]["test"][metric]  # the control never sees a pool record
    for method in ("traditional", "step_by_step"):
        assert pool["methods"][method]["test"]["log_loss"]["values"] != none["methods"][method]["test"]["log_loss"]["values"]
    assert pool["teacher"]["test"] == none["teacher"]["test"]  # the teacher is scored on the data's test records alone


def test_a_pools_label_column_is_ignored_and_said_to_be(pool_runs):
    (pool, _), (unlabelled, _) = pool_runs["pool"], pool_runs["unlabelled"]
    assert any("the unlabelled pool's label column 'label' is ignored" in w for w in pool["warnings"])
    assert not any("label column 'label' is ignored" in w for w in unlabelled["warnings"])
    for name in ("baseline", "traditional", "step_by_step"):
        assert pool["methods"][name]["test"] == unlabelled["methods"][name]["test"]


def test_unparsed_answers_on_pool_records_teach_the_uniform_distribution_and_are_counted(pool_runs):
    pool, _ = pool_runs["pool"]
    assert any(w.startswith(f"the LLM teacher's label could not be parsed for 2 of {N_DATA + N_POOL} records") for w in pool["warnings"])


def test_a_privileged_teacher_annotates_pool_records_from_their_rationales(tmp_path, tiny_sentence_model):
    """Its model reads a record's features and the LLM's rationale for it, which pool records have too."""
    data, pool = _records("r", N_DATA, 0), _records("p", N_POOL, 1)
    teacher = {"kind": "llm", "outputs": "teacher.jsonl", "privileged": {"hidden": [8], "training": {"epochs": 2}}}
    results, _ = _run(_case(tmp_path, tiny_sentence_model, pool, _answers(data) + _answers(pool), teacher=teacher))
    assert results["config"]["data"]["n_unlabelled"] == N_POOL


def test_a_teacher_trained_here_labels_a_text_pool_without_an_id_column(tmp_path, tiny_sentence_model):
    pool = _records("p", N_POOL, 1).drop(columns=["id", "label"])
    config = _case(
        tmp_path, tiny_sentence_model, pool, [], data={"id_column": None}, teacher={"kind": "mlp", "hidden": [8], "training": FAST}, methods={"baseline": {}, "traditional": {}}
    )
    (tmp_path / "data.csv").write_text(pd.read_csv(tmp_path / "data.csv").drop(columns="id").to_csv(index=False))
    results, _ = _run(config)
    assert results["config"]["data"]["n_unlabelled"] == N_POOL


def _missing_answer(directory, model):
    data, pool = _records("r", N_DATA, 0), _records("p", N_POOL, 1)
    return _case(directory, model, pool, _answers(data) + _answers(pool)[:-3])


def _shared_ids(directory, model):
    data, pool = _records("r", N_DATA, 0), _records("p", N_POOL, 1)
    return _case(directory, model, pd.concat([pool, data.iloc[:2]]), _answers(data) + _answers(pool))


def _no_id_column(directory, model):
    data, pool = _records("r", N_DATA, 0), _records("p", N_POOL, 1)
    return _case(directory, model, pool.drop(columns="id"), _answers(data) + _answers(pool), data={"id_column": None})


def _transfer(directory, model):
    data = _records("r", N_DATA, 0)
    return _case(directory, model, None, _answers(data), teacher={"kind": "mlp", "hidden": [8]}, transfer={"size": 1})


def _other_columns(directory, model):
    data, pool = _records("r", N_DATA, 0), _records("p", N_POOL, 1)
    return _case(directory, model, pool.assign(source="web"), _answers(data) + _answers(pool))


def _file_teacher(directory, model):
    return _case(directory, model, _records("p", N_POOL, 1), [], teacher={"kind": "file", "path": "outputs.parquet"})


@pytest.mark.parametrize(
    "make, says",
    [
        (
            _missing_answer,
            "has no answer for 3 of the unlabelled pool's 60 records (e.g. 'p57', 'p58', 'p59'); give each pool record an answer, or drop those records from data.unlabelled_path",
        ),
        (_shared_ids, "2 records of the unlabelled pool have ids that records of the data have too (e.g. 'r0'); a record is in the data or in the pool, not both"),
        (_no_id_column, "an unlabelled pool of text records is matched to the teacher's answers (teacher.kind: llm) by record id, and the data has no id column; set data.id_column"),
        (_transfer, "a transfer set is made of a table's rows, and data.text records are read through sentence features; drop transfer"),
        (_other_columns, "the unlabelled pool has columns source besides the data's text, choices and id columns"),
        (_file_teacher, "a teacher of kind 'file' gives outputs for the data's rows only; drop data.unlabelled_path"),
    ],
    ids=["pool record without an answer", "pool ids shared with the data", "no id column", "transfer with text", "other columns", "file teacher"],
)
def test_a_text_pool_that_cannot_work_is_refused_in_one_line(tmp_path, tiny_sentence_model, make, says):
    config = make(tmp_path / "case", tiny_sentence_model)
    result = runner.invoke(app, ["--quiet", "run", str(config), "--out", str(tmp_path / "out")])
    assert says in one_error_line(result, alone=True)
    assert not (tmp_path / "out" / "results.json").exists()


def test_reading_a_pool_gives_the_data_s_feature_columns_and_checks_its_records(tiny_sentence_model):
    text = TextInputs(("text",), encoder_model=str(tiny_sentence_model))
    data_ids = [f"r{i}" for i in range(N_DATA)]
    pool = _records("p", 5, 1)
    read = read_text_pool(pool.drop(columns="label"), text, "label", "id", data_ids, None, refuse_long=True)
    assert read.record_ids == ("p0", "p1", "p2", "p3", "p4") and read.choices is None and read.notes == ()
    assert read.features.shape == (5, 32) and list(read.features.columns) == [f"text_{i}" for i in range(32)]
    positional = read_text_pool(pool.drop(columns=["id", "label"]), text, "label", None, data_ids, None, refuse_long=True)
    assert positional.record_ids == tuple(str(N_DATA + i) for i in range(5))  # the sample ids after the data's
    long = pool.assign(text=["word " * 100] + pool["text"].tolist()[1:])
    assert read_text_pool(long, text, "label", "id", data_ids, None, refuse_long=False).notes[1].startswith("1 of the unlabelled pool's 5 records have a text longer")
    with raises_one_line("1 of the unlabelled pool's 5 records have a text longer than the sentence encoder's 64-token window .e.g. record 'p0'.; shorten them, or set"):
        read_text_pool(long, text, "label", "id", data_ids, None, refuse_long=True)
    with raises_one_line("the unlabelled pool's id column 'id' has duplicated values"):
        read_text_pool(pool.assign(id="p0"), text, "label", "id", data_ids, None, refuse_long=True)
    with raises_one_line("the unlabelled pool lacks column.s. text that the data's records have"):
        read_text_pool(pool.rename(columns={"text": "review"}), text, "label", "id", data_ids, None, refuse_long=True)
    with raises_one_line("data.unlabelled_path holds no records"):
        read_text_pool(pool.iloc[:0], text, "label", "id", data_ids, None, refuse_long=True)
    choices = TextInputs(("text",), "choices", str(tiny_sentence_model))
    with raises_one_line("the unlabelled pool's records have 2 choices and the data's 3; give every record 3 choices"):
        read_text_pool(pool.assign(choices=[["yes", "no"]] * 5), choices, "label", "id", data_ids, 3, refuse_long=True)
