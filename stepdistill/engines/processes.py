"""Several training processes (``accelerate launch``, ``torchrun``) working as one.

Every process runs the same code on the same data and the same seeds; what differs is which part
of each batch it computes. The helpers here deal work out round-robin by position, add numbers
up across processes and gather results back in their original order, so that every process ends
with the same numbers, and so the same decisions (early stopping, the chosen student). With one
process each is the identity: results are those of a plain single-process run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from stepdistill.device import default_device

T = TypeVar("T")


def lm_accelerator():
    """The ``accelerate.Accelerator`` of this process: the launcher's processes (gloo on CPUs,
    NCCL on GPUs), or a single process. On the CPU when ``default_device`` says so
    (``STEPDISTILL_DEVICE=cpu``). Mixed precision stays off here: the engine autocasts to bf16
    on CUDA only, around the forward pass."""
    from accelerate import Accelerator

    return Accelerator(cpu=default_device().type == "cpu", mixed_precision="no")


def process_device(accelerator) -> torch.device:
    """Where this process's student lives: the launcher's device for it, or, alone,
    ``default_device()`` (a single process keeps today's placement, ``STEPDISTILL_DEVICE`` included)."""
    return accelerator.device if accelerator.num_processes > 1 else default_device()


def dealt(items: Sequence[T], accelerator) -> list[T]:
    """This process's share of ``items``: every ``num_processes``-th one from its index."""
    return list(items[accelerator.process_index :: accelerator.num_processes])


def sum_across(accelerator, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` added up over the processes, the same on every one; itself when alone."""
    if accelerator.num_processes == 1:
        return tensor
    return accelerator.reduce(tensor, reduction="sum")


def map_across(accelerator, work: Callable[[T], list], items: Sequence[T]) -> list:
    """``work(item)`` (a list) for every item, the items dealt round-robin to the processes and
    the results gathered, on every process, concatenated in the items' order."""
    if accelerator.num_processes == 1:
        return [result for item in items for result in work(item)]
    from accelerate.utils import gather_object

    mine = {position: work(items[position]) for position in dealt(range(len(items)), accelerator)}
    by_position = {position: results for share in gather_object([mine]) for position, results in share.items()}
    return [result for position in range(len(items)) for result in by_position[position]]
