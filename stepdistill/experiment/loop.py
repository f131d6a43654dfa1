"""One experiment, whatever its students: runs that vary the data, labelled fractions, every
method's students trained and tested in each run, compared with their controls, and summarized.

Each run (``Track.runs``) has its own train/validation split (and test split, unless a test file
fixes it) and its own seed. Within a run, at each labelled fraction the students see the human
labels of nested shares of the run's training and validation rows (``data.repeats``: a smaller
fraction's labelled rows are among a larger one's), while the teacher's outputs serve on every
row. Every method's candidates (its settings times its tuning grid, ``MethodsConfig.candidates``)
train together (``engines.base.fit``); the validation split picks each method's candidate and
drives the learning-rate scheduler and early stopping; the test split is read once, after
training (``Track.test``). Every method is compared, run by run, with a control trained the same
way (``MethodsConfig.with_matched_controls``), or with the method a study names; summary.py turns
the runs into the results dict.

A *track* supplies what differs between kinds of students (tabular.py: tables, and text records
read through sentence features; lm.py: generative language models): how the data is read, each
run's data and teacher prepared, the students built, what they train on, how they are tested and
what is kept of them.

Given checkpoints (checkpoints.py), the students of the run under way are saved after every epoch
and each run once it is finished, so that an interrupted experiment resumes: finished runs are
read back, the interrupted one continues from its last epoch (its teacher rebuilt as before), and
the results are those of an uninterrupted experiment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from stepdistill.data.repeats import RunRows, labelled_mask, labelled_order
from stepdistill.engines.base import TrainingData, TrainState, epochs_left, fit
from stepdistill.errors import StepDistillError
from stepdistill.evaluate import LOWER_IS_BETTER
from stepdistill.experiment.checkpoints import Checkpoints
from stepdistill.experiment.records import FinishedRun, Labelled, RunResult, TeacherFacts, Trained
from stepdistill.experiment.summary import SELECTION_METRIC, Setup, summarize_experiment
from stepdistill.methods import MethodsConfig
from stepdistill.progress import SILENT, Progress
from stepdistill.run_dir import RunStudents
from stepdistill.terms import Method, method_of


class Track:
    """What a kind of experiment supplies to the loop. ``config`` is its ``MethodsConfig``;
    ``kind`` names the track in checkpoints; ``compared_metrics`` are the test metrics each method
    is compared with its control on (the first is the headline one); ``setup()`` tells the
    summary how the experiment was set up. A run's ``context`` and a fraction's ``at`` are the
    track's own objects, handed back to it."""

    kind: str
    config: MethodsConfig
    compared_metrics: tuple[str, ...]

    def read(self, progress: Progress) -> None:
        """Read and check the data, once, before any run."""
        raise NotImplementedError

    def fingerprints(self) -> dict:
        """What identifies the data, so that a resumed experiment runs on the same."""
        raise NotImplementedError

    def runs(self, hidden_labels: bool) -> list[RunRows]:
        """The runs; with ``hidden_labels`` (a labelled fraction below 1), drawn without reading
        any label, so that a hidden label cannot decide which rows a run trains on."""
        raise NotImplementedError

    def start_run(self, run: RunRows, labelled: Labelled, progress: Progress):
        """The run's ``context``: its data and its teacher (one that learns from labels here
        learns from the ``labelled`` rows, those of the largest fraction)."""
        raise NotImplementedError

    def teacher_facts(self, context) -> TeacherFacts:
        raise NotImplementedError

    def split_ids(self, context) -> tuple[list[str], list[str], list[str]]:
        """The ids of the run's training, validation and test rows, in the order of ``run``'s."""
        raise NotImplementedError

    def settle(self, config: MethodsConfig, teacher: TeacherFacts, compare_with: str | None) -> tuple[MethodsConfig, dict, list[str]]:
        """The methods that run, given run 0's teacher, with the control each is compared with,
        and warnings: by default ``settle_controls``."""
        config, control_of = settle_controls(config, compare_with)
        return config, control_of, []

    def at_fraction(self, context, run: RunRows, labelled: Labelled, progress: Progress):
        """What the students train and are tested on at a labelled fraction (``at``)."""
        raise NotImplementedError

    def n_train(self, at) -> int:
        raise NotImplementedError

    def new_states(self, at, methods: list[Method], seeds: list[int]) -> list[TrainState]:
        """A fresh student for every method, initialized from its seed (``seeds``, in order)."""
        raise NotImplementedError

    def training_data(self, at) -> TrainingData:
        raise NotImplementedError

    def validation_metrics(self, at, state: TrainState) -> dict[str, float]:
        """The trained student's metrics on the validation rows it may see (``log_loss`` among them)."""
        raise NotImplementedError

    def test(self, at, trained: dict[str, Trained], measure: bool) -> RunResult:
        """The test split, read once: every model's metrics on it; with ``measure``, also what a
        student costs to run (speed.py)."""
        raise NotImplementedError

    def kept(self, context, trained: dict[str, Trained], run: RunRows) -> RunStudents:
        """What is kept of the run's students (on the CPU), to be saved with the results."""
        raise NotImplementedError

    def warnings(self, results: list[RunResult]) -> list[str]:
        """What the user should know about the results (each run's at the largest fraction)."""
        return []

    def setup(self) -> Setup:
        raise NotImplementedError

    def saved_students(self, students: RunStudents) -> dict:
        """``students`` as checkpoints keep them (tensors, dicts, lists and primitives only)."""
        raise NotImplementedError

    def students_from(self, saved: dict, index: int) -> RunStudents:
        """``saved_students`` undone."""
        raise NotImplementedError

    def write_students(self, staging_dir: Path, results: dict, students: list[RunStudents]) -> list[str]:
        """Save the students to deploy into ``staging_dir``; returns the top-level names written."""
        raise NotImplementedError

    @property
    def main_process(self) -> bool:
        """Whether this process reports and writes: of several training as one, the main one."""
        return True

    def barrier(self) -> None:
        """Wait until every process training as one gets here (alone: at once)."""


@dataclass
class Experiment:
    """What ``run_fractions`` produced: the results dict at each labelled fraction (ascending),
    and each run as it finished."""

    results_by_fraction: dict[float, dict]
    runs: list[FinishedRun]

    @property
    def students(self) -> list[RunStudents]:
        """Each run's students (of the largest fraction)."""
        return [run.students for run in self.runs]

    @property
    def results(self) -> dict:
        """The results at the largest fraction (a plain run's only one)."""
        return self.results_by_fraction[max(self.results_by_fraction)]


def run_fractions(
    track: Track,
    fractions: Sequence[float],
    progress: Progress = SILENT,
    checkpoints: Checkpoints | None = None,
    compare_with: str | None = None,
    description: dict | None = None,
) -> Experiment:
    """The experiment at each labelled fraction, on the same runs: per run, one teacher (trained
    on every training label, unless it learns from the labels the students see) serves every
    fraction. ``compare_with`` names the method every other is compared with instead of its
    control. With ``checkpoints``, runs finished there are read back instead of run again, and
    the one under way resumes from its last epoch (see the module's docstring)."""
    fractions = sorted(fractions)
    asked = track.config  # run 0's teacher decides which methods (and controls) run
    asked.check()
    if checkpoints is not None:
        checkpoints.begin(track, description or {}, fractions, compare_with)
    track.read(progress)
    runs = track.runs(hidden_labels=fractions[0] < 1)
    finished_runs: list[FinishedRun] = []
    with progress.task(f"{len(runs)} runs ({track.setup().scheme})", len(runs)) as advance:
        for run in runs:
            finished = None if checkpoints is None else checkpoints.finished_run(run.index, track)
            labelled = {fraction: labelled_rows(run, fraction) for fraction in fractions}
            if finished is None:
                context = track.start_run(run, labelled[fractions[-1]], progress)
                teacher = track.teacher_facts(context)
            else:
                teacher = finished.teacher
            if run.index == 0:  # before any student trains, from run 0's teacher whether live or read back
                config, control_of, warnings = track.settle(asked, teacher, compare_with)
            if finished is None:
                finished = _train_and_test(track, config, context, run, labelled, teacher, progress, checkpoints, config.tuning_draws(control_of))
                if checkpoints is not None:
                    checkpoints.save_run(finished, track)
            finished_runs.append(finished)
            headline = track.compared_metrics[0]
            value = finished.results[-1].teacher["test"][headline]
            progress.note(f"run {run.index + 1}/{len(runs)} done (teacher test {headline.replace('_', ' ')} {value:.3f})")
            advance()
    warnings += list(finished_runs[0].teacher.notes) + track.warnings([f.results[-1] for f in finished_runs])
    for message in warnings:
        progress.note(f"warning: {message}")
    teacher_seconds = [f.teacher.train_seconds for f in finished_runs if f.teacher.train_seconds is not None]
    context = {
        "config": config,
        "control_of": control_of,
        "compared_metrics": track.compared_metrics,
        "teacher_params": finished_runs[-1].teacher.params,
        "teacher_seconds": float(np.mean(teacher_seconds)) if teacher_seconds else None,
        "seconds": finished_runs[0].seconds,
        "warnings": warnings,
        "description": description,
        "setup": track.setup(),
    }
    by_fraction = {f: summarize_experiment([run.results[i] for run in finished_runs], fraction=f, **context) for i, f in enumerate(fractions)}
    return Experiment(by_fraction, finished_runs)


def settle_controls(config: MethodsConfig, compare_with: str | None) -> tuple[MethodsConfig, dict[str, str | None]]:
    """The config with the control each method is compared with: its matched control
    (``with_matched_controls``), or ``compare_with``."""
    if compare_with is None:
        return config.with_matched_controls()
    if compare_with not in config.methods:
        raise StepDistillError(f"the methods have no {compare_with!r} to compare the others with; add it under methods")
    return config, {name: None if name == compare_with else compare_with for name in config.methods}


def _train_and_test(
    track: Track,
    config: MethodsConfig,
    context,
    run: RunRows,
    labelled_at: dict[float, Labelled],
    teacher: TeacherFacts,
    progress: Progress,
    checkpoints: Checkpoints | None,
    draws: dict[str, int],
) -> FinishedRun:
    """The run's students at each fraction (``labelled_at``: the rows whose labels they see),
    trained (or resumed from ``checkpoints``) and tested, each method choosing among ``draws``
    candidates; in run 0, also what a method costs and buys: its student's training time alone,
    and the speed of every model."""
    train_ids, val_ids, test_ids = track.split_ids(context)
    split = {"train": train_ids, "validation": val_ids, "test": test_ids, "labelled": {}}
    fractions = list(labelled_at)
    results, seconds = [], {}
    for fraction, labelled in labelled_at.items():
        split["labelled"][fraction] = [i for mask, ids in ((labelled.train, train_ids), (labelled.val, val_ids)) for i, seen in zip(ids, _all_if_none(mask, ids)) if seen]
        at = track.at_fraction(context, run, labelled, progress)
        saved = None if checkpoints is None else checkpoints.epoch_states(run.index, fraction)
        checkpoint = None if checkpoints is None else partial(checkpoints.save_epoch, run.index, fraction)
        trained = train_students(track, config, at, run.seed, progress, saved, checkpoint, draws)
        measured = run.index == 0 and fraction == fractions[-1]  # what a method costs and buys, measured once
        if measured:  # training ends before the test split is read
            seconds = time_alone(track, config, at, trained, run.seed, progress)
        results.append(track.test(at, trained, measure=measured))
    return FinishedRun(run.index, results, track.kept(context, trained, run), teacher, seconds, split)


def _all_if_none(mask: np.ndarray | None, ids: list[str]) -> np.ndarray:
    return np.ones(len(ids), dtype=bool) if mask is None else mask


def labelled_rows(run: RunRows, fraction: float) -> Labelled:
    """The run's training and validation rows whose labels the students see at ``fraction``:
    drawn at random for the run's seed, without reading any label, and nested (a smaller
    fraction's are among a larger one's)."""
    if fraction >= 1:
        return Labelled(None, None)
    return Labelled(*(labelled_mask(labelled_order(len(rows), run.seed + k), fraction) for k, rows in enumerate((run.train, run.val))))


def train_students(
    track: Track,
    config: MethodsConfig,
    at,
    seed: int,
    progress: Progress = SILENT,
    saved: list[dict] | None = None,
    checkpoint: Callable[[list[TrainState]], None] | None = None,
    draws: dict[str, int] | None = None,
) -> dict[str, Trained]:
    """Every method's candidates (its settings times its tuning grid, repeated with other seeds
    up to its ``draws``), trained together from ``seed``; per method, the candidate with the
    best validation metric is kept. The test split plays no part. ``saved``: the candidates'
    states (``TrainState.state_dict``, in order) to resume from; ``checkpoint(states)`` is called
    after every epoch."""
    n_train = track.n_train(at)
    candidates = {name: _drawn(config.candidates(name, n_train), (draws or {}).get(name, 1)) for name in config.methods}
    methods = [method_of(config.method_spec(name, _settings(c))) for name, cs in candidates.items() for c in cs]
    states = track.new_states(at, methods, [seed + DRAW_SEED_STEP * c.get(DRAW, 0) for cs in candidates.values() for c in cs])
    if saved is not None:
        for state, state_dict in zip(states, saved, strict=True):
            state.load_state_dict(state_dict)
    fit_with_progress(states, track.training_data(at), progress, f"training {len(states)} students", checkpoint)
    metric = config.tune.metric if config.tune else SELECTION_METRIC
    sign = 1 if metric in LOWER_IS_BETTER else -1  # the best candidate has the lowest sign * metric
    scores = iter(track.validation_metrics(at, s)[metric] for s in states)
    states_left = iter(states)
    trained = {}
    for name, settings in candidates.items():
        trials = [{"settings": c, "state": next(states_left), metric: next(scores)} for c in settings]
        # A diverged candidate is never chosen while another finished.
        best = min(trials, key=lambda t: (t["state"].diverged is not None, sign * t[metric]))
        trained[name] = Trained(best["state"], best["settings"], [{"settings": t["settings"], metric: t[metric]} for t in trials])
    return trained


# A repeated candidate's number (from 1) among its settings' draws, in its record, and how far
# apart the seeds of its draws are.
DRAW = "draw"
DRAW_SEED_STEP = 7919


def _drawn(candidates: list[dict], draws: int) -> list[dict]:
    """``candidates`` repeated in turn up to ``draws`` of them (at least each once), a repeat
    marked with its draw number."""
    n = max(draws, len(candidates))
    return [{**candidates[i % len(candidates)], **({DRAW: i // len(candidates)} if i >= len(candidates) else {})} for i in range(n)]


def _settings(candidate: dict) -> dict:
    return {k: v for k, v in candidate.items() if k != DRAW}


def time_alone(track: Track, config: MethodsConfig, at, trained: dict[str, Trained], seed: int, progress: Progress = SILENT) -> dict[str, float]:
    """Seconds to train each method's chosen student alone (what the method costs), measured
    anew for students that trained stacked with others (whose shared time is not theirs)."""
    seconds = {}
    for name, chosen in trained.items():
        if chosen.state.seconds is None:
            [state] = track.new_states(at, [method_of(config.method_spec(name, _settings(chosen.settings)))], [seed + DRAW_SEED_STEP * chosen.settings.get(DRAW, 0)])
            fit_with_progress([state], track.training_data(at), progress, f"timing {name} alone")
            seconds[name] = state.seconds
        else:
            seconds[name] = chosen.state.seconds
    return seconds


def fit_with_progress(
    states: list[TrainState],
    data: TrainingData,
    progress: Progress,
    description: str,
    checkpoint: Callable[[list[TrainState]], None] | None = None,
) -> None:
    """``fit``, its epochs shown as a task of ``progress``, with ``checkpoint(states)`` after each."""
    left = epochs_left(states)
    with progress.task(description, left) as advance:

        def on_epoch_end(states: list[TrainState]) -> None:
            nonlocal left
            now = epochs_left(states)
            advance(left - now)
            left = now
            if checkpoint is not None:
                checkpoint(states)

        fit(states, data, on_epoch_end=on_epoch_end)
