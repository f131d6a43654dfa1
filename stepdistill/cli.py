"""The command line: ``stepdistill demo``, ``stepdistill run CONFIG.yaml`` (or ``run --resume
RUN_DIR`` after an interruption), the studies ``stepdistill ablate`` and ``stepdistill sweep-data``
(on a config or a preset), and ``predict`` and ``export`` for saved students."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from stepdistill.errors import StepDistillError
from stepdistill.progress import SILENT, Bars, Lines

# torch, pandas, scikit-learn and the rest are imported where a command needs them, so that
# `--help` and argument errors answer at once.
if TYPE_CHECKING:
    import pandas as pd

    from stepdistill.checkpoints import Checkpoints
    from stepdistill.config import ExperimentConfig

# The demos' names and the released data's default folder, as presets.py defines them (a test
# checks they agree): spelled here so that --help needs no import of the presets.
PRESET_NAMES = ("article", "nonlinear", "adult", "mnist", "esnli", "cqa")
DSBS_DEFAULT_DIR = "../shared/data/dsbs"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Distill a teacher into a small student with each method, and compare them on held-out data.",
)
# A table piped to a file or CI log would otherwise be squeezed into 80 columns.
out_console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
# The global options, as given to ``main``.
_options = {"debug": False, "trust_pickle": False, "quiet": False, "cache_dir": None, "no_cache": False, "threads": 1}


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    threads: int = typer.Option(
        1, min=1, help="CPU threads for torch. Small models train fastest on one: splitting tiny operations costs more than it saves."
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Consent to run the code that loading a pickled (joblib) teacher or a teacher.module runs."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress: print only errors and the final summary lines."),
    cache_dir: Path | None = typer.Option(
        None,
        help="Directory of teacher outputs kept between runs, so a teacher is explained once per model and data."
        " Default: teachers/ under $STEPDISTILL_CACHE_DIR, else ~/.cache/stepdistill/teachers.",
        show_default=False,
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Keep no teacher outputs between runs: compute them every time."),
) -> None:
    _options.update(debug=debug, trust_pickle=trust_pickle, quiet=quiet, cache_dir=cache_dir, no_cache=no_cache, threads=threads)


DATA_DIR_OPTION = typer.Option(
    None,
    help=f"esnli and cqa presets: the released distilling-step-by-step data (the folder holding datasets/). Default: {DSBS_DEFAULT_DIR} when present.",
    show_default=False,
)
OVERWRITE_OPTION = typer.Option(
    False, "--overwrite", help="Replace the results of an earlier run in --out (its other files are removed once the new ones are written)."
)
# What run and demo write.
RUN_FILES = "results.json, report.md, report.html, plots and the trained students (student/ is the one to deploy)"


@app.command()
def demo(
    preset: str = typer.Option(
        "article",
        help="article (the reference setting), nonlinear (MLP teacher), adult (LightGBM teacher), mnist (CNN teacher),"
        " esnli and cqa (PaLM's labels and rationales, text students; need --data-dir).",
    ),
    repeats: int = typer.Option(3, help="Runs, each with its own split, teacher fit and seed."),
    out: str = typer.Option("runs/demo", help=f"Directory for {RUN_FILES}; new or empty, unless --overwrite."),
    data_dir: Path | None = DATA_DIR_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Teacher plus the four methods on built-in data (synthetic, shipped in pip packages, or the
    released distilling-step-by-step data with an LLM teacher)."""
    def go() -> None:
        from stepdistill import presets

        out_dir = _new_out(out, overwrite)
        config, frame, test_frame = presets.demo(preset, repeats, data_dir)
        where = {"data_dir": str(presets.dsbs_directory(data_dir))} if preset in presets.DATA_DIR_PRESETS else {}
        _run(config, frame, out_dir, {"preset": preset} | where, test_frame=test_frame, overwrite=overwrite)

    _guarded(go)


@app.command()
def run(
    config: Path | None = typer.Argument(
        None, metavar="CONFIG", help="YAML file: data, teacher, student, methods, training, evaluation.", show_default=False
    ),
    out: str | None = typer.Option(
        None, help=f"Directory for {RUN_FILES} (default: runs/run); new or empty, unless --overwrite.", show_default=False
    ),
    overwrite: bool = OVERWRITE_OPTION,
    resume: Path | None = typer.Option(
        None,
        help="Instead of CONFIG.yaml: the --out directory of an interrupted run or demo, to continue from its last epoch; the results are written there.",
        show_default=False,
    ),
) -> None:
    """The same comparison on your data; or, with --resume, an interrupted run or demo finished."""

    def go() -> None:
        if (config is None) == (resume is None):
            raise StepDistillError("give either CONFIG.yaml or --resume RUN_DIR (exactly one of them)")
        if resume is not None:
            if out is not None:
                raise StepDistillError(f"--resume writes the results into {resume}, where the run started; leave out --out")
            _resume(resume)
            return
        from stepdistill.config import load_config
        from stepdistill.data import read_frame

        out_dir = _new_out("runs/run" if out is None else out, overwrite)
        experiment = _with_consent(load_config(config))
        _run(experiment, read_frame(experiment.data.path, experiment.data.sep), out_dir, {"config_file": str(config)}, overwrite=overwrite)

    _guarded(go)


def _resume(run_dir: Path) -> None:
    """The interrupted experiment in ``run_dir`` rebuilt from its checkpoints (config, data
    checked against its fingerprint), continued, and its files written there."""
    from stepdistill import presets
    from stepdistill.checkpoints import Checkpoints
    from stepdistill.data import read_frame

    checkpoints = Checkpoints.resume(run_dir)
    config = checkpoints.config()
    preset = checkpoints.description.get("preset")
    if preset is None:
        frame, test_frame = read_frame(config.data.path, config.data.sep), None
    else:
        data_dir = checkpoints.description.get("data_dir")
        _, frame, test_frame = presets.demo(preset, config.evaluation.repeats, None if data_dir is None else Path(data_dir))
    _run(config, frame, run_dir, checkpoints.description, checkpoints, test_frame)


STUDY_SOURCE = "CONFIG.yaml (data, teacher, student, methods, training, evaluation), a run's or lm-train's; or leave it out and pass --preset."
STUDY_PRESET = f"A built-in demo instead of CONFIG.yaml: {', '.join(PRESET_NAMES)}."


@app.command()
def ablate(
    config: Path | None = typer.Argument(None, help=STUDY_SOURCE, show_default=False),
    preset: str | None = typer.Option(None, help=STUDY_PRESET, show_default=False),
    repeats: int | None = typer.Option(
        None, help="Runs (evaluation.repeats) for every variant. Default: the config's if it sets them, else 5.", show_default=False
    ),
    out: str = typer.Option("runs/ablate", help="Directory for ablation.json/.md/.html/.png and the usual report files; new or empty, unless --overwrite."),
    data_dir: Path | None = DATA_DIR_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """The enhanced method with each component removed in turn, compared seed by seed with the full one."""

    def go() -> None:
        from stepdistill.report.ablation import render_ablation_table, write_ablation
        from stepdistill.studies import run_ablation, run_lm_ablation

        if config is not None and preset is None and _is_lm_config(config):
            from stepdistill.lm_experiment import write_lm_results

            settings, data = _lm_study_inputs(config, repeats, data_dir, default_repeats=5)
            out_dir = _new_out(out, overwrite, ("ablation.json",))
            results, ablation = run_lm_ablation(settings, data, say=None if _options["quiet"] else _say)
            if not _main_process():  # of several processes, one writes and speaks
                return
            written = write_ablation(results, ablation, out_dir, write_lm_results)
        else:
            experiment, frame, test_frame, description = _study_inputs(config, preset, repeats, data_dir, default_repeats=5)
            out_dir = _new_out(out, overwrite, ("ablation.json",))
            with _progress() as progress:
                results, ablation = run_ablation(experiment, frame, {**description, "study": "ablation"}, progress, _teacher_store(), test_frame)
            written = write_ablation(results, ablation, out_dir)
        out_console.print(render_ablation_table(results, ablation))
        _written(out_dir, written, overwrite)

    _guarded(go)


@app.command("sweep-data")
def sweep_data(
    config: Path | None = typer.Argument(None, help=STUDY_SOURCE, show_default=False),
    preset: str | None = typer.Option(None, help=STUDY_PRESET, show_default=False),
    fractions: str = typer.Option(
        "0.01,0.05,0.1,0.25,0.5,1", help="Comma-separated shares of training rows whose labels students see, each in (0, 1]."
    ),
    repeats: int | None = typer.Option(
        None, help="Runs (evaluation.repeats) for every method. Default: the config's if it sets them, else 3.", show_default=False
    ),
    out: str = typer.Option("runs/sweep", help="Directory for sweep.json, sweep.md, sweep.html and sweep.png; new or empty, unless --overwrite."),
    data_dir: Path | None = DATA_DIR_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Every method at each labelled fraction: how much the teacher helps when labels are scarce."""

    def go() -> None:
        from stepdistill.report.sweep import render_sweep_table, write_sweep
        from stepdistill.studies import parse_fractions, run_sweep, summarize_sweep

        shares = parse_fractions(fractions)
        if config is not None and preset is None and _is_lm_config(config):
            from stepdistill.studies import run_lm_sweep

            settings, data = _lm_study_inputs(config, repeats, data_dir, default_repeats=3)
            out_dir = _new_out(out, overwrite, ("sweep.json",))
            results_by_fraction = run_lm_sweep(settings, data, shares, say=None if _options["quiet"] else _say)
            if not _main_process():  # of several processes, one writes and speaks
                return
        else:
            experiment, frame, test_frame, description = _study_inputs(config, preset, repeats, data_dir, default_repeats=3)
            out_dir = _new_out(out, overwrite, ("sweep.json",))
            with _progress() as progress:
                results_by_fraction = run_sweep(experiment, frame, shares, {**description, "study": "sweep-data"}, progress, _teacher_store(), test_frame)
        sweep = summarize_sweep(results_by_fraction)
        # The teacher and the runs are the same at every fraction.
        any_results = next(iter(results_by_fraction.values()))
        out_console.print(render_sweep_table(sweep, any_results))
        _written(out_dir, write_sweep(sweep, any_results, out_dir), overwrite)

    _guarded(go)


def _study_inputs(
    config: Path | None, preset: str | None, repeats: int | None, data_dir: Path | None, default_repeats: int
) -> tuple[ExperimentConfig, pd.DataFrame, pd.DataFrame | None, dict]:
    """The experiment, its data (and fixed test rows, if any) and a description of where they
    came from, for a study given either a config file or a preset. ``repeats`` replaces the
    config's when given."""
    from stepdistill import presets
    from stepdistill.config import load_config
    from stepdistill.data import read_frame

    if (config is None) == (preset is None):
        raise StepDistillError("give either CONFIG.yaml or --preset NAME (exactly one of them)")
    _check_repeats(repeats)
    if preset is not None:
        return *presets.demo(preset, repeats or default_repeats, data_dir), {"preset": preset}
    experiment = _with_consent(load_config(config))
    evaluation = experiment.evaluation.model_copy(update={"repeats": _study_repeats(repeats, experiment.evaluation, default_repeats)})
    experiment = experiment.model_copy(update={"evaluation": evaluation})
    test_frame = None if experiment.data.test_path is None else read_frame(experiment.data.test_path, experiment.data.sep)
    return experiment, read_frame(experiment.data.path, experiment.data.sep), test_frame, {"config_file": str(config)}


def _is_lm_config(path: Path) -> bool:
    """Whether ``path`` is an lm-train config (its data names a task of the released
    distilling-step-by-step data) rather than a run config (whose data is a file)."""
    from stepdistill.files import read_yaml_mapping

    data = read_yaml_mapping(path, "data, student, teacher, methods, training, evaluation").get("data")
    return isinstance(data, dict) and "task" in data


def _lm_study_inputs(config: Path, repeats: int | None, data_dir: Path | None, default_repeats: int):
    """``(settings, records)`` of an lm-train config for a study: ``repeats`` (else the config's,
    else ``default_repeats``) and ``data_dir`` replace the config's."""
    from stepdistill.lm.config import load_lm_train_config
    from stepdistill.lm_experiment import load_lm_data

    _check_repeats(repeats)
    settings = load_lm_train_config(config)
    if data_dir is not None:
        settings.data.data_dir = data_dir
    settings.evaluation.repeats = _study_repeats(repeats, settings.evaluation, default_repeats)
    return settings, load_lm_data(settings.data)


def _check_repeats(repeats: int | None) -> None:
    if repeats is not None and repeats < 1:
        raise StepDistillError(f"--repeats must be at least 1 (got {repeats})")


def _study_repeats(repeats: int | None, evaluation, default: int) -> int:
    """The runs of a study: ``--repeats``, else the config's ``evaluation.repeats`` if it sets
    them, else the study's ``default``."""
    if repeats is not None:
        return repeats
    return evaluation.repeats if "repeats" in evaluation.model_fields_set else default


def _main_process() -> bool:
    """Whether this is the main process of generative students' training (the only one, or of
    several under ``accelerate launch``, the one that writes and speaks)."""
    from stepdistill.engines.processes import lm_accelerator

    return lm_accelerator().is_main_process


def _with_consent(config: ExperimentConfig) -> ExperimentConfig:
    """The config with ``--trust-pickle`` given to a teacher whose loading runs code."""
    if _options["trust_pickle"] and "trust_pickle" in type(config.teacher).model_fields:
        return config.model_copy(update={"teacher": config.teacher.model_copy(update={"trust_pickle": True})})
    return config


def _run(
    config: ExperimentConfig,
    frame,
    out: Path,
    description: dict,
    checkpoints: Checkpoints | None = None,
    test_frame: pd.DataFrame | None = None,
    overwrite: bool = False,
) -> None:
    """Run the experiment, checkpointed in ``out`` (or resumed from ``checkpoints``, those of an
    interrupted one), print its table and write its files there, all at once, removing what an
    earlier run left there with ``overwrite``; then drop the checkpoints. Ctrl-C leaves the
    checkpoints, and says how to resume."""
    from stepdistill.checkpoints import Checkpoints, describe_experiment
    from stepdistill.experiment import run_experiment
    from stepdistill.report import render_speed_table, render_table, write_report
    from stepdistill.run_dir import fingerprint, write_students
    from stepdistill.summary import divergence_lines

    from stepdistill.data import read_frame

    _check_out(out)
    if config.data.test_path is not None:
        test_frame = read_frame(config.data.test_path, config.data.sep)
    if checkpoints is None:
        checkpoints = Checkpoints.start(out, describe_experiment(config, description, frame, test_frame))
    else:
        checkpoints.check_data(frame, test_frame)
    runs = []
    try:
        with _progress() as progress:
            results = run_experiment(
                config, frame, description, progress, test_frame, on_run=runs.append, teacher_store=_teacher_store(), checkpoints=checkpoints
            )
        out_console.print(render_table(results))
        if (speed_table := render_speed_table(results)) is not None:
            out_console.print(speed_table)
        written = write_report(results, out, lambda staging_dir: write_students(staging_dir, results, runs, fingerprint(frame)))
        if overwrite:
            _remove_stale(out, written)
        _report_written(written)
    except KeyboardInterrupt as stop:
        if not checkpoints.unfinished():
            raise KeyboardInterrupt("interrupted before the first epoch was saved; run it again") from stop
        raise KeyboardInterrupt(f"interrupted; resume with: stepdistill run --resume {out}") from stop
    checkpoints.remove()
    for line in divergence_lines(results):
        err_console.print(f"warning: {line}")
    chosen = results["chosen"]
    err_console.print(
        f"student to deploy: {out / 'student'} ({chosen['method']}, best mean {chosen['metric']} on validation; "
        f"test accuracy {results['methods'][chosen['method']]['test']['accuracy']['mean']:.3f})"
    )


# What predict and export share: which saved student to use.
RUN_DIR_ARGUMENT = typer.Argument(..., help="A directory written by stepdistill run or demo.")
METHOD_OPTION = typer.Option(None, help="A method's student instead of the chosen one (student/).")
RUN_OPTION = typer.Option(0, help="With --method: which run's student.")


@app.command()
def predict(
    run_dir: Path = RUN_DIR_ARGUMENT,
    input: Path = typer.Argument(..., help="CSV, Parquet or JSONL file with the columns the student was trained on (a text student: its text columns)."),
    method: str | None = METHOD_OPTION,
    run: int = RUN_OPTION,
    out: Path | None = typer.Option(None, help="CSV file for the predictions; default: standard output."),
    rationale: bool = typer.Option(False, "--rationale", help="An lm-train student: also write each row's generated rationale."),
) -> None:
    """Classes and class probabilities of a saved student for every row of INPUT (an lm-train student: its generated label)."""

    def go() -> None:
        from stepdistill.run_dir import load_student, student_directory

        from stepdistill.data import read_frame
        from stepdistill.lm.predict import lm_manifest, lm_predictions

        if lm_manifest(run_dir) is not None:
            if method is not None:
                raise StepDistillError("an lm-train run keeps its chosen student only; drop --method")
            predictions = lm_predictions(run_dir, read_frame(input), rationale)
        else:
            predictions = _predictions(load_student(student_directory(run_dir, method, run)), read_frame(input))
        if out is None:
            sys.stdout.write(predictions.to_csv(index=False))
        else:
            if out.is_dir():
                raise StepDistillError(f"--out {out} is a directory; pass a file name such as preds.csv")
            out.parent.mkdir(parents=True, exist_ok=True)
            predictions.to_csv(out, index=False)
            err_console.print(f"wrote {len(predictions)} predictions to {out}")

    _guarded(go)


@app.command()
def export(
    run_dir: Path = RUN_DIR_ARGUMENT,
    format: str = typer.Option(..., help="onnx (the student with its preprocessing: one input per raw column, double or string; outputs probabilities and label; an unseen category is an error, a NaN number gives NaN), sklearn (a logistic student as a pipeline on the raw columns, skops), or safetensors."),
    method: str | None = METHOD_OPTION,
    run: int = RUN_OPTION,
    out: Path | None = typer.Option(None, help="The file to write; default: RUN_DIR/exports/<student or method>.<suffix>."),
) -> None:
    """The saved student in a format other tools load, checked against the student before it is written."""

    def go() -> None:
        from stepdistill.export import FORMATS, SUFFIXES, export_student
        from stepdistill.run_dir import load_student, student_directory

        if format not in FORMATS:
            raise StepDistillError(f"unknown --format '{format}'; choose one of {', '.join(FORMATS)}")
        student = load_student(student_directory(run_dir, method, run))
        path = out or run_dir / "exports" / f"{method or 'student'}{SUFFIXES[format]}"
        checked = export_student(student, format, path)
        err_console.print(
            f"wrote {checked['path']}; largest difference from the student on {checked['probe_rows']} probe rows: "
            f"{checked['max_abs_difference']:.2e} (at most {checked['tolerance']:g})"
        )

    _guarded(go)


@app.command("lm-teach")
def lm_teach(
    config: Path = typer.Argument(
        ..., metavar="CONFIG", help="YAML file: data, template, classes, parse, samples, backend (hf or openai).", show_default=False
    ),
    out: Path | None = typer.Option(
        None, help="The teacher-output JSONL to write. Default: the config's out, else CONFIG's name with .teacher.jsonl.", show_default=False
    ),
) -> None:
    """A large language model as the teacher: a rationale and a label per record, by few-shot chain of thought, as JSONL."""

    def go() -> None:
        from stepdistill.lm_teach.config import load_lm_teach_config
        from stepdistill.lm_teach.teach import teach

        settings = load_lm_teach_config(config)
        path = out or settings.out or config.with_name(f"{config.stem}.teacher.jsonl")
        if path.is_dir():
            raise StepDistillError(f"--out {path} is a directory; pass a file name such as teacher.jsonl")
        summary = teach(settings, path, say=None if _options["quiet"] else _say)
        for line in summary.lines():
            _say(line)

    _guarded(go)


@app.command("lm-train")
def lm_train(
    config: Path = typer.Argument(
        ..., metavar="CONFIG", help="YAML file: data (task, data_dir, splits), student, methods, training, evaluation.", show_default=False
    ),
    out: str = typer.Option("runs/lm-train", help="Directory for results.json, report.md and student/ (the chosen student); new or empty, unless --overwrite."),
    data_dir: Path | None = typer.Option(
        None, help="The released distilling-step-by-step data (the folder holding datasets/), instead of the config's data.data_dir.", show_default=False
    ),
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Generative students (language models) distilled from an LLM's labels and rationales, every method over several runs, compared with the baseline."""

    def go() -> None:
        from stepdistill.lm.config import load_lm_train_config
        from stepdistill.lm_experiment import load_lm_data, run_lm_experiment, write_lm_experiment

        settings = load_lm_train_config(config)
        if data_dir is not None:
            settings.data.data_dir = data_dir
        out_dir = _new_out(out, overwrite)
        experiment = run_lm_experiment(settings, load_lm_data(settings.data), say=None if _options["quiet"] else _say)
        written = write_lm_experiment(out_dir, experiment)
        if _main_process():  # of several processes, the one that wrote speaks
            _written(out_dir, written, overwrite)

    _guarded(go)


def _say(message: str) -> None:
    """A progress line on standard error."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _predictions(student, frame: pd.DataFrame) -> pd.DataFrame:
    """The predicted class and each class's probability for every row, with the row's id (its
    id column, or its position)."""
    import numpy as np
    import pandas as pd

    known = {*student.input_columns, student.about["label"], student.about["id_column"]}
    if extra := [str(c) for c in frame.columns if c not in known]:
        raise StepDistillError(f"INPUT has columns the student was not trained on: {', '.join(extra)}; drop them")
    id_column = student.about["id_column"]
    probabilities = student.predict_proba(frame.rename(columns=str))
    ids = frame[id_column] if id_column in frame.columns else pd.RangeIndex(len(frame))
    classes = student.classes
    return pd.DataFrame(
        {
            id_column or "row": ids.to_numpy() if hasattr(ids, "to_numpy") else np.asarray(ids),
            "prediction": [classes[i] for i in probabilities.argmax(1)],
            **{f"p_{c}": probabilities[:, i] for i, c in enumerate(classes)},
        }
    )


def _check_out(out: Path) -> None:
    """Fail before training, not after, when the output directory cannot be one."""
    if out.exists() and not out.is_dir():
        raise StepDistillError(f"--out {out} is a file; pass a directory")



def _new_out(out: str, overwrite: bool, earlier: tuple[str, ...] = ("results.json", "manifest.json")) -> Path:
    """The ``--out`` directory of a new run, checked before any work: named, a directory, new or
    empty (or, with ``overwrite``, one an earlier run wrote: it holds one of ``earlier``), and
    writable."""
    if not out.strip():
        raise StepDistillError("--out is empty; name a directory, such as runs/run")
    from stepdistill.checkpoints import Checkpoints

    path = Path(out)
    _check_out(path)
    if path.is_dir() and any(path.iterdir()):
        Checkpoints.refuse_unfinished(path)
        if not overwrite:
            raise StepDistillError(f"--out {path} is not empty; pass a new or empty directory, or --overwrite to replace an earlier run's results")
        if not any((path / name).is_file() for name in earlier):
            raise StepDistillError(f"--out {path} holds files that are not an earlier run's results; --overwrite replaces only those, so pass another directory")
    _require_writable(path)
    return path


def _require_writable(path: Path) -> None:
    """Refuse a directory that cannot be written (a read-only file system, a parent that is a
    file, no permission), trying its nearest existing folder so that nothing is left behind."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    try:
        with tempfile.TemporaryDirectory(dir=existing):
            pass
    except OSError as err:
        raise StepDistillError(f"cannot write --out {path}: {err.strerror or err} in {existing}; choose a directory you can write to") from err


def _remove_stale(out: Path, written: list[Path]) -> None:
    """Remove what an earlier run left in ``out`` besides the files just ``written`` and the
    checkpoints (removed when the experiment ends)."""
    from stepdistill.checkpoints import CHECKPOINTS_DIR

    for entry in set(out.iterdir()) - set(written) - {out / CHECKPOINTS_DIR}:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _teacher_store():
    """Where teacher outputs are kept between runs (``--cache-dir``), or None with ``--no-cache``."""
    if _options["no_cache"]:
        return None
    from stepdistill.teachers.store import TeacherStore, default_store_directory

    return TeacherStore(_options["cache_dir"] or default_store_directory())


@contextmanager
def _progress():
    """How experiments report (progress.py): nothing with --quiet, bars on a terminal, else a
    line per step."""
    if _options["quiet"]:
        yield SILENT
    elif err_console.is_terminal:
        with Bars(err_console) as bars:
            yield bars
    else:
        yield Lines(sys.stderr)


def _written(out: Path, paths: list[Path], overwrite: bool) -> None:
    """Say what a command wrote into ``out``; with ``overwrite``, first remove what an earlier run
    left there besides it."""
    if overwrite:
        _remove_stale(out, paths)
    _report_written(paths)


def _report_written(paths: list[Path]) -> None:
    err_console.print(f"wrote {', '.join(str(p) for p in paths)}")


def _guarded(action) -> None:
    """Run a command's ``action`` on ``--threads`` threads: a ``StepDistillError`` becomes one
    line and exit code 2, Ctrl-C one line and exit code 130 (tracebacks with ``--debug``)."""
    if threading.current_thread() is threading.main_thread():
        # From here Ctrl-C is a KeyboardInterrupt, which leaves checkpoints whole (entry.py
        # stops at once before a command starts).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        import torch  # here, not at start-up: --help needs no torch

        torch.set_num_threads(_options["threads"])
        action()
    except StepDistillError as err:
        if _options["debug"]:
            raise
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    except KeyboardInterrupt as stop:  # Ctrl-C: what was written is whole (see report/staged.py, checkpoints.py)
        if _options["debug"]:
            raise
        sys.stderr.write(f"{str(stop) or 'interrupted'}\n")
        sys.exit(130)
