"""A configured student's model factory (students/config.py), fitted to the data and to what the
teacher's rationale is."""

from __future__ import annotations

from dataclasses import dataclass
from functools import singledispatch
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from stepdistill.device import default_device
from stepdistill.errors import StepDistillError
from stepdistill.progress import without_transformers_bars
from stepdistill.students.choice import ChoiceScorerModel
from stepdistill.students.cnn import CNNModel
from stepdistill.students.config import ChoiceScorerStudent, CNNStudent, EncoderStudent, LogisticStudent, MLPStudent, n_logits
from stepdistill.students.encoder import EncoderStudentModel, FrozenStates
from stepdistill.students.logistic import LogisticModel
from stepdistill.students.mlp import MLPModel
from stepdistill.text.tokens import encoder_directory, load_encoder_files, token_mode


@dataclass(frozen=True)
class StudentShape:
    """What a student's model is sized and explained by: the encoded features (and their
    grouping into raw columns), the classes, the image shape of flattened images, and the
    teacher's rationale: its style (``Teacher.rationale_style``) and whether it explains the raw
    columns rather than the encoded ones; for text records, how many texts a record has
    (``text_layout``: single, pair or choices)."""

    n_features: int
    n_classes: int
    feature_groups: tuple[int, ...] = ()
    image_shape: tuple[int, int, int] | None = None
    rationale_style: str = "representation"
    reads_raw_columns: bool = False
    text_layout: str | None = None


@singledispatch
def student_factory(config, shape: StudentShape) -> Callable[[], nn.Module]:
    """A function making a fresh model of the ``config``'s kind for data of ``shape``."""
    raise TypeError(f"no model for student config {type(config).__name__}")


@student_factory.register
def _(config: LogisticStudent, shape: StudentShape) -> Callable[[], nn.Module]:
    d, k, style = shape.n_features, n_logits(shape.n_classes), shape.rationale_style
    if style == "score":
        return lambda: LogisticModel(d, k, "score")
    grouped = style in ("contributions", "contributions_with_bias") and shape.reads_raw_columns
    return lambda: LogisticModel(
        d, k, "contributions", feature_groups=shape.feature_groups if grouped else None, include_bias=style == "contributions_with_bias"
    )


@student_factory.register
def _(config: MLPStudent, shape: StudentShape) -> Callable[[], nn.Module]:
    return lambda: MLPModel(shape.n_features, n_logits(shape.n_classes), config.hidden)


@student_factory.register
def _(config: CNNStudent, shape: StudentShape) -> Callable[[], nn.Module]:
    if shape.image_shape is None:
        raise StepDistillError("student.kind cnn needs images: set data.image_shape, e.g. [1, 28, 28]")
    return lambda: CNNModel(shape.image_shape, n_logits(shape.n_classes), config.channels, config.rationale)


@student_factory.register
def _(config: ChoiceScorerStudent, shape: StudentShape) -> Callable[[], nn.Module]:
    if shape.n_features % shape.n_classes:
        raise StepDistillError(
            f"student.kind choice_scorer needs multiple-choice features, {shape.n_classes} choices of equal width (got {shape.n_features} features); set data.choices"
        )
    return lambda: ChoiceScorerModel(shape.n_features // shape.n_classes, shape.n_classes, config.hidden)


@student_factory.register
def _(config: EncoderStudent, shape: StudentShape) -> Callable[[], nn.Module]:
    from transformers import AutoModel

    if shape.text_layout is None:
        raise StepDistillError("student.kind encoder reads texts; set data.text")
    directory = encoder_directory(config.model)
    _, files = load_encoder_files(directory)
    with without_transformers_bars():  # stepdistill reports its own progress
        pretrained = AutoModel.from_pretrained(directory).state_dict()  # read once, copied into every student
    mode = token_mode(shape.text_layout, config.pair)
    # A multiple-choice student scores each of the K choices: its logits are the K scores.
    outputs = shape.n_classes if mode == "choices" else n_logits(shape.n_classes)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and native_bf16())
    layers = files.config.get("num_hidden_layers")
    if config.freeze_layers and (layers is None or config.freeze_layers >= layers):
        raise StepDistillError(f"student.freeze_layers is {config.freeze_layers}, and the encoder has {layers} layers; freeze fewer than all of them")
    frozen_states = shared_frozen_states(directory, config.freeze_layers) if config.freeze_layers else None

    def make() -> EncoderStudentModel:
        model = EncoderStudentModel(
            files.config, outputs, mode, config.max_tokens, files.pad_id, files.sep_id, config.hidden, config.freeze_layers, config.encoder_lr, bf16
        )
        model.encoder.load_state_dict(pretrained)
        model.frozen_states = frozen_states
        return model

    return make


# The last encoder's FrozenStates, by its directory, its files' times and frozen layers: kept for
# the students of the experiment's next runs, which read the same texts through the same layers.
_FROZEN_STATES: dict[tuple, FrozenStates] = {}


def shared_frozen_states(directory: Path, layers: int) -> FrozenStates:
    """What the frozen layers of ``directory``'s pretrained encoder make of texts, one store for
    every student that freezes ``layers`` of it (they are the same pretrained weights): for the
    students of a run, and of the runs that follow in this process. Another encoder's or another
    depth's replaces it."""
    key = (str(directory.resolve()), layers, tuple(sorted((f.name, f.stat().st_mtime_ns) for f in directory.rglob("*") if f.is_file())))
    if key not in _FROZEN_STATES:
        _FROZEN_STATES.clear()
        _FROZEN_STATES[key] = FrozenStates()
    return _FROZEN_STATES[key]


def native_bf16() -> bool:
    """Whether this machine computes bfloat16 natively (a CUDA GPU that does, or a CPU with
    AVX-512 BF16 or AMX): elsewhere bf16 is emulated, and slower than float32."""
    if default_device().type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_student_rationale(config, make: Callable[[], nn.Module], needing: list[str], teacher_width: int | None) -> None:
    """Refuse methods (``needing``: those that learn the teacher's rationale) that cannot train
    the student ``make`` makes: the teacher gives no rationale, or its width differs from the
    student's while ``student.projection`` (a learned head between them) is off."""
    if needing and teacher_width is None:
        raise StepDistillError(
            f"the teacher gives no rationale, which {', '.join(needing)} need;"
            " remove those methods or use a teacher that explains its predictions"
        )
    if needing and not config.projection:
        width = make().rationale_width
        if width != teacher_width:
            raise StepDistillError(
                f"the student's rationale has width {width} and the teacher's {teacher_width}, and student.projection is off;"
                " turn it on to learn a projection, or choose a student whose rationale matches"
            )
