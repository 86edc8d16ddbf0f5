"""Access to a classifier's penultimate feature.

The logit-maximisation loss (its ``p_reg`` regulariser), the KNN distance and the FID on the
evaluation model's features all need the penultimate feature of a classifier: the input of its
**feature layer**. By default that is the model's last ``nn.Linear`` (the classification layer); any
other module can be named with ``feature_layer="name"`` (its name in ``model.named_modules()``), e.g.
the final 1x1 convolution of a head without ``nn.Linear``. The feature is captured with a forward
pre-hook and flattened per sample, so user models need no special method. Only the features need
this layer: attacks without ``p_reg`` never look for it.

``model`` may be a bare module or the :class:`~mi_art.utils.EstimatorModule` view of an ART estimator;
layer names are those of the user's module in both cases.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple, Union

import torch
from torch import nn

from .utils import channels_last_on_cpu, eval_mode

LayerLike = Union[None, str, nn.Module]


def _root(model: nn.Module) -> nn.Module:
    """The user's module: itself, or the module inside an estimator view."""
    from .utils import EstimatorModule

    return model.model if isinstance(model, EstimatorModule) else model


def _some_names(model: nn.Module, limit: int = 20) -> List[str]:
    names = [name for name, _ in model.named_modules() if name]
    return names[:limit] + ([f"... ({len(names) - limit} more)"] if len(names) > limit else [])


def last_linear(model: nn.Module, name: Optional[str] = None) -> nn.Linear:
    """Return the classification layer of ``model``: the module called ``name``, or its last ``nn.Linear``
    (:func:`penultimate_layer`, which must find an ``nn.Linear`` here)."""
    layer = penultimate_layer(model, name)
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"feature layer {name!r} must be an nn.Linear, got {type(layer).__name__}")
    return layer


def check_feature_layer(value: Any, name: str = "feature_layer") -> Optional[str]:
    """``feature_layer`` (called ``name`` in the message) is ``None`` (the last ``nn.Linear``) or the non-blank name
    of a sub-module."""
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    raise ValueError(f"{name} must be None (the model's last nn.Linear) or the name of a sub-module "
                     f"(as in model.named_modules()), got {value!r}")


def penultimate_layer(model: nn.Module, name: LayerLike = None) -> nn.Module:
    """The module whose input is the penultimate feature: the sub-module of ``model`` called ``name``
    (any module type), ``name`` itself when it is a module, or else the last ``nn.Linear``."""
    if isinstance(name, nn.Module):
        return name
    root = _root(model)
    if check_feature_layer(name) is not None:
        modules = {n: m for n, m in root.named_modules() if n}
        if name not in modules:
            raise ValueError(f"feature_layer={name!r}: {type(root).__name__} has no sub-module of that name; its "
                             f"sub-modules are {_some_names(root)}")
        return modules[name]
    linears = [m for m in root.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(root).__name__} has no nn.Linear layer, where the penultimate feature is read by "
                         f"default: pass feature_layer=<name of the module whose input is the penultimate feature> "
                         f"(e.g. a final 1x1 convolution); its sub-modules are {_some_names(root)}")
    return linears[-1]


@contextmanager
def capture_features(model: nn.Module, layer: LayerLike = None) -> Iterator[List[torch.Tensor]]:
    """Context manager: while active, every forward pass of ``model`` appends its penultimate feature
    (the flattened input of ``layer``: a module, a sub-module name, by default the last linear layer)
    to the yielded list."""
    layer = penultimate_layer(model, layer)
    store: List[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> None:
        store.append(inputs[0].flatten(1))

    handle = layer.register_forward_pre_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def logits_and_features(model: nn.Module, x: torch.Tensor, layer: LayerLike = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One forward pass returning ``(logits, penultimate_features)``."""
    with capture_features(model, layer) as store:
        logits = model(x)
    if not store:
        what = f"feature layer {layer!r}" if isinstance(layer, str) else "feature layer (by default the last nn.Linear)"
        raise ValueError(f"the {what} of {type(_root(model)).__name__} was not called in its forward pass: name "
                         "the module whose input is the penultimate feature with feature_layer=")
    return logits, store[-1]


@torch.no_grad()
def extract_features(model: nn.Module, x: torch.Tensor, batch_size: int = 256, device: Optional[torch.device] = None,
                     layer: LayerLike = None) -> torch.Tensor:
    """Penultimate features of ``x`` (a batch of images ``model`` takes) in eval mode, computed in batches;
    returned on the CPU. ``layer``: see :func:`penultimate_layer`."""
    device = device if device is not None else next(model.parameters()).device
    layer = penultimate_layer(model, layer)
    out = []
    # per module: sub-modules deliberately kept in eval mode stay so
    with eval_mode(model), channels_last_on_cpu(_root(model), torch.device(device)):
        for start in range(0, len(x), batch_size):
            batch = torch.as_tensor(x[start:start + batch_size], dtype=torch.float32, device=device)
            out.append(logits_and_features(model, batch, layer)[1].cpu())
    return torch.cat(out) if out else torch.empty(0)
