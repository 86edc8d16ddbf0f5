"""An on-disk cache of trained artifacts (targets, priors, surrogates, p_reg), keyed by the full
configuration that produced them, so that repeated runs reuse work instead of repeating it."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch
from torch import nn

from mi_art.utils import atomic_file, load_checkpoint, save_checkpoint, write_atomic


def config_key(config: Dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: What reading a damaged cache file raises (truncated, empty, not a checkpoint, another format).
_UNREADABLE = (OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError, pickle.UnpicklingError,
               zipfile.BadZipFile)


class WrongArtifact(ValueError):
    """A cache file that reads but was written for another key or kind."""


class ArtifactCache:
    """Checkpoints under ``root/<kind>-<hash of config>.pt``. With ``root=None`` nothing is stored.

    A cache cannot lie: a checkpoint carries its kind and configuration and is checked against them on
    load; a file that cannot be read (truncated by a full disk or an interrupted copy, empty, damaged) or
    that belongs to another key is reported in one warning naming it, moved aside (``<name>.damaged``)
    and rebuilt, and the run goes on. Writes are atomic."""

    def __init__(self, root: Optional[Union[str, Path]], *,
                 on_made: Optional[Callable[[str, float], None]] = None) -> None:
        self.root = Path(root) if root is not None else None
        #: Called with (kind, seconds) each time an artifact is made rather than loaded (progress reports).
        self.on_made = on_made

    def _made(self, kind: str, make: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = make()
        if self.on_made is not None:
            self.on_made(kind, time.perf_counter() - start)
        return value

    def path(self, kind: str, config: Dict[str, Any]) -> Optional[Path]:
        return None if self.root is None else self.root / f"{kind}-{config_key(config)}.pt"

    def sidecar(self, kind: str, config: Dict[str, Any], suffix: str) -> Optional[Path]:
        """A file beside the artifact's checkpoint (e.g. a grid of a prior's samples), or None without a root."""
        path = self.path(kind, config)
        return None if path is None else path.with_suffix(suffix)

    @staticmethod
    def _set_aside(path: Path, err: BaseException) -> None:
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        warnings.warn(f"cache file {path} is damaged or belongs to another artifact ({reason[:200]}): moved to "
                      f"{aside.name}, rebuilding it", stacklevel=3)

    def module(self, kind: str, config: Dict[str, Any], build: Callable[[], nn.Module],
               train: Callable[[], nn.Module]) -> nn.Module:
        """Load the module trained under ``config`` (built empty by ``build``), or ``train`` and store it."""
        path = self.path(kind, config)
        if path is not None and path.is_file():
            module = build()
            try:
                meta = load_checkpoint(module, path)
                expected = json.dumps(config, sort_keys=True, default=str)
                if meta.get("kind", kind) != kind or meta.get("config", expected) != expected:
                    raise WrongArtifact(f"it holds a {meta.get('kind')!r} made for another configuration")
                return module.eval()
            except _UNREADABLE as err:
                self._set_aside(path, err)
        module = self._made(kind, train)
        if path is not None:
            save_checkpoint(module, path, kind=kind, config=json.dumps(config, sort_keys=True, default=str))
        return module

    def json(self, kind: str, config: Dict[str, Any], compute: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        """Load a JSON record computed under ``config``, or compute and store it."""
        path = self.path(kind, config)
        if path is not None:
            path = path.with_suffix(".json")
            if path.is_file():
                try:
                    return json.loads(path.read_text())
                except (_UNREADABLE + (UnicodeDecodeError,)) as err:
                    self._set_aside(path, err)
        value = self._made(kind, compute)
        if path is not None:
            write_atomic(path, json.dumps(value, sort_keys=True, default=str))
        return value

    def tensor(self, kind: str, config: Dict[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Load a tensor computed under ``config``, or compute and store it."""
        path = self.path(kind, config)
        key = json.dumps({"kind": kind, "config": config}, sort_keys=True, default=str)
        if path is not None and path.is_file():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(stored, dict):  # {"key", "tensor"}; a bare tensor is an older cache's
                    if stored.get("key") != key:
                        raise WrongArtifact("it was computed for another configuration")
                    stored = stored["tensor"]
                if not isinstance(stored, torch.Tensor):
                    raise WrongArtifact(f"it holds a {type(stored).__name__}, not a tensor")
                return stored
            except _UNREADABLE as err:
                self._set_aside(path, err)
        value = self._made(kind, compute)
        if path is not None:
            size = value.numel() * value.element_size() if isinstance(value, torch.Tensor) else None
            with atomic_file(path, size=size) as f:
                torch.save({"key": key, "tensor": value}, f)
        return value
