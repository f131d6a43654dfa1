"""Student kinds as configured: each builds a model factory fitted to the data and the teacher."""

from __future__ import annotations

from typing import Annotated, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from stepdistill.errors import StepDistillError
from stepdistill.students.choice import ChoiceScorerModel
from stepdistill.students.cnn import CNNModel
from stepdistill.students.logistic import LogisticModel
from stepdistill.students.mlp import MLPModel
from stepdistill.teachers.base import Teacher


def n_logits(n_classes: int) -> int:
    return 1 if n_classes == 2 else n_classes


class _Student(BaseModel):
    model_config = ConfigDict(extra="forbid")

    projection: bool = Field(
        True, description="learn a linear head mapping the student's rationale onto the teacher's when their widths differ"
    )


class LogisticStudent(_Student):
    """Explains itself the way the teacher does where it can: the article's score for a
    score-explaining teacher, contributions summed per raw column (plus the bias) for teachers
    that explain raw columns (TreeSHAP), plain per-feature contributions otherwise."""

    kind: Literal["logistic"] = "logistic"

    def factory(self, n_features: int, n_classes: int, teacher: Teacher, feature_groups: tuple[int, ...], image_shape=None) -> Callable[[], nn.Module]:
        style = teacher.rationale_style
        if style == "score":
            return lambda: LogisticModel(n_features, n_logits(n_classes), "score")
        grouped = style in ("contributions", "contributions_with_bias") and teacher.reads_raw_columns
        return lambda: LogisticModel(
            n_features,
            n_logits(n_classes),
            "contributions",
            feature_groups=feature_groups if grouped else None,
            include_bias=style == "contributions_with_bias",
        )


class MLPStudent(_Student):
    kind: Literal["mlp"]
    hidden: tuple[int, ...] = Field((32,), min_length=1)

    def factory(self, n_features: int, n_classes: int, teacher: Teacher, feature_groups, image_shape=None) -> Callable[[], nn.Module]:
        return lambda: MLPModel(n_features, n_logits(n_classes), self.hidden)


class CNNStudent(_Student):
    kind: Literal["cnn"]
    channels: tuple[int, ...] = Field((8, 16), min_length=1)
    rationale: Literal["pooled", "spatial"] = "pooled"

    def factory(self, n_features: int, n_classes: int, teacher: Teacher, feature_groups, image_shape=None) -> Callable[[], nn.Module]:
        if image_shape is None:
            raise StepDistillError("student.kind cnn needs images: set data.image_shape, e.g. [1, 28, 28]")
        return lambda: CNNModel(image_shape, n_logits(n_classes), self.channels, self.rationale)


class ChoiceScorerStudent(_Student):
    """Multiple choice (data.choices): one MLP scorer shared by the K (question, choice) pairs,
    its K scores the logits."""

    kind: Literal["choice_scorer"]
    hidden: tuple[int, ...] = Field((64,), min_length=1)

    def factory(self, n_features: int, n_classes: int, teacher: Teacher, feature_groups, image_shape=None) -> Callable[[], nn.Module]:
        if n_features % n_classes:
            raise StepDistillError(f"student.kind choice_scorer needs multiple-choice features, {n_classes} choices of equal width (got {n_features} features); set data.choices")
        return lambda: ChoiceScorerModel(n_features // n_classes, n_classes, self.hidden)


StudentConfig = Annotated[Union[LogisticStudent, MLPStudent, CNNStudent, ChoiceScorerStudent], Field(discriminator="kind")]
