"""Student (and self-trained teacher) models. Each returns ``Outputs(logits, rationale)``."""

from stepdistill.students.choice import ChoiceScorerModel
from stepdistill.students.cnn import CNNModel
from stepdistill.students.logistic import LogisticModel
from stepdistill.students.mlp import MLPModel

__all__ = ["CNNModel", "ChoiceScorerModel", "LogisticModel", "MLPModel"]
