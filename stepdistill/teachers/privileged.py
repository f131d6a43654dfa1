"""A privileged-information teacher (generalized distillation, Lopez-Paz et al. 2016): a model
that reads each input's features *and* the embedding of the rationale an LLM wrote for it, trained
on the human labels. The rationale is there for every training record but never for a new input,
so the student, which reads the input alone, learns from this teacher's soft labels what the
rationales told it."""

from __future__ import annotations

import torch
from torch import nn

from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.cache import TeacherOutputs
from stepdistill.teachers.llm import LLMTeacher
from stepdistill.teachers.module import ModuleTeacher


class PrivilegedTeacher(Teacher):
    """Logits of ``model`` on ``[X, r]`` (X: the student's features (N, d); r: the LLM teacher's
    rationale embedding (N, D)); the rationale is ``llm``'s. Like the LLM's answers, r exists for
    the records it wrote about only, so this teacher cannot label new inputs."""

    can_predict = False
    rationale_style = "representation"

    def __init__(self, llm: LLMTeacher, model: nn.Module):
        self.llm = llm
        self.classes = llm.classes
        self.module = ModuleTeacher(model.eval())

    @torch.no_grad()
    def outputs(self, samples: Samples) -> TeacherOutputs:
        told = self.llm.outputs(samples)
        seen = Samples(samples.ids, privileged_features(samples.X, told.rationale))
        return TeacherOutputs(self.module.predict_logits(seen), told.rationale)

    def identity(self) -> tuple:
        return (*self.llm.identity(), *self.module.identity())

    @property
    def unparsed(self) -> int:
        return self.llm.unparsed


def privileged_features(X: torch.Tensor, rationale: torch.Tensor) -> torch.Tensor:
    """The privileged model's input (N, d + D): features, then the rationale's embedding."""
    return torch.cat([X.float().cpu(), rationale.float().cpu()], dim=1)
