"""The README's measured numbers, kept with the files they come from.

Every table of measured numbers in README.md sits between markers naming its results file and how
the table is drawn from it, and is exactly what that file says:

    <!-- results docs/results/adult.json metrics -->
    | model | accuracy | ...
    <!-- /results -->

A paragraph that quotes measured numbers follows a marker naming its files, and every decimal
number in it is one of theirs (as printed: rounded, in points, percent or thousands, or without its sign):

    <!-- numbers docs/results/adult.json -->

The files are small JSON: what the README shows of a run directory (``collect``), or a benchmark's
own output under ``bench/``. Each records the command that made it.

    python bench/readme_results.py collect NAME RUN_DIR -- COMMAND...   # docs/results/NAME.json
    python bench/readme_results.py write                                # redraw the README's tables
    python bench/readme_results.py check                                # what tests/test_readme_results.py checks
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from stepdistill.report.ablation import ablation_rows
from stepdistill.report.markdown import compared_metrics, markdown_table
from stepdistill.report.results import comparison_rows, speed_rows, table_rows
from stepdistill.report.sweep import difference_rows, shown_metrics, sweep_rows

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS_DIR = ROOT / "docs" / "results"

TABLE = re.compile(r"<!-- results (\S+) (\S+) -->\n(.*?)<!-- /results -->", re.S)
NUMBERS = re.compile(r"<!-- numbers ([^>]+?) -->\n(.*?)(?:\n\n|\Z)", re.S)
# A decimal number as prose prints it: 0.873, +2.01, -0.008, 2.03x, 73.0%, 1,221.5
DECIMAL = re.compile(r"(?<![\w.])[-+]?\d[\d,]*\.\d+(?!\.?\d)")

# What the README shows of a run's results.json: the tables' cells and the setup, not the
# training histories, tuning records, calibration bins, per-class metrics or warnings (which quote
# records of the data).
METHOD_KEYS = ("test", "control", "vs_control", "params", "train_seconds", "speed", "flags")
TEACHER_KEYS = ("kind", "test", "accuracy_on", "params", "train_seconds", "speed", "refit")


def compact(results: dict) -> dict:
    """The parts of a results dict that the README's tables are drawn from."""
    return {
        "teacher": {k: results["teacher"][k] for k in TEACHER_KEYS if k in results["teacher"]},
        **({"reference": results["reference"]} if "reference" in results else {}),
        "methods": {name: {k: entry[k] for k in METHOD_KEYS if k in entry} for name, entry in results["methods"].items()},
        "chosen": results["chosen"],
        "evaluation": results["evaluation"],
        "config": {"data": {k: v for k, v in results["config"]["data"].items() if k.startswith("n_") or k == "classes"}},
        "machine": results["machine"],
        "date": results["date"],
    }


def collect(name: str, run_dir: Path, command: list[str]) -> Path:
    """docs/results/NAME.json from RUN_DIR: a run's compact results, and a study's ablation.json
    or sweep.json; with the command that made them."""
    record: dict = {"command": " ".join(command)}
    if (run_dir / "results.json").is_file():  # a sweep keeps its runs in sweep.json only
        record["results"] = compact(json.loads((run_dir / "results.json").read_text()))
    for study in ("ablation", "sweep"):
        if (run_dir / f"{study}.json").is_file():
            record[study] = json.loads((run_dir / f"{study}.json").read_text())
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def render(kind: str, record: dict) -> str:
    """The table ``kind`` of a results file, as the README prints it."""
    results = record.get("results")
    if kind == "metrics":
        table = table_rows(results)
    elif kind == "comparisons":
        table = comparison_rows(results, compared_metrics(results))
    elif kind == "speed":
        table = speed_rows(results)
    elif kind == "ablation":
        table = ablation_rows(record["ablation"])
    elif kind.startswith("sweep"):  # sweep (the headline metric) or sweep-differences
        metric = shown_metrics(record["sweep"])[0]
        table = difference_rows(record["sweep"], metric) if kind == "sweep-differences" else sweep_rows(record["sweep"], metric)
    else:
        raise SystemExit(f"unknown table kind {kind!r} in README.md")
    return "\n".join(markdown_table(*table)) + "\n"


def _file(path: str) -> dict:
    return json.loads((ROOT / path).read_text(encoding="utf-8"))


def tables(text: str) -> Iterator[tuple[str, str, str, str]]:
    """(file, kind, the README's table, the table its file gives) for every marked table."""
    for match in TABLE.finditer(text):
        path, kind, shown = match.groups()
        yield path, kind, shown, render(kind, _file(path))


def leaves(value) -> Iterator[float]:
    """Every number in a JSON value."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)


def printed_forms(value: float, decimals: int) -> set[str]:
    """How ``value`` may be printed with ``decimals`` decimals: as is, in points or percent
    (x100), in thousands (bytes as kB), and without its sign."""
    return {f"{abs(v):.{decimals}f}" for v in (value, 100 * value, value / 1000)}


def unsupported_numbers(text: str) -> list[tuple[str, str]]:
    """(files, number) for every decimal number of a marked paragraph that none of its files holds."""
    missing = []
    for match in NUMBERS.finditer(text):
        paths, paragraph = match.group(1).split(), match.group(2)
        values = [v for path in paths for v in leaves(_file(path))]
        for number in DECIMAL.findall(paragraph):
            shown = number.lstrip("+-").replace(",", "")
            decimals = len(shown.split(".")[1])
            if not any(shown in printed_forms(v, decimals) for v in values):
                missing.append((" ".join(paths), number))
    return missing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    collecting = sub.add_parser("collect", help="keep what the README shows of a run directory as docs/results/NAME.json")
    collecting.add_argument("name")
    collecting.add_argument("run_dir", type=Path)
    collecting.add_argument("command", nargs=argparse.REMAINDER, help="the command that made the run, after --")
    sub.add_parser("write", help="redraw every marked table of README.md from its file")
    sub.add_parser("check", help="compare README.md's tables and marked paragraphs with their files")
    args = parser.parse_args(argv)
    if args.action == "collect":
        command = [part for part in args.command if part != "--"]
        print(f"wrote {collect(args.name, args.run_dir, command)}")
        return
    text = README.read_text(encoding="utf-8")
    if args.action == "write":
        for path, kind, shown, drawn in tables(text):
            text = text.replace(f"<!-- results {path} {kind} -->\n{shown}", f"<!-- results {path} {kind} -->\n{drawn}", 1)
        README.write_text(text, encoding="utf-8")
        print(f"redrew the tables of {README}")
        return
    stale = [(path, kind) for path, kind, shown, drawn in tables(text) if shown != drawn]
    missing = unsupported_numbers(text)
    for path, kind in stale:
        print(f"README.md's {kind} table differs from {path}")
    for paths, number in missing:
        print(f"README.md quotes {number}, which {paths} does not hold")
    sys.exit(1 if stale or missing else 0)


if __name__ == "__main__":
    main()
