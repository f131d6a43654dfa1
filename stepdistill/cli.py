"""The command line: ``stepdistill demo``, ``stepdistill run CONFIG.yaml``, and the studies
``stepdistill ablate`` and ``stepdistill sweep-data`` (on a config or a preset)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from rich.console import Console

from stepdistill import presets
from stepdistill.config import ExperimentConfig, load_config
from stepdistill.data import read_frame
from stepdistill.errors import StepDistillError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Distill a teacher into a small student with each method, and compare them on held-out data.",
)
# A table piped to a file or CI log would otherwise be squeezed into 80 columns.
out_console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
_debug = {"on": False}


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    threads: int = typer.Option(
        1, min=1, help="CPU threads for torch. Small models train fastest on one: splitting tiny operations costs more than it saves."
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Consent to run the code that loading a pickled (joblib) teacher or a teacher.module runs."
    ),
) -> None:
    _debug["on"] = debug
    _debug["trust_pickle"] = trust_pickle
    import torch

    torch.set_num_threads(threads)


@app.command()
def demo(
    preset: str = typer.Option(
        "article", help="article (the reference setting), nonlinear (MLP teacher), adult (LightGBM teacher), mnist (CNN teacher)."
    ),
    repeats: int = typer.Option(3, help="Runs, each with its own split, teacher fit and seed."),
    out: Path = typer.Option(Path("runs/demo"), help="Directory for results.json, report.md and plots."),
) -> None:
    """Teacher plus the four methods on built-in data (synthetic, or shipped in pip packages)."""
    _guarded(lambda: _run(*presets.demo(preset, repeats), out, {"preset": preset}))


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML file: data, teacher, student, methods, training, evaluation."),
    out: Path = typer.Option(Path("runs/run"), help="Directory for results.json, report.md and plots."),
) -> None:
    """The same comparison on your data."""

    def go() -> None:
        experiment = _with_consent(load_config(config))
        _run(experiment, read_frame(experiment.data.path), out, {"config_file": str(config)})


    _guarded(go)


STUDY_SOURCE = "CONFIG.yaml (data, teacher, student, methods, training, evaluation); or leave it out and pass --preset."
STUDY_PRESET = f"A built-in demo instead of CONFIG.yaml: {', '.join(presets.DEMOS)}."


@app.command()
def ablate(
    config: Path | None = typer.Argument(None, help=STUDY_SOURCE, show_default=False),
    preset: str | None = typer.Option(None, help=STUDY_PRESET, show_default=False),
    repeats: int | None = typer.Option(
        None, help="Runs (evaluation.repeats) for every variant. Default: the config's if it sets them, else 5.", show_default=False
    ),
    out: Path = typer.Option(Path("runs/ablate"), help="Directory for ablation.json/.md/.png and the usual report files."),
) -> None:
    """The enhanced method with each component removed in turn, compared seed by seed with the full one."""

    def go() -> None:
        from stepdistill.report.ablation import render_ablation_table, write_ablation
        from stepdistill.studies import run_ablation

        experiment, frame, description = _study_inputs(config, preset, repeats, default_repeats=5)
        _check_out(out)
        with _progress() as progress:
            results, ablation = run_ablation(experiment, frame, {**description, "study": "ablation"}, progress)
        out_console.print(render_ablation_table(results, ablation))
        _report_written(write_ablation(results, ablation, out))

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
    out: Path = typer.Option(Path("runs/sweep"), help="Directory for sweep.json, sweep.md and sweep.png."),
) -> None:
    """Every method at each labelled fraction: how much the teacher helps when labels are scarce."""

    def go() -> None:
        from stepdistill.report.sweep import render_sweep_table, write_sweep
        from stepdistill.studies import parse_fractions, run_sweep, summarize_sweep

        shares = parse_fractions(fractions)
        experiment, frame, description = _study_inputs(config, preset, repeats, default_repeats=3)
        _check_out(out)
        with _progress() as progress:
            results_by_fraction = run_sweep(experiment, frame, shares, {**description, "study": "sweep-data"}, progress)
        sweep = summarize_sweep(results_by_fraction)
        # The teacher (trained on every label) and the runs are the same at every fraction.
        any_results = next(iter(results_by_fraction.values()))
        out_console.print(render_sweep_table(sweep, any_results))
        _report_written(write_sweep(sweep, any_results, out))

    _guarded(go)


def _study_inputs(
    config: Path | None, preset: str | None, repeats: int | None, default_repeats: int
) -> tuple[ExperimentConfig, pd.DataFrame, dict]:
    """The experiment, its data and a description of where they came from, for a study given
    either a config file or a preset. ``repeats`` replaces the config's when given."""
    if (config is None) == (preset is None):
        raise StepDistillError("give either CONFIG.yaml or --preset NAME (exactly one of them)")
    if repeats is not None and repeats < 1:
        raise StepDistillError(f"--repeats must be at least 1 (got {repeats})")
    if preset is not None:
        return *presets.demo(preset, repeats or default_repeats), {"preset": preset}
    experiment = _with_consent(load_config(config))
    if repeats is not None or "repeats" not in experiment.evaluation.model_fields_set:
        evaluation = experiment.evaluation.model_copy(update={"repeats": repeats or default_repeats})
        experiment = experiment.model_copy(update={"evaluation": evaluation})
    return experiment, read_frame(experiment.data.path), {"config_file": str(config)}


def _with_consent(config: ExperimentConfig) -> ExperimentConfig:
    """The config with ``--trust-pickle`` given to a teacher whose loading runs code."""
    if _debug.get("trust_pickle") and "trust_pickle" in type(config.teacher).model_fields:
        return config.model_copy(update={"teacher": config.teacher.model_copy(update={"trust_pickle": True})})
    return config


def _run(config: ExperimentConfig, frame, out: Path, description: dict) -> None:
    from stepdistill.experiment import run_experiment
    from stepdistill.report import render_table, write_report
    from stepdistill.run_dir import fingerprint, write_students

    _check_out(out)
    test_frame = None if config.data.test_path is None else read_frame(config.data.test_path)
    runs = []
    with _progress() as progress:
        results = run_experiment(config, frame, description, progress, test_frame, on_run=runs.append)
    out_console.print(render_table(results))
    _report_written(write_report(results, out, lambda staging_dir: write_students(staging_dir, results, runs, fingerprint(frame))))
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
    input: Path = typer.Argument(..., help="CSV or Parquet file with the columns the student was trained on."),
    method: str | None = METHOD_OPTION,
    run: int = RUN_OPTION,
    out: Path | None = typer.Option(None, help="CSV file for the predictions; default: standard output."),
) -> None:
    """Classes and class probabilities of a saved student for every row of INPUT."""

    def go() -> None:
        from stepdistill.run_dir import load_student, student_directory

        student = load_student(student_directory(run_dir, method, run))
        frame = read_frame(input)
        predictions = _predictions(student, frame)
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
    format: str = typer.Option(..., help="onnx (probabilities from the encoded features), sklearn (a logistic student as a pipeline on the raw columns, skops), or safetensors."),
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


def _predictions(student, frame: pd.DataFrame) -> pd.DataFrame:
    """The predicted class and each class's probability for every row, with the row's id (its
    id column, or its position)."""
    known = {*student.encoder.columns_, student.about["label"], student.about["id_column"]}
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


@contextmanager
def _progress():
    """A progress function for experiments: each message printed, the latest shown by a spinner."""
    with err_console.status("training") as status:
        yield lambda message: status.update(message) or err_console.print(message)


def _report_written(paths: list[Path]) -> None:
    err_console.print(f"wrote {', '.join(str(p) for p in paths)}")


def _guarded(action) -> None:
    try:
        action()
    except StepDistillError as err:
        if _debug["on"]:
            raise
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
