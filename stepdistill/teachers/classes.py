"""A teacher's classes matched to the data's by name, never by position: the check, and a
teacher whose classes ``teacher.classes`` maps to the data's (one fitted on encoded labels) with
its outputs put in the data's class order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from stepdistill.data.io import spelling_key
from stepdistill.errors import StepDistillError
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.cache import TeacherOutputs

# Where a mapping is suggested, how many of the teacher's classes it shows.
SUGGESTED_ENTRIES = 2


def check_teacher_classes(teacher_classes: Sequence[str] | None, data_classes: Sequence[str]) -> None:
    """Raise unless the teacher's classes are the data's, by name and in the data's order. A
    teacher that names no classes (None: a torch module, a LightGBM or XGBoost model file, a file
    without class names) passes: by contract its outputs are the data's classes in order, and
    only their number can be checked."""
    if teacher_classes is None:
        return
    teacher, data = tuple(map(str, teacher_classes)), tuple(map(str, data_classes))
    if teacher == data:
        return
    extra = [c for c in teacher if c not in data]
    lacking = [c for c in data if c not in teacher]
    if not extra and not lacking:
        same_names = ", ".join(f"{c!r}: {c!r}" for c in teacher)  # quoted: YAML reads yes and no unquoted as booleans
        raise StepDistillError(
            f"teacher classes {teacher} are ordered differently from the data's {data};"
            f" map them to the data's by name with teacher.classes ({{{same_names}}}), or export the teacher with its classes in the data's (sorted) order"
        )
    if twins := spelling_twins(extra, lacking):
        raise StepDistillError(
            f"teacher classes {teacher} and the data's {data} spell classes differently, only by case or surrounding spaces:"
            f" {_pairs(twins)}; map each teacher class to the data's with teacher.classes, or train the teacher on the data's labels"
        )
    problems = ([f"names classes the data lacks: {', '.join(map(repr, extra))}"] if extra else []) + (
        [f"lacks classes the data has: {', '.join(map(repr, lacking))}"] if lacking else []
    )
    example = ", ".join(f"{c}: <data class>" for c in teacher[:SUGGESTED_ENTRIES])
    raise StepDistillError(
        f"teacher classes {teacher} do not match the data's {data}: the teacher {' and '.join(problems)};"
        f" if it was fitted on encoded labels, map each of its classes to the data's class it stands for with teacher.classes ({{{example}, ...}}),"
        " else train it on the data's labels"
    )


def spelling_twins(names: Sequence[str], others: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs (one of ``names``, one of ``others``) that are one class spelt with another case
    or other surrounding spaces."""
    return [(name, other) for name in names for other in others if name != other and spelling_key(name) == spelling_key(other)]


def _pairs(twins: list[tuple[str, str]]) -> str:
    return ", ".join(f"{a!r} and {b!r}" for a, b in twins)


def relabelled(teacher: Teacher, mapping: Mapping[str, str], data_classes: Sequence[str]) -> RelabelledTeacher:
    """``teacher`` with its classes mapped to the data's by ``mapping`` (``teacher.classes``:
    each of its classes, or of its output positions "0".."K-1" when it names none, to the data's
    class it stands for), which must name each of them and reach each of the data's classes."""
    data = tuple(map(str, data_classes))
    own = teacher.classes if teacher.classes is not None else tuple(str(k) for k in range(len(data)))
    if sorted(mapping) != sorted(own):
        what = "classes" if teacher.classes is not None else "output positions (it names no classes)"
        raise StepDistillError(f"teacher.classes maps {tuple(mapping)} but the teacher's {what} are {tuple(own)}; give one entry for each of them")
    targets = tuple(mapping.values())
    if sorted(targets) != sorted(data):
        twins = spelling_twins([t for t in targets if t not in data], [c for c in data if c not in targets])
        spelling = f" (differing only by case or surrounding spaces: {_pairs(twins)})" if twins else ""
        raise StepDistillError(
            f"teacher.classes maps to {targets} but the data's classes are {data}{spelling}; map each teacher class to a different one of the data's classes"
        )
    position = {name: k for k, name in enumerate(own)}
    teacher_class_of = {target: name for name, target in mapping.items()}
    return RelabelledTeacher(teacher, tuple(position[teacher_class_of[c]] for c in data), data)


class RelabelledTeacher(Teacher):
    """``teacher`` with its outputs in the data's class order, named ``classes``: ``order[k]`` is
    the teacher's output (the position of its class) that is the data's class k.

    One logit (two classes: class 1 against class 0) is negated when the teacher's class 1 is
    the data's class 0; one logit per class is reordered. A rationale given per logit (styles
    ``contributions``, ``contributions_with_bias``, ``score``: class-major blocks, one per logit)
    goes the same way, so it still explains the logit it sits beside; for the probability output
    of a forest explained by TreeSHAP, a negated expected value is p - 1 rather than 1 - p, the
    one approximation. A representation (hidden activations, a Pipeline's transformed columns)
    is the same whichever class it serves, and a student reaches it through a learned
    projection, so it passes unchanged."""

    def __init__(self, teacher: Teacher, order: tuple[int, ...], classes: tuple[str, ...]):
        self.teacher = teacher
        self.order = order
        self.classes = classes
        self.rationale_style = teacher.rationale_style
        self.reads_raw_columns = teacher.reads_raw_columns
        self.can_predict = teacher.can_predict

    @property
    def rationale_unavailable(self) -> str | None:
        return self.teacher.rationale_unavailable

    def outputs(self, samples: Samples) -> TeacherOutputs:
        out = self.teacher.outputs(samples)
        per_logit = out.rationale is not None and self.rationale_style != "representation"
        return TeacherOutputs(self._in_data_order(out.logits), self._in_data_order(out.rationale) if per_logit else out.rationale)

    def predict_logits(self, samples: Samples) -> torch.Tensor:
        return self._in_data_order(self.teacher.predict_logits(samples))

    def fit_background(self, train: Samples) -> None:
        self.teacher.fit_background(train)

    def identity(self) -> tuple | None:
        inner = self.teacher.fingerprint()
        return None if inner is None else (inner, self.order)

    def saved_bytes(self) -> int | None:
        return self.teacher.saved_bytes()

    def _in_data_order(self, values: torch.Tensor) -> torch.Tensor:
        """(N, L*W) values, one block of W per logit, with the blocks in the data's class order.
        Values that are not such blocks are passed on for ``cache_teacher`` to refuse by their
        shape."""
        n_logits = 1 if len(self.order) == 2 else len(self.order)
        if values.ndim != 2 or values.shape[1] % n_logits:
            return values
        if n_logits == 1:
            return -values if self.order == (1, 0) else values
        return values.reshape(len(values), n_logits, -1)[:, list(self.order)].reshape(len(values), -1)
