"""Text students that fine-tune their encoder: token ids in, a pretrained encoder (a tiny random
BERT here) trained end to end with its head, under the same methods and fit as every student."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import one_error_line
from typer.testing import CliRunner

from stepdistill.cli import app
from stepdistill.engines.base import new_state, set_step_learning_rate
from stepdistill.engines.tabular import bucketed, perturbed_logits
from stepdistill.errors import StepDistillError
from stepdistill.methods import method_spec
from stepdistill.run_dir import model_from_spec
from stepdistill.students.build import StudentShape, native_bf16, student_factory
from stepdistill.students.config import EncoderStudent
from stepdistill.terms import Consistency, method_of
from stepdistill.text.tokens import load_encoder_files, token_features

runner = CliRunner()


def _records(n: int, seed: int = 0) -> pd.DataFrame:
    """Short reviews: a positive one says a good thing, a negative one a bad thing; ``other`` is a
    second text that carries no signal."""
    rng = np.random.default_rng(seed)
    label = rng.choice(["pos", "neg"], n)
    filler = ["film", "plot", "cast", "music", "ending"]
    text = [f"the {rng.choice(filler)} was {rng.choice(['good', 'lovely'] if y == 'pos' else ['bad', 'dull'])}" for y in label]
    other = [f"a {rng.choice(filler)} and a {rng.choice(filler)}" for _ in label]
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "text": text, "other": other, "label": label})


def test_token_features_pad_cut_and_count_the_records_cut(tiny_sentence_model):
    tokenizer, files = load_encoder_files(tiny_sentence_model)
    frame = pd.DataFrame({"a": ["short one", "a much longer text than eight tokens can ever hold here"], "b": ["x", "y"]})
    siamese, cut = token_features(frame, ("a", "b"), tokenizer, "siamese", 8)
    assert siamese.shape == (2, 16) and cut.tolist() == [False, True]
    ids = siamese.to_numpy()
    assert ids[0, 0] == tokenizer.cls_token_id and (ids[0, 4:8] == files.pad_id).all() and ids[1, 7] == files.sep_id  # padded; cut, then closed
    cross, _ = token_features(frame, ("a", "b"), tokenizer, "cross", 8)
    assert cross.shape == (2, 8) and (cross.to_numpy()[0] == files.sep_id).sum() == 2


@pytest.mark.parametrize("mode", ["siamese", "cross"])
def test_an_encoder_student_pools_real_tokens_only_and_rebuilds_from_its_spec(tiny_sentence_model, mode):
    make = student_factory(EncoderStudent(kind="encoder", model=str(tiny_sentence_model), pair=mode, max_tokens=12, hidden=(8,)), StudentShape(24 if mode == "siamese" else 12, 2, text_layout="pair"))
    torch.manual_seed(0)
    model = make().eval()
    tokenizer, _ = load_encoder_files(tiny_sentence_model)
    frame = pd.DataFrame({"a": ["the film was good", "dull"], "b": ["a plot", "a cast and a plot"]})
    x = torch.tensor(token_features(frame, ("a", "b"), tokenizer, mode, 12)[0].to_numpy())
    out = model(x)
    assert out.logits.shape == (2, 1) and out.rationale.shape == (2, 32 * (4 if mode == "siamese" else 1))
    # padding is cut and masked: the same records padded to 12 or to 24 tokens give the same outputs
    longer = torch.tensor(token_features(frame, ("a", "b"), tokenizer, mode, 24)[0].to_numpy())
    wide = model_from_spec({**model.spec, "max_tokens": 24}, "test")
    wide.load_state_dict(model.state_dict())
    torch.testing.assert_close(wide.eval()(longer).logits, out.logits, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a large batch is read in chunks of similar lengths, and put back in order
        many = model(x.repeat(40, 1))
    torch.testing.assert_close(many.logits, out.logits.repeat(40, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(many.rationale, out.rationale.repeat(40, 1), atol=1e-5, rtol=1e-5)
    # a consistency term perturbs it by its own dropout, not by noise on its token ids
    consistency = Consistency(kind="dropout")
    torch.testing.assert_close(perturbed_logits(consistency, model.eval(), x, torch.Generator()), out.logits)
    torch.manual_seed(0)
    assert not torch.equal(perturbed_logits(consistency, model.train(), x, torch.Generator()), out.logits)
    # the encoder trains at its own learning rate, the head at the method's
    state = new_state("s", method_of(method_spec("baseline")), make, seed=1)
    rates = [group["lr"] for group in state.optimizer.param_groups]
    assert rates == [state.method.training.lr, 2e-5]


@pytest.mark.parametrize("mode", ["siamese", "cross"])
def test_frozen_layers_are_computed_once_and_give_what_the_whole_encoder_gives(tiny_sentence_model, mode):
    config = EncoderStudent(kind="encoder", model=str(tiny_sentence_model), pair=mode, max_tokens=12, hidden=(8,), freeze_layers=1)
    make = student_factory(config, StudentShape(24 if mode == "siamese" else 12, 2, text_layout="pair"))
    torch.manual_seed(0)
    model = make().eval()
    whole = model_from_spec({**model.spec, "freeze_layers": 0}, "test")
    whole.load_state_dict(model.state_dict())
    tokenizer, _ = load_encoder_files(tiny_sentence_model)
    frame = pd.DataFrame({"a": ["the film was good", "dull", "the film was good"], "b": ["a plot", "a cast and a plot", "a cast"]})
    x = torch.tensor(token_features(frame, ("a", "b"), tokenizer, mode, 12)[0].to_numpy())
    expected = whole.eval()(x).logits
    known = len(model.frozen_states.states)
    first = model(x).logits
    texts = 5 if mode == "siamese" else 3  # "the film was good" is read once
    assert len(model.frozen_states.states) == known + texts
    # the next run's students (a new factory) read them where this one's left them
    assert student_factory(config, StudentShape(24 if mode == "siamese" else 12, 2, text_layout="pair"))().frozen_states is model.frozen_states
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=1e-5)  # the layer-by-layer path is the encoder's
    torch.testing.assert_close(model(x).logits, first, atol=1e-6, rtol=1e-6)  # and read back, the same
    # training: only the layers above the frozen ones learn, the frozen ones draw no dropout
    model.train()
    assert not any(p.requires_grad for p in model.encoder.embeddings.parameters()) and not model.encoder.encoder.layer[0].training
    model(x).logits.sum().backward()
    assert model.encoder.encoder.layer[1].attention.self.query.weight.grad is not None
    with pytest.raises(StepDistillError, match="the encoder has 2 layers; freeze fewer"):
        student_factory(config.model_copy(update={"freeze_layers": 2}), StudentShape(24, 2, text_layout="pair"))


def _run_with_teacher(tmp_path, config: dict, answers: list[dict]) -> dict:
    """``stepdistill run`` of ``config`` into tmp_path/out, its LLM teacher's ``answers`` in
    teacher.jsonl; the results, once the run succeeded."""
    (tmp_path / "teacher.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    outcome = runner.invoke(app, ["--quiet", "run", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "out")])
    assert outcome.exit_code == 0, outcome.output
    return json.loads((tmp_path / "out" / "results.json").read_text())


def _assert_onnx_gives_the_students_probabilities(tmp_path, records: pd.DataFrame, tokens: int) -> None:
    """tmp_path/student.onnx, fed ``records``' token ids (N, S, ``tokens``) as the saved student
    tokenizes them, gives the student's probabilities to 1e-4."""
    import onnxruntime

    from stepdistill.run_dir import load_student

    student = load_student(tmp_path / "out" / "student")
    records = records.reset_index(drop=True)
    model = student.model
    ids = torch.tensor(student._tokens(records)[0].to_numpy().copy()).long().view(len(records), model.segments, model.max_tokens)[:, :, :tokens]
    session = onnxruntime.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    [probabilities] = session.run(["probabilities"], {"input_ids": ids.numpy(), "attention_mask": (ids != model.pad_id).long().numpy()})
    np.testing.assert_allclose(probabilities, student.predict_proba(records), atol=1e-4)


def test_encoder_students_learn_from_an_llm_teacher_through_the_command_line(tmp_path, tiny_sentence_model):
    records = _records(160)
    records.to_csv(tmp_path / "data.csv", index=False)
    answers = [{"id": r.id, "label": r.label, "rationale": f"it says the {r.text.split()[1]} was {r.text.split()[3]}"} for r in records.itertuples()]
    config = {
        "data": {"path": "data.csv", "id_column": "id", "text": ["text", "other"], "text_encoder": str(tiny_sentence_model)},
        "teacher": {"kind": "llm", "outputs": "teacher.jsonl"},
        "student": {"kind": "encoder", "model": str(tiny_sentence_model), "max_tokens": 12, "hidden": [16], "encoder_lr": 1e-3},
        "methods": {"baseline": {}, "traditional": {}, "step_by_step": {}},
        "training": {"epochs": 6, "lr": 0.005, "batch_size": 16, "optimizer": "adamw", "scheduler": "warmup_linear"},
        "evaluation": {"repeats": 2},
    }
    results = _run_with_teacher(tmp_path, config, answers)
    methods = results["methods"]
    # the student leaves the run: predict reads texts through the tokenizer saved with it, and
    # gives on run 0's test records what the run measured
    tested = pd.read_csv(tmp_path / "out" / "test_predictions.csv").query("run == 0")
    records.set_index("id").loc[tested["id"]].reset_index().drop(columns="label").to_csv(tmp_path / "new.csv", index=False)
    predicted = runner.invoke(app, ["--quiet", "predict", str(tmp_path / "out"), str(tmp_path / "new.csv"), "--out", str(tmp_path / "predictions.csv")])
    assert predicted.exit_code == 0, predicted.output
    rows = pd.read_csv(tmp_path / "predictions.csv")
    assert rows["prediction"].tolist() == tested[results["chosen"]["method"]].tolist()
    assert (tmp_path / "out" / "student" / "tokenizer" / "tokenizer.json").is_file()
    # ... and exports as ONNX from token ids, its probabilities the student's to 1e-4
    exported = runner.invoke(app, ["--quiet", "export", str(tmp_path / "out"), "--format", "onnx", "--out", str(tmp_path / "student.onnx")])
    assert exported.exit_code == 0, exported.output
    assert "on 5 probe rows" in " ".join(exported.output.split())  # the probe texts, each through the tokenizer
    _assert_onnx_gives_the_students_probabilities(tmp_path, records.iloc[:7], tokens=9)  # any length that holds the texts
    assert methods["baseline"]["params"] == methods["step_by_step"]["params"] > 1_000_000  # the encoder is part of the student
    for name in methods:
        assert np.mean(methods[name]["test"]["accuracy"]["values"]) > 0.75, name  # one word decides the label: fine-tuning finds it


def test_a_multiple_choice_encoder_student_scores_each_question_and_choice_together(tmp_path, tiny_sentence_model):
    rng = np.random.default_rng(0)
    fillers = ["dog", "car", "tree", "cup", "lamp", "road"]
    rows = []
    for i in range(160):
        options = [f"the {rng.choice(fillers)}" for _ in range(2)] + ["the right one"]
        order = rng.permutation(3)
        choices = [options[j] for j in order]
        rows.append({"id": f"q{i}", "question": f"which {rng.choice(fillers)} is it", "choices": choices, "label": "the right one"})
    records = pd.DataFrame(rows)
    records.to_json(tmp_path / "mc.jsonl", orient="records", lines=True)
    answers = [{"id": r["id"], "label": r["label"], "rationale": "it is the right one"} for r in rows]
    config = {
        "data": {"path": "mc.jsonl", "id_column": "id", "text": "question", "choices": "choices", "text_encoder": str(tiny_sentence_model)},
        "teacher": {"kind": "llm", "outputs": "teacher.jsonl"},
        "student": {"kind": "encoder", "model": str(tiny_sentence_model), "max_tokens": 16, "hidden": [16], "encoder_lr": 1e-3, "freeze_layers": 1},
        "methods": {"baseline": {}, "step_by_step": {}},
        "training": {"epochs": 6, "lr": 0.005, "batch_size": 16, "optimizer": "adamw", "scheduler": "warmup_linear"},
        "evaluation": {"repeats": 1},
    }
    results = _run_with_teacher(tmp_path, config, answers)
    assert results["config"]["data"]["classes"] == ["A", "B", "C"]
    for name in ("baseline", "step_by_step"):
        assert results["methods"][name]["test"]["accuracy"]["mean"] > 0.8, name  # the right choice names itself
    # predict reads questions and their choices; the ONNX graph takes (N, K, L) ids, one sequence per choice
    tested = pd.read_csv(tmp_path / "out" / "test_predictions.csv")
    records.set_index("id").loc[tested["id"]].reset_index().drop(columns="label").to_json(tmp_path / "new.jsonl", orient="records", lines=True)
    predicted = runner.invoke(app, ["--quiet", "predict", str(tmp_path / "out"), str(tmp_path / "new.jsonl"), "--out", str(tmp_path / "predictions.csv")])
    assert predicted.exit_code == 0, predicted.output
    assert pd.read_csv(tmp_path / "predictions.csv")["prediction"].tolist() == tested[results["chosen"]["method"]].tolist()
    # the frozen embeddings and layer, alike in every student, are written once; the student to deploy holds all its own
    students = tmp_path / "out" / "students"
    assert (students / "shared.safetensors").stat().st_size > (students / "baseline" / "0" / "model.safetensors").stat().st_size
    assert "shared_weights" not in json.loads((tmp_path / "out" / "student" / "student.json").read_text())
    again = runner.invoke(app, ["--quiet", "predict", str(tmp_path / "out"), str(tmp_path / "new.jsonl"), "--method", "step_by_step", "--out", str(tmp_path / "again.csv")])
    assert again.exit_code == 0, again.output
    assert pd.read_csv(tmp_path / "again.csv")["prediction"].tolist() == tested["step_by_step"].tolist()
    exported = runner.invoke(app, ["--quiet", "export", str(tmp_path / "out"), "--format", "onnx", "--out", str(tmp_path / "student.onnx")])
    assert exported.exit_code == 0, exported.output
    _assert_onnx_gives_the_students_probabilities(tmp_path, records.iloc[:4], tokens=16)


@pytest.mark.parametrize(
    ("student", "sections", "expected"),
    [
        ({}, {"teacher": {"kind": "mlp"}}, "student.kind encoder reads token ids, which a teacher of kind 'mlp' would read as numbers"),
        ({"model": "nowhere"}, {}, "holds no Hugging Face model (no config.json); point student.model at an encoder"),
        (
            {"max_tokens": 8},
            {"data": {"path": "data.csv", "id_column": "id", "text": "text", "long_texts": "refuse"}},
            "have a text longer than the student's 8 tokens (student.max_tokens) (e.g. record 'r0'); shorten them, raise student.max_tokens, or set",
        ),
    ],
)
def test_encoder_students_that_cannot_work_are_refused_in_one_line(tmp_path, tiny_sentence_model, student, sections, expected):
    records = _records(100)
    records.assign(text=records["text"] + " and " + records["other"]).drop(columns="other").to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "teacher.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "label": "pos", "rationale": "x"}) + "\n" for i in range(100)))
    config = {
        "data": {"path": "data.csv", "id_column": "id", "text": "text", "text_encoder": str(tiny_sentence_model)},
        "teacher": {"kind": "llm", "outputs": "teacher.jsonl"},
        "student": {"kind": "encoder", **student},
        **sections,
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert expected in one_error_line(runner.invoke(app, ["run", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "out")]))


def test_sequence_rows_train_in_batches_of_similar_lengths_in_a_random_order():
    lengths = torch.randint(3, 60, (1000,))
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    order = bucketed(perm, lengths, 20, torch.Generator().manual_seed(1))
    assert sorted(order.tolist()) == list(range(1000))  # every row once
    spans = torch.stack([lengths[b].max() - lengths[b].min() for b in order.split(20)])
    shuffled = torch.stack([lengths[b].max() - lengths[b].min() for b in perm.split(20)])
    assert spans.float().mean() < shuffled.float().mean() / 5  # little padding in a batch
    firsts = torch.stack([lengths[b].min() for b in order.split(20)])
    assert not torch.equal(firsts, firsts.sort().values)  # batches not from shortest to longest


def test_bf16_is_chosen_only_where_the_processor_computes_it_and_keeps_float_outputs(tiny_sentence_model):
    shape = StudentShape(12, 2, text_layout="single")
    auto = student_factory(EncoderStudent(kind="encoder", model=str(tiny_sentence_model), max_tokens=12, hidden=(8,)), shape)()
    assert (auto.autocast_dtype is not None) == native_bf16()
    forced = student_factory(EncoderStudent(kind="encoder", model=str(tiny_sentence_model), max_tokens=12, hidden=(8,), precision="bf16"), shape)()
    x = torch.tensor([[101.0, 2204.0, 102.0] + [0.0] * 9])
    with torch.autocast("cpu", dtype=forced.autocast_dtype):
        out = forced(x)
    assert out.logits.dtype == torch.float32 and out.rationale.dtype == torch.float32


def test_warmup_then_linear_decay_is_read_from_the_epoch_and_step():
    """warmup_linear: the rate rises from 0 over the first tenth of the run's steps, then falls
    to 0, as a function of (epoch, step) alone, so a resumed run continues the same curve."""
    spec = method_spec("baseline", {"optimizer": "adamw", "lr": 0.01, "epochs": 2, "scheduler": "warmup_linear", "warmup_fraction": 0.25})
    state = new_state("s", method_of(spec), lambda: torch.nn.Linear(2, 1), seed=0)
    rates = []
    for epoch in range(2):
        state.epoch = epoch
        for step in range(4):
            set_step_learning_rate(state, step, 4)
            rates.append(state.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.0, 0.005, 0.01, 0.01 * 5 / 6, 0.01 * 4 / 6, 0.01 * 3 / 6, 0.01 * 2 / 6, 0.01 / 6])
