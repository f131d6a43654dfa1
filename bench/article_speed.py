"""Speed benchmark: the reference article's training loop against stepdistill, same data, same work.

Setting (the article's): 100,000 rows x 10 features of linear binary data, standardized and split
80,000 / 10,000 / 10,000. A logistic teacher (5 epochs) and two logistic students (10 epochs each):
``traditional`` (0.5*BCE + 0.5*T^2*KL, T=2) and ``step_by_step`` (0.5*BCE + 0.3*MSE(student logit,
teacher logit) + 0.2*T^2*KL). Batch 512, SGD lr 0.01, zero-initialized weights on both sides.

Baseline: the article's style -- a shuffled ``DataLoader`` over a ``TensorDataset``, an ``nn.Module``
forward, the loss from torch ops (sigmoid probabilities, ``F.kl_div`` on stacked [p, 1-p]) and
``zero_grad / backward / step`` per batch. Unlike the article, teacher logits are looked up by
sample id, not by batch position, so both paths do correct work and their accuracies compare.

stepdistill: ``train_teacher`` + ``cache_model_outputs`` + ``distill`` with the article's presets.

Both paths are timed end to end (teacher training, teacher outputs, both students) with
``time.perf_counter``, ``--timings`` times each (alternating; the medians are compared); data
preparation is shared and not timed. Both paths are warmed up once on a small slice of the
training rows before the timed runs.

    .venv/bin/python bench/article_speed.py [--threads N] [--timings 3] [--output bench/article_speed.json]

Prints the table and writes the results file.
Always exits 0; the last line says whether the target (ratio >= 20, accuracy within 0.002 or
better) was met.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from stepdistill.config import ExperimentConfig
from stepdistill.data import Splits, Table, linear_binary
from stepdistill.data.prepared import PreparedData
from stepdistill.data.repeats import RunRows
from stepdistill.engines.base import fit
from stepdistill.engines.tabular import TabularData
from stepdistill.evaluate import classification_metrics
from stepdistill.experiment.tabular import load_data, prepare_run, run_teacher, runs_of, split_logits, student_states
from stepdistill.teachers.config import LogisticTeacher
from stepdistill.terms import method_of

TARGET_RATIO = 20
ACCURACY_TOLERANCE = 0.002
WARMUP_ROWS = 4096
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "article_speed.json"

# The article's settings.
N_ROWS, N_FEATURES = 100_000, 10
BATCH_SIZE, LR = 512, 0.01
TEACHER_EPOCHS, STUDENT_EPOCHS = 5, 10
TEMPERATURE = 2.0
TRADITIONAL = {"hard": 0.5, "rationale": 0.0, "soft": 0.5}
STEP_BY_STEP = {"hard": 0.5, "rationale": 0.3, "soft": 0.2}
PROB_EPS = 1e-7  # keeps log(p) finite when a probability rounds to 0 or 1


# --- the article's loop ----------------------------------------------------------------------


class ArticleLogistic(nn.Module):
    def __init__(self, n_features: int):
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        nn.init.zeros_(self.linear.weight)  # as stepdistill does: the comparison is speed, not init
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)  # (B, 1) logits


def _two_class(p: torch.Tensor) -> torch.Tensor:
    """(B,) probability of class 1 -> (B, 2) [p, 1 - p], the article's stacked distribution."""
    return torch.stack([p, 1 - p], dim=1)


def article_loss(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, weights: dict[str, float]) -> torch.Tensor:
    """``a*BCE(s, y) + b*MSE(s, t) + c*T^2*KL(sigmoid(t/T) || sigmoid(s/T))`` on (B,) logits."""
    hard = F.binary_cross_entropy_with_logits(s, y)
    p_teacher = _two_class(torch.sigmoid(t / TEMPERATURE))
    log_p_student = _two_class(torch.sigmoid(s / TEMPERATURE)).clamp(PROB_EPS, 1 - PROB_EPS).log()
    soft = TEMPERATURE**2 * F.kl_div(log_p_student, p_teacher, reduction="batchmean")
    loss = weights["hard"] * hard + weights["soft"] * soft
    if weights["rationale"]:
        loss = loss + weights["rationale"] * F.mse_loss(s, t)
    return loss


def article_path(splits: Splits) -> tuple[nn.Module, dict[str, nn.Module]]:
    train = splits.train
    loader = DataLoader(TensorDataset(train.X, train.y.float(), train.ids), batch_size=BATCH_SIZE, shuffle=True)

    teacher = ArticleLogistic(train.n_features)
    optimizer = torch.optim.SGD(teacher.parameters(), lr=LR)
    teacher.train()
    for _ in range(TEACHER_EPOCHS):
        for x, y, _ids in loader:
            loss = F.binary_cross_entropy_with_logits(teacher(x).squeeze(1), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    # The teacher's logit of every training row, looked up by sample id during distillation.
    teacher.eval()
    with torch.no_grad():
        train_logits = teacher(train.X).squeeze(1)
    teacher_by_id = torch.zeros(int(train.ids.max()) + 1)
    teacher_by_id[train.ids] = train_logits

    students = {}
    for name, weights in (("traditional", TRADITIONAL), ("step_by_step", STEP_BY_STEP)):
        student = ArticleLogistic(train.n_features)
        optimizer = torch.optim.SGD(student.parameters(), lr=LR)
        student.train()
        for _ in range(STUDENT_EPOCHS):
            for x, y, ids in loader:
                loss = article_loss(student(x).squeeze(1), teacher_by_id[ids], y, weights)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        students[name] = student
    return teacher, students


def article_accuracy(model: nn.Module, test: Table) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(test.X)  # (N, 1)
    return classification_metrics(logits, test.y)["accuracy"]


# --- stepdistill -----------------------------------------------------------------------------


# The teacher's rationale is its logit, the article's scalar "intermediate score": the same work.
# The article's recipes (SGD, lr 0.01, 10 epochs, batches of 512), one run.
CONFIG = ExperimentConfig(
    teacher=LogisticTeacher(rationale="score"), methods={"traditional": {}, "step_by_step": {}}, training="article", evaluation={"repeats": 1}
)


def stepdistill_path(data: PreparedData, run: RunRows) -> dict[str, nn.Module]:
    built, cache = run_teacher(CONFIG, data, run, loaded=None)
    n_train = len(data.splits.train)
    methods = [method_of(CONFIG.method_spec(name, CONFIG.candidates(name, n_train)[0])) for name in CONFIG.methods]
    students = student_states(CONFIG, methods, data, built, cache, [run.seed] * len(methods))
    fit(students, TabularData(data.splits.train, data.splits.val, cache.take(data.splits.train.ids)))
    return {name: state.model for name, state in zip(CONFIG.methods, students)}


def stepdistill_accuracy(model: nn.Module, test: Table) -> float:
    return classification_metrics(split_logits(model, test), test.y)["accuracy"]


# --- the comparison --------------------------------------------------------------------------


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for both paths")
    parser.add_argument("--timings", type=int, default=3, help="timings of each path; the median is kept")
    parser.add_argument("--rows", type=int, default=N_ROWS, help="rows of generated data (80%% train); fewer only to check the script")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file to write")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    # Shared data preparation (not timed).
    dataset = load_data(CONFIG, linear_binary(args.rows, N_FEATURES, seed=0))
    run = runs_of(CONFIG, dataset)[0]
    data = prepare_run(CONFIG, dataset, run)
    splits = data.splits
    print(
        f"data: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test rows,"
        f" {splits.train.n_features} features; torch threads: {torch.get_num_threads()}"
    )

    # Warm-up of both paths on a small slice, so neither pays first-call overhead in the timing.
    rows = torch.arange(min(WARMUP_ROWS, len(splits.train)))
    small = Splits(splits.train.take(rows), splits.val, splits.test)
    torch.manual_seed(0)
    article_path(small)
    stepdistill_path(replace(data, splits=small), run)

    # Each path is timed --timings times, alternating, and its median kept: one timing of either
    # moves by a tenth or more with what else the machine does.
    article_times, ours_times = [], []
    for _ in range(args.timings):
        torch.manual_seed(0)
        (_, article_students), seconds = timed(article_path, splits)
        article_times.append(seconds)
        ours_students, seconds = timed(stepdistill_path, data, run)
        ours_times.append(seconds)
    article_seconds, ours_seconds = statistics.median(article_times), statistics.median(ours_times)

    names = list(article_students)
    article_acc = {n: article_accuracy(article_students[n], splits.test) for n in names}
    ours_acc = {n: stepdistill_accuracy(ours_students[n], splits.test) for n in names}
    article_mean = sum(article_acc.values()) / len(names)
    ours_mean = sum(ours_acc.values()) / len(names)
    ratio = article_seconds / ours_seconds

    print()
    print(f"{'path':<14}{'seconds':>10}{'traditional':>14}{'step_by_step':>14}{'mean acc':>10}")
    for label, seconds, acc, mean in (
        ("article", article_seconds, article_acc, article_mean),
        ("stepdistill", ours_seconds, ours_acc, ours_mean),
    ):
        print(f"{label:<14}{seconds:>10.3f}{acc['traditional']:>14.4f}{acc['step_by_step']:>14.4f}{mean:>10.4f}")
    print(f"ratio (article / stepdistill): {ratio:.1f}x")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "timings": args.timings,
        "baseline_seconds": round(article_seconds, 4),
        "stepdistill_seconds": round(ours_seconds, 4),
        "ratio": round(ratio, 2),
        "baseline_accuracy": round(article_mean, 4),
        "stepdistill_accuracy": round(ours_mean, 4),
        "target_ratio": TARGET_RATIO,
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", "bench/article_speed.py", *(sys.argv[1:] if argv is None else argv)]),
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")

    fast = ratio >= TARGET_RATIO
    accurate = ours_mean >= article_mean - ACCURACY_TOLERANCE
    print(
        f"target {'MET' if fast and accurate else 'NOT MET'}:"
        f" ratio {ratio:.1f} {'>=' if fast else '<'} {TARGET_RATIO};"
        f" accuracy {ours_mean:.4f} vs {article_mean:.4f}"
        f" ({'equal or better' if accurate else 'worse'} within {ACCURACY_TOLERANCE})"
    )


if __name__ == "__main__":
    main()
