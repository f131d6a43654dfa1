"""Tables given as headers and rows of formatted cells, for the terminal."""

from __future__ import annotations

from rich.table import Table


def rich_table(title: str, headers: list[str], rows: list[list[str]], caption: str | None = None) -> Table:
    """A rich table: the first column left-aligned (names), the others right-aligned (numbers)."""
    table = Table(title=title, caption=caption)
    table.add_column(headers[0], justify="left", no_wrap=True)
    for header in headers[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table
