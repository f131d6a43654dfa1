"""Checking a teacher against the data (its classes by name: teachers/classes.py), then caching
its outputs by sample id (and, given a store, on disk across runs)."""

from __future__ import annotations

import torch

from stepdistill.errors import StepDistillError
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.cache import InMemoryTeacherCache, TeacherOutputs
from stepdistill.teachers.classes import check_teacher_classes
from stepdistill.teachers.common import nonfinite_rows
from stepdistill.teachers.store import Say, TeacherStore


def cache_teacher(
    teacher: Teacher, samples: list[Samples], data_classes: tuple[str, ...], store: TeacherStore | None = None, say: Say | None = None
) -> InMemoryTeacherCache:
    """Run ``teacher`` once over each of ``samples`` and store its outputs by sample id, on the
    CPU as float32, after checking its classes, one row per sample, one logit per class (one
    in all for two classes) and finite values.

    With a ``store``, outputs it holds for this teacher (by its fingerprint), these samples and
    these classes are taken from it instead of running the teacher, and outputs computed are
    written to it; ``say`` hears of an entry found damaged (then recomputed) or not written. A
    teacher without a fingerprint is always run, and its outputs never stored."""
    check_teacher_classes(teacher.classes, data_classes)
    ids = torch.cat([part.ids.cpu() for part in samples])
    fingerprint = None if store is None else teacher.fingerprint()
    key = None if fingerprint is None else store.key(fingerprint, samples, data_classes)
    outputs = None if key is None else store.load(key, ids, say)
    if outputs is None:
        outputs = checked_outputs(teacher, samples, data_classes)
        if key is not None:
            store.save(key, ids, outputs, say)
    return InMemoryTeacherCache(ids, outputs.logits, outputs.rationale)


def checked_outputs(teacher: Teacher, samples: list[Samples], data_classes: tuple[str, ...]) -> TeacherOutputs:
    """The teacher's outputs over ``samples``, in order, checked."""
    n_logits = 1 if len(data_classes) == 2 else len(data_classes)
    logits, rationale = [], []
    for part in samples:
        out = teacher.outputs(part)
        part_logits = _checked_rows(out.logits, "logits", len(part))
        if part_logits.shape[1] != n_logits:
            how = "one logit, log p1 - log p0" if n_logits == 1 else "one logit per class, in the data's class order"
            raise StepDistillError(f"teacher gives {part_logits.shape[1]} logits per sample but the data has {len(data_classes)} classes; give {how}")
        logits.append(part_logits)
        rationale.append(None if out.rationale is None else _checked_rows(out.rationale, "rationale values", len(part)))
    given = [r for r in rationale if r is not None]
    if given and len(given) < len(rationale):
        raise StepDistillError("teacher gave a rationale for some samples but not for others; give one for every sample or for none")
    widths = sorted({r.shape[1] for r in given})
    if len(widths) > 1:
        raise StepDistillError(f"teacher gave rationales of different widths ({widths[0]} and {widths[-1]}); give every sample one of the same width")
    return TeacherOutputs(torch.cat(logits), torch.cat(given) if given else None)


def _checked_rows(values: torch.Tensor, what: str, n_samples: int) -> torch.Tensor:
    values = values.detach().to("cpu", torch.float32)
    if values.ndim != 2 or values.shape[0] != n_samples:
        raise StepDistillError(f"teacher gave {what} of shape {tuple(values.shape)} for {n_samples} samples; give one row per sample, (samples, width)")
    bad = nonfinite_rows(values)
    if bad:
        raise StepDistillError(f"teacher gave NaN or infinite {what} for {bad} of {n_samples} samples; fix the teacher or drop those samples")
    return values
