"""What the commands do, without the command line: run an experiment of either track (a run
config, a demo, an lm-train config, or a study of one) into a run directory, resume one, and
predict from a run directory.

A run directory is new or empty (``new_out``), or with ``overwrite`` one an earlier run wrote.
The data is read once; while the experiment trains, checkpoints in the directory let it resume
after an interruption (experiment/checkpoints.py); its files (results, report, students, a
study's pages) are written all at once at the end, then the checkpoints go.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from stepdistill.config import ExperimentConfig, load_config
from stepdistill.data.io import read_frame
from stepdistill.data.pool_file import PoolFile
from stepdistill.errors import StepDistillError
from stepdistill.experiment.checkpoints import CHECKPOINTS_DIR, RESUME_COMMAND, Checkpoints
from stepdistill.experiment.evidence import write_evidence
from stepdistill.experiment.lm import LMTrack
from stepdistill.experiment.loop import Experiment, Track, run_fractions
from stepdistill.experiment.summary import divergence_lines
from stepdistill.experiment.tabular import TabularTrack
from stepdistill.files import read_yaml_mapping, write_atomically
from stepdistill.lm.config import LMTrainConfig, load_lm_train_config
from stepdistill.progress import SILENT, Progress
from stepdistill.report.ablation import render_ablation_table, write_ablation
from stepdistill.report.size import render_size_table, write_sizes
from stepdistill.report.sweep import render_sweep_table, write_sweep
from stepdistill.report.table import render_speed_table, render_table
from stepdistill.report.write import write_report
from stepdistill.run_dir import CHOSEN_DIR
from stepdistill.students.config import MLPStudent
from stepdistill.studies import FULL, ablation_config, size_key, summarize_ablation, summarize_grid, summarize_sweep
from stepdistill.teachers.store import TeacherStore, default_store_directory

ABLATION, SWEEP, SIZES = "ablation", "sweep-data", "sweep-size"
# The file by which --overwrite recognizes an earlier study's directory.
STUDY_FILES = {ABLATION: "ablation.json", SWEEP: "sweep.json", SIZES: "sizes.json"}
# The files by which --overwrite recognizes an earlier run's directory.
RESULTS_FILES = ("results.json", "manifest.json")


# --- the --out policy ------------------------------------------------------------------------


def new_out(out: str, overwrite: bool, earlier: tuple[str, ...] = RESULTS_FILES) -> Path:
    """The ``--out`` directory of a new experiment, checked before any work: named, a directory,
    new or empty (or, with ``overwrite``, one an earlier run wrote: it holds one of
    ``earlier``), and writable."""
    if not out.strip():
        raise StepDistillError("--out is empty; name a directory, such as runs/run")
    path = Path(out)
    check_out(path)
    if path.is_dir() and any(path.iterdir()):
        Checkpoints.refuse_unfinished(path)
        if not overwrite:
            raise StepDistillError(f"--out {path} is not empty; pass a new or empty directory, or --overwrite to replace an earlier run's results")
        if not any((path / name).is_file() for name in earlier):
            raise StepDistillError(f"--out {path} holds files that are not an earlier run's results; --overwrite replaces only those, so pass another directory")
    _require_writable(path)
    return path


def check_out(out: Path) -> None:
    """Fail before any work, not after, when the output path cannot be a directory."""
    if out.exists() and not out.is_dir():
        raise StepDistillError(f"--out {out} is a file; pass a directory")


def check_out_file(out: Path, overwrite: bool, example: str) -> None:
    """Fail before any work when the file a command would write cannot be written as asked: a
    directory, or a file that exists and ``overwrite`` (``--overwrite``) does not replace."""
    if out.is_dir():
        raise StepDistillError(f"--out {out} is a directory; pass a file name such as {example}")
    if out.exists() and not overwrite:
        raise StepDistillError(f"{out} exists; pass --overwrite to replace it, or another --out")


def _require_writable(path: Path) -> None:
    """Refuse a directory that cannot be written (a read-only file system, a parent that is a
    file, no permission), trying its nearest existing folder so that nothing is left behind."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    try:
        with tempfile.TemporaryDirectory(dir=existing):
            pass
    except OSError as err:
        raise StepDistillError(f"cannot write --out {path}: {err.strerror or err} in {existing}; choose a directory you can write to") from err


def remove_stale(out: Path, written: list[Path]) -> None:
    """Remove what an earlier run left in ``out`` besides the files just ``written`` and the
    checkpoints (removed when the experiment ends)."""
    for entry in set(out.iterdir()) - set(written) - {out / CHECKPOINTS_DIR}:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


# --- what to run -----------------------------------------------------------------------------


@dataclass
class Job:
    """An experiment to run: its ``track``, where it came from (``description``, kept in the
    results), the study it is (None: a plain run, ``ABLATION``, ``SWEEP`` or ``SIZES``), its labelled
    fractions (a plain run's, an ablation's and a size sweep's: the config's one) and a size
    sweep's sizes."""

    track: Track
    description: dict
    study: str | None = None
    fractions: list[float] = field(default_factory=list)
    sizes: list[tuple[int, ...]] = field(default_factory=list)  # a size sweep's students' hidden layers

    def __post_init__(self):
        if not self.fractions:
            self.fractions = [self.track.config.data.labelled_fraction]


def is_lm_config(path: Path) -> bool:
    """Whether ``path`` is an lm-train config (its data names a task of the released
    distilling-step-by-step data) rather than a run config (whose data is a file)."""
    data = read_yaml_mapping(path, "data, student, teacher, methods, training, evaluation").get("data")
    return isinstance(data, dict) and "task" in data


def config_track(path: Path, teacher_store: TeacherStore | None, trust_pickle: bool = False, data_dir: Path | None = None) -> Track:
    """The track of the config file ``path``, of either kind; ``data_dir`` replaces an lm-train
    config's released-data folder; ``trust_pickle`` consents to a teacher whose loading runs code."""
    if is_lm_config(path):
        return lm_track(path, data_dir)
    return tabular_track(with_consent(load_config(path), trust_pickle), teacher_store)


def lm_track(path: Path, data_dir: Path | None = None) -> LMTrack:
    """The track of the lm-train config file ``path``; ``data_dir`` replaces its released-data folder."""
    config = load_lm_train_config(path)
    if data_dir is not None:
        config.data.data_dir = data_dir
    return LMTrack(config)


def tabular_track(config: ExperimentConfig, teacher_store: TeacherStore | None) -> TabularTrack:
    """The tabular track of ``config``, its data file (and fixed test file, and unlabelled pool) read once."""
    options = config.data.read_options()
    frame = read_frame(config.data.path, **options)
    test_frame = None if config.data.test_path is None else read_frame(config.data.test_path, **options)
    pool = None if config.data.unlabelled_path is None else PoolFile(config.data.unlabelled_path, options)
    return TabularTrack(config, frame, test_frame, teacher_store, pool=pool)


def preset_track(preset: str, repeats: int, data_dir: Path | None, teacher_store: TeacherStore | None, full: bool = False) -> tuple[TabularTrack, dict]:
    """A demo's track (``repeats`` runs; ``full``: its data whole) and its description."""
    from stepdistill import presets

    config, frame, test_frame = presets.demo(preset, repeats, data_dir, full)
    where = {"data_dir": str(presets.dsbs_directory(data_dir))} if preset in presets.DATA_DIR_PRESETS else {}
    size = {"full": full} if preset in presets.SUBSET_PRESETS else {}
    return TabularTrack(config, frame, test_frame, teacher_store), {"preset": preset} | where | size


def study_source(
    config: Path | None,
    preset: str | None,
    repeats: int | None,
    data_dir: Path | None,
    default_repeats: int,
    store: TeacherStore | None,
    trust_pickle: bool,
    full: bool = False,
) -> tuple[Track, dict]:
    """The track and description of what a study studies: a config file (of either kind), or a
    preset with ``repeats`` runs (else ``default_repeats``; ``full``: its data whole)."""
    if (config is None) == (preset is None):
        raise StepDistillError("give either CONFIG.yaml or --preset NAME (exactly one of them)")
    if repeats is not None and repeats < 1:
        raise StepDistillError(f"--repeats must be at least 1 (got {repeats})")
    if full and preset is None:
        raise StepDistillError("--full reads a preset's data whole, and a config reads the files it names; leave out --full")
    if preset is not None:
        return preset_track(preset, default_repeats if repeats is None else repeats, data_dir, store, full)
    return config_track(config, store, trust_pickle, data_dir), {"config_file": str(config)}


def teacher_store(cache_dir: Path | None, no_cache: bool) -> TeacherStore | None:
    """Where teacher outputs are kept between runs (``cache_dir``, else the default), or None."""
    return None if no_cache else TeacherStore(cache_dir or default_store_directory())


def with_consent(config: ExperimentConfig, trust_pickle: bool) -> ExperimentConfig:
    """The config with ``--trust-pickle`` given to a teacher whose loading runs code."""
    if trust_pickle and "trust_pickle" in type(config.teacher).model_fields:
        return config.model_copy(update={"teacher": config.teacher.model_copy(update={"trust_pickle": True})})
    return config


def study_job(
    track: Track, description: dict, study: str, repeats: int | None, default_repeats: int, fractions: list[float] | None = None, sizes: list | None = None
) -> Job:
    """A study of ``track``'s config: ``repeats`` runs (else the config's if it sets them, else
    ``default_repeats``); an ablation's variants as methods, a sweep's ``fractions`` or ``sizes``."""
    config = track.config
    evaluation = config.evaluation
    runs = repeats if repeats is not None else evaluation.repeats if "repeats" in evaluation.model_fields_set else default_repeats
    config = config.model_copy(update={"evaluation": evaluation.model_copy(update={"repeats": runs})})
    if study == ABLATION:
        config = ablation_config(config)
    if study == SIZES and (not isinstance(track, TabularTrack) or config.student.kind not in ("logistic", "mlp")):
        raise StepDistillError("sweep-size sizes MLP students of a table or of text records' features; give a run config whose student is logistic or mlp")
    track.config = config
    return Job(track, {**description, "study": study}, study, fractions or [], sizes or [])


def size_sweep(job: Job, progress: Progress) -> tuple[Experiment, dict]:
    """The job's experiment once per student size (an MLP with those hidden layers), on the same
    runs (the same splits, teachers and seeds), and their summary, one Holm family for the
    sweep; the last size's experiment stands for how the runs were made."""
    track, base = job.track, job.track.config
    by_size, experiment = {}, None
    try:
        for hidden in job.sizes:
            track.config = base.model_copy(update={"student": MLPStudent(kind="mlp", hidden=hidden)})
            progress.note(f"students with hidden layers {size_key(hidden)}")
            experiment = run_fractions(track, job.fractions, progress, None, None, job.description)
            by_size[size_key(hidden)] = experiment.results
    finally:
        track.config = base
    return experiment, summarize_grid(by_size)


# --- running ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """A finished job: its experiment, the study's summary (an ablation's or a sweep's), and the
    files written."""

    job: Job
    experiment: Experiment
    study: dict | None
    written: list[Path]

    def tables(self) -> list:
        """What it found, as rich tables: a study's, or a run's test metrics (and speed)."""
        results = self.experiment.results
        if self.job.study == ABLATION:
            return [render_ablation_table(results, self.study)]
        if self.job.study == SWEEP:
            return [render_sweep_table(self.study, results)]
        if self.job.study == SIZES:
            return [render_size_table(self.study, results)]
        return [table for table in (render_table(results), render_speed_table(results)) if table is not None]

    def lines(self, out: Path) -> list[str]:
        """What it wrote, and for a run its warnings and the student to deploy."""
        lines = [f"wrote {', '.join(str(p) for p in self.written)}"]
        if self.job.study is not None:
            return lines
        results = self.experiment.results
        lines += [f"warning: {line}" for line in divergence_lines(results)]
        chosen = results["chosen"]
        headline = results["evaluation"]["compared"][0]
        test = results["methods"][chosen["method"]]["test"][headline]["mean"]
        return lines + [
            f"student to deploy: {out / CHOSEN_DIR} ({chosen['method']}, best mean {chosen['metric']} on validation; "
            f"test {headline.replace('_', ' ')} {test:.3f})"
        ]


def run_job(job: Job, out: Path, progress: Progress = SILENT, overwrite: bool = False, checkpoints: Checkpoints | None = None) -> Outcome:
    """Run ``job`` into ``out``, checkpointed there (or resumed from ``checkpoints``, those of an
    interrupted one), and write its files there, all at once, removing what an earlier run left
    there with ``overwrite``; then drop the checkpoints. Ctrl-C leaves the checkpoints, and says
    how to resume. Of several processes training as one, the main one writes and reports."""
    track = job.track
    check_out(out)
    main = track.main_process
    progress = progress if main else SILENT
    checkpoints = checkpoints or Checkpoints.start(out, writes=main, source=_config_file_mapping(job.description))
    compare_with = FULL if job.study == ABLATION else None
    try:
        if job.study == SIZES:  # one experiment per size, not checkpointed
            experiment, study = size_sweep(job, progress)
        else:
            experiment = run_fractions(track, job.fractions, progress, checkpoints, compare_with, job.description)
            study = _study_summary(job.study, experiment)
        written = _write(job, experiment, study, out) if main else []
        track.barrier()
        if overwrite and main:
            remove_stale(out, written)
    except KeyboardInterrupt as stop:
        if not checkpoints.unfinished():
            raise KeyboardInterrupt("interrupted before the first epoch was saved; run it again") from stop
        raise KeyboardInterrupt(f"interrupted; resume with: {RESUME_COMMAND} {out}") from stop
    checkpoints.remove()
    return Outcome(job, experiment, study, written)


def _study_summary(study: str | None, experiment: Experiment) -> dict | None:
    """An ablation's or a labelled-fraction sweep's summary; None for a plain run."""
    if study == ABLATION:
        return summarize_ablation(experiment.results)
    if study == SWEEP:
        return summarize_sweep(experiment.results_by_fraction)
    return None


def _write(job: Job, experiment: Experiment, study: dict | None, out: Path) -> list[Path]:
    """The job's files: a study's pages and report, or a run's report and students."""
    evidence = partial(write_evidence, experiment=experiment)
    if job.study == ABLATION:
        return write_ablation(experiment.results, study, out, evidence)
    if job.study == SWEEP:
        # The teacher and the runs are the same at every fraction.
        return write_sweep(study, experiment.results, out, evidence)
    if job.study == SIZES:
        return write_sizes(study, experiment.results, out)
    results = experiment.results
    return write_report(results, out, lambda staging_dir: job.track.write_students(staging_dir, results, experiment.students) + evidence(staging_dir))


def resume(run_dir: Path, teacher_store: TeacherStore | None) -> tuple[Job, Checkpoints]:
    """The interrupted experiment in ``run_dir`` rebuilt from its checkpoints (its config, its
    data read again and checked against its fingerprint when it runs), to be run on with
    ``run_job(job, run_dir, checkpoints=...)``."""
    checkpoints = Checkpoints.resume(run_dir)
    recorded = checkpoints.experiment
    description = recorded["description"]
    checkpoints.check_source(_config_file_mapping(description))
    if recorded["track"] == LMTrack.kind:
        config = LMTrainConfig.model_validate(recorded["config"])
        checkpoints.check_working_directory(config)
        track = LMTrack(config)
    else:
        config = ExperimentConfig.model_validate(recorded["config"])
        checkpoints.check_working_directory(config)
        preset = description.get("preset")
        if preset is None:
            track = tabular_track(config, teacher_store)
        else:
            track, _ = preset_track(preset, config.evaluation.repeats, _path_or_none(description.get("data_dir")), teacher_store, description.get("full", False))
            track.config = config
    checkpoints.writes = track.main_process
    job = Job(track, description, description.get("study"), list(recorded["fractions"]))
    return job, checkpoints


def _config_file_mapping(description: dict) -> dict | None:
    """The YAML mapping of the config file an experiment is made from, as it is now; None for a
    preset, or when the file is gone."""
    path = description.get("config_file")
    return read_yaml_mapping(Path(path), "data, teacher, student, methods, training, evaluation") if path and Path(path).is_file() else None


def _path_or_none(value: str | None) -> Path | None:
    return None if value is None else Path(value)


# --- predictions, exports and an LLM teacher ---------------------------------------------------


def predict_into(run_dir: Path, rows: Path, method: str | None, run: int, rationale: bool, out: Path | None, overwrite: bool = False, warn=None) -> str | int:
    """A saved student's predictions for every row of the file ``rows`` (read once the student
    is found; for a classifier, with the reading options of its training data): a classifier's
    class and class probabilities (the chosen student, or ``method``'s of run ``run``), or a
    generative student's label (and with ``rationale`` its rationale) as it generates them.
    Written as CSV to ``out``, new or with ``overwrite`` replaced whole (then: how many rows),
    else returned as CSV text. ``warn`` hears of texts longer than the student reads."""
    from stepdistill.lm.predict import lm_manifest, lm_predictions
    from stepdistill.run_dir import classifier_predictions, load_student, long_text_note, student_directory

    if out is not None:
        check_out_file(out, overwrite, "preds.csv")
    if lm_manifest(run_dir) is not None:
        if method is not None:
            raise StepDistillError("an lm-train run keeps its chosen student only; drop --method")
        table = lm_predictions(run_dir, read_frame(rows), rationale, warn)
    elif rationale:
        raise StepDistillError("--rationale is for an lm-train run's student, which writes one; drop it")
    else:
        student = load_student(student_directory(run_dir, method, run))
        frame = read_frame(rows, **student.read_options)
        table = classifier_predictions(student, frame)
        if warn is not None and (note := long_text_note(student, frame)):
            warn(note)
    if out is None:
        return table.to_csv(index=False)
    write_atomically(out, table.to_csv(index=False).encode())
    return len(table)


def export_from(run_dir: Path, format: str, method: str | None, run: int, out: Path | None, overwrite: bool = False) -> dict:
    """The saved student (the chosen one, or ``method``'s of run ``run``) exported in ``format``
    to ``out`` (default: ``exports/`` in the run directory), new or with ``overwrite`` replaced
    whole, checked against the student."""
    from stepdistill.export import FORMATS, SUFFIXES, export_student
    from stepdistill.run_dir import load_student, student_directory

    if format not in FORMATS:
        raise StepDistillError(f"unknown --format '{format}'; choose one of {', '.join(FORMATS)}")
    path = out or run_dir / "exports" / f"{method or 'student'}{SUFFIXES[format]}"
    check_out_file(path, overwrite, f"student{SUFFIXES[format]}")
    student = load_student(student_directory(run_dir, method, run))
    return export_student(student, format, path)


def teach_from(config: Path, out: Path | None, overwrite: bool, say, quiet: bool = False) -> list[str]:
    """lm-teach: the LLM teacher's outputs for the records of the config file ``config``, written
    to ``out`` (default: the config's ``out``, else beside it), which must not exist unless
    ``overwrite``; the lines that say what was done. ``say`` hears the progress (not when
    ``quiet``) and, always, the warnings."""
    from stepdistill.lm_teach.config import load_lm_teach_config
    from stepdistill.lm_teach.teach import teach

    settings = load_lm_teach_config(config)
    path = out or settings.out or config.with_name(f"{config.stem}.teacher.jsonl")
    check_out_file(path, overwrite, "teacher.jsonl")
    return teach(settings, path, say=None if quiet else say, warn=lambda line: say(f"warning: {line}")).lines()
