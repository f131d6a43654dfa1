"""The command line: parse the arguments, call commands.py (or lm-teach, export), print the tables.

``stepdistill demo``, ``run CONFIG.yaml`` (a run config or an lm-train config), ``lm-train``, the
studies ``ablate``, ``sweep-data`` and ``sweep-size`` (on a config or a preset), ``run --resume RUN_DIR`` after an
interruption of any of them, and ``predict`` and ``export`` for saved students."""

from __future__ import annotations

import functools
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from stepdistill.errors import StepDistillError
from stepdistill.progress import SILENT, Bars, Lines

# torch, pandas, scikit-learn and the rest are imported where a command needs them, so that
# `--help` and argument errors answer at once. The demos' names and the released data's default
# folder are spelled here as presets.py and data/llm_outputs.py define them (a test checks).
PRESET_NAMES = ("article", "nonlinear", "adult", "adult_logistic", "mnist", "esnli", "esnli_frozen", "cqa")
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
CACHE_DIR_HELP = (
    "Directory of teacher outputs kept between runs, so a teacher is explained once per model and data."
    " Default: teachers/ under $STEPDISTILL_CACHE_DIR, else ~/.cache/stepdistill/teachers."
)
# The global options, as given to ``main``.
_options = {"debug": False, "trust_pickle": False, "quiet": False, "cache_dir": None, "no_cache": False, "threads": 1}


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    threads: int = typer.Option(1, min=1, help="CPU threads for torch. Small models train fastest on one: splitting tiny operations costs more than it saves."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Consent to run the code that loading a pickled (joblib) teacher or a teacher.module runs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress: print only errors and the final summary lines."),
    cache_dir: Path | None = typer.Option(None, help=CACHE_DIR_HELP, show_default=False),
    no_cache: bool = typer.Option(False, "--no-cache", help="Keep no teacher outputs between runs: compute them every time."),
) -> None:
    _options.update(debug=debug, trust_pickle=trust_pickle, quiet=quiet, cache_dir=cache_dir, no_cache=no_cache, threads=threads)


def _guarded(command):
    """The command run on ``--threads`` threads: a ``StepDistillError`` becomes one line and exit
    code 2, Ctrl-C one line and exit code 130 (tracebacks with ``--debug``)."""

    @functools.wraps(command)
    def guarded(*args, **kwargs) -> None:
        try:
            # Here, not at start-up (--help needs none of it): the libraries every command uses,
            # loaded while Ctrl-C still stops the process at once (entry.py).
            import pyarrow
            import torch

            import stepdistill.commands  # noqa: F401

            torch.set_num_threads(_options["threads"])
            pyarrow.set_cpu_count(_options["threads"])  # decoding Parquet, as a pool streams
            if threading.current_thread() is threading.main_thread():
                # From here Ctrl-C is a KeyboardInterrupt, which leaves checkpoints whole.
                signal.signal(signal.SIGINT, signal.default_int_handler)
            command(*args, **kwargs)
        except StepDistillError as err:
            if _options["debug"]:
                raise
            sys.stderr.write(f"error: {err}\n")
            sys.exit(2)
        except KeyboardInterrupt as stop:  # Ctrl-C: what was written is whole (see report/staged.py, experiment/checkpoints.py)
            if _options["debug"]:
                raise
            sys.stderr.write(f"{str(stop) or 'interrupted'}\n")
            sys.exit(130)

    return guarded


DATA_DIR_OPTION = typer.Option(
    None, show_default=False, help=f"The released distilling-step-by-step data (the folder holding datasets/), for the esnli, esnli_frozen and cqa presets and lm-train configs. Default: {DSBS_DEFAULT_DIR} when present."
)
OVERWRITE_OPTION = typer.Option(False, "--overwrite", help="Replace the results of an earlier run in --out (its other files are removed once the new ones are written).")
RUN_FILES = "results.json, report.md, report.html, plots and the trained students (student/ is the one to deploy)"
STUDY_SOURCE = "CONFIG.yaml (data, teacher, student, methods, training, evaluation), a run's or lm-train's; or leave it out and pass --preset."
STUDY_PRESET = f"A built-in demo instead of CONFIG.yaml: {', '.join(PRESET_NAMES)}."
FULL_OPTION = typer.Option(False, "--full", help="esnli, esnli_frozen: the released files whole (hours for fine-tuned students on a CPU), not their first records.")


@app.command()
@_guarded
def demo(
    preset: str = typer.Option(
        "article",
        help="article (the reference setting), nonlinear (MLP teacher), adult (LightGBM teacher, MLP students, a MUNGE transfer set;"
        " adult_logistic: logistic students, no transfer set), mnist (CNN teacher), esnli, esnli_frozen and cqa (PaLM's labels and rationales;"
        " esnli: students that fine-tune their encoder, esnli_frozen and cqa: students on frozen sentence features; need --data-dir).",
    ),
    repeats: int = typer.Option(3, help="Runs, each with its own split, teacher fit and seed."),
    out: str = typer.Option("runs/demo", help=f"Directory for {RUN_FILES}; new or empty, unless --overwrite."),
    data_dir: Path | None = DATA_DIR_OPTION,
    full: bool = FULL_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Teacher plus the four methods on built-in data (synthetic, in pip packages, or PaLM's on released data)."""
    from stepdistill import commands

    out_dir = commands.new_out(out, overwrite)
    track, description = commands.preset_track(preset, repeats, data_dir, _teacher_store(), full)
    _run(commands.Job(track, description), out_dir, overwrite)


@app.command()
@_guarded
def run(
    config: Path | None = typer.Argument(None, metavar="CONFIG", help="YAML file: a run's (data, teacher, student, ...) or lm-train's (data.task, ...).", show_default=False),
    out: str | None = typer.Option(None, help=f"Directory for {RUN_FILES} (default: runs/run); new or empty, unless --overwrite.", show_default=False),
    overwrite: bool = OVERWRITE_OPTION,
    resume: Path | None = typer.Option(
        None,
        help="Instead of CONFIG.yaml: the --out directory of an interrupted run, demo, lm-train or study, to continue from its last epoch; the results are written there.",
        show_default=False,
    ),
) -> None:
    """The comparison on your data; or, with --resume, an interrupted experiment finished."""
    from stepdistill import commands

    if (config is None) == (resume is None):
        raise StepDistillError("give either CONFIG.yaml or --resume RUN_DIR (exactly one of them)")
    if resume is not None:
        if out is not None:
            raise StepDistillError(f"--resume writes the results into {resume}, where the run started; leave out --out")
        job, checkpoints = commands.resume(resume, _teacher_store())
        _run(job, resume, checkpoints=checkpoints)
        return
    out_dir = commands.new_out("runs/run" if out is None else out, overwrite)
    track = commands.config_track(config, _teacher_store(), _options["trust_pickle"])
    _run(commands.Job(track, {"config_file": str(config)}), out_dir, overwrite)


@app.command("lm-train")
@_guarded
def lm_train(
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML file: data (task, data_dir, splits), student, methods, training, evaluation.", show_default=False),
    out: str = typer.Option("runs/lm-train", help=f"Directory for {RUN_FILES}; new or empty, unless --overwrite."),
    data_dir: Path | None = DATA_DIR_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Generative students (language models) distilled from an LLM's labels and rationales, every method over several runs, compared with the baseline."""
    from stepdistill import commands

    track = commands.lm_track(config, data_dir)
    out_dir = commands.new_out(out, overwrite)
    _run(commands.Job(track, {"config_file": str(config)}), out_dir, overwrite)


@app.command()
@_guarded
def ablate(
    config: Path | None = typer.Argument(None, help=STUDY_SOURCE, show_default=False),
    preset: str | None = typer.Option(None, help=STUDY_PRESET, show_default=False),
    repeats: int | None = typer.Option(None, help="Runs (evaluation.repeats) for every variant. Default: the config's if it sets them, else 5.", show_default=False),
    out: str = typer.Option("runs/ablate", help="Directory for ablation.json/.md/.html/.png and the usual report files; new or empty, unless --overwrite."),
    data_dir: Path | None = DATA_DIR_OPTION,
    full: bool = FULL_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """The enhanced method with each component removed in turn, compared seed by seed with the full one."""
    _study("ablation", config, preset, repeats, data_dir, full, out, overwrite)


@app.command("sweep-data")
@_guarded
def sweep_data(
    config: Path | None = typer.Argument(None, help=STUDY_SOURCE, show_default=False),
    preset: str | None = typer.Option(None, help=STUDY_PRESET, show_default=False),
    fractions: str = typer.Option("0.01,0.05,0.1,0.25,0.5,1", help="Comma-separated shares of training rows whose labels students see, each in (0, 1]."),
    repeats: int | None = typer.Option(None, help="Runs (evaluation.repeats) for every method. Default: the config's if it sets them, else 3.", show_default=False),
    out: str = typer.Option("runs/sweep", help="Directory for sweep.json, sweep.md, sweep.html and sweep.png; new or empty, unless --overwrite."),
    data_dir: Path | None = DATA_DIR_OPTION,
    full: bool = FULL_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """Every method at each labelled fraction: how much the teacher helps when labels are scarce."""
    from stepdistill.studies import parse_fractions

    _study("sweep-data", config, preset, repeats, data_dir, full, out, overwrite, fractions=parse_fractions(fractions))


@app.command("sweep-size")
@_guarded
def sweep_size(
    config: Path | None = typer.Argument(None, help="CONFIG.yaml, a run's (data, teacher, student, ...); or leave it out and pass --preset.", show_default=False),
    preset: str | None = typer.Option(None, help=STUDY_PRESET, show_default=False),
    sizes: str = typer.Option("8;32;128;64,64", help="Student MLPs' hidden layer widths: commas within a size, semicolons between sizes."),
    repeats: int | None = typer.Option(None, help="Runs (evaluation.repeats) for every size. Default: the config's if it sets them, else 3.", show_default=False),
    out: str = typer.Option("runs/sizes", help="Directory for sizes.json, sizes.md, sizes.html and sizes.png; new or empty, unless --overwrite."),
    data_dir: Path | None = DATA_DIR_OPTION,
    full: bool = FULL_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
) -> None:
    """The control and every method at each student size: how small a student can be and keep the teacher's knowledge."""
    from stepdistill.studies import parse_sizes

    _study("sweep-size", config, preset, repeats, data_dir, full, out, overwrite, sizes=parse_sizes(sizes))


def _study(study: str, config: Path | None, preset: str | None, repeats: int | None, data_dir: Path | None, full: bool, out: str, overwrite: bool, **grid) -> None:
    """Run ``study`` (``commands.STUDY_FILES``' names) on a config or a preset into ``out``."""
    from stepdistill import commands

    default_repeats = 5 if study == commands.ABLATION else 3
    track, description = commands.study_source(config, preset, repeats, data_dir, default_repeats, _teacher_store(), _options["trust_pickle"], full)
    out_dir = commands.new_out(out, overwrite, (commands.STUDY_FILES[study],))
    _run(commands.study_job(track, description, study, repeats, default_repeats, **grid), out_dir, overwrite)


def _run(job, out: Path, overwrite: bool = False, checkpoints=None) -> None:
    """Run ``job`` into ``out`` and print what it found (of several processes, the main one)."""
    from stepdistill import commands

    with _progress() as progress:
        outcome = commands.run_job(job, out, progress, overwrite, checkpoints)
    if job.track.main_process:
        for table in outcome.tables():
            out_console.print(table)
        for line in outcome.lines(out):
            err_console.print(line)


# What predict and export share: which saved student to use.
RUN_DIR_ARGUMENT = typer.Argument(..., help="A directory written by stepdistill run, demo or lm-train.")
METHOD_OPTION = typer.Option(None, help="A method's student instead of the chosen one (student/).")
RUN_OPTION = typer.Option(0, help="With --method: which run's student.")


@app.command()
@_guarded
def predict(
    run_dir: Path = RUN_DIR_ARGUMENT,
    input: Path = typer.Argument(..., help="CSV, Parquet or JSONL file with the columns the student was trained on (a text student: its text columns)."),
    method: str | None = METHOD_OPTION,
    run: int = RUN_OPTION,
    out: Path | None = typer.Option(None, help="CSV file for the predictions (new, unless --overwrite); default: standard output."),
    rationale: bool = typer.Option(False, "--rationale", help="An lm-train student: also write each row's generated rationale."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the --out file if it exists."),
) -> None:
    """Classes and class probabilities of a saved student for every row of INPUT (an lm-train student: its generated label)."""
    from stepdistill.commands import predict_into

    written = predict_into(run_dir, input, method, run, rationale, out, overwrite, lambda line: _say(f"warning: {line}"))
    if out is None:
        sys.stdout.write(written)
    else:
        _say(f"wrote {written} predictions to {out}")


@app.command()
@_guarded
def export(
    run_dir: Path = RUN_DIR_ARGUMENT,
    format: str = typer.Option(..., help="onnx (the student with its preprocessing: one input per raw column, double or string; outputs probabilities and label; an unseen category is an error, a NaN number gives NaN unless trained with data.missing: impute), sklearn (a logistic student as a pipeline on the raw columns, skops), or safetensors."),
    method: str | None = METHOD_OPTION,
    run: int = RUN_OPTION,
    out: Path | None = typer.Option(None, help="The file to write (new, unless --overwrite); default: RUN_DIR/exports/<student or method>.<suffix>."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the file if it exists."),
) -> None:
    """The saved student in a format other tools load, checked against the student before it is written."""
    from stepdistill.commands import export_from

    checked = export_from(run_dir, format, method, run, out, overwrite)
    _say(
        f"wrote {checked['path']}; largest difference from the student on {checked['probe_rows']} probe rows: "
        f"{checked['max_abs_difference']:.2e} (at most {checked['tolerance']:g})"
    )


@app.command("lm-teach")
@_guarded
def lm_teach(
    config: Path = typer.Argument(..., metavar="CONFIG", help="YAML file: data, template, classes, parse, samples, backend (hf or openai).", show_default=False),
    out: Path | None = typer.Option(None, help="The teacher-output JSONL to write. Default: the config's out, else CONFIG's name with .teacher.jsonl.", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the output file if it exists."),
) -> None:
    """A large language model as the teacher: a rationale and a label per record, by few-shot chain of thought, as JSONL."""
    from stepdistill.commands import teach_from

    for line in teach_from(config, out, overwrite, _say, _options["quiet"]):
        _say(line)


def _say(message: str) -> None:
    """A line on standard error, whole and as written (no markup): progress, a warning, a summary."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _teacher_store():
    """Where teacher outputs are kept between runs (``--cache-dir``), or None with ``--no-cache``."""
    from stepdistill.commands import teacher_store

    return teacher_store(_options["cache_dir"], _options["no_cache"])


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
