"""The results as a rich table for the terminal."""

from __future__ import annotations

from rich.table import Table

from stepdistill.report.results import table_rows


def render_table(results: dict) -> Table:
    """Teacher and one row per method: test metrics as mean ± std over seeds, size and train time."""
    headers, rows = table_rows(results)
    table = Table(title="Test metrics (mean ± std over seeds)")
    table.add_column(headers[0], justify="left", no_wrap=True)
    for header in headers[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table
