"""The results as a markdown report: setup, metrics table, comparison with the baseline, plots."""

from __future__ import annotations

from stepdistill.evaluate import is_worse
from stepdistill.report.figures import planned_figures
from stepdistill.report.results import SIGNIFICANT_MARK, SPEED_TITLE, comparison_rows, page_subtitle, per_class_f1_rows, runs_word, speed_rows, table_rows


def compared_metrics(results: dict) -> list[str]:
    """The metrics the results compare each method with its control on, in words and in the
    comparison table."""
    return list(results.get("evaluation", {}).get("compared", ("accuracy", "log_loss")))


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    alignment = [":---", *["---:"] * (len(headers) - 1)]
    return [f"| {' | '.join(cells)} |" for cells in (headers, alignment, *rows)]


def setup_items(results: dict) -> list[str]:
    """What was run, one item each, for a reader to judge the numbers by; inline markdown
    (`code`, **strong**), which the HTML page renders too."""
    config = results.get("config", {})
    items = []
    if "preset" in config:
        items.append(f"Preset: `{config['preset']}`")
    data = config.get("data", {})
    if data.get("path"):
        test_file = f" (fixed test file `{data['test_path']}`)" if data.get("test_path") else ""
        items.append(f"Data: `{data['path']}`{test_file}")
    if data.get("task"):  # generative students: a task of the released distilling-step-by-step data
        items.append(f"Data: the released `{data['task']}` records (training split `{data['train_split']}`, test split `{data['test_split']}`)")
    sizes = [f"{data[key]:,} {split}" for key, split in
             (("n_train", "train"), ("n_val", "validation"), ("n_test", "test")) if key in data]
    if sizes:
        items.append(f"Rows: {', '.join(sizes)}")
    if "n_features" in data:
        items.append(f"Features: {data['n_features']:,}")
    if "classes" in data:
        items.append(f"Classes: {', '.join(str(name) for name in data['classes'])}")
    evaluation = results.get("evaluation")
    if evaluation:
        items.append(
            f"Runs: {evaluation['runs']} ({evaluation['scheme']}); each its own split, labelled subset, "
            f"{'teacher refit, ' if results['teacher'].get('refit') else ''}student initialization and batch order"
        )
        if evaluation.get("labelled_fraction", 1) < 1:
            items.append(f"Labelled fraction: {evaluation['labelled_fraction']} of the training and validation rows")
    items.append(f"Teacher: {results['teacher']['kind']}{'' if results['teacher'].get('refit', True) else ' (loaded: the same in every run)'}")
    if accuracy_on := results["teacher"].get("accuracy_on"):
        test = results["teacher"]["test"]["accuracy"]["mean"]
        items.append(
            f"Teacher accuracy against the human labels: train {accuracy_on['train']:.3f}, validation {accuracy_on['validation']:.3f}, test {test:.3f}"
        )
    if "student" in config:
        items.append(f"Student: {described(config['student'])}")
    if "chosen" in results:
        items.append(f"Chosen student: **{results['chosen']['method']}** (best mean {results['chosen']['metric']} on the validation split)")
    return items


def described(section: dict) -> str:
    """A config section as ``kind (key value, ...)``: "mlp (hidden [16], projection True)"; a
    generative student's as its model: a tiny random one's settings, a directory, or SmolLM2."""
    if "kind" not in section and "tiny" in section:
        if section["tiny"]:
            return described({**section["tiny"], "kind": f"tiny random {section['tiny'].get('kind', 'causal')} model"})
        return f"`{section['model']}`" if section.get("model") else "SmolLM2-135M-Instruct"
    settings = ", ".join(f"{key} {value}" for key, value in section.items() if key != "kind" and value is not None)
    return f"{section.get('kind', '')}{f' ({settings})' if settings else ''}"


def comparison_note(results: dict) -> str:
    """How the comparisons with the controls were tested."""
    evaluation = results.get("evaluation", {})
    confidence = round(100 * evaluation.get("confidence", 0.95))
    return (
        f"Tested with: {evaluation.get('test', 'paired comparison')}; {confidence}% intervals, each unadjusted (its own comparison's);"
        " p-values Holm-corrected over the "
        f"{sum(len(e.get('vs_control', {})) for e in results['methods'].values())} comparisons of this table; {SIGNIFICANT_MARK}: "
        "significant after correction. A control is the baseline trained with the same recipe (optimizer, schedule, budget, tuning)."
    )


NO_CONTROL = "No method has a control (no baseline was run), so there is nothing to compare against."


def comparison_lines(results: dict) -> list[str]:
    """The comparison of each method with its control: a table, how it was tested, and a
    sentence per method saying what the intervals support."""
    rows = comparison_rows(results, compared_metrics(results))
    if not rows[1]:
        return [NO_CONTROL, ""]
    verdict_lines = [f"- **{name}**: {sentence}" for name, sentence in verdicts(results)]
    return [*markdown_table(*rows), "", comparison_note(results), "", *verdict_lines, ""]


def verdicts(results: dict) -> list[tuple[str, str]]:
    """(method, verdict sentence) for each method compared with a control."""
    metrics = compared_metrics(results)
    return [(name, verdict_sentence(entry, metrics)) for name, entry in results["methods"].items() if entry.get("vs_control")]


def verdict_sentence(entry: dict, metrics=("accuracy", "log_loss")) -> str:
    """What the comparisons of one method with its control on ``metrics`` support, in words."""
    found = {metric: c for metric, c in entry["vs_control"].items() if metric in metrics}
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


def _figure_lines(results: dict) -> list[str]:
    lines = []
    for figure, note in planned_figures(results):
        lines += [note, ""] if note else [figure.caption, "", f"![{figure.title}]({figure.file})", ""]
    return lines


def _speed_lines(results: dict) -> list[str]:
    table = speed_rows(results)
    return [] if table is None else [f"## {SPEED_TITLE}", "", *markdown_table(*table), ""]


def render_markdown(results: dict) -> str:
    """The full report; its figures are the files of figures.py, beside it."""
    headers, rows = table_rows(results)
    subtitle = page_subtitle(results)
    lines = [
        "# Distillation report",
        "",
        *([f"_{subtitle}_", ""] if subtitle else []),
        "## Setup",
        "",
        *[f"- {item}" for item in setup_items(results)],
        *[f"- Warning: {message}" for message in results.get("warnings", [])],
        "",
        f"## Test metrics (mean ± std over {runs_word(results)})",
        "",
        *markdown_table(headers, rows),
        "",
        *_per_class_lines(results),
        *_speed_lines(results),
        "## Compared with the control",
        "",
        *comparison_lines(results),
        "## Plots",
        "",
        *_figure_lines(results),
    ]
    return "\n".join(lines)
