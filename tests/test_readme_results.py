"""README.md's measured numbers are those of the committed results files they name
(bench/readme_results.py): every marked table is what its file gives, and every decimal number of
a marked paragraph is one of its files' numbers."""

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import readme_results  # noqa: E402

ROOT = Path(__file__).parents[1]
TEXT = readme_results.README.read_text(encoding="utf-8")


def test_every_table_of_measured_numbers_is_what_its_file_says():
    marked = list(readme_results.tables(TEXT))
    assert len(marked) >= 8
    for path, kind, shown, drawn in marked:
        assert shown == drawn, f"README.md's {kind} table is not what {path} says; run python bench/readme_results.py write"


def test_every_number_a_marked_paragraph_quotes_is_in_its_files():
    assert len(readme_results.NUMBERS.findall(TEXT)) >= 6
    assert readme_results.unsupported_numbers(TEXT) == []


def test_every_results_file_names_the_command_that_made_it_and_is_small():
    named = {path for path in re.findall(r"<!-- (?:results|numbers) ([^>]+?) -->", TEXT) for path in path.split() if path.endswith(".json")}
    assert named and all((ROOT / path).is_file() for path in named)
    for path in named:
        record = json.loads((ROOT / path).read_text())
        assert record.get("command", "").startswith(("stepdistill ", "python bench/", "make ")), path
        assert (ROOT / path).stat().st_size < 200_000, path
    assert {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "results").glob("*.json")} <= named  # none unused


def test_the_checks_fail_on_a_number_that_is_not_its_files():
    path, kind, shown, _ = next(readme_results.tables(TEXT))
    changed_cell = re.sub(r"0\.(\d)(\d\d) ±", lambda m: f"0.{m[1]}{(int(m[2]) + 1) % 100:02d} ±", shown, count=1)
    assert changed_cell != shown
    assert any(s != d for _, _, s, d in readme_results.tables(TEXT.replace(shown, changed_cell, 1)))
    marker = readme_results.NUMBERS.search(TEXT)
    paragraph = marker.group(2)
    assert readme_results.unsupported_numbers(TEXT.replace(paragraph, paragraph + " It gained 12.345 points.", 1)) == [(marker.group(1), "12.345")]
