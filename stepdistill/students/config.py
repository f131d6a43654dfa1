"""Student kinds as configured (``student.kind``), validated by pydantic and importing no torch;
students/build.py makes each one's model."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from stepdistill.files import StrictModel


def n_logits(n_classes: int) -> int:
    """A classifier's outputs: one logit for two classes (of class 1), else one per class."""
    return 1 if n_classes == 2 else n_classes


class _Student(StrictModel):
    projection: bool = Field(
        True, description="learn a linear head mapping the student's rationale onto the teacher's when their widths differ"
    )


class LogisticStudent(_Student):
    """Explains itself the way the teacher does where it can: the article's score for a
    score-explaining teacher, contributions summed per raw column (plus the bias) for teachers
    that explain raw columns (TreeSHAP), plain per-feature contributions otherwise."""

    kind: Literal["logistic"] = "logistic"


class MLPStudent(_Student):
    kind: Literal["mlp"]
    hidden: tuple[int, ...] = Field((32,), min_length=1)


class CNNStudent(_Student):
    kind: Literal["cnn"]
    channels: tuple[int, ...] = Field((8, 16), min_length=1)
    rationale: Literal["pooled", "spatial"] = "pooled"


class ChoiceScorerStudent(_Student):
    """Multiple choice (data.choices): one MLP scorer shared by the K (question, choice) pairs,
    its K scores the logits."""

    kind: Literal["choice_scorer"]
    hidden: tuple[int, ...] = Field((64,), min_length=1)


class EncoderStudent(_Student):
    """Text records (data.text): a pretrained transformer encoder fine-tuned end to end with an MLP
    head on its mean-pooled states (students/encoder.py). A pair of texts is read apart by the
    same encoder (``siamese``) or together as one sequence (``cross``)."""

    kind: Literal["encoder"]
    model: str | None = Field(None, description="a Hugging Face encoder or sentence-transformers directory; default the bundled all-MiniLM-L6-v2")
    pair: Literal["siamese", "cross"] = "siamese"
    hidden: tuple[int, ...] = Field((256,), min_length=1)
    encoder_lr: float = Field(2e-5, gt=0, description="the encoder's learning rate (the head's is training.lr)")
    max_tokens: int = Field(128, ge=8, description="tokens read of each text (of a cross pair, of both); longer texts are cut, and counted")
    freeze_layers: int = Field(0, ge=0, description="the embeddings and this many lowest layers are not trained")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="train in bfloat16 autocast (bf16), in float32 (fp32), or in bf16 where the processor computes it natively (auto)"
    )


StudentConfig = Annotated[Union[LogisticStudent, MLPStudent, CNNStudent, ChoiceScorerStudent, EncoderStudent], Field(discriminator="kind")]
