"""The results as one self-contained HTML page: figures embedded as data URIs, the style inline,
no scripts and nothing fetched, so the file alone shows everything, offline.

The building blocks (page, table, figure) serve the study pages too (ablation.py, sweep.py).
"""

from __future__ import annotations

import base64
import json
import re
from html import escape

from stepdistill.report.figures import planned_figures
from stepdistill.report.markdown import NO_CONTROL, compared_metrics, comparison_note, setup_items, verdicts
from stepdistill.report.results import SPEED_TITLE, comparison_rows, page_subtitle, per_class_f1_rows, runs_word, speed_rows, table_rows

STYLE = """
body { font-family: system-ui, sans-serif; color: #1b1b1b; max-width: 1200px; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.subtitle, .note, figcaption, .caption { color: #555; }
.note { font-style: italic; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.55rem; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; }
th:first-child, td:first-child { text-align: left; }
table.notes th:last-child, table.notes td:last-child { text-align: left; white-space: normal; min-width: 12rem; }
tr.marked td { background: #fff4cc; font-weight: 600; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; }
pre { background: #f6f6f6; padding: 0.75rem; overflow-x: auto; font-size: 0.85rem; }
code { background: #f2f2f2; padding: 0 0.2rem; }
.warnings li { color: #8a3b00; }
"""


def inline_markdown(text: str) -> str:
    """``text`` escaped, with its inline markdown (`code`, **strong**) as HTML."""
    escaped = escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


def html_page(title: str, subtitle: str, parts: list[str]) -> str:
    """A whole page: ``parts`` (HTML) under a heading and an optional subtitle."""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{STYLE}</style>",
            "</head>",
            "<body>",
            f"<h1>{escape(title)}</h1>",
            *([f'<p class="subtitle">{escape(subtitle)}</p>'] if subtitle else []),
            *parts,
            "</body>",
            "</html>",
            "",
        ]
    )


def html_table(headers: list[str], rows: list[list[str]], marked_rows: frozenset[int] = frozenset(), notes_column: bool = False) -> str:
    """A table of text cells; rows at ``marked_rows`` highlighted; a last column of notes wraps."""
    head = "".join(f"<th>{escape(header)}</th>" for header in headers)
    body = [
        f"<tr{_class_attribute('marked' if index in marked_rows else None)}>{''.join(f'<td>{escape(cell)}</td>' for cell in row)}</tr>"
        for index, row in enumerate(rows)
    ]
    table_tag = f"<table{_class_attribute('notes' if notes_column else None)}>"
    return "\n".join(['<div class="scroll">', table_tag, f"<thead><tr>{head}</tr></thead>", "<tbody>", *body, "</tbody>", "</table>", "</div>"])


def _class_attribute(css_class: str | None) -> str:
    return f' class="{css_class}"' if css_class else ""


def html_figure(png: bytes, title: str, caption: str) -> str:
    """A PNG embedded in the page, with its caption."""
    source = f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}"
    return f'<figure><img src="{source}" alt="{escape(title)}"><figcaption>{escape(caption)}</figcaption></figure>'


def paragraph(text: str, css_class: str | None = None) -> str:
    """A paragraph of inline markdown."""
    return f"<p{_class_attribute(css_class)}>{inline_markdown(text)}</p>"


def bullet_list(items: list[str], css_class: str | None = None) -> str:
    """A list of inline-markdown items."""
    return "\n".join([f"<ul{_class_attribute(css_class)}>", *[f"<li>{inline_markdown(item)}</li>" for item in items], "</ul>"])


def heading(text: str) -> str:
    return f"<h2>{escape(text)}</h2>"


def _metrics_parts(results: dict) -> list[str]:
    headers, rows = table_rows(results)
    chosen = results.get("chosen", {}).get("method")
    parts = [
        heading(f"Test metrics (mean ± std over {runs_word(results)})"),
        html_table(headers, rows, frozenset(index for index, row in enumerate(rows) if row[0] == chosen), notes_column=True),
    ]
    if chosen:
        parts.append(paragraph(f"Highlighted: **{chosen}**, the student chosen by its mean {results['chosen']['metric']} on the validation split.", "caption"))
    per_class = per_class_f1_rows(results)
    if per_class is not None:
        parts += [heading(f"Per-class test F1 (mean ± std over {runs_word(results)})"), html_table(*per_class)]
    speed = speed_rows(results)
    if speed is not None:
        parts += [heading(SPEED_TITLE), html_table(*speed)]
    return parts


def _comparison_parts(results: dict) -> list[str]:
    rows = comparison_rows(results, compared_metrics(results))
    if not rows[1]:
        return [heading("Compared with the control"), paragraph(NO_CONTROL)]
    return [
        heading("Compared with the control"),
        html_table(*rows),
        paragraph(comparison_note(results), "caption"),
        bullet_list([f"**{name}**: {sentence}" for name, sentence in verdicts(results)]),
    ]


def _figure_parts(results: dict, figures: dict[str, bytes]) -> list[str]:
    parts = []
    for figure, note in planned_figures(results):
        parts += [heading(figure.title), paragraph(note, "note") if note else html_figure(figures[figure.name], figure.title, figure.caption)]
    return parts


def _provenance_parts(results: dict) -> list[str]:
    """Warnings, the exact config and the versions that computed the results."""
    warnings = results.get("warnings", [])
    versions = [[name, str(value)] for name, value in results.get("versions", {}).items()]
    if "machine" in results:
        versions.append(["machine", str(results["machine"])])
    return [
        heading("Warnings"),
        bullet_list(warnings, "warnings") if warnings else paragraph("None.", "note"),
        heading("Configuration"),
        f"<pre>{escape(json.dumps(results.get('config', {}), indent=2))}</pre>",
        heading("Versions"),
        html_table(["package", "version"], versions) if versions else paragraph("Not recorded in these results.", "note"),
    ]


def render_html(results: dict, figures: dict[str, bytes]) -> str:
    """The report as one page; ``figures`` maps the name of each figure the results can show
    (figures.py) to its PNG."""
    return html_page(
        "Distillation report",
        page_subtitle(results),
        [
            heading("What was run"),
            bullet_list(setup_items(results)),
            *_metrics_parts(results),
            *_comparison_parts(results),
            *_figure_parts(results, figures),
            *_provenance_parts(results),
        ],
    )
