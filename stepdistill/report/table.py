"""The results as a rich table for the terminal."""

from __future__ import annotations

from rich.table import Table

from stepdistill.report.results import SPEED_TITLE, runs_word, speed_rows, table_rows
from stepdistill.report.rows import rich_table


def render_table(results: dict) -> Table:
    """Teacher, the majority-class rule and one row per method: test metrics as mean ± std over
    runs, size, train time and notes."""
    return rich_table(f"Test metrics (mean ± std over {runs_word(results)})", *table_rows(results))


def render_speed_table(results: dict) -> Table | None:
    """Size and latency of the teacher and each student, with the speed-ups; None if not timed."""
    rows = speed_rows(results)
    return None if rows is None else rich_table(SPEED_TITLE, *rows)
