"""Reports of a distillation run: a terminal table and a directory of files."""

from stepdistill.report.table import render_speed_table, render_table
from stepdistill.report.write import write_report

__all__ = ["render_speed_table", "render_table", "write_report"]
