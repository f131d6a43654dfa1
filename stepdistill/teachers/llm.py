"""A large-language-model teacher: the labels and chain-of-thought rationales it wrote for each
record (distilling step by step), as logits and an embedded rationale per sample."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch

from stepdistill.data.llm_outputs import NAMED_IN_ERRORS, LLMAnswer, LLMOutputs
from stepdistill.errors import StepDistillError
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.cache import TeacherOutputs
from stepdistill.teachers.common import logits_from_probabilities
from stepdistill.text.encoders import SentenceEncoder
from stepdistill.text.inputs import CHOICE_LETTERS

DEFAULT_EPS = 0.01


class LLMTeacher(Teacher):
    """The answers in ``outputs`` served by sample id: sample id i is record ``record_ids[i]``.

    Logits: the log of the teacher's label distribution over ``classes`` (the data's class names,
    in order): its ``label_distribution`` where given, else one-hot on its label, and uniform for
    a record with neither (a label that could not be parsed; ``unparsed`` counts them; such a
    record, or one whose distribution ties for the most likely class, is ``answered`` False). Each row
    is clipped to ``[eps, 1 - eps]`` and renormalized so the logits stay finite; two classes give
    one logit, log p1 - log p0. Rationale: ``encoder``'s embedding (D,) of the record's rationale,
    the mean embedding when it has several.

    It holds the answers the model wrote and not the model, so it cannot label new inputs
    (``can_predict`` is False).
    """

    can_predict = False
    rationale_style = "representation"

    def __init__(self, outputs: LLMOutputs, classes: Sequence[str], encoder: SentenceEncoder, record_ids: Sequence[str], eps: float = DEFAULT_EPS):
        self.classes = tuple(classes)
        if len(self.classes) < 2:
            raise StepDistillError(f"an LLM teacher needs at least two classes (got {len(self.classes)}); pass the data's class names in order")
        if not 0 < eps < 0.5:
            raise StepDistillError(f"LLM teacher eps must lie strictly between 0 and 0.5 (got {eps}); pass a small smoothing such as {DEFAULT_EPS}")
        self.record_ids = list(record_ids)
        outputs.check_against(self.record_ids, self.classes)
        self.answers = [outputs.answers[record_id] for record_id in self.record_ids]
        without_rationale = [answer.id for answer in self.answers if not answer.rationales]
        if without_rationale:
            named = ", ".join(repr(record_id) for record_id in without_rationale[:NAMED_IN_ERRORS])
            raise StepDistillError(f"{len(without_rationale)} teacher outputs hold no rationale (e.g. {named}); drop those records or give each a rationale")
        self.encoder = encoder
        self.eps = eps
        probabilities, parsed = _label_distributions(self.answers, self.classes)
        self.unparsed = int((~parsed).sum())
        top = probabilities.max(axis=1, keepdims=True)
        self._answered = torch.from_numpy(parsed & ((probabilities == top).sum(axis=1) == 1))
        self._logits = torch.as_tensor(logits_from_probabilities(probabilities, eps), dtype=torch.float32)
        self._identity: tuple | None = None

    def outputs(self, samples: Samples) -> TeacherOutputs:
        """Logits (N, K), or (N, 1) for two classes, and rationale embeddings (N, D)."""
        rows = self._rows(samples)
        answers = [self.answers[row] for row in rows.tolist()]
        texts = [text for answer in answers for text in answer.rationales]
        embeddings = self.encoder.encode(texts)
        counts = torch.tensor([len(answer.rationales) for answer in answers], dtype=torch.int64)
        owners = torch.repeat_interleave(torch.arange(len(answers)), counts)
        sums = torch.zeros(len(answers), embeddings.shape[1], dtype=embeddings.dtype).index_add_(0, owners, embeddings)
        return TeacherOutputs(self._logits[rows], sums / counts.unsqueeze(1))

    def predict_logits(self, samples: Samples) -> torch.Tensor:
        """The logits of ``outputs``, without embedding any rationale."""
        return self._logits[self._rows(samples)]

    def answered(self, samples: Samples) -> torch.Tensor:
        """Which samples' records hold a parsed label naming one most likely class."""
        return self._answered[self._rows(samples)]

    def _rows(self, samples: Samples) -> torch.Tensor:
        """The positions in ``record_ids`` (N,) of the samples' ids, checked."""
        ids = samples.ids.cpu().to(torch.int64)
        outside = ids[(ids < 0) | (ids >= len(self.record_ids))]
        if len(outside):
            named = ", ".join(str(int(i)) for i in outside[:NAMED_IN_ERRORS])
            raise StepDistillError(f"{len(outside)} sample ids have no teacher record (e.g. {named}; {len(self.record_ids)} records); map every sample id to a record in record_ids")
        return ids

    def identity(self) -> tuple:
        """The records (ids, labels, distributions, rationales) in sample-id order, the encoder
        (model and normalization) and eps."""
        if self._identity is None:
            records = [[answer.id, answer.label, answer.label_distribution, answer.rationales] for answer in self.answers]
            self._identity = (records, self.encoder.identity, self.encoder.normalize, self.eps)
        return self._identity


def _label_distributions(answers: Sequence[LLMAnswer], classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's label distributions (N, K) over ``classes`` and which answers (N,) had a
    label or a distribution (the others get the uniform distribution)."""
    index = {name: k for k, name in enumerate(classes)}
    probabilities = np.full((len(answers), len(classes)), 1 / len(classes))
    parsed = np.ones(len(answers), dtype=bool)
    for row, answer in enumerate(answers):
        shares = answer.label_distribution or ({answer.label: 1.0} if answer.label is not None else None)
        if shares is None:
            parsed[row] = False
            continue
        probabilities[row] = 0
        for label, share in shares.items():
            probabilities[row, index[label]] = share
    return probabilities, parsed


def answers_as_choice_letters(outputs: LLMOutputs, choices: Mapping[str, Sequence[str]]) -> LLMOutputs:
    """Multiple-choice answers with their labels as choice letters (A for a record's first
    choice), the classes of a multiple-choice student: a label (or distribution key) spelling
    one of its record's ``choices`` becomes that choice's letter; a letter stays. Anything else
    is left as it is, for ``check_against`` to name."""

    def letter(label: str, options: Sequence[str]) -> str:
        letters = CHOICE_LETTERS[: len(options)]
        if label in letters:
            return label
        return letters[list(options).index(label)] if label in options else label

    answers = {}
    for record_id, answer in outputs.answers.items():
        options = choices.get(record_id)
        if options is None:
            answers[record_id] = answer
            continue
        label = None if answer.label is None else letter(answer.label, options)
        distribution = None if answer.label_distribution is None else {letter(k, options): v for k, v in answer.label_distribution.items()}
        answers[record_id] = replace(answer, label=label, label_distribution=distribution)
    return replace(outputs, answers=answers, classes=tuple(CHOICE_LETTERS[: max(map(len, choices.values()), default=0)]))


def outputs_notes(outputs: LLMOutputs, teacher: LLMTeacher) -> tuple[str, ...]:
    """What a user should know about the teacher outputs a run uses: how many answers could not be
    parsed (they teach the uniform distribution), with examples."""
    if not teacher.unparsed:
        return ()
    used = set(teacher.record_ids)
    examples = "; ".join(f"{record_id}: {why}" for record_id, why in outputs.failure_examples if record_id in used)
    return (f"the LLM teacher's label could not be parsed for {teacher.unparsed} of {len(used)} records, which teach the uniform distribution" + (f" (e.g. {examples})" if examples else ""),)
