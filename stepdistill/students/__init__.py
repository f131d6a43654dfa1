"""Student (and self-trained teacher) models. Each returns ``Outputs(logits, rationale)``."""

from stepdistill.students.logistic import LogisticModel
from stepdistill.students.mlp import MLPModel

__all__ = ["LogisticModel", "MLPModel"]
