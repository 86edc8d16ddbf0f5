"""An on-disk cache of trained artifacts (targets, priors, surrogates, p_reg), keyed by the full
configuration that produced them, so that repeated runs reuse work instead of repeating it."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch
from torch import nn

from mi_art.utils import load_checkpoint, save_checkpoint, write_atomic


def config_key(config: Dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ArtifactCache:
    """Checkpoints under ``root/<kind>-<hash of config>.pt``. With ``root=None`` nothing is stored."""

    def __init__(self, root: Optional[Union[str, Path]]) -> None:
        self.root = Path(root) if root is not None else None

    def path(self, kind: str, config: Dict[str, Any]) -> Optional[Path]:
        return None if self.root is None else self.root / f"{kind}-{config_key(config)}.pt"

    def sidecar(self, kind: str, config: Dict[str, Any], suffix: str) -> Optional[Path]:
        """A file beside the artifact's checkpoint (e.g. a grid of a prior's samples), or None without a root."""
        path = self.path(kind, config)
        return None if path is None else path.with_suffix(suffix)

    def module(self, kind: str, config: Dict[str, Any], build: Callable[[], nn.Module],
               train: Callable[[], nn.Module]) -> nn.Module:
        """Load the module trained under ``config`` (built empty by ``build``), or ``train`` and store it."""
        path = self.path(kind, config)
        if path is not None and path.is_file():
            module = build()
            load_checkpoint(module, path)
            return module.eval()
        module = train()
        if path is not None:
            save_checkpoint(module, path, kind=kind, config=json.dumps(config, sort_keys=True, default=str))
        return module

    def json(self, kind: str, config: Dict[str, Any], compute: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        """Load a JSON record computed under ``config``, or compute and store it."""
        path = self.path(kind, config)
        if path is not None:
            path = path.with_suffix(".json")
            if path.is_file():
                return json.loads(path.read_text())
        value = compute()
        if path is not None:
            write_atomic(path, json.dumps(value, sort_keys=True, default=str))
        return value

    def tensor(self, kind: str, config: Dict[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Load a tensor computed under ``config``, or compute and store it."""
        path = self.path(kind, config)
        if path is not None and path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
        value = compute()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            os.close(fd)
            torch.save(value, tmp)
            os.replace(tmp, path)
        return value
