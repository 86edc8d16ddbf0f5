"""An on-disk cache of trained artifacts (targets, priors, surrogates, p_reg), keyed by the full
configuration that produced them, so that repeated runs reuse work instead of repeating it.

Every file carries the key it was written for (its kind and configuration) and a sha256 checksum of its
content, both checked on load:

* a checkpoint (``<kind>-<hash>.pt``): ``{"state_dict", "meta": {"kind", "config", "sha256"}}``, the
  checksum over the key and every tensor's name, dtype, shape and bytes;
* a tensor (``.pt``): ``{"key", "sha256", "tensor"}``, the checksum over the key and the tensor;
* a JSON record (``.json``): ``{"format", "key", "sha256", "value"}``, the checksum over the key and the
  value's canonical JSON text.

A file that cannot be read (truncated, empty, not a checkpoint), whose content does not match its checksum
(flipped bytes) or that was written for another key or kind is named in one warning, moved aside
(``<name>.bad-<UTC time>``, kept for inspection) and rebuilt, and the run goes on.

Files written before checksums (no ``sha256``) are accepted unverified once, provided what can be checked
holds (a checkpoint's or tensor's key when it has one, a record's required fields), and re-written at once
with their key and checksum, so that every later load verifies them; one warning per cache directory and
process says so. They cannot be verified retroactively: nothing recorded what their bytes were.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Set, Union

import torch
from torch import nn

from mi_art.utils import atomic_file, save_checkpoint

from .stages import StageLog, describe_artifact

#: The ``format`` of a JSON record written with its key and checksum.
JSON_FORMAT = "mi-art-cache/1"
#: A temporary file (``*.tmp``) of an atomic write older than this is left by a killed writer and deleted;
#: a younger one may belong to a writer still running.
ORPHAN_AGE_S = 15 * 60

#: Cache directories already reported, in this process, for holding files written before checksums.
_LEGACY_REPORTED: Set[Path] = set()


def config_key(config: Dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def artifact_key(kind: str, config: Dict[str, Any]) -> str:
    """The key a tensor or JSON record is written with: its kind and configuration as canonical JSON."""
    return canonical({"kind": kind, "config": config})


def tensors_digest(key: str, tensors: Mapping[str, Any]) -> str:
    """sha256 over ``key`` and each entry's name, dtype, shape and bytes (names sorted)."""
    h = hashlib.sha256(key.encode())
    for name in sorted(tensors):
        value = tensors[name]
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"\0{name}\0{value.dtype}\0{tuple(value.shape)}\0".encode())
            if t.numel():
                h.update(t.view(torch.uint8).numpy())  # the tensor's own buffer, not a copy
        else:  # a module's extra state, stored by pickle
            h.update(f"\0{name}\0{value!r}\0".encode())
    return h.hexdigest()


def json_digest(key: str, value: Any) -> str:
    return hashlib.sha256(f"{key}\0{canonical(value)}".encode()).hexdigest()


#: What reading a damaged cache file raises (truncated, empty, not a checkpoint, another format).
_UNREADABLE = (OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError, AttributeError,
               pickle.UnpicklingError, zipfile.BadZipFile, UnicodeDecodeError)


class WrongArtifact(ValueError):
    """A cache file that reads but was written for another key or kind."""


class ChecksumMismatch(ValueError):
    """A cache file whose content is not what was written (its checksum differs)."""


_MISSING = object()


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`mi_art.utils.atomic_file`: flushed to disk, the umask's
    mode, a full disk named as such); the temporary file is removed if anything fails."""
    with atomic_file(path, size=len(data)) as f:
        f.write(data)


class ArtifactCache:
    """Checkpoints, tensors and JSON records under ``root/<kind>-<hash of config>.pt`` (``.json``), each
    checked against its key and checksum on load (see the module's docstring). With ``root=None`` nothing
    is stored. Writes are atomic; temporary files that a killed writer left behind are deleted."""

    def __init__(self, root: Optional[Union[str, Path]], *,
                 on_made: Optional[Callable[[str, float], None]] = None, stages: Optional[StageLog] = None) -> None:
        self.root = Path(root) if root is not None else None
        #: Called with (kind, seconds) each time an artifact is made rather than loaded (progress reports).
        self.on_made = on_made
        #: Names each artifact before it is made, with its budget (:func:`~.stages.describe_artifact`).
        self.stages = stages
        self._swept = False

    def _made(self, kind: str, make: Callable[[], Any], config: Optional[Dict[str, Any]] = None) -> Any:
        described = describe_artifact(kind, config or {}) if self.stages is not None else None
        start = time.perf_counter()
        if described is None:
            value = make()
        else:
            with self.stages.stage(*described):
                value = make()
        if self.on_made is not None:
            self.on_made(kind, time.perf_counter() - start)
        return value

    def path(self, kind: str, config: Dict[str, Any]) -> Optional[Path]:
        return None if self.root is None else self.root / f"{kind}-{config_key(config)}.pt"

    def json_path(self, kind: str, config: Dict[str, Any]) -> Optional[Path]:
        path = self.path(kind, config)
        return None if path is None else path.with_suffix(".json")

    def sidecar(self, kind: str, config: Dict[str, Any], suffix: str) -> Optional[Path]:
        """A file beside the artifact's checkpoint (e.g. a grid of a prior's samples), or None without a root."""
        path = self.path(kind, config)
        return None if path is None else path.with_suffix(suffix)

    # ---------------------------------------------------------------- housekeeping

    def sweep_orphans(self, max_age_s: float = ORPHAN_AGE_S) -> int:
        """Delete the temporary files (``*.tmp``) of atomic writes older than ``max_age_s``: a writer killed
        between writing and renaming left them. Returns how many were deleted."""
        if self.root is None or not self.root.is_dir():
            return 0
        removed = []
        now = time.time()
        for tmp in self.root.glob("*.tmp"):
            try:
                if tmp.is_file() and now - tmp.stat().st_mtime > max_age_s:
                    tmp.unlink()
                    removed.append(tmp.name)
            except FileNotFoundError:  # another process swept it first
                continue
        if removed:
            warnings.warn(f"cache {self.root}: deleted {len(removed)} temporary file(s) older than "
                          f"{max_age_s / 60:g} minutes left by interrupted writes ({', '.join(removed[:3])}"
                          f"{', ...' if len(removed) > 3 else ''})", stacklevel=3)
        return len(removed)

    def _sweep_once(self) -> None:
        if not self._swept:
            self._swept = True
            self.sweep_orphans()

    @staticmethod
    def _set_aside(path: Path, err: BaseException) -> Path:
        """Move a bad file to ``<name>.bad-<UTC time>`` and say in one warning which file and what is wrong."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = path.with_name(f"{path.name}.bad-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = path.with_name(f"{path.name}.bad-{stamp}-{n}")
        os.replace(path, aside)
        reason = str(err).splitlines()[0] if str(err) else ""
        if isinstance(err, WrongArtifact):
            what = f"was written for another artifact ({reason[:200]})"
        elif isinstance(err, ChecksumMismatch):
            what = f"is damaged ({reason[:200]})"
        else:
            what = f"is damaged: unreadable or truncated ({type(err).__name__}: {reason[:200]})"
        warnings.warn(f"cache file {path} {what}: moved to {aside.name}, rebuilding it", stacklevel=4)
        return aside

    def _legacy(self, path: Path, rewrite: Callable[[], None]) -> None:
        """A file written before checksums: accepted unverified, and re-written with its key and checksum."""
        root = path.parent.resolve()
        if root not in _LEGACY_REPORTED:
            _LEGACY_REPORTED.add(root)
            warnings.warn(f"cache {root} holds files written before cache checksums (first: {path.name}): each is "
                          "accepted unverified this once and re-written with its key and sha256 checksum, "
                          "verified from then on", stacklevel=4)
        try:
            rewrite()
        except OSError:  # a read-only cache: still usable, verified once re-written elsewhere
            pass

    # ---------------------------------------------------------------- checkpoints

    def _load_module(self, path: Path, kind: str, config: Dict[str, Any], module: nn.Module) -> bool:
        """Load the checkpoint at ``path`` into ``module`` after checking it; True when it had no checksum."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
            raise WrongArtifact(f"it holds a {type(payload).__name__}, not a checkpoint")
        meta, state = payload.get("meta") or {}, payload["state_dict"]
        expected = canonical(config)
        if meta.get("kind", kind) != kind or meta.get("config", expected) != expected:
            raise WrongArtifact(f"it holds a {meta.get('kind')!r} made for another configuration")
        digest = meta.get("sha256")
        if digest is not None and digest != tensors_digest(artifact_key(kind, config), state):
            raise ChecksumMismatch("its tensors do not match its sha256 checksum")
        module.load_state_dict({k.removeprefix("_module."): v for k, v in state.items()})  # Opacus's prefix
        return digest is None

    def _save_module(self, path: Path, kind: str, config: Dict[str, Any], module: nn.Module) -> None:
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        save_checkpoint(module, path, kind=kind, config=canonical(config),
                        sha256=tensors_digest(artifact_key(kind, config), state))

    def module(self, kind: str, config: Dict[str, Any], build: Callable[[], nn.Module],
               train: Callable[[], nn.Module], records: Sequence[str] = ()) -> nn.Module:
        """Load the module trained under ``config`` (built empty by ``build``), or ``train`` and store it.

        :param records: Kinds of JSON records that only training makes (stored by ``train`` through
            :meth:`store_json` under the same ``config``): when one is missing or bad, the module is trained
            again with its records, even if its checkpoint is sound."""
        path = self.path(kind, config)
        if path is not None:
            self._sweep_once()
        if path is not None and path.is_file():
            lost = [r for r in records if self._read_json(r, config) is _MISSING]
            if lost:
                warnings.warn(f"cache file {path}: its {', '.join(lost)} record ({self.json_path(lost[0], config)}) "
                              f"is missing or was set aside, and only training makes it: training the {kind} again "
                              "with its records", stacklevel=2)
            else:
                module = build()
                try:
                    if self._load_module(path, kind, config, module):
                        self._legacy(path, lambda: self._save_module(path, kind, config, module))
                    return module.eval()
                except _UNREADABLE as err:
                    self._set_aside(path, err)
        module = self._made(kind, train, config)
        if path is not None:
            self._save_module(path, kind, config, module)
        return module

    # ---------------------------------------------------------------- JSON records

    def _read_json(self, kind: str, config: Dict[str, Any], fields: Sequence[str] = ()) -> Any:
        """The checked value of a JSON record, or ``_MISSING`` when there is none or it was set aside."""
        path = self.json_path(kind, config)
        if path is None or not path.is_file():
            return _MISSING
        key = artifact_key(kind, config)
        try:
            stored = json.loads(path.read_text())
            legacy = not (isinstance(stored, dict) and stored.get("format") == JSON_FORMAT)
            if legacy:
                value = stored
            else:
                if stored.get("key") != key:
                    raise WrongArtifact(f"it holds {_describe_key(stored.get('key'))}")
                value = stored["value"]
                if stored.get("sha256") != json_digest(key, value):
                    raise ChecksumMismatch("its value does not match its sha256 checksum")
            absent = [f for f in fields if not (isinstance(value, dict) and f in value)]
            if absent:
                raise WrongArtifact(f"it lacks {', '.join(map(repr, absent))}")
        except _UNREADABLE as err:
            self._set_aside(path, err)
            return _MISSING
        if legacy:
            self._legacy(path, lambda: self._write_json(path, key, value))
        return value

    @staticmethod
    def _write_json(path: Path, key: str, value: Any) -> None:
        value = json.loads(canonical(value))  # what a load gives back, so that its checksum matches
        record = {"format": JSON_FORMAT, "key": key, "sha256": json_digest(key, value), "value": value}
        _write_bytes_atomic(path, json.dumps(record, sort_keys=True, indent=1).encode())

    def store_json(self, kind: str, config: Dict[str, Any], value: Any) -> None:
        """Write (or overwrite) a JSON record: for records made as a side effect of training a module."""
        path = self.json_path(kind, config)
        if path is not None:
            self._write_json(path, artifact_key(kind, config), value)

    def json(self, kind: str, config: Dict[str, Any], compute: Callable[[], Dict[str, Any]],
             fields: Sequence[str] = ()) -> Dict[str, Any]:
        """Load a JSON record computed under ``config``, or compute and store it. A record without every
        key in ``fields`` is another artifact's: set aside and computed again."""
        path = self.json_path(kind, config)
        if path is not None:
            self._sweep_once()
            value = self._read_json(kind, config, fields)
            if value is not _MISSING:
                return value
        value = self._made(kind, compute, config)
        if path is not None:
            self._write_json(path, artifact_key(kind, config), value)
        return value

    # ---------------------------------------------------------------- tensors

    def tensor(self, kind: str, config: Dict[str, Any], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Load a tensor computed under ``config``, or compute and store it."""
        path = self.path(kind, config)
        key = artifact_key(kind, config)
        if path is not None:
            self._sweep_once()
        if path is not None and path.is_file():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
                digest = None
                if isinstance(stored, dict):  # {"key", "sha256", "tensor"}; a bare tensor is an older cache's
                    if stored.get("key") != key:
                        raise WrongArtifact("it was computed for another configuration")
                    digest, stored = stored.get("sha256"), stored["tensor"]
                if not isinstance(stored, torch.Tensor):
                    raise WrongArtifact(f"it holds a {type(stored).__name__}, not a tensor")
                if digest is not None and digest != tensors_digest(key, {"tensor": stored}):
                    raise ChecksumMismatch("the tensor does not match its sha256 checksum")
                if digest is None:
                    self._legacy(path, lambda: self._save_tensor(path, key, stored))
                return stored
            except _UNREADABLE as err:
                self._set_aside(path, err)
        value = self._made(kind, compute, config)
        if path is not None:
            self._save_tensor(path, key, value)
        return value

    @staticmethod
    def _save_tensor(path: Path, key: str, value: torch.Tensor) -> None:
        value = value.detach().cpu()
        buffer = io.BytesIO()
        torch.save({"key": key, "sha256": tensors_digest(key, {"tensor": value}), "tensor": value}, buffer)
        _write_bytes_atomic(path, buffer.getvalue())


def _describe_key(key: Any) -> str:
    """``another artifact's record`` with its kind when the key says it."""
    try:
        return f"a {json.loads(key)['kind']!r} record of another configuration or kind"
    except (TypeError, ValueError, KeyError):
        return "a record of another artifact"
