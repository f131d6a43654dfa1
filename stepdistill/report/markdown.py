"""The results as a markdown report: setup, metrics table, comparison with the baseline, plots."""

from __future__ import annotations


from stepdistill.report.results import SIGNIFICANT_MARK, comparison_rows, per_class_f1_rows, runs_word, table_rows
from stepdistill.summary import is_worse

# The metrics the report compares in words and in its comparison table.
COMPARED = ("accuracy", "log_loss")


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    alignment = [":---", *["---:"] * (len(headers) - 1)]
    return [f"| {' | '.join(cells)} |" for cells in (headers, alignment, *rows)]


def _setup_lines(results: dict) -> list[str]:
    """Bullet points for the parts of the config a reader needs to judge the numbers."""
    config = results.get("config", {})
    lines = []
    if "preset" in config:
        lines.append(f"- Preset: `{config['preset']}`")
    data = config.get("data", {})
    sizes = [f"{data[key]:,} {split}" for key, split in
             (("n_train", "train"), ("n_val", "validation"), ("n_test", "test")) if key in data]
    if sizes:
        lines.append(f"- Rows: {', '.join(sizes)}")
    if "n_features" in data:
        lines.append(f"- Features: {data['n_features']:,}")
    if "classes" in data:
        lines.append(f"- Classes: {', '.join(str(name) for name in data['classes'])}")
    evaluation = results.get("evaluation")
    if evaluation:
        lines.append(
            f"- Runs: {evaluation['runs']} ({evaluation['scheme']}); each its own split, labelled subset, "
            f"{'teacher refit, ' if results['teacher'].get('refit') else ''}student initialization and batch order"
        )
        if evaluation.get("labelled_fraction", 1) < 1:
            lines.append(f"- Labelled fraction: {evaluation['labelled_fraction']} of the training and validation rows")
    lines.append(f"- Teacher: {results['teacher']['kind']}{'' if results['teacher'].get('refit', True) else ' (loaded: the same in every run)'}")
    if "chosen" in results:
        lines.append(f"- Chosen student: **{results['chosen']['method']}** (best mean {results['chosen']['metric']} on the validation split)")
    lines += [f"- Warning: {message}" for message in results.get("warnings", [])]
    return lines


def comparison_lines(results: dict) -> list[str]:
    """The comparison of each method with its control: a table, how it was tested, and a
    sentence per method saying what the intervals support."""
    rows = comparison_rows(results, COMPARED)
    if not rows[1]:
        return ["No method has a control (no baseline was run), so there is nothing to compare against.", ""]
    evaluation = results.get("evaluation", {})
    confidence = round(100 * evaluation.get("confidence", 0.95))
    lines = [
        *markdown_table(*rows),
        "",
        f"Tested with: {evaluation.get('test', 'paired comparison')}; {confidence}% intervals; p-values Holm-corrected over the "
        f"{sum(len(e.get('vs_control', {})) for e in results['methods'].values())} comparisons of this table; {SIGNIFICANT_MARK}: "
        "significant after correction. A control is the baseline trained with the same recipe (optimizer, schedule, budget, tuning).",
        "",
    ]
    for name, entry in results["methods"].items():
        if entry.get("vs_control"):
            lines.append(f"- **{name}**: {verdict_sentence(entry)}")
    return [*lines, ""]


def verdict_sentence(entry: dict) -> str:
    """What the comparisons of one method with its control support, in words."""
    found = {metric: c for metric, c in entry["vs_control"].items() if metric in COMPARED}
    untested = {c["verdict"] for c in found.values()} & {"too few repeats", "no spread"}
    if untested:
        return f"{' and '.join(sorted(untested))}: no claim either way against {entry['control']}."
    better = [m for m, c in found.items() if c["significant"] and not is_worse(m, c["diff"])]
    worse = [m for m, c in found.items() if c["significant"] and is_worse(m, c["diff"])]
    if not better and not worse:
        return f"no detectable difference from {entry['control']}."
    parts = ([f"better than {entry['control']} on {', '.join(better)}"] if better else []) + (
        [f"worse than {entry['control']} on {', '.join(worse)}"] if worse else []
    )
    return "; ".join(parts) + "."


def _per_class_lines(results: dict) -> list[str]:
    table = per_class_f1_rows(results)
    if table is None:
        return []
    return [f"## Per-class test F1 (mean ± std over {runs_word(results)})", "", *markdown_table(*table), ""]


def render_markdown(results: dict, history_png: str, metrics_png: str) -> str:
    """The full report; the plot arguments are file names relative to the report."""
    headers, rows = table_rows(results)
    subtitle = " · ".join(str(results[key]) for key in ("date", "machine") if key in results)
    lines = [
        "# Distillation report",
        "",
        *([f"_{subtitle}_", ""] if subtitle else []),
        "## Setup",
        "",
        *_setup_lines(results),
        "",
        f"## Test metrics (mean ± std over {runs_word(results)})",
        "",
        *markdown_table(headers, rows),
        "",
        *_per_class_lines(results),
        "## Compared with the control",
        "",
        *comparison_lines(results),
        "## Plots",
        "",
        "Loss terms per epoch (run 0): weighted value solid, weight dashed.",
        "",
        f"![Training history]({history_png})",
        "",
        f"![Test metrics]({metrics_png})",
        "",
    ]
    return "\n".join(lines)
