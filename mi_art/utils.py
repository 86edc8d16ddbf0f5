"""Small shared helpers: devices, seeds, input validation, estimator unwrapping, atomic checkpoints."""
from __future__ import annotations

import os
from contextlib import contextmanager
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from .validation import check_images, check_labels  # noqa: F401  (re-exported: the one validation layer)

DeviceLike = Union[str, torch.device, None]


def resolve_device(device: DeviceLike = None) -> torch.device:
    """``None``/"auto" -> CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available on this machine; use device='cpu'")
    return device


def seed_everything(seed: Optional[int]) -> None:
    """Seed Python, NumPy and torch (no-op for ``None``)."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class EstimatorModule(nn.Module):
    """Differentiable forward pass through an ART PyTorch estimator, its preprocessing included.

    The estimator's own module is a sub-module, so hooks on its layers (the penultimate feature) work.
    """

    def __init__(self, estimator: Any) -> None:
        super().__init__()
        self.estimator = estimator
        self.model = estimator.model
        self.training = self.model.training  # a new Module says "training"; mirror the wrapped model instead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.estimator._predict_framework(x)[0]


def as_module(model: Any, what: str = "model") -> nn.Module:
    """A ``torch.nn.Module`` computing what ``model`` computes: the module itself, or for an ART
    PyTorch estimator its preprocessing followed by its model (:class:`EstimatorModule`)."""
    from art.estimators.pytorch import PyTorchEstimator

    if isinstance(model, PyTorchEstimator):
        return EstimatorModule(model)
    if isinstance(model, nn.Module):
        return model
    raise ValueError(f"{what} must be an ART PyTorch estimator or a torch.nn.Module, got {type(model).__name__}")


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; afterwards every sub-module gets back its own training flag (a model
    in train mode may hold sub-modules deliberately kept in eval mode, which ``train(True)`` would flip)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def module_device(module: nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def save_checkpoint(module: nn.Module, path: Union[str, Path], **meta: Any) -> Path:
    """Write ``{"state_dict", "meta"}`` atomically (temporary file + rename). ``meta`` holds plain types."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"state_dict": state, "meta": meta}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(module: nn.Module, path: Union[str, Path]) -> Dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``); returns its meta."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = payload["state_dict"] if isinstance(payload, dict) and "state_dict" in payload else payload
    state = {k.removeprefix("_module."): v for k, v in state.items()}  # Opacus GradSampleModule prefix
    module.load_state_dict(state)
    return payload.get("meta", {}) if isinstance(payload, dict) else {}


def write_atomic(path: Union[str, Path], text: str) -> Path:
    """Write a text file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
