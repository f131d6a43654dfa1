"""The LLM teacher and the text featurizer on a few released e-SNLI and CommonsenseQA records, with
the real bundled sentence encoder (about 150 distinct sentences in all), and a student trained
step by step from the teacher."""

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import raises_one_line

from stepdistill.data.llm_outputs import ESNLI_CLASSES, LLMAnswer, LLMOutputs, read_dsbs
from stepdistill.data.table import Table
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.tabular import TabularData
from stepdistill.students.mlp import MLPModel
from stepdistill.teachers.base import Samples
from stepdistill.teachers.collect import cache_teacher
from stepdistill.teachers.llm import LLMTeacher
from stepdistill.terms import build_method
from stepdistill.text import encoders
from stepdistill.text.encoders import SentenceEncoder, choice_features, pair_features
from stepdistill.text.features import TextFeaturizer

pytest.importorskip("sentence_transformers")
if importlib.util.find_spec(encoders.BUNDLED_MODULE) is None:
    pytest.skip("the bundled sentence encoder is not installed", allow_module_level=True)

# The first 39 e-SNLI validation records and record 133, whose PaLM answer has no label.
ESNLI_ROWS = [*range(39), 133]
UNPARSED_ID = "valid-133"
N_TRAIN = 30


@pytest.fixture(scope="session")
def encoder(tmp_path_factory):
    return SentenceEncoder(cache_dir=tmp_path_factory.mktemp("sentences"))


@pytest.fixture(scope="session")
def esnli(dsbs_dir):
    """(frame of ESNLI_ROWS, the PaLM outputs of the whole split)."""
    frame, outputs = read_dsbs(dsbs_dir, "esnli", "valid")
    return frame.iloc[ESNLI_ROWS].reset_index(drop=True), outputs


@pytest.fixture(scope="session")
def teacher(esnli, encoder):
    frame, outputs = esnli
    return LLMTeacher(outputs, ESNLI_CLASSES, encoder, list(frame["id"]))


def all_samples(frame: pd.DataFrame) -> Samples:
    return Samples(torch.arange(len(frame)), torch.zeros(len(frame), 1))


def test_logits_follow_the_parsed_labels_and_match_their_accuracy(esnli, teacher):
    frame, outputs = esnli
    logits = teacher.outputs(all_samples(frame)).logits
    assert logits.shape == (len(frame), 3) and torch.isfinite(logits).all()
    labels = [outputs.answers[record_id].label for record_id in frame["id"]]
    parsed = [row for row, label in enumerate(labels) if label is not None]
    assert [ESNLI_CLASSES[k] for k in logits[parsed].argmax(1).tolist()] == [labels[row] for row in parsed]
    predicted = [ESNLI_CLASSES[k] for k in logits.argmax(1).tolist()]
    # An unparsed record counts as wrong for the outputs; its uniform logits argmax to class 0.
    correct = sum(p == human for p, human, label in zip(predicted, frame["label"], labels) if label is not None)
    assert correct / len(frame) == outputs.label_accuracy(dict(zip(frame["id"], frame["label"])))
    torch.testing.assert_close(teacher.predict_logits(all_samples(frame)), logits)


def test_smoothing_clips_one_hot_rows(esnli, teacher):
    frame, _ = esnli
    probabilities = teacher.predict_logits(all_samples(frame))[0].exp()
    torch.testing.assert_close(probabilities.sum(), torch.tensor(1.0))
    torch.testing.assert_close(probabilities.sort().values, torch.tensor([0.01, 0.01, 0.99]) / 1.01)


def test_unparsed_label_is_uniform(esnli, teacher):
    frame, outputs = esnli
    assert outputs.answers[UNPARSED_ID].label is None
    assert teacher.unparsed == 1
    row = list(frame["id"]).index(UNPARSED_ID)
    torch.testing.assert_close(teacher.predict_logits(all_samples(frame))[row], torch.full((3,), float(np.log(1 / 3))))


def test_rationale_is_the_embedding_of_the_rationale_text(esnli, teacher, encoder):
    frame, outputs = esnli
    rationale = teacher.outputs(all_samples(frame)).rationale
    assert rationale.shape == (len(frame), 384) and rationale.dtype == torch.float32
    texts = [outputs.answers[record_id].rationales[0] for record_id in frame["id"]]
    assert torch.equal(rationale, encoder.encode(texts))


def test_several_rationales_give_their_mean_embedding_and_a_distribution_wins(esnli, encoder):
    frame, outputs = esnli
    first, second = (outputs.answers[record_id].rationales[0] for record_id in frame["id"][:2])
    answer = LLMAnswer("r", "entailment", [first, second], {"entailment": 0.2, "neutral": 0.8})
    teacher = LLMTeacher(LLMOutputs({"r": answer}, ESNLI_CLASSES, 0, []), ESNLI_CLASSES, encoder, ["r"])
    out = teacher.outputs(Samples(torch.tensor([0]), torch.zeros(1, 1)))
    torch.testing.assert_close(out.rationale[0], encoder.encode([first, second]).mean(0))
    assert out.logits.argmax(1).tolist() == [1]


def test_binary_teacher_gives_one_logit(encoder, esnli):
    frame, outputs = esnli
    rationale = outputs.answers[frame["id"][0]].rationales
    answers = {"a": LLMAnswer("a", "yes", rationale), "b": LLMAnswer("b", None, rationale)}
    teacher = LLMTeacher(LLMOutputs(answers, ("no", "yes"), 1, []), ("no", "yes"), encoder, ["a", "b"])
    logits = teacher.predict_logits(Samples(torch.tensor([0, 1]), torch.zeros(2, 1)))
    torch.testing.assert_close(logits, torch.tensor([[float(np.log(0.99 / 0.01))], [0.0]]))


def test_fingerprint_follows_content_and_eps(esnli, encoder, teacher):
    frame, outputs = esnli
    ids = list(frame["id"])
    assert LLMTeacher(outputs, ESNLI_CLASSES, encoder, ids).fingerprint() == teacher.fingerprint()
    assert LLMTeacher(outputs, ESNLI_CLASSES, encoder, ids, eps=0.05).fingerprint() != teacher.fingerprint()
    assert LLMTeacher(outputs, ESNLI_CLASSES, encoder, ids[::-1]).fingerprint() != teacher.fingerprint()
    first = outputs.answers[ids[0]]
    other_label = next(name for name in ESNLI_CLASSES if name != first.label)
    relabelled = dict(outputs.answers) | {ids[0]: LLMAnswer(ids[0], other_label, first.rationales)}
    changed = LLMOutputs(relabelled, outputs.classes, outputs.parse_failures, outputs.failure_examples)
    assert LLMTeacher(changed, ESNLI_CLASSES, encoder, ids).fingerprint() != teacher.fingerprint()
    assert not teacher.can_predict and teacher.rationale_style == "representation" and teacher.classes == ESNLI_CLASSES


def test_missing_record_and_sample_ids_are_one_line_errors(esnli, encoder, teacher):
    frame, outputs = esnli
    with raises_one_line("lack 2 of 3 record ids"):
        LLMTeacher(outputs, ESNLI_CLASSES, encoder, [frame["id"][0], "nowhere-1", "nowhere-2"])
    with raises_one_line("no teacher record"):
        teacher.outputs(Samples(torch.tensor([0, len(frame)]), torch.zeros(2, 1)))


def test_pair_features_of_premise_and_hypothesis(esnli, encoder):
    frame, _ = esnli
    features = TextFeaturizer(encoder, "pair").features(frame, ["premise", "hypothesis"])
    assert features.shape == (len(frame), 4 * 384)
    expected = pair_features(encoder.encode(list(frame["premise"])), encoder.encode(list(frame["hypothesis"])))
    assert torch.equal(features, expected)
    assert torch.equal(TextFeaturizer(encoder, "single").features(frame, ["premise"]), encoder.encode(list(frame["premise"])))


def test_choice_features_of_commonsense_questions(encoder, dsbs_dir):
    frame, _ = read_dsbs(dsbs_dir, "cqa", "test")
    frame = frame.head(3)
    features = TextFeaturizer(encoder, "choices").features(frame, ["question"], choices_column="choices")
    assert features.shape == (3, 5, 4 * 384)
    choices = encoder.encode(list(frame["choices"][1]))
    torch.testing.assert_close(features[1], choice_features(encoder.encode([frame["question"][1]]), choices.unsqueeze(0))[0])


@pytest.mark.parametrize(
    "layout, frame, columns, choices_column, message",
    [
        ("pair", pd.DataFrame({"a": ["x"]}), ["a", "b"], None, "text column 'b' is not in the data"),
        ("single", pd.DataFrame({"a": ["x", None]}), ["a"], None, "the 'a' text of record 2 is missing"),
        ("single", pd.DataFrame({"a": ["x", "  "]}), ["a"], None, "the 'a' text of record 2 is an empty text"),
        ("single", pd.DataFrame({"a": ["x"]}), ["a", "a"], None, "reads 1 text column"),
        ("choices", pd.DataFrame({"q": ["x", "y"], "c": [["a", "b"], ["a"]]}), ["q"], "c", "differing lengths"),
        ("choices", pd.DataFrame({"q": ["x"], "c": ["a b"]}), ["q"], "c", "record 1 holds 'a b' in choices column 'c', not a list of choice texts"),
        ("choices", pd.DataFrame({"q": ["x"], "c": [["a", 3]]}), ["q"], "c", "choice 2 of record 1 in 'c' is a int, not a string"),
        ("pair", pd.DataFrame({"a": ["x"], "b": ["y"]}), ["a", "b"], "b", "layout 'choices' needs a choices column"),
        ("choices", pd.DataFrame({"q": ["x"]}), ["q"], None, "layout 'choices' needs a choices column"),
    ],
)
def test_featurizer_errors_are_one_line(encoder, layout, frame, columns, choices_column, message):
    with raises_one_line(message):
        TextFeaturizer(encoder, layout).features(frame, columns, choices_column)


def test_featurizer_errors_name_records_from_1_with_their_ids(encoder):
    frame = pd.DataFrame({"q": ["x", "y", "z"], "c": [["a", "b"], ["a", "b"], ["a", ""]]})
    with raises_one_line(r"^choice 2 of record 3 \(id q-9\) in 'c' is an empty text; give every choice a text$"):
        TextFeaturizer(encoder, "choices").features(frame, ["q"], "c", ids=["q-7", "q-8", "q-9"])


def test_unknown_layout_is_an_error(encoder):
    with raises_one_line("unknown text layout 'triple'"):
        TextFeaturizer(encoder, "triple")


def test_step_by_step_student_learns_from_the_llm_teacher(esnli, encoder, teacher):
    frame, _ = esnli
    X = TextFeaturizer(encoder, "pair").features(frame, ["premise", "hypothesis"])
    y = torch.tensor([ESNLI_CLASSES.index(label) for label in frame["label"]])
    table = Table(torch.arange(len(frame)), X, y, ESNLI_CLASSES, tuple(f"text_{j}" for j in range(X.shape[1])))
    train, val = table.take(torch.arange(N_TRAIN)), table.take(torch.arange(N_TRAIN, len(frame)))
    cache = cache_teacher(teacher, [Samples(part.ids, part.X) for part in (train, val)], ESNLI_CLASSES)
    state = new_state("sbs", build_method("step_by_step", {"epochs": 3}), lambda: MLPModel(X.shape[1], 3, hidden=(32,)), seed=0, teacher_rationale_width=384)
    assert state.head is not None
    fit([state], TabularData(train, val, cache.take(train.ids)))
    assert len(state.history) == 3 and state.diverged is None
    assert all(np.isfinite(epoch["terms"]["rationale"]["raw"]) for epoch in state.history)
