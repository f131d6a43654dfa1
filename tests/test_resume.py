"""An interrupted run resumes to the results of an uninterrupted one: killed (SIGKILL) at a random
moment or stopped with Ctrl-C (SIGINT), then continued with ``stepdistill run --resume``."""

import io
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import error_lines, one_error_line
from typer.testing import CliRunner

from stepdistill.cli import app
from stepdistill.data import linear_binary, prepare
from stepdistill.engines.base import fit, new_state
from stepdistill.engines.tabular import TabularData
from stepdistill.students.logistic import LogisticModel
from stepdistill.students.mlp import MLPModel
from stepdistill.teachers.cache import cache_model_outputs
from stepdistill.terms import build_method

runner = CliRunner()
# Where and when a run happened, not what it computed: wall-clock durations (a resumed run's are
# spread over two processes) and what is derived from them (prediction speeds), the date, and
# the machine and package versions.
TIMING_KEYS = frozenset({"train_seconds", "one_row_ms", "batch_ms", "speedup_one_row", "speedup_batch"})
CIRCUMSTANCE_KEYS = frozenset({"date", "machine", "versions"})
WAIT_SECONDS = 120  # the most a subprocess may take to reach its first epoch checkpoint


def comparable(results):
    """``results`` (results.json, parsed) without ``TIMING_KEYS`` and ``CIRCUMSTANCE_KEYS``, at
    any depth: what must be equal, bit for bit, between a resumed and an uninterrupted run."""
    if isinstance(results, dict):
        return {key: comparable(value) for key, value in results.items() if key not in TIMING_KEYS | CIRCUMSTANCE_KEYS}
    if isinstance(results, list):
        return [comparable(value) for value in results]
    return results


def _student_weights(out: Path) -> dict[str, bytes]:
    """Every saved student's weights file, by path within ``out``."""
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.glob("student*/**/model.safetensors"))}


def _assert_same_as_reference(out: Path, reference: Path, seed=None) -> None:
    """The same results (but for timings), and the same saved students: every run's of every
    method, or an lm-train run's chosen one."""
    context = f" (random seed {seed})" if seed is not None else ""
    assert not (out / "checkpoints").exists(), f"checkpoints left after the run finished{context}"
    results, expected = (json.loads((d / "results.json").read_text()) for d in (out, reference))
    assert comparable(results) == comparable(expected), f"resumed results differ from the uninterrupted run's{context}"
    weights = _student_weights(out)
    assert weights.keys() == _student_weights(reference).keys() and ("student/model.safetensors" in weights or len(weights) > 1)
    assert weights == _student_weights(reference), f"resumed student weights differ{context}"


def _params(state) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in state.model.parameters()])


def _as_read_back(states: list) -> list[dict]:
    """The students' states saved and loaded as a checkpoint does."""
    buffer = io.BytesIO()
    torch.save([s.state_dict() for s in states], buffer)
    return torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)


def test_students_resumed_from_any_epoch_end_finish_as_if_never_stopped():
    """Three groups trained one after the other (a linear stack, a linear group under a
    curriculum, an MLP with a projection by autograd), saved at every epoch end of any of them;
    resumed from each save, every student ends bit for bit as in the uninterrupted fit."""
    splits, _ = prepare(linear_binary(2000, 10, seed=1), "label")
    teacher = new_state("teacher", build_method("baseline", {"epochs": 2, "lr": 0.05}, name="teacher"), lambda: LogisticModel(10, 1), 0)
    fit([teacher], TabularData(splits.train, splits.val, None))
    cache = cache_model_outputs(teacher.model, [splits.train, splits.val])
    recipe = {"epochs": 4, "optimizer": "adam", "lr": 0.05, "scheduler": "plateau", "early_stopping_patience": 2}
    curriculum = {"curriculum": {"start_fraction": 0.3, "ramp_epochs": 2}}

    def students():
        return [
            new_state("baseline", build_method("baseline", recipe), lambda: LogisticModel(10, 1), seed=1),
            new_state("traditional", build_method("traditional", recipe), lambda: LogisticModel(10, 1), seed=2),
            new_state("step_by_step", build_method("step_by_step", {**recipe, **curriculum}), lambda: LogisticModel(10, 1), seed=3),
            new_state("enhanced", build_method("enhanced", recipe), lambda: MLPModel(10, 1, hidden=(6,)), seed=4, teacher_rationale_width=10),
        ]

    saves = []
    uninterrupted = students()
    fit(uninterrupted, TabularData(splits.train, splits.val, cache.take(splits.train.ids)), on_epoch_end=lambda states: saves.append(_as_read_back(states)))
    assert len(saves) >= 12  # every epoch of each of the three groups
    for save in saves:
        resumed = students()
        for state, saved in zip(resumed, save, strict=True):
            state.load_state_dict(saved)
        fit(resumed, TabularData(splits.train, splits.val, cache.take(splits.train.ids)))
        for state, expected in zip(resumed, uninterrupted):
            assert torch.equal(_params(state), _params(expected)), state.name
            assert state.history == expected.history and state.epoch == expected.epoch and state.stopped == expected.stopped


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A small experiment (CSV data, a logistic teacher trained here, logistic students of three
    methods with their learning rate tuned, early stopping, two runs) and its uninterrupted
    results in ``reference``; ``seconds``: how long that run took in this process."""
    directory = tmp_path_factory.mktemp("experiment")
    linear_binary(1500, 6, seed=4).to_csv(directory / "data.csv", index=False)
    config = {
        "data": {"path": "data.csv"},
        "teacher": {"kind": "logistic", "training": {"epochs": 3, "lr": 0.05}},
        "methods": {"baseline": {}, "step_by_step": {}, "enhanced": {}},
        "training": {"epochs": 12, "batch_size": 64, "early_stopping_patience": 3},
        "evaluation": {"repeats": 2},
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEPDISTILL_DEVICE", "cpu")  # bit-for-bit equality is promised on the CPU
        started = time.perf_counter()
        result = runner.invoke(app, ["--no-cache", "run", str(directory / "config.yaml"), "--out", str(directory / "reference")])
        seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    return {"directory": directory, "config": directory / "config.yaml", "reference": directory / "reference", "seconds": seconds}


@pytest.fixture(autouse=True)
def on_the_cpu(monkeypatch):
    monkeypatch.setenv("STEPDISTILL_DEVICE", "cpu")


def _default_sigint() -> None:
    """SIGINT as a terminal gives it: a process started in the background by a shell without job
    control inherits SIGINT ignored, and Python then keeps ignoring Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(config: Path, out: Path, store: Path) -> subprocess.Popen:
    """``stepdistill run CONFIG --out OUT`` in a process of its own, once it has saved an epoch."""
    command = [sys.executable, "-m", "stepdistill", "--cache-dir", str(store), "run", str(config), "--out", str(out)]
    return _started(command, out)


def _started(command: list[str], out: Path) -> subprocess.Popen:
    """``command`` in a process of its own, once it has saved an epoch checkpoint into ``out``."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    deadline = time.monotonic() + WAIT_SECONDS
    while not (out / "checkpoints" / "epoch.pt").is_file():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run saved no epoch checkpoint (exit {process.wait()}): {process.stderr.read()}")
        time.sleep(0.01)
    return process


def _resume(out: Path, store: Path):
    return runner.invoke(app, ["--cache-dir", str(store), "run", "--resume", str(out)])


def test_a_run_killed_at_a_random_moment_resumes_to_the_uninterrupted_results(experiment, tmp_path):
    store = tmp_path / "teacher-store"  # shared by the killed and the resumed process
    command = [sys.executable, "-m", "stepdistill", "--cache-dir", str(store), "run", str(experiment["config"])]
    _kill_at_a_random_moment(command, experiment["reference"], experiment["seconds"], tmp_path, store, random.randrange(2**32))


def _kill_at_a_random_moment(command: list[str], reference: Path, seconds: float, tmp_path: Path, store: Path, seed: int) -> None:
    """Start ``command`` (with ``--out`` appended) until it saves an epoch checkpoint, kill
    it (SIGKILL) at a random moment of its run, resume it, and compare with ``reference``."""
    rng = random.Random(seed)
    # Most of the reference run's time lies after its first epoch (training, timing, writing):
    # a kill within three quarters of it lands while the run goes. Should the run end first, a shorter
    # delay is drawn and the run started again.
    window = seconds * 3 / 4
    for attempt in range(3):
        out = tmp_path / f"killed-{attempt}"
        process = _started(command + ["--out", str(out)], out)
        delay = rng.uniform(0, window)
        time.sleep(delay)
        if process.poll() is None:
            break
        window /= 4
    else:
        pytest.fail(f"the run always ended before the kill (random seed {seed})")
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = sorted(p.name for p in (out / "checkpoints").iterdir()) if (out / "checkpoints").is_dir() else []
    context = f"killed {delay:.2f} s after the first epoch checkpoint, which left {saved} (random seed {seed})"
    if "experiment.json" in saved:
        result = _resume(out, store)
        assert result.exit_code == 0, f"{context}: {result.output}"
    else:  # killed while removing the checkpoints: the final files are all written
        assert (out / "results.json").is_file(), context
    _assert_same_as_reference(out, reference, seed)


@pytest.fixture(scope="module")
def lm_experiment(tmp_path_factory, dsbs_dir, smollm2):
    """The tiny lm-train example (64 CommonsenseQA training records, a tiny random Llama, the four
    methods) with two runs instead of three and 16 test records instead of 64, and its
    uninterrupted results in ``reference``."""
    directory = tmp_path_factory.mktemp("lm_experiment")
    config = yaml.safe_load((Path(__file__).parents[1] / "examples" / "lm_train_cqa_tiny.yaml").read_text())
    config["evaluation"]["repeats"] = 2
    config["data"]["max_test_records"] = 16
    (directory / "lm.yaml").write_text(yaml.safe_dump(config))
    command = ["lm-train", str(directory / "lm.yaml"), "--data-dir", str(dsbs_dir)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEPDISTILL_DEVICE", "cpu")
        started = time.perf_counter()
        result = runner.invoke(app, ["--quiet", *command, "--out", str(directory / "reference")])
        seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    return {"command": command, "reference": directory / "reference", "seconds": seconds}


def test_an_lm_train_run_killed_at_a_random_moment_resumes_to_the_uninterrupted_results(lm_experiment, tmp_path):
    """Generative students resume as tabular ones do: the same results.json, the same chosen student."""
    command = [sys.executable, "-m", "stepdistill", "--quiet", *lm_experiment["command"]]
    store = tmp_path / "teacher-store"
    _kill_at_a_random_moment(command, lm_experiment["reference"], lm_experiment["seconds"], tmp_path, store, random.randrange(2**32))


def test_ctrl_c_stops_cleanly_and_the_run_resumes(experiment, tmp_path):
    out, store = tmp_path / "interrupted", tmp_path / "teacher-store"
    process = _start(experiment["config"], out, store)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=WAIT_SECONDS) == 130
    stderr = process.stderr.read()
    assert error_lines(stderr) == stderr.splitlines()[-1:] == [f"interrupted; resume with: stepdistill run --resume {out}"], stderr
    assert (out / "checkpoints" / "experiment.json").is_file()
    assert not (out / "results.json").exists() and not list(out.parent.glob(f".{out.name}.*"))

    # A new run into the same directory would lose the interrupted one: refused.
    result = runner.invoke(app, ["--no-cache", "run", str(experiment["config"]), "--out", str(out)])
    message = one_error_line(result)
    assert f"--resume {out}" in message and "another --out" in message
    assert (out / "checkpoints" / "experiment.json").is_file()

    # Data that changed since the run started is not resumed on.
    data = experiment["directory"] / "data.csv"
    original = data.read_bytes()
    try:
        data.write_bytes(original + original.splitlines(True)[-1])  # one row more
        result = _resume(out, store)
        assert "data changed" in one_error_line(result, alone=True)
    finally:
        data.write_bytes(original)

    # Nor is an edited config file: the run would go on with the stored config, ignoring the edit.
    config = experiment["config"]
    written = config.read_text()
    try:
        edited = yaml.safe_load(written)
        edited["training"]["epochs"] = 20
        edited["evaluation"]["scheme"] = "cv"
        config.write_text(yaml.safe_dump(edited))
        line = one_error_line(_resume(out, store), alone=True)
        assert "config file changed" in line and "evaluation.scheme, training.epochs" in line
    finally:
        config.write_text(written)

    result = _resume(out, store)
    assert result.exit_code == 0, result.output
    _assert_same_as_reference(out, experiment["reference"])


def test_resume_needs_an_unfinished_run_and_excludes_a_config(experiment, tmp_path):
    result = runner.invoke(app, ["run", "--resume", str(tmp_path)])
    assert f"{tmp_path} has no unfinished run to resume" in one_error_line(result)
    result = runner.invoke(app, ["run", "--resume", str(experiment["reference"])])  # finished: nothing to resume
    assert "no unfinished run" in one_error_line(result)
    for arguments in ([], [str(experiment["config"]), "--resume", str(tmp_path)]):
        result = runner.invoke(app, ["run", *arguments])
        assert "exactly one" in one_error_line(result)
    result = runner.invoke(app, ["run", "--resume", str(tmp_path), "--out", str(tmp_path / "elsewhere")])
    assert "leave out --out" in one_error_line(result)


def test_an_interrupted_demo_resumes_from_its_preset(tmp_path, monkeypatch):
    from stepdistill import presets
    from stepdistill.experiment.checkpoints import Checkpoints

    monkeypatch.setattr(presets, "DEMO_ROWS", 3000)
    out = tmp_path / "demo"
    demo = ["--no-cache", "demo", "--preset", "article", "--repeats", "2", "--out", str(out)]
    save_run = Checkpoints.save_run

    def ctrl_c_once_run_0_is_saved(self, run, track):
        save_run(self, run, track)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Checkpoints, "save_run", ctrl_c_once_run_0_is_saved)
        result = runner.invoke(app, demo)
    assert result.exit_code == 130
    assert error_lines(result.stderr) == result.stderr.splitlines()[-1:] == [f"interrupted; resume with: stepdistill run --resume {out}"], result.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["experiment.json", "run-0.pt"]
    refused = runner.invoke(app, demo)
    assert "--resume" in one_error_line(refused)

    result = runner.invoke(app, ["--no-cache", "run", "--resume", str(out)])  # the preset's data, made again
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["preset"] == "article" and results["evaluation"]["runs"] == 2
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.5])
def test_ctrl_c_at_any_moment_of_start_up_is_one_line(experiment, tmp_path, delay):
    """Ctrl-C while Python imports, arguments are parsed, the data is read or the first students
    are built: one line, exit code 130, no traceback, nothing in --out but what a resume needs.
    How far the run got, and so how many progress lines it printed, depends on the machine's
    speed: the error line is told from them by what it says (``error_lines``)."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "stepdistill", "--no-cache", "run", str(experiment["config"]), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    errors = error_lines(stderr)
    assert len(errors) == 1 and errors[0] == stderr.splitlines()[-1] and errors[0].startswith("interrupted"), stderr
    assert not (out / "results.json").exists()


class _SavedState:
    def __init__(self, epoch: int):
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}


def test_an_epoch_checkpoint_slow_to_write_waits_for_training_to_outlast_it(tmp_path, monkeypatch):
    from stepdistill.experiment import checkpoints
    from stepdistill.experiment.checkpoints import Checkpoints

    saved = Checkpoints.start(tmp_path)
    saved.experiment = {"track": "tabular"}
    monkeypatch.setattr(checkpoints, "CHECKPOINT_SLOW_SECONDS", 0.0)  # every write counts as slow here
    monkeypatch.setattr(checkpoints, "CHECKPOINT_COST_RATIO", 1e6)
    saved.save_epoch(0, 1.0, [_SavedState(1)])
    saved.save_epoch(0, 1.0, [_SavedState(2)])  # too soon after the last write: skipped
    assert saved.epoch_states(0, 1.0) == [{"epoch": 1}]
    monkeypatch.setattr(checkpoints, "CHECKPOINT_COST_RATIO", 0)
    saved.save_epoch(0, 1.0, [_SavedState(3)])
    assert saved.epoch_states(0, 1.0) == [{"epoch": 3}]
