"""Access to a classifier's penultimate feature.

The logit-maximisation loss (its ``p_reg`` regulariser), the KNN distance and the FID on the
evaluation model's features all need the input of a classifier's last linear layer. Any
``torch.nn.Module`` whose final layer is an ``nn.Linear`` works: the feature is captured with a
forward hook, so user models need no special method.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

import torch
from torch import nn


def last_linear(model: nn.Module, name: Optional[str] = None) -> nn.Linear:
    """Return the classification layer of ``model``: the module called ``name``, or its last ``nn.Linear``."""
    if name is not None:
        modules = dict(model.named_modules())
        if name not in modules:
            raise ValueError(f"model has no sub-module named {name!r}; its modules are {sorted(modules)[:20]}")
        layer = modules[name]
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"feature layer {name!r} must be an nn.Linear, got {type(layer).__name__}")
        return layer
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer: the penultimate feature is read as the input "
            "of the last linear (classification) layer"
        )
    return linears[-1]


@contextmanager
def capture_features(model: nn.Module, layer: Optional[nn.Linear] = None) -> Iterator[List[torch.Tensor]]:
    """Context manager: while active, every forward pass of ``model`` appends its penultimate feature
    (the input of ``layer``, by default the last linear layer) to the yielded list."""
    layer = layer if layer is not None else last_linear(model)
    store: List[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> None:
        store.append(inputs[0].flatten(1))

    handle = layer.register_forward_pre_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def logits_and_features(
    model: nn.Module, x: torch.Tensor, layer: Optional[nn.Linear] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One forward pass returning ``(logits, penultimate_features)``."""
    with capture_features(model, layer) as store:
        logits = model(x)
    if not store:
        raise ValueError(f"the last linear layer of {type(model).__name__} was not called in its forward pass")
    return logits, store[-1]


@torch.no_grad()
def extract_features(
    model: nn.Module, x: torch.Tensor, batch_size: int = 256, device: Optional[torch.device] = None
) -> torch.Tensor:
    """Penultimate features of ``x`` (N, C, H, W) in eval mode, computed in batches; returned on the CPU."""
    device = device if device is not None else next(model.parameters()).device
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    layer = last_linear(model)
    out = []
    try:
        for start in range(0, len(x), batch_size):
            batch = torch.as_tensor(x[start:start + batch_size], dtype=torch.float32, device=device)
            out.append(logits_and_features(model, batch, layer)[1].cpu())
    finally:
        for module, training in modes:  # per module: sub-modules deliberately kept in eval mode stay so
            module.training = training
    return torch.cat(out) if out else torch.empty(0)
