import json
from functools import cache

import pytest
from conftest import raises_one_line

from stepdistill.data.arithmetic import evaluate_arithmetic
from stepdistill.data.llm_outputs import (
    DSBS_FORMATS,
    ESNLI_CLASSES,
    LLMAnswer,
    LLMOutputs,
    parse_continuation,
    read_dsbs,
    read_llm_jsonl,
)

# Teacher-label accuracies of the PaLM outputs as published in the data's PROVENANCE.md.
PUBLISHED_ACCURACY = {
    ("cqa", "train"): 0.743,
    ("cqa", "test"): 0.772,
    ("svamp", "train"): 0.735,
    ("svamp", "test"): 0.740,
    ("esnli", "valid"): 0.732,
    ("esnli", "test"): 0.730,
}
# svamp labels are numbers, equal within this much.
SVAMP_TOLERANCE = 1e-4


@cache
def read_release(data_dir, task, split, parse="careful"):
    return read_dsbs(data_dir, task, split, parse=parse)


def dsbs_accuracy(data_dir, task, split, parse):
    frame, outputs = read_release(data_dir, task, split, parse)
    tolerance = SVAMP_TOLERANCE if task == "svamp" else None
    return outputs.label_accuracy(dict(zip(frame["id"], frame["label"])), numeric_tolerance=tolerance), outputs


@pytest.mark.parametrize(("task", "split"), list(PUBLISHED_ACCURACY))
def test_paper_parse_reproduces_published_teacher_accuracy(dsbs_dir, task, split):
    accuracy, _ = dsbs_accuracy(dsbs_dir, task, split, "paper")
    assert accuracy == pytest.approx(PUBLISHED_ACCURACY[task, split], abs=0.005)


@pytest.mark.parametrize(("task", "split"), list(PUBLISHED_ACCURACY))
def test_careful_parse_finds_at_least_the_papers_labels(dsbs_dir, task, split):
    careful, careful_outputs = dsbs_accuracy(dsbs_dir, task, split, "careful")
    paper, paper_outputs = dsbs_accuracy(dsbs_dir, task, split, "paper")
    assert careful >= paper
    assert careful_outputs.parse_failures <= paper_outputs.parse_failures
    assert careful_outputs.coverage == pytest.approx(1 - careful_outputs.parse_failures / len(careful_outputs.answers))


def test_esnli_validation_outputs_without_a_label(dsbs_dir):
    _, outputs = dsbs_accuracy(dsbs_dir, "esnli", "valid", "careful")
    # PROVENANCE: 4 of the 9,842 validation outputs have no "Answer:".
    assert (len(outputs.answers), outputs.parse_failures) == (9842, 4)
    assert all(reason == "no answer found" for _, reason in outputs.failure_examples)
    assert outputs.classes == ESNLI_CLASSES


@pytest.mark.parametrize(
    ("task", "split", "text_columns"),
    [("cqa", "test", ["question", "choices"]), ("svamp", "test", ["input"]), ("esnli", "test", ["premise", "hypothesis"])],
)
def test_read_dsbs_frame_is_aligned_with_the_teacher(dsbs_dir, task, split, text_columns):
    frame, outputs = read_release(dsbs_dir, task, split)
    assert list(frame.columns) == ["id", *text_columns, "label"]
    assert frame["id"].is_unique and list(outputs.answers) == list(frame["id"])
    if task != "cqa":
        assert frame["id"].iloc[1] == f"{split}-1"
    answered = [a for a in outputs.answers.values() if a.label is not None]
    assert all(len(a.rationales) == 1 and a.rationales[0] for a in answered)
    outputs.check_against(frame["id"], outputs.classes)


def test_svamp_labels_are_numbers(dsbs_dir):
    frame, outputs = read_release(dsbs_dir, "svamp", "test")
    for value in [*frame["label"], *(a.label for a in outputs.answers.values() if a.label is not None)]:
        float(value)


def write_dsbs(root, task, records, chunks):
    task_dir = root / "datasets" / task
    (task_dir / "llm").mkdir(parents=True)
    (task_dir / f"{task}_train.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    for index, chunk in enumerate(chunks):
        (task_dir / "llm" / f"train_CoT_{index}.json").write_text(json.dumps(chunk))


def test_read_dsbs_concatenates_chunks_in_order(tmp_path):
    records = [{"input": f"Tom has {n} apples and eats 1. How many are left?", "label": f"( {n}.0 - 1.0 )"} for n in (3, 5, 8)]
    chunks = [["3 - 1 = 2. The answer is (3 - 1).", "5 - 1 = 4. The answer is $4."], ["8 - 1 = 7. The answer is 7.0.\n\nQ: next"]]
    write_dsbs(tmp_path, "svamp", records, chunks)
    frame, outputs = read_dsbs(tmp_path, "svamp", "train")
    assert list(frame["label"]) == ["2", "4", "7"]
    assert [outputs.answers[i].label for i in frame["id"]] == ["2", "4", "7"]
    assert outputs.answers["train-2"].rationales == ["8 - 1 = 7."]
    assert outputs.label_accuracy(dict(zip(frame["id"], frame["label"]))) == 1.0


def test_read_dsbs_count_mismatch_is_one_line_error(tmp_path):
    records = [{"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": 0}] * 2
    write_dsbs(tmp_path, "esnli", records, [["It runs.\nAnswer: entailment"]])
    with raises_one_line(r"1 teacher outputs .* for 2 records"):
        read_dsbs(tmp_path, "esnli", "train")
    with raises_one_line("choose one of train"):
        read_dsbs(tmp_path, "esnli", "valid")


def test_cqa_label_is_the_choice_text_ignoring_case(tmp_path):
    record = {"id": "q1", "question": "Where?", "choices": ["Park", "lake", "sea", "Washington D.C.", "home"], "answer": "Washington D.C."}
    continuations = [
        "Only the capital fits. So the answer is (d) washington D.C.\n\nQ: Where else?",
        "Both fit. So the answer is either (b) lake or (c) sea.",
        "So the answer is (c) ocean.",
    ]
    write_dsbs(tmp_path, "cqa", [record | {"id": f"q{i}"} for i in range(3)], [continuations])
    _, outputs = read_dsbs(tmp_path, "cqa", "train")
    assert outputs.answers["q0"] == LLMAnswer("q0", "Washington D.C.", ["Only the capital fits."])
    assert (outputs.answers["q1"].label, outputs.answers["q2"].label, outputs.parse_failures) == (None, None, 2)
    assert outputs.answers["q2"].rationales == []
    _, paper_outputs = read_dsbs(tmp_path, "cqa", "train", parse="paper")
    assert paper_outputs.answers["q0"].label is None


@pytest.mark.parametrize(
    ("task", "text", "expected"),
    [
        (
            "cqa",
            "The answer must be cold. Of the above choices, only ice is cold. So the answer is (e) ice.\n\nQ: What is hot?\nAnswer Choices:\n(a) fire",
            ("The answer must be cold. Of the above choices, only ice is cold.", "ice"),
        ),
        ("svamp", " He has 4 + 5 = 9. The answer is (4 + 5).\nQ: There are 15 trees. The answer is (15).", ("He has 4 + 5 = 9.", "(4 + 5)")),
        ("svamp", "So 6 / 2 = 3 each. So the answer is 3.\n\nQ", ("So 6 / 2 = 3 each.", "3")),
        (
            "esnli",
            "A dog is an animal.\nAnswer: entailment\n\nPremise: A cat sleeps.\nHypothesis: A cat eats.\nReasonings: x\nAnswer: neutral",
            ("A dog is an animal.", "entailment"),
        ),
        ("esnli", "The man is asleep.\nAnswer: contradiction\nPremise: A man", ("The man is asleep.", "contradiction")),
        ("esnli", "A toddler is a child. A child is a person.", ("A toddler is a child. A child is a person.", None)),
        ("svamp", "So 3 + 4 = 7.\n\nQ: Then 7. The answer is (7).", ("So 3 + 4 = 7.", None)),
    ],
)
def test_parse_continuation_cuts_the_next_block(task, text, expected):
    assert parse_continuation(text, DSBS_FORMATS[task]) == expected


def test_parse_continuation_takes_a_custom_pattern_and_block_starts():
    text = "Reason: rain is wet ### Label: wet ||| Reason: next"
    pattern = r"Reason:\s*(?P<rationale>.*?)\s*###\s*Label:\s*(?P<label>\w+)"
    assert parse_continuation(text, pattern, block_starts=["|||"]) == ("rain is wet", "wet")
    with raises_one_line("named groups"):
        parse_continuation(text, r"Reason: (.*)")


@pytest.mark.parametrize(
    ("expr", "value"),
    [("( 84.0 / 2.0 )", 42.0), ("( ( 3.0 + 5.0 ) - 2.0 )", 6.0), ("-(2 - 7) * 3", 15.0), ("7 / 2", 3.5), (" 1e3 ", 1000.0), ("+4", 4.0)],
)
def test_evaluate_arithmetic(expr, value):
    assert evaluate_arithmetic(expr) == value


@pytest.mark.parametrize(
    "expr",
    ["x + 1", "abs(-1)", "(1).real", "2 ** 3", "'4'", "(1, 2)", "True + 1", "1j", "1 // 2", "1 / 0", "1e308 * 10", "__import__('os')", "", "(1 +"],
)
def test_evaluate_arithmetic_refuses_everything_else(expr):
    with pytest.raises(ValueError) as err:
        evaluate_arithmetic(expr)
    assert "\n" not in str(err.value)


def write_jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_read_llm_jsonl(tmp_path):
    path = write_jsonl(
        tmp_path / "teacher.jsonl",
        [
            {"id": "a", "label": "yes", "rationale": "It rains.", "dist": {"yes": 0.75, "no": 0.25}},
            "",
            {"id": 7, "label": "no", "rationale": ["Dry.", "No clouds."]},
            {"id": "c", "label": None, "rationale": "Unclear."},
        ],
    )
    outputs = read_llm_jsonl(path, distribution_field="dist")
    assert outputs.answers["a"] == LLMAnswer("a", "yes", ["It rains."], {"yes": 0.75, "no": 0.25})
    assert outputs.answers["7"].rationales == ["Dry.", "No clouds."]
    assert (outputs.classes, outputs.parse_failures, outputs.failure_examples) == (("no", "yes"), 1, [("c", "no label")])
    assert outputs.coverage == pytest.approx(2 / 3)
    assert outputs.label_accuracy({"a": "yes", "7": "yes", "c": "no", "d": "no"}) == 0.25
    with raises_one_line("label 'yes' is not a number"):
        outputs.label_accuracy({"a": "1"}, numeric_tolerance=0.1)
    outputs.check_against(["a", "7"], ["yes", "no"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "b", "label": "yes", "rationale": "x"', r":2: invalid JSON .*one JSON object per line"),
        ('["b", "yes"]', r":2: a JSON list, not an object"),
        ({"label": "yes", "rationale": "x"}, r":2: no id in field 'id'"),
        ({"id": "a", "label": "no", "rationale": "x"}, r":2: duplicate id 'a' \(first on line 1\); keep one line per id"),
        ({"id": "b", "label": "yes", "rationale": "  "}, r":2: empty or missing rationale"),
        ({"id": "b", "label": "yes", "rationale": []}, r":2: empty or missing rationale"),
        ({"id": "b", "label": "yes"}, r":2: empty or missing rationale"),
        ({"id": "b", "label": 1, "rationale": "x"}, r":2: label 1 is not a class name"),
        ({"id": "b", "label": "yes", "rationale": "x", "dist": {"yes": 0.7, "no": 0.2}}, r":2: the label distribution sums to 0.9, not 1; normalize"),
        ({"id": "b", "label": "yes", "rationale": "x", "dist": {"yes": 1.5, "no": -0.5}}, r":2: the label distribution is not an object"),
    ],
)
def test_read_llm_jsonl_errors_name_the_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "teacher.jsonl", [{"id": "a", "label": "yes", "rationale": "x"}, line])
    with raises_one_line(message):
        read_llm_jsonl(path, distribution_field="dist")


def test_check_against_errors():
    outputs = LLMOutputs(
        {"a": LLMAnswer("a", "yes", ["r"]), "b": LLMAnswer("b", "maybe", ["r"]), "c": LLMAnswer("c", "no", ["r"], {"no": 0.9, "unsure": 0.1})},
        ("maybe", "no", "yes"),
        0,
        [],
    )
    with raises_one_line(r"lack 4 of 5 record ids \(e.g. 'd', 'e', 'f', \.\.\.\)"):
        outputs.check_against(["a", "d", "e", "f", "g"], ["yes", "no"])
    with raises_one_line("teacher label 'maybe' of record 'b' is not a class"):
        outputs.check_against(["a", "b"], ["yes", "no"])
    with raises_one_line("teacher label 'unsure' of record 'c'"):
        outputs.check_against(["c"], ["yes", "no"])
