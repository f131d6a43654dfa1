"""The results as a rich table for the terminal."""

from __future__ import annotations

from rich.table import Table

from stepdistill.report.results import table_rows
from stepdistill.report.rows import rich_table


def render_table(results: dict) -> Table:
    """Teacher and one row per method: test metrics as mean ± std over seeds, size and train time."""
    return rich_table("Test metrics (mean ± std over seeds)", *table_rows(results))
