"""The command line: ``stepdistill demo`` and ``stepdistill run CONFIG.yaml``."""

from __future__ import annotations

import sys
from pathlib import Path

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
out_console = Console(width=None if sys.stdout.isatty() else 132)
err_console = Console(stderr=True)
_debug = {"on": False}


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    threads: int = typer.Option(
        1, min=1, help="CPU threads for torch. Small models train fastest on one: splitting tiny operations costs more than it saves."
    ),
) -> None:
    _debug["on"] = debug
    import torch

    torch.set_num_threads(threads)


@app.command()
def demo(
    preset: str = typer.Option(
        "article", help="article (the reference setting), nonlinear (MLP teacher), adult (LightGBM teacher), mnist (CNN teacher)."
    ),
    seeds: int = typer.Option(3, help="Number of seeds per method."),
    out: Path = typer.Option(Path("runs/demo"), help="Directory for results.json, report.md and plots."),
) -> None:
    """Teacher plus the four methods on built-in data (synthetic, or shipped in pip packages)."""
    _guarded(lambda: _run(*presets.demo(preset, seeds), out, {"preset": preset}))


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML file: data, teacher, student, methods, seeds."),
    out: Path = typer.Option(Path("runs/run"), help="Directory for results.json, report.md and plots."),
) -> None:
    """The same comparison on your data."""

    def go() -> None:
        experiment = load_config(config)
        _run(experiment, read_frame(experiment.data.path), out, {"config_file": str(config)})

    _guarded(go)


def _run(config: ExperimentConfig, frame, out: Path, description: dict) -> None:
    from stepdistill.experiment import run_experiment
    from stepdistill.report import render_table, write_report

    if out.exists() and not out.is_dir():
        raise StepDistillError(f"--out {out} is a file; pass a directory")
    with err_console.status("training") as status:
        results = run_experiment(config, frame, description, progress=lambda m: status.update(m) or err_console.print(m))
    out_console.print(render_table(results))
    written = write_report(results, out)
    err_console.print(f"wrote {', '.join(str(p) for p in written)}")


def _guarded(action) -> None:
    try:
        action()
    except StepDistillError as err:
        if _debug["on"]:
            raise
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
