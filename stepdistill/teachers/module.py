"""A teacher that is any torch module, and loading its weights from a safetensors file."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

import safetensors.torch
import torch
from torch import nn

from stepdistill.errors import StepDistillError
from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.cache import TeacherOutputs
from stepdistill.teachers.common import as_rows
from stepdistill.terms import Outputs

# Past this many, a list of layer or weight names stops helping and only floods the message.
MAX_NAMES_SHOWN = 40


class ModuleTeacher(Teacher):
    """Runs ``module`` in eval mode, without gradients, over ``samples.X`` in batches of
    ``batch_size``, on the module's device.

    Logits: the forward output when it is a tensor, else its ``.logits`` (as in ``Outputs``); a
    1-D output is one logit per sample. A module names no classes (``classes`` is None), so its
    outputs are, by contract, the data's classes in the data's order (one logit, class 1's, for
    two classes): as the teachers trained here are, and as ``teacher.classes`` can make a loaded
    one whose outputs are in another order (``RelabelledTeacher``). Rationale: the output of the submodule named
    ``rationale_layer`` in ``module.named_modules()``, captured by a forward hook; a 4-D feature
    map (N, C, H, W) is averaged over H and W (``pool="mean"``) or flattened (``pool="none"``),
    any other shape is flattened per sample. Without ``rationale_layer`` the rationale is
    ``Outputs.rationale`` when the module returns ``Outputs``, else None.
    """

    def __init__(self, module: nn.Module, rationale_layer: str | None = None, pool: Literal["mean", "none"] = "mean", batch_size: int = 4096):
        if pool not in ("mean", "none"):
            raise StepDistillError(f"unknown rationale pool '{pool}'; use 'mean' (average a feature map over space) or 'none' (flatten it)")
        self.module = module
        self.rationale_layer = rationale_layer
        self.pool = pool
        self.batch_size = batch_size
        self._layer = None if rationale_layer is None else _named_layer(module, rationale_layer)

    @torch.no_grad()
    def outputs(self, samples: Samples) -> TeacherOutputs:
        device = _device_of(self.module)
        captured: list[object] = []
        hook = None if self._layer is None else self._layer.register_forward_hook(lambda _layer, _inputs, output: captured.append(output))
        was_training = self.module.training
        self.module.eval()
        logits, rationale = [], []
        try:
            for start in range(0, len(samples), self.batch_size):
                captured.clear()
                out = self.module(samples.X[start : start + self.batch_size].to(device))
                logits.append(as_rows(_logits_of(out)).cpu())
                rationale.append(self._rationale_of(out, captured))
        finally:
            if hook is not None:
                hook.remove()
            self.module.train(was_training)
        has_rationale = all(r is not None for r in rationale)
        return TeacherOutputs(torch.cat(logits), torch.cat(rationale) if has_rationale else None)

    def identity(self) -> tuple:
        # Settings kept outside the weights (which hidden layer is the rationale) change the
        # outputs too, so each submodule's plain settings are part of it with its weights.
        module_class = type(self.module)
        return f"{module_class.__module__}.{module_class.__qualname__}", _settings(self.module), _state_bytes(self.module), self.rationale_layer, self.pool

    def saved_bytes(self) -> int:
        return len(_state_bytes(self.module))

    def _rationale_of(self, out: object, captured: list[object]) -> torch.Tensor | None:
        if self._layer is None:
            return as_rows(out.rationale).cpu() if isinstance(out, Outputs) and out.rationale is not None else None
        if not captured:
            raise StepDistillError(f"rationale layer '{self.rationale_layer}' did not run in the module's forward pass; choose a layer the forward pass uses")
        # A layer called more than once per pass: its last output is the one nearest the logits.
        features = captured[-1]
        if not isinstance(features, torch.Tensor):
            raise StepDistillError(f"rationale layer '{self.rationale_layer}' outputs {type(features).__name__}, not a tensor; choose a layer whose output is a tensor")
        if features.ndim == 4 and self.pool == "mean":
            features = features.mean(dim=(2, 3))
        return as_rows(features).cpu()


def load_module_weights(module: nn.Module, path: str | Path) -> nn.Module:
    """Load the safetensors file ``path`` into ``module`` (in place) and return the module.
    Every tensor in the file must match one of the module's by name and shape, and back."""
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as err:
        raise StepDistillError("loading teacher weights needs the safetensors package; install safetensors") from err
    path = Path(path)
    if not path.is_file():
        raise StepDistillError(f"teacher weights file not found: {path}; check the path (relative paths start at the current directory)")
    try:
        weights = load_file(path)
    except (SafetensorError, OSError) as err:
        raise StepDistillError(f"could not read {path} as safetensors: {' '.join(str(err).split())}; save the weights with safetensors.torch.save_file") from err
    expected = module.state_dict()
    missing = [name for name in expected if name not in weights]
    unexpected = [name for name in weights if name not in expected]
    if missing or unexpected:
        raise StepDistillError(
            f"teacher weights {path} do not match the module: missing {_few(missing)}; unexpected {_few(unexpected)};"
            " load weights saved from a module of this architecture"
        )
    reshaped = [f"{name} {tuple(weights[name].shape)} vs {tuple(tensor.shape)}" for name, tensor in expected.items() if weights[name].shape != tensor.shape]
    if reshaped:
        raise StepDistillError(f"teacher weights {path} have other shapes than the module's (file vs module): {_few(reshaped)}; load weights saved from a module of this size")
    module.load_state_dict(weights)
    return module


def _state_bytes(module: nn.Module) -> bytes:
    """The module's state dict as safetensors saves it, as ``safetensors.torch.save_model`` would:
    a tensor held under several names (tied weights) is saved once, under its first name."""
    tensors, held = {}, set()
    for name, tensor in module.state_dict().items():
        storage = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if tensor.numel() and storage in held:
            continue
        held.add(storage)
        # A copy, contiguous: safetensors refuses tensors that share memory or have gaps.
        tensors[name] = tensor.detach().to("cpu", copy=True).contiguous()
    return safetensors.torch.save(tensors)


def _settings(module: nn.Module) -> list:
    """Each submodule's name, class and plain public settings (numbers, text, ranges, and lists,
    tuples and dicts of them) as text, in order. What is not plain is left out: its text could
    hold a memory address, which differs per run."""
    return [
        (name, type(layer).__qualname__, {key: repr(value) for key, value in vars(layer).items() if not key.startswith("_") and key != "training" and _is_plain(value)})
        for name, layer in module.named_modules()
    ]


def _is_plain(value: object) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, range)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    return False


def _named_layer(module: nn.Module, name: str) -> nn.Module:
    layers = {layer_name: layer for layer_name, layer in module.named_modules() if layer_name}
    if name not in layers:
        raise StepDistillError(f"rationale layer '{name}' not found; the module has: {_few(list(layers), MAX_NAMES_SHOWN)}")
    return layers[name]


def _logits_of(out: object) -> torch.Tensor:
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise StepDistillError(f"the teacher module returned {type(out).__name__}; make it return a logits tensor or Outputs")
    return logits


def _device_of(module: nn.Module) -> torch.device:
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def _few(names: list[str], limit: int = 3) -> str:
    """The first ``limit`` names, and how many more there are."""
    shown = ", ".join(names[:limit]) or "none"
    return shown if len(names) <= limit else f"{shown} (and {len(names) - limit} more)"
