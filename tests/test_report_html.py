"""The HTML reports, checked in a real browser: headless Chromium opens each page and says whether
every figure drew, whether the page fetched anything and whether it logged an error.

Chromium is installed by ``make test`` (tests/setup_chromium.sh); where it is missing these tests
fail and say so.
"""

import base64
import copy
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from stepdistill import studies
from stepdistill.config import ExperimentConfig
from stepdistill.data import linear_binary
from stepdistill.evaluate import ECE_BINS, NO_ANSWER, expected_calibration_error
from stepdistill.experiment.summary import calibration_summary, confusion_counts, prediction_summary
from stepdistill.experiment.tabular import run_tabular
from stepdistill.report.ablation import write_ablation
from stepdistill.report.figures import shown_figures
from stepdistill.report.html import render_html
from stepdistill.report.markdown import verdict_sentence
from stepdistill.report.sweep import write_sweep

FAST = {"epochs": 2, "lr": 0.05}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HISTORY, METRICS, RELIABILITY, CONFUSION, TRADEOFF = (
    "Training history", "Test metrics", "Reliability diagrams", "Confusion matrices", "Accuracy against latency")

# Test-only script put at the start of <head> of a copy of a page. Error events of elements that
# fail to load do not bubble, so the listener captures them; after load it writes a verdict (every
# image's alt and state, what was fetched, errors) into an element that --dump-dom prints.
PROBE = """<script>
(function () {
  var problems = [];
  window.addEventListener('error', function (event) {
    var target = event.target;
    problems.push(target && target !== window ? 'failed to load ' + (target.src || target.href || target.tagName) : 'error: ' + event.message);
  }, true);
  var consoleError = console.error;
  console.error = function () {
    problems.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    consoleError.apply(console, arguments);
  };
  window.addEventListener('load', function () {
    var images = Array.prototype.slice.call(document.images);
    var verdict = {
      images: images.map(function (image) { return image.alt; }),
      broken: images.filter(function (image) { return !(image.complete && image.naturalWidth > 0); }).map(function (image) { return image.alt; }),
      fetched: performance.getEntriesByType('resource').map(function (entry) { return entry.name; }),
      problems: problems
    };
    var out = document.createElement('pre');
    out.id = 'probe-verdict';
    out.textContent = JSON.stringify(verdict);
    document.body.appendChild(out);
  });
})();
</script>"""


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: run `make test`, which installs it (tests/setup_chromium.sh)", pytrace=False)
    return path


def open_in_chromium(chromium: str, pages: dict[str, Path], work_dir: Path) -> dict[str, dict]:
    """Each page opened in its own headless Chromium, all at once: the probe's verdict, with
    ``console``, the lines of the browser's log that the page's console wrote."""
    running = {}
    for index, (name, page) in enumerate(pages.items()):
        probed = work_dir / f"page{index}.html"
        probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
            "--enable-logging=stderr", "--v=0", f"--user-data-dir={work_dir / f'profile{index}'}",
            "--dump-dom", probed.as_uri(),
        ]
        running[name] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    verdicts = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, f"{name}: chromium failed:\n{stderr}"
        found = re.search(r'<pre id="probe-verdict">(.*?)</pre>', stdout, re.S)
        assert found, f"{name}: the page never finished loading:\n{stdout[:2000]}"
        verdicts[name] = {**json.loads(html.unescape(found.group(1))), "console": [line for line in stderr.splitlines() if ":CONSOLE" in line]}
    return verdicts


def _config() -> ExperimentConfig:
    return ExperimentConfig.model_validate({"teacher": {"kind": "logistic", "training": FAST}, "training": FAST, "evaluation": {"repeats": 2}})


def _three_class_frame(n: int = 1000):
    frame = linear_binary(n, 4, seed=3)
    score = frame["x0"] + 0.5 * frame["x1"]
    frame["label"] = np.where(score < -0.5, "low", np.where(score > 0.5, "high", "mid"))
    return frame


@pytest.fixture(scope="module")
def multiclass_ablation() -> tuple[dict, dict]:
    """The ablation of a three-class experiment, cut to two removals and one simpler method to
    keep it to seconds: the experiment's results and the ablation."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(studies, "REMOVALS", {name: studies.REMOVALS[name] for name in ("no_weight_ramp", "no_rationale")})
        patch.setattr(studies, "REFERENCE_METHODS", ("baseline",))
        results = run_tabular(studies.ablation_config(_config()), _three_class_frame(), compare_with=studies.FULL).results
        return results, studies.summarize_ablation(results)


@pytest.fixture(scope="module")
def binary_by_fraction() -> dict[float, dict]:
    """A two-class experiment at labelled fractions 0.5 and 1 (a sweep): results by fraction."""
    return run_tabular(_config(), linear_binary(1000, 4, seed=0), fractions=[0.5, 1.0]).results_by_fraction


@pytest.fixture(scope="module")
def pages(multiclass_ablation, binary_by_fraction, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("pages")
    write_ablation(*multiclass_ablation, out / "ablation")  # with the experiment's report
    write_sweep(studies.summarize_sweep(binary_by_fraction), binary_by_fraction[1.0], out / "sweep")
    return {"report": out / "ablation" / "report.html", "ablation": out / "ablation" / "ablation.html", "sweep": out / "sweep" / "sweep.html"}


BROKEN_PAGE = (
    "<!DOCTYPE html><html><head><title>broken</title></head><body>"
    '<img alt="missing" src="missing.png"><img alt="remote" src="https://example.invalid/x.png">'
    "<script>console.error('boom')</script></body></html>"
)


@pytest.fixture(scope="module")
def verdicts(chromium, pages, tmp_path_factory) -> dict[str, dict]:
    """The verdicts on the pages, and on a broken page that shows the check can fail, all opened at once."""
    broken = tmp_path_factory.mktemp("broken") / "broken.html"
    broken.write_text(BROKEN_PAGE)
    return open_in_chromium(chromium, {**pages, "broken": broken}, tmp_path_factory.mktemp("probed"))


def _drawn(results: dict, page: Path) -> dict[str, bytes]:
    """The PNGs of the figures ``results`` can show, from the report written at ``page``."""
    return {figure.name: (page.parent / figure.file).read_bytes() for figure in shown_figures(results)}


def _timed(results: dict) -> bool:
    """Whether any model of the results has a one-row latency (the speed numbers may be absent)."""
    entries = [results["teacher"], *results["methods"].values()]
    return any((entry.get("speed") or {}).get("one_row_ms") is not None for entry in entries)


def test_every_page_draws_each_of_its_figures_and_fetches_nothing(verdicts, multiclass_ablation):
    expected = {
        "report": [HISTORY, METRICS, RELIABILITY, CONFUSION, *([TRADEOFF] if _timed(multiclass_ablation[0]) else [])],
        "ablation": ["Test accuracy against full"],
        "sweep": ["Test accuracy by labelled fraction"],
    }
    for name, images in expected.items():
        verdict = verdicts[name]
        assert verdict["images"] == images, name
        assert verdict["broken"] == [], name
        assert verdict["fetched"] == [], name
        assert verdict["problems"] == [], name
        assert verdict["console"] == [], name


def test_pages_embed_their_figures_and_refer_to_nothing_outside(pages):
    for name, page in pages.items():
        text = page.read_text(encoding="utf-8")
        assert "<script" not in text and "http://" not in text and "https://" not in text, name
        sources = re.findall(r'<img src="([^"]*)"', text)
        assert sources, name
        for source in sources:
            prefix = "data:image/png;base64,"
            assert source.startswith(prefix), name
            embedded = base64.b64decode(source[len(prefix):], validate=True)
            # the very drawing written beside the page
            assert embedded.startswith(PNG_SIGNATURE) and any(embedded == png.read_bytes() for png in page.parent.glob("*.png")), name
        for target in re.findall(r'href="([^"]*)"', text):
            assert (page.parent / target).is_file(), f"{name} links to {target}"


def test_the_report_page_shows_the_run(pages, multiclass_ablation):
    results = multiclass_ablation[0]
    text = pages["report"].read_text(encoding="utf-8")
    chosen = results["chosen"]["method"]
    assert f'<tr class="marked"><td>{chosen}</td>' in text and text.count('<tr class="marked">') == 1
    for name in ["teacher (logistic)", "majority class", *results["methods"]]:
        assert f"<td>{html.escape(name)}</td>" in text
    compared = [(name, entry) for name, entry in results["methods"].items() if entry.get("vs_control")]
    assert compared
    for name, entry in compared:
        assert f"<strong>{name}</strong>: {html.escape(verdict_sentence(entry))}</li>" in text
    assert "Runs: 2 (holdout)" in text and "Classes: high, low, mid" in text
    assert html.escape(json.dumps(results["config"], indent=2)) in text
    for package, version in results["versions"].items():
        assert f"<td>{package}</td><td>{html.escape(version)}</td>" in text
    ablation = pages["ablation"].read_text(encoding="utf-8")
    assert "<td>no_weight_ramp</td>" in ablation and "Removals significantly worse than full" in ablation


def test_a_two_class_report_has_no_confusion_matrices(binary_by_fraction, multiclass_ablation, pages):
    results = binary_by_fraction[1.0]
    names = [figure.name for figure in shown_figures(results)]
    assert names == ["history", "metrics", "reliability", *(["tradeoff"] if _timed(results) else [])]
    # the multi-class report's drawings stand in: what matters is where the page puts them
    text = render_html(results, _drawn(multiclass_ablation[0], pages["report"]))
    assert "Confusion matrices" not in text and "<h2>Reliability diagrams</h2>" in text


def test_text_from_the_results_is_escaped(multiclass_ablation, pages):
    results = copy.deepcopy(multiclass_ablation[0])
    results["warnings"] = ['<img src=x onerror="alert(1)"> & more']
    results["teacher"]["kind"] = "<b>mine</b>"
    text = render_html(results, _drawn(results, pages["report"]))
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; more" in text and "<img src=x" not in text
    assert "teacher (&lt;b&gt;mine&lt;/b&gt;)" in text and "<b>mine</b>" not in text


def test_without_speed_numbers_the_trade_off_is_a_note(multiclass_ablation, pages):
    results = copy.deepcopy(multiclass_ablation[0])
    for entry in [results["teacher"], *results["methods"].values()]:
        entry.pop("speed", None)
    figures = _drawn(results, pages["report"])
    assert "tradeoff" not in figures
    text = render_html(results, figures)
    assert "No accuracy-against-latency plot: these results have no speed numbers." in text
    assert re.findall(r'<img src="[^"]*" alt="([^"]*)"', text) == [HISTORY, METRICS, RELIABILITY, CONFUSION]


def test_calibration_and_confusion_pool_the_runs_and_an_unanswered_row_is_a_miss():
    rng = np.random.default_rng(0)
    runs = [(rng.dirichlet(np.ones(3), size=n), rng.integers(0, 3, size=n)) for n in (200, 150)]
    # The first run's first 20 rows unanswered (an LLM teacher's unparsed labels).
    predicted = [np.where(np.arange(len(y)) < (20 if i == 0 else 0), NO_ANSWER, p.argmax(1)) for i, (p, y) in enumerate(runs)]
    outputs = [(pred, p, y) for pred, (p, y) in zip(predicted, runs)]
    calibration = calibration_summary(outputs)
    probs = np.concatenate([p for p, _ in runs])
    y = np.concatenate([labels for _, labels in runs])
    pred = np.concatenate(predicted)
    confidence, correct = probs.max(1), pred == y
    edges = calibration["bin_edges"]
    assert len(edges) == ECE_BINS + 1
    for index, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        rows = (confidence > low) & (confidence <= high)
        assert calibration["count"][index] == rows.sum()
        if rows.any():
            assert calibration["confidence"][index] == pytest.approx(confidence[rows].mean())
            assert calibration["accuracy"][index] == pytest.approx(correct[rows].mean())
        else:
            assert calibration["confidence"][index] is None and calibration["accuracy"][index] is None
    # one run's ECE from its bins is the ECE the metrics report: one ECE
    single = calibration_summary(outputs[:1])
    gaps = [n * abs(a - c) for n, a, c in zip(single["count"], single["accuracy"], single["confidence"]) if n]
    assert sum(gaps) / 200 == pytest.approx(expected_calibration_error(runs[0][0], runs[0][1], predicted=predicted[0]))
    expected = np.zeros((3, 3), dtype=int)
    np.add.at(expected, (y[pred != NO_ANSWER], pred[pred != NO_ANSWER]), 1)
    assert confusion_counts(outputs) == expected.tolist()
    summary = prediction_summary(outputs)
    assert summary["no_answer"] == np.bincount(runs[0][1][:20], minlength=3).tolist()
    assert np.sum(summary["confusion"]) + sum(summary["no_answer"]) == len(y)


def test_the_results_record_calibration_and_confusion_of_every_model(multiclass_ablation):
    results = multiclass_ablation[0]
    n_rows = results["evaluation"]["runs"] * results["config"]["data"]["n_test"]  # holdout: equal test splits
    for entry in [results["teacher"], *results["methods"].values()]:
        confusion, calibration = np.array(entry["confusion"]), entry["calibration"]
        assert confusion.shape == (3, 3) and confusion.sum() == n_rows == sum(calibration["count"])
        # pooled over equal splits, the share on the diagonal is the mean accuracy over runs
        assert np.trace(confusion) / n_rows == pytest.approx(entry["test"]["accuracy"]["mean"])
        pooled = sum(a * n for a, n in zip(calibration["accuracy"], calibration["count"]) if n) / n_rows
        assert pooled == pytest.approx(entry["test"]["accuracy"]["mean"])
    assert set(results["versions"]) == {"python", "torch", "numpy", "sklearn", "stepdistill"}


def test_the_browser_check_catches_a_broken_page(verdicts):
    verdict = verdicts["broken"]
    assert verdict["images"] == ["missing", "remote"] and verdict["broken"] == ["missing", "remote"]
    assert verdict["fetched"] == ["https://example.invalid/x.png"]
    assert "console.error: boom" in verdict["problems"] and any("failed to load" in p and "missing.png" in p for p in verdict["problems"])
    assert len(verdict["console"]) == 1 and "boom" in verdict["console"][0]
