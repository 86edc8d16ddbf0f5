"""Helpers shared by the defenses: building the model, swapping its last layer, parameter-name checks
and the check that a returned model carries no training hooks. Numbers are checked with
:mod:`mi_art.validation` (the one validation layer); accuracy is :func:`mi_art.evaluations.metrics.natural_accuracy`."""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Tuple, Union

import torch
from torch import nn

from mi_art.features import last_linear
from mi_art.models import RENAMED_ARCHITECTURES, make_classifier

ModelSpec = Union[str, nn.Module]


def build_model(model: ModelSpec, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """A fresh classifier: an architecture name of :data:`mi_art.models.ARCHITECTURES`, or a deep copy
    of the given module (the caller's module is never modified)."""
    if isinstance(model, str):
        return make_classifier(model, in_channels, num_classes, image_size)
    if isinstance(model, nn.Module):
        return copy.deepcopy(model)
    raise ValueError(f"model must be an architecture name (e.g. 'cnn') or a torch.nn.Module, got {type(model).__name__}")


def model_name(model: ModelSpec) -> str:
    """The architecture's name: given (an earlier name as its name now), kept by :func:`mi_art.models.make_classifier`,
    else the class name."""
    if isinstance(model, str):
        return RENAMED_ARCHITECTURES.new(model, quiet=True)  # reported where the model is built
    name = getattr(model, "architecture_name", None)
    return name if isinstance(name, str) else type(model).__name__


def last_linear_name(model: nn.Module) -> str:
    """Qualified name of the model's classification layer (its last ``nn.Linear``)."""
    layer = last_linear(model)
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise ValueError("the last nn.Linear of the model is not one of its named sub-modules")  # pragma: no cover


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the sub-module ``name`` (dotted path) of ``model`` by ``new`` in place."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def check_output_classes(model: nn.Module, num_classes: int) -> None:
    """The model's last linear layer must have one output per private class."""
    out = last_linear(model).out_features
    if out != num_classes:
        raise ValueError(f"model has {out} outputs (its last nn.Linear) but the dataset has {num_classes} private "
                         "classes; build the model with num_classes equal to dataset.num_classes")


def check_keys(defense: str, params: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Unknown parameter names -> ValueError listing the valid ones."""
    valid = list(valid)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for defense {defense!r}; "
                         f"valid parameters: {', '.join(valid) if valid else '(none)'}")


def hooks_left(model: nn.Module) -> List[Tuple[str, str]]:
    """(module name, hook kind) for every forward/backward hook still registered on ``model``."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [(name, kind) for name, m in model.named_modules() for kind in kinds if getattr(m, kind, None)]


def parameterised_leaves(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Leaf modules that own parameters, in module (registration) order."""
    return [(n, m) for n, m in model.named_modules()
            if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]


def snapshot(module: nn.Module) -> Dict[str, torch.Tensor]:
    """Detached CPU copies of a module's parameters and buffers."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


@contextmanager
def frozen(modules: Iterable[nn.Module]) -> Iterator[List[nn.Parameter]]:
    """Within the block, the parameters of ``modules`` that required gradients do not; afterwards they do
    again (also when the block raises). Yields the parameters frozen."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield params
    finally:
        for p in params:
            p.requires_grad_(True)
