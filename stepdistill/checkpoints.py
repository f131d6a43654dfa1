"""Checkpoints of an experiment under way, so that an interrupted one resumes where it stopped.

While ``stepdistill run`` or ``demo`` trains, its out directory holds::

    checkpoints/experiment.json   what the experiment is: its config, the description of where it
                                  came from (config file or preset), the data's fingerprints, and
                                  the working directory its relative file paths start from
    checkpoints/epoch.pt          the training under way: its run and labelled fraction, and every
                                  student's full training state (TrainState.state_dict: model,
                                  projection, optimizer, scheduler, weight controllers, random
                                  generator, early stopping and best weights, epoch, history,
                                  divergence, timings), rewritten after every epoch
    checkpoints/run-<i>.pt        run i, finished: its results at each labelled fraction, its
                                  students' weights and fitted encoder, what its teacher measured,
                                  and in run 0 each method's training time alone

The folder appears with the first epoch checkpoint (an experiment that fails before training
leaves nothing) and goes once the experiment's final files are written. Every file is written
atomically: to a temporary file in the same directory, flushed to disk, then renamed over the old
one, so a process killed at any moment leaves each file whole, old or new. A run's file is written
before the epoch checkpoint it supersedes is removed.

Files hold only tensors, dicts, lists, tuples and primitives (numpy arrays become tensors, marked
to come back as arrays) and load with ``torch.load(weights_only=True)``: reading a checkpoint runs
no code.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stepdistill.config import ExperimentConfig
from stepdistill.data.encode import FeatureEncoder
from stepdistill.engines.base import TrainState
from stepdistill.errors import StepDistillError
from stepdistill.experiment import FinishedRun, RunResult, TeacherFacts
from stepdistill.files import write_atomically
from stepdistill.run_dir import RunStudents, fingerprint, model_from_spec

CHECKPOINTS_DIR = "checkpoints"
EXPERIMENT_JSON = "experiment.json"
EPOCH_FILE = "epoch.pt"
# Marks a numpy array saved as a tensor, so that it is read back as an array.
NDARRAY = "__ndarray__"


class Checkpoints:
    """The ``checkpoints/`` folder of an out directory, for the experiment ``experiment``
    (``describe_experiment``) started or resumed there."""

    def __init__(self, out_dir: Path, experiment: dict):
        self.out_dir = Path(out_dir)
        self.directory = self.out_dir / CHECKPOINTS_DIR
        self.experiment = experiment

    @classmethod
    def start(cls, out_dir: Path, experiment: dict) -> Checkpoints:
        """Checkpoints for a new experiment in ``out_dir``; refused while it holds an unfinished one."""
        checkpoints = cls(out_dir, experiment)
        cls.refuse_unfinished(out_dir)
        # Left by a removal cut short (see remove): files of a finished experiment, never to be read.
        shutil.rmtree(checkpoints.directory, ignore_errors=True)
        return checkpoints

    @staticmethod
    def refuse_unfinished(out_dir: Path) -> None:
        """Refuse to start a new experiment where an unfinished one waits to be resumed."""
        if (Path(out_dir) / CHECKPOINTS_DIR / EXPERIMENT_JSON).is_file():
            raise StepDistillError(
                f"{out_dir} holds an unfinished run; resume it with: stepdistill run --resume {out_dir}, or pass another --out"
            )

    @classmethod
    def resume(cls, out_dir: Path) -> Checkpoints:
        """The checkpoints of the unfinished experiment in ``out_dir``."""
        path = Path(out_dir) / CHECKPOINTS_DIR / EXPERIMENT_JSON
        if not path.is_file():
            raise StepDistillError(
                f"{out_dir} has no unfinished run to resume; pass the --out directory of an interrupted stepdistill run or demo"
            )
        return cls(out_dir, json.loads(path.read_text(encoding="utf-8")))

    def unfinished(self) -> bool:
        return (self.directory / EXPERIMENT_JSON).is_file()

    # --- what the experiment is ------------------------------------------------------------

    @property
    def description(self) -> dict:
        return self.experiment["description"]

    def config(self) -> ExperimentConfig:
        """The experiment's config, as it was when the experiment started."""
        config = ExperimentConfig.model_validate(self.experiment["config"])
        started_in = Path(self.experiment["working_directory"])
        if _relative_paths(config) and Path.cwd() != started_in:
            raise StepDistillError(
                f"the run's config names files relative to {started_in}, where it started; run stepdistill run --resume from there"
            )
        return config

    def check_data(self, frame: pd.DataFrame, test_frame: pd.DataFrame | None) -> None:
        """Raise unless the data is what the experiment started on."""
        if data_fingerprints(frame, test_frame) != self.experiment["fingerprints"]:
            raise StepDistillError(
                f"the data changed since the run in {self.out_dir} started (its fingerprint differs); restore it,"
                " or start afresh with another --out"
            )

    # --- during the experiment -------------------------------------------------------------

    def save_epoch(self, run_index: int, fraction: float, states: list[TrainState]) -> None:
        self._save(EPOCH_FILE, {"run": run_index, "fraction": fraction, "states": [s.state_dict() for s in states]})

    def epoch_states(self, run_index: int, fraction: float) -> list[dict] | None:
        """The students' states last saved while training run ``run_index`` at ``fraction``, or None."""
        path = self.directory / EPOCH_FILE
        if not path.is_file():
            return None
        saved = _load(path)
        return saved["states"] if (saved["run"], saved["fraction"]) == (run_index, fraction) else None

    def save_run(self, run: FinishedRun) -> None:
        students = {name: {"spec": model.spec, "weights": model.state_dict()} for name, model in run.students.models.items()}
        saved = {
            "index": run.index,
            "results": [_fields(result) for result in run.results],
            "encoder": run.students.encoder.to_json(),
            "students": students,
            "teacher": _fields(run.teacher),
            "seconds": run.seconds,
        }
        self._save(_run_file(run.index), _saveable(saved))
        (self.directory / EPOCH_FILE).unlink(missing_ok=True)

    def finished_run(self, index: int) -> FinishedRun | None:
        """Run ``index`` as it finished, or None if it has not."""
        path = self.directory / _run_file(index)
        if not path.is_file():
            return None
        saved = _restored(_load(path))
        models = {}
        for name, student in saved["students"].items():
            models[name] = model_from_spec(student["spec"], path)
            models[name].load_state_dict(student["weights"])
            models[name].eval()
        students = RunStudents(index, FeatureEncoder.from_json(saved["encoder"]), models)
        results = [RunResult(**fields) for fields in saved["results"]]
        return FinishedRun(index, results, students, TeacherFacts(**saved["teacher"]), saved["seconds"])

    def remove(self) -> None:
        """Remove the folder: the experiment is over. Its description goes first, so that a
        removal cut short leaves no unfinished experiment behind."""
        (self.directory / EXPERIMENT_JSON).unlink(missing_ok=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _save(self, name: str, payload: dict) -> None:
        if not self.unfinished():
            self.directory.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.experiment, indent=2) + "\n"
            write_atomically(self.directory / EXPERIMENT_JSON, text.encode("utf-8"))
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_atomically(self.directory / name, buffer.getvalue())


def describe_experiment(config: ExperimentConfig, description: dict, frame: pd.DataFrame, test_frame: pd.DataFrame | None) -> dict:
    """What ``Checkpoints`` keep to rebuild an experiment: the config (only the settings given,
    so that defaults stay defaults when it is read back), the description, the data's
    fingerprints, and the working directory."""
    return {
        "config": config.model_dump(mode="json", exclude_unset=True),
        "description": description,
        "fingerprints": data_fingerprints(frame, test_frame),
        "working_directory": str(Path.cwd()),
    }


def data_fingerprints(frame: pd.DataFrame, test_frame: pd.DataFrame | None) -> dict:
    return {"data": fingerprint(frame), "test": None if test_frame is None else fingerprint(test_frame)}


def _relative_paths(config: ExperimentConfig) -> list[Path]:
    """The config's file paths that are relative to the working directory."""
    paths = [config.data.path, config.data.test_path, getattr(config.teacher, "path", None), getattr(config.teacher, "weights", None)]
    return [path for path in paths if path is not None and not path.is_absolute()]


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
