"""The report's figures: their files and captions, in page order, and which ones the results can
show. Shared by the markdown report, the HTML page and the writer, which draws them."""

from __future__ import annotations

from dataclasses import dataclass

from stepdistill.report.results import is_multiclass, models_with, timed_models


@dataclass(frozen=True)
class Figure:
    name: str  # the key of its drawing in ``render_html``'s figures
    file: str
    title: str  # heading and alt text
    caption: str


HISTORY = Figure("history", "history.png", "Training history", "Loss terms per epoch (run 0): weighted value solid, weight dashed.")
METRICS = Figure("metrics", "metrics.png", "Test metrics", "Test metrics per method, mean ± std over runs; the teacher's as dashed lines.")
RELIABILITY = Figure(
    "reliability",
    "reliability.png",
    "Reliability diagrams",
    "Test rows of all runs binned by the predicted class's probability (10 equal-width bins): the share predicted "
    "correctly against the mean probability; on the diagonal a model is calibrated. ECE: mean ± std over runs.",
)
CONFUSION = Figure(
    "confusion",
    "confusion.png",
    "Confusion matrices",
    "Test rows of all runs by true class (rows) and predicted class (columns); the shade is the share of the true class.",
)
TRADEOFF = Figure(
    "tradeoff",
    "tradeoff.png",
    "Accuracy against latency",
    "Test accuracy (mean ± std over runs) against the time to predict one row (log scale).",
)


def planned_figures(results: dict) -> list[tuple[Figure, str | None]]:
    """Each figure the report has a place for, with None when the results can show it, else a
    one-line note saying why it is missing. Confusion matrices are for multi-class tasks only."""
    planned = [
        (HISTORY, None),
        (METRICS, None),
        (RELIABILITY, None if models_with(results, "calibration") else "No reliability diagrams: these results record no calibration bins."),
    ]
    if is_multiclass(results):
        planned.append((CONFUSION, None if models_with(results, "confusion") else "No confusion matrices: these results record none."))
    planned.append((TRADEOFF, None if timed_models(results) else "No accuracy-against-latency plot: these results have no speed numbers."))
    return planned


def shown_figures(results: dict) -> list[Figure]:
    """The figures the results can show, in page order."""
    return [figure for figure, note in planned_figures(results) if note is None]
