"""Checkpoints of an experiment under way, so that an interrupted one resumes where it stopped.

While an experiment trains (``stepdistill run``, ``demo``, ``lm-train``, ``ablate``,
``sweep-data``), its out directory holds::

    checkpoints/experiment.json   what the experiment is: its track (tabular, lm), its config, the
                                  description of where it came from (config file or preset, the
                                  study), its labelled fractions and the method the others are
                                  compared with, the data's fingerprints, and the working
                                  directory its relative file paths start from
    checkpoints/epoch.pt          the training under way: its run and labelled fraction, and every
                                  student's full training state (TrainState.state_dict: model,
                                  projection, optimizer, scheduler, weight controllers, random
                                  generator, early stopping and best weights, epoch, history,
                                  divergence, timings), rewritten after every epoch (or,
                                  where writing it takes over CHECKPOINT_SLOW_SECONDS, as
                                  fine-tuned encoders' states do, once training has run
                                  CHECKPOINT_COST_RATIO times as long as the last write took)
    checkpoints/run-<i>.pt        run i, finished: its results at each labelled fraction, its
                                  students as the track keeps them (``Track.saved_students``),
                                  what its teacher measured, and in run 0 each method's training
                                  time alone

The folder appears with the first epoch checkpoint (an experiment that fails before training
leaves nothing) and goes once the experiment's final files are written. Every file is written
atomically: to a temporary file in the same directory, flushed to disk, then renamed over the old
one, so a process killed at any moment leaves each file whole, old or new. A run's file is written
before the epoch checkpoint it supersedes is removed. Of several processes training as one
(``accelerate launch``), the main one writes; every one reads.

Files hold only tensors, dicts, lists, tuples and primitives (numpy arrays become tensors, marked
to come back as arrays) and load with ``torch.load(weights_only=True)``: reading a checkpoint runs
no code.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from stepdistill.engines.base import TrainState
from stepdistill.errors import StepDistillError
from stepdistill.experiment.records import FinishedRun, RunResult, TeacherFacts
from stepdistill.files import write_atomically

CHECKPOINTS_DIR = "checkpoints"
EXPERIMENT_JSON = "experiment.json"
EPOCH_FILE = "epoch.pt"
# Marks a numpy array saved as a tensor, so that it is read back as an array.
NDARRAY = "__ndarray__"
# An epoch checkpoint that took over CHECKPOINT_SLOW_SECONDS to write is rewritten only after
# training has run CHECKPOINT_COST_RATIO times as long: every state of four fine-tuned encoders is
# a gigabyte, and writing it every epoch would cost about what the epoch does.
CHECKPOINT_SLOW_SECONDS = 1.0
CHECKPOINT_COST_RATIO = 10
# How to continue an interrupted experiment, whatever its kind.
RESUME_COMMAND = "stepdistill run --resume"


class Checkpoints:
    """The ``checkpoints/`` folder of an out directory, for the experiment ``experiment``
    (``describe_experiment``: set by ``begin`` for a new one) started or resumed there. ``writes``:
    whether this process writes (of several training as one, the main process alone)."""

    def __init__(self, out_dir: Path, experiment: dict | None = None, writes: bool = True, source: dict | None = None):
        self.out_dir = Path(out_dir)
        self.directory = self.out_dir / CHECKPOINTS_DIR
        self.experiment = experiment
        self.writes = writes
        self.source = source
        self._last_epoch_write: tuple[float, float] | None = None  # (when it ended, seconds it took)

    @classmethod
    def start(cls, out_dir: Path, writes: bool = True, source: dict | None = None) -> Checkpoints:
        """Checkpoints for a new experiment in ``out_dir``, made from the config file whose YAML
        mapping is ``source`` (None: a preset); refused while ``out_dir`` holds an unfinished one."""
        checkpoints = cls(out_dir, writes=writes, source=source)
        cls.refuse_unfinished(out_dir)
        if writes:  # left by a removal cut short (see remove): files of a finished experiment, never to be read
            shutil.rmtree(checkpoints.directory, ignore_errors=True)
        return checkpoints

    @staticmethod
    def refuse_unfinished(out_dir: Path) -> None:
        """Refuse to start a new experiment where an unfinished one waits to be resumed."""
        if (Path(out_dir) / CHECKPOINTS_DIR / EXPERIMENT_JSON).is_file():
            raise StepDistillError(f"{out_dir} holds an unfinished run; resume it with: {RESUME_COMMAND} {out_dir}, or pass another --out")

    @classmethod
    def resume(cls, out_dir: Path, writes: bool = True) -> Checkpoints:
        """The checkpoints of the unfinished experiment in ``out_dir``."""
        path = Path(out_dir) / CHECKPOINTS_DIR / EXPERIMENT_JSON
        if not path.is_file():
            raise StepDistillError(
                f"{out_dir} has no unfinished run to resume; pass the --out directory of an interrupted stepdistill run, demo, lm-train or study"
            )
        return cls(out_dir, json.loads(path.read_text(encoding="utf-8")), writes)

    def unfinished(self) -> bool:
        return (self.directory / EXPERIMENT_JSON).is_file()

    # --- what the experiment is ------------------------------------------------------------

    def begin(self, track, description: dict, fractions: list[float], compare_with: str | None) -> None:
        """Describe a new experiment of ``track`` (its data read), or check that a resumed one's
        data is what it started on."""
        fingerprints = track.fingerprints()
        if self.experiment is None:
            self.experiment = describe_experiment(track, description, fractions, compare_with, fingerprints, self.source)
        elif fingerprints != self.experiment["fingerprints"]:
            raise StepDistillError(
                f"the data changed since the run in {self.out_dir} started (its fingerprint differs); restore it,"
                " or start afresh with another --out"
            )

    def check_source(self, current: dict | None) -> None:
        """Refuse to resume when the config file the experiment was made from now says something
        else (``current``: its YAML mapping now; None when it is gone, or for a preset): a resumed
        run would use the stored config and ignore the edit."""
        recorded = self.experiment.get("source")
        if recorded is None or current is None or current == recorded:
            return
        changed = sorted(_changed_keys(recorded, current))
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise StepDistillError(
            f"the config file changed since the run in {self.out_dir} started ({shown}); restore it to resume,"
            " or start afresh with another --out"
        )

    def check_working_directory(self, config) -> None:
        """Refuse to resume where the config's relative file paths do not lead where they did."""
        started_in = Path(self.experiment["working_directory"])
        if config.relative_paths() and Path.cwd() != started_in:
            raise StepDistillError(
                f"the run's config names files relative to {started_in}, where it started; run {RESUME_COMMAND} from there"
            )

    # --- during the experiment -------------------------------------------------------------

    def save_epoch(self, run_index: int, fraction: float, states: list[TrainState]) -> None:
        if self._last_epoch_write is not None:
            ended, took = self._last_epoch_write
            if took > CHECKPOINT_SLOW_SECONDS and time.perf_counter() - ended < CHECKPOINT_COST_RATIO * took:
                return
        started = time.perf_counter()
        self._save(EPOCH_FILE, {"run": run_index, "fraction": fraction, "states": [s.state_dict() for s in states]})
        ended = time.perf_counter()
        self._last_epoch_write = (ended, ended - started)

    def epoch_states(self, run_index: int, fraction: float) -> list[dict] | None:
        """The students' states last saved while training run ``run_index`` at ``fraction``, or None."""
        path = self.directory / EPOCH_FILE
        if not path.is_file():
            return None
        saved = _load(path)
        return saved["states"] if (saved["run"], saved["fraction"]) == (run_index, fraction) else None

    def save_run(self, run: FinishedRun, track) -> None:
        saved = {
            "index": run.index,
            "results": [_fields(result) for result in run.results],
            "students": track.saved_students(run.students),
            "teacher": _fields(run.teacher),
            "seconds": run.seconds,
            "split": run.split,
        }
        self._save(_run_file(run.index), _saveable(saved))
        if self.writes:
            (self.directory / EPOCH_FILE).unlink(missing_ok=True)

    def finished_run(self, index: int, track) -> FinishedRun | None:
        """Run ``index`` as it finished, or None if it has not."""
        path = self.directory / _run_file(index)
        if not path.is_file():
            return None
        saved = _restored(_load(path))
        results = [RunResult(**fields) for fields in saved["results"]]
        return FinishedRun(index, results, track.students_from(saved["students"], index), TeacherFacts(**saved["teacher"]), saved["seconds"], saved["split"])

    def remove(self) -> None:
        """Remove the folder: the experiment is over. Its description goes first, so that a
        removal cut short leaves no unfinished experiment behind."""
        if self.writes:
            (self.directory / EXPERIMENT_JSON).unlink(missing_ok=True)
            shutil.rmtree(self.directory, ignore_errors=True)

    def _save(self, name: str, payload: dict) -> None:
        if not self.writes:
            return
        if not self.unfinished():
            self.directory.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.experiment, indent=2) + "\n"
            write_atomically(self.directory / EXPERIMENT_JSON, text.encode("utf-8"))
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_atomically(self.directory / name, buffer.getvalue())


def describe_experiment(
    track, description: dict, fractions: list[float], compare_with: str | None, fingerprints: dict, source: dict | None = None
) -> dict:
    """What ``Checkpoints`` keep to rebuild an experiment: its track, the config (only the
    settings given, so that defaults stay defaults when it is read back), the description, the
    fractions and the method compared with, the data's fingerprints, the working directory, and
    the config file's YAML mapping as it was (``source``), to tell an edited file on resume."""
    return {
        "track": track.kind,
        "config": track.config.model_dump(mode="json", exclude_unset=True),
        "description": description,
        "fractions": list(fractions),
        "compare_with": compare_with,
        "fingerprints": fingerprints,
        "working_directory": str(Path.cwd()),
        "source": source,
    }


def _changed_keys(before, after, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two YAML mappings (a key added or removed
    counts as changed)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return [prefix or "the whole file"] if before != after else []
    changed = []
    for key in sorted(set(before) | set(after), key=str):
        where = f"{prefix}.{key}" if prefix else str(key)
        changed += _changed_keys(before.get(key), after.get(key), where) if key in before and key in after else [where]
    return changed


def _run_file(index: int) -> str:
    return f"run-{index}.pt"


def _load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a file damaged outside stepdistill: unpickling raises anything
        raise StepDistillError(f"checkpoint {path} cannot be read ({type(err).__name__}); start afresh with another --out") from err


def _fields(instance) -> dict:
    """A dataclass instance's fields by name, each as it is (new fields travel without code here)."""
    return {field.name: getattr(instance, field.name) for field in dataclasses.fields(instance)}


def _saveable(value):
    """``value`` with numpy arrays as marked tensors and numpy scalars as Python numbers; any
    other type than tensors, dicts, lists, tuples and primitives is an error here, not when the
    checkpoint is read back."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return {NDARRAY: torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _saveable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_saveable(item) for item in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def _restored(value):
    """``_saveable`` undone: marked tensors back to numpy arrays."""
    if isinstance(value, dict):
        if value.keys() == {NDARRAY}:
            return value[NDARRAY].numpy()
        return {key: _restored(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_restored(item) for item in value)
    return value
