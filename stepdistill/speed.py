"""What a student buys: its size and prediction latency beside the teacher's.

Every model is timed as it would serve predictions, from the raw columns of test rows to class
logits: a student encodes the columns with its fitted encoder and runs its forward pass; the
teacher predicts through ``Teacher.predict_logits`` (no explanation work), encoding the columns
first when it reads the encoded features. One row, and a batch of ``BATCH_ROWS`` rows; each the
median of repeated timings, in the same process on the same threads, one model after another.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from stepdistill.data.encode import FeatureEncoder
from stepdistill.evaluate import count_parameters
from stepdistill.teachers.base import Samples, Teacher

BATCH_ROWS = 1024
# Timings repeat until both bounds are met: enough for a stable median of a sub-millisecond call
# without spending long on a slow teacher. A call slower than SLOW_CALL_SECONDS (a transformer
# encoder's batch on a CPU) is timed SLOW_REPEATS times after its warm-up: seconds-long calls vary
# little, and seven of them would cost a run minutes.
MIN_REPEATS = 7
MIN_SECONDS = 0.1
MAX_REPEATS = 1000
SLOW_CALL_SECONDS = 1.0
SLOW_REPEATS = 1


def median_ms(call: Callable[[], object]) -> float:
    """The median wall time of ``call()`` in milliseconds, after one untimed warm-up call."""
    start = time.perf_counter()
    call()
    repeats = SLOW_REPEATS if time.perf_counter() - start > SLOW_CALL_SECONDS else MIN_REPEATS
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - started < MIN_SECONDS and len(times) < MAX_REPEATS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights saved as safetensors (what a saved student's weights take)."""
    return len(safetensors_bytes({name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}))


def student_predictor(model: nn.Module, encoder: FeatureEncoder) -> Callable[[pd.DataFrame], torch.Tensor]:
    """Raw columns -> the student's logits, as a saved student predicts."""
    model = model.cpu().eval()

    @torch.no_grad()
    def predict(frame: pd.DataFrame) -> torch.Tensor:
        return model(torch.from_numpy(encoder.transform(frame))).logits

    return predict


def teacher_predictor(teacher: Teacher, encoder: FeatureEncoder) -> Callable[[pd.DataFrame], torch.Tensor]:
    """Raw columns -> the teacher's logits; the columns are encoded only for a teacher that reads
    the encoded features (``input`` other than "frame")."""
    reads_frame = getattr(teacher, "input", "X") == "frame"
    ids = torch.arange(BATCH_ROWS, dtype=torch.int64)

    @torch.no_grad()
    def predict(frame: pd.DataFrame) -> torch.Tensor:
        X = torch.empty(len(frame), 0) if reads_frame else torch.from_numpy(encoder.transform(frame))
        return teacher.predict_logits(Samples(ids[: len(frame)], X, frame))

    return predict


def latency(predict: Callable[[pd.DataFrame], torch.Tensor], rows: pd.DataFrame) -> dict:
    """Milliseconds for one row and for a batch of ``BATCH_ROWS`` rows (``rows`` repeated as
    needed to fill it)."""
    batch = rows.iloc[np.resize(np.arange(len(rows)), BATCH_ROWS)].reset_index(drop=True)
    one = batch.iloc[:1]
    return {"one_row_ms": median_ms(lambda: predict(one)), "batch_ms": median_ms(lambda: predict(batch)), "batch_rows": BATCH_ROWS}


def measure_speed(
    teacher: Teacher, teacher_params: int | None, students: dict[str, nn.Module], encoder: FeatureEncoder, rows: pd.DataFrame
) -> dict[str, dict]:
    """Parameters, bytes on disk and latency of the teacher (key "teacher"; latency None when it
    cannot predict new rows, as a file of outputs) and of each student by method name, with each
    student's speed-up over the teacher. Students of the same architecture (``model.spec``) do
    the same computation, so they are timed once and share that latency."""
    teacher_speed: dict = {"params": teacher_params, "bytes": teacher.saved_bytes(), "one_row_ms": None, "batch_ms": None, "batch_rows": BATCH_ROWS}
    if teacher.can_predict:
        teacher_speed |= latency(teacher_predictor(teacher, encoder), rows)
    speeds = {"teacher": teacher_speed}
    timed: dict[str, dict] = {}  # latency by architecture: students that share one run the same computation
    for name, model in students.items():
        architecture = json.dumps(model.spec, sort_keys=True)
        if architecture not in timed:
            timed[architecture] = latency(student_predictor(model, encoder), rows)
        speed = {"params": count_parameters(model), "bytes": model_bytes(model), **timed[architecture]}
        speed["speedup_one_row"] = _ratio(teacher_speed["one_row_ms"], speed["one_row_ms"])
        speed["speedup_batch"] = _ratio(teacher_speed["batch_ms"], speed["batch_ms"])
        speeds[name] = speed
    return speeds


def _ratio(teacher_ms: float | None, student_ms: float) -> float | None:
    return None if teacher_ms is None else teacher_ms / student_ms
