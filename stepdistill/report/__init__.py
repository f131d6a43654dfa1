"""Reports of a distillation run: a terminal table and a directory of files."""

from stepdistill.report.table import render_table
from stepdistill.report.write import write_report

__all__ = ["render_table", "write_report"]
