"""Small shared helpers: devices, seeds, the one place where images meet a model (:class:`EstimatorModule`:
ART estimators and bare modules, input ranges, outputs), atomic checkpoints."""
from __future__ import annotations

import errno
import os
import random
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Dict, Iterator, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from .validation import (check_clip_range, check_images, check_int, check_labels,  # noqa: F401  (re-exported)
                         check_unit_images)

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


OutputIndex = Union[None, int, str]


def looks_like_probabilities(out: torch.Tensor) -> bool:
    """Outputs of a model ending in softmax: every value in [0, 1], every row summing to 1."""
    if out.ndim != 2 or out.shape[1] < 2:
        return False
    ones = torch.ones(len(out), device=out.device, dtype=out.dtype)
    return bool(((out >= 0) & (out <= 1)).all() and torch.allclose(out.sum(1), ones, atol=1e-4))


def check_output_index(value: Any) -> OutputIndex:
    """``None``, an integer (a position in a tuple/list output) or a non-empty string (a key of a dict output)."""
    if value is None or (isinstance(value, str) and value):
        return value
    return check_int("output_index", value, hint=" (the position of the logits in a tuple output, or their key "
                                                  "in a dict output as a non-empty string)")


class EstimatorModule(nn.Module):
    """The one place where images meet a model: a differentiable ``torch.nn.Module`` view of an ART
    PyTorch estimator (or of a bare module) that every attack, helper and metric of mi-art goes through.

    Two image spaces meet here:

    * the **model's input space**: what ``estimator.predict`` takes, in the estimator's ``clip_values``
      range (e.g. 0..255) and layout (``channels_first=False``: NHWC). :meth:`forward` takes images in
      this space and applies the estimator's ``preprocessing`` exactly as ART's own PyTorch attacks do
      (``_predict_framework``); output postprocessors are not applied (they change ``predict`` only);
    * the **unit space**: NCHW images in [0, 1], where GAN priors, their discriminators and the surrogates
      :func:`mi_art.distill_surrogate` trains work. :meth:`from_unit` and :meth:`to_unit` map between the
      two: ``lo + (hi - lo) * u`` with ``(lo, hi) = clip_values``, and the channel transpose.

    A bare module is its own model: its input space is the unit space, no preprocessing. An estimator
    without ``clip_values`` is taken to expect [0, 1]. With ``unit_input=True`` :meth:`forward` takes
    unit-space images (the view then behaves like a bare module trained on [0, 1] images).

    Outputs: ``output_index`` picks the logits out of a tuple/list (a position) or a dict (a key) output;
    a tensor is used as it is. A model whose outputs are probabilities (in [0, 1], rows summing to 1,
    detected on the first forward pass and kept in ``outputs_probabilities``) returns their logarithm:
    logits of the same distribution, so that cross-entropy and softmax confidences are the model's own
    (softmax applied twice would flatten them).

    The model is a sub-module, so hooks on its layers (the penultimate feature) work. The estimator owns
    its device: ``.to()`` leaves an estimator's model where it is; inputs are moved to it and outputs back.
    """

    def __init__(self, model: Any, *, output_index: OutputIndex = None, unit_input: bool = False,
                 what: str = "model") -> None:
        from art.estimators.pytorch import PyTorchEstimator

        super().__init__()
        if isinstance(model, PyTorchEstimator):
            self.estimator: Optional[Any] = model
            self.model = model.model
        elif isinstance(model, nn.Module):
            self.estimator = None
            self.model = model
        else:
            raise ValueError(f"{what} must be an ART PyTorch estimator or a torch.nn.Module, got "
                             f"{type(model).__name__}")
        self.output_index = check_output_index(output_index)
        self.unit_input = bool(unit_input)
        self.what = what
        #: whether the model returns probabilities (softmax outputs); None until the first forward pass
        self.outputs_probabilities: Optional[bool] = None
        self.training = self.model.training  # a new Module says "training"; mirror the wrapped model instead

    # ------------------------------------------------------------------ the two image spaces

    @property
    def source(self) -> Any:
        """What this view was made from: the estimator, or the bare module."""
        return self.estimator if self.estimator is not None else self.model

    @property
    def channels_first(self) -> bool:
        return bool(getattr(self.estimator, "channels_first", True)) if self.estimator is not None else True

    @property
    def clip_values(self) -> Optional[Tuple[Any, Any]]:
        return getattr(self.estimator, "clip_values", None) if self.estimator is not None else None

    def _range(self, like: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        clip = self.clip_values
        if clip is None:
            return None
        lo, hi = (torch.as_tensor(np.asarray(v, dtype=np.float32), device=like.device, dtype=like.dtype)
                  for v in clip)
        if lo.ndim == 0 and hi.ndim == 0 and float(lo) == 0.0 and float(hi) == 1.0:
            return None
        return lo, hi

    def _unit_to_model(self, u: torch.Tensor) -> torch.Tensor:
        x = u if self.channels_first else u.permute(0, 2, 3, 1)
        r = self._range(x)
        return x if r is None else r[0] + (r[1] - r[0]) * x

    def _model_to_unit(self, x: torch.Tensor) -> torch.Tensor:
        r = self._range(x)
        u = x if r is None else (x - r[0]) / (r[1] - r[0])
        return u if self.channels_first else u.permute(0, 3, 1, 2)

    def check_input_range(self, x: Any, name: str) -> None:
        """``x``, images meant for this view's input space (what the estimator's ``predict`` takes), must be
        able to be there (:func:`~mi_art.validation.check_clip_range`). Unit views and estimators without
        ``clip_values`` take anything here (:meth:`unit_images` checks them in the unit space)."""
        if not self.unit_input and self.clip_values is not None:
            check_clip_range(x, name, self.clip_values, self.what)

    def unit_images(self, x: Any, name: str) -> np.ndarray:
        """``x``, images in this view's input space, checked where they meet the model and mapped to the unit
        space: the estimator's ``input_shape`` (layout and channels), its ``clip_values``
        (:meth:`check_input_range`), and [0, 1] channels first once mapped
        (:func:`~mi_art.validation.check_unit_images`: what a bare module or an estimator without
        ``clip_values`` takes). Returns float32 NCHW in [0, 1] as an array."""
        shape = getattr(self.estimator, "input_shape", None) if not self.unit_input else None
        arr = check_images(x, name, tuple(shape) if shape is not None and len(shape) == 3 else None)
        if self.unit_input or self.clip_values is None:
            kind = "as a unit view" if self.unit_input else ("a bare module" if self.estimator is None
                                                             else "an estimator without clip_values")
            return check_unit_images(self.to_unit(arr), name, user=f"the {self.what}, {kind},",
                                     fix="scale them to [0, 1] (e.g. divide 0..255 images by 255), or wrap the "
                                         "model in an ART estimator with clip_values=(0, 255)")
        self.check_input_range(arr, name)
        return np.clip(self.to_unit(arr), 0, 1)

    def from_unit(self, images: Any) -> Any:
        """NCHW images in [0, 1] (tensor or array) -> this view's input space (array in, array out)."""
        return images if self.unit_input else _on_tensor(self._unit_to_model, images)

    def to_unit(self, x: Any) -> Any:
        """Images in this view's input space (tensor or array) -> NCHW in [0, 1] (array in, array out)."""
        return x if self.unit_input else _on_tensor(self._model_to_unit, x)

    def unit_view(self) -> "EstimatorModule":
        """The same model taking unit-space images in :meth:`forward`."""
        if self.unit_input:
            return self
        view = EstimatorModule(self.source, output_index=self.output_index, unit_input=True, what=self.what)
        view.outputs_probabilities = self.outputs_probabilities
        return view

    # ------------------------------------------------------------------ forward

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own outputs (logits or probabilities, as it returns them) for ``x`` in the input
        space: ART preprocessing, the model, ``output_index``."""
        if self.unit_input:
            x = self._unit_to_model(x)
        if self.estimator is None:
            out = self.model(x)
        else:
            out = self.estimator._predict_framework(x.to(self.estimator.device))[0]
        out = self._select(out)
        return out.to(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x`` in the input space (for a model returning probabilities, their logarithm)."""
        out = self.outputs(x)
        if self.outputs_probabilities is None:
            self.outputs_probabilities = looks_like_probabilities(out.detach())
        if self.outputs_probabilities:
            out = torch.log(out.clamp_min(torch.finfo(out.dtype).tiny))
        return out

    def _select(self, out: Any) -> torch.Tensor:
        index, what = self.output_index, self.what
        adapt = "or wrap the model in an nn.Module whose forward returns the logits tensor"
        if isinstance(out, (tuple, list)):
            if index is None:
                shapes = ", ".join(str(tuple(o.shape)) if isinstance(o, torch.Tensor) else type(o).__name__
                                   for o in out)
                raise ValueError(f"the {what} returns a {type(out).__name__} of {len(out)} outputs ({shapes}): pass "
                                 f"output_index=<position of the logits> (e.g. output_index=0), {adapt}")
            if not isinstance(index, int) or not -len(out) <= index < len(out):
                raise ValueError(f"output_index={index!r} does not pick an output of the {what}, which returns a "
                                 f"{type(out).__name__} of {len(out)}: give a position from 0 to {len(out) - 1}")
            out = out[index]
        elif isinstance(out, Mapping):
            keys = list(out.keys())
            if index is None:
                raise ValueError(f"the {what} returns a dict with keys {keys}: pass output_index=<key of the "
                                 f"logits> (e.g. output_index={keys[0]!r}), {adapt}")
            if index not in out:
                raise ValueError(f"output_index={index!r} is not a key of the {what}'s output, whose keys are {keys}")
            out = out[index]
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
            raise ValueError(f"the {what} must return logits of shape (batch, num_classes), got {got}")
        return out

    def _apply(self, fn: Any, recurse: bool = True) -> "EstimatorModule":
        if self.estimator is not None:  # the estimator's model stays on the estimator's device
            return self
        return super()._apply(fn, recurse)


def _on_tensor(fn: Any, x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return fn(x)
    arr = np.asarray(x, dtype=np.float32)
    return fn(torch.from_numpy(arr)).numpy()


def as_module(model: Any, what: str = "model", *, output_index: OutputIndex = None,
              unit_input: bool = False) -> EstimatorModule:
    """The :class:`EstimatorModule` of ``model`` (an ART PyTorch estimator, a ``torch.nn.Module``, or an
    ``EstimatorModule`` returned as it is unless ``output_index``/``unit_input`` ask for another view).
    Every attack, helper and metric of mi-art turns its models into modules here, so that ART's
    preprocessing, ``clip_values`` and ``channels_first`` are applied the same way everywhere."""
    if isinstance(model, EstimatorModule):
        if output_index is not None and output_index != model.output_index:
            model = EstimatorModule(model.source, output_index=output_index, unit_input=model.unit_input, what=what)
        return model.unit_view() if unit_input else model
    return EstimatorModule(model, output_index=output_index, unit_input=unit_input, what=what)


@contextmanager
def channels_last_on_cpu(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """On a CPU, one of the library's own architectures (built by :func:`~mi_art.models.make_classifier`) holds
    its weights channels-last while inside (oneDNN's convolutions then run faster for its CNNs and ResNets,
    forward and backward, with the images still given channels-first: ``benchmarks/results/threads.md``), and
    contiguous again after.
    Elsewhere nothing changes: a user's model may ``.view`` its activations, which channels-last ones refuse."""
    if (device.type != "cpu" or getattr(model, "architecture_name", None) is None
            or not any(isinstance(m, nn.Conv2d) for m in model.modules())):
        yield model
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        model.to(memory_format=torch.contiguous_format)


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


@torch.no_grad()
def batched_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model``'s outputs on ``x`` (already on its device), ``batch_size`` images at a time, without gradients."""
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def device_for(module: nn.Module, device: DeviceLike = None) -> torch.device:
    """``device`` resolved (:func:`resolve_device`), or the module's own device when it is None."""
    return resolve_device(device) if device is not None else module_device(module)


def module_device(module: nn.Module) -> torch.device:
    """Device of the module's first parameter (or buffer); the CPU for a module with neither."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def save_checkpoint(module: nn.Module, path: Union[str, Path], **meta: Any) -> Path:
    """Write ``{"state_dict", "meta"}`` atomically (:func:`atomic_file`). ``meta`` holds plain types.

    :raises DiskFullError: The disk filled up; ``path`` keeps its previous content."""
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    with atomic_file(path, size=sum(v.numel() * v.element_size() for v in state.values())) as f:
        torch.save({"state_dict": state, "meta": meta}, f)
    return Path(path)


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
    """Write a text file (UTF-8) atomically (:func:`atomic_file`).

    :raises DiskFullError: The disk filled up; ``path`` keeps its previous content."""
    data = text.encode("utf-8")
    with atomic_file(path, size=len(data)) as f:
        f.write(data)
    return Path(path)


#: What torch's zip writer raises when a write fails (``[enforce fail at inline_container.cc:...] . unexpected
#: pos ...`` or ``PytorchStreamWriter failed writing file ...``): it does not keep the OSError.
_TORCH_WRITE_FAILED = re.compile(r"PytorchStreamWriter failed|file write failed|inline_container\.cc.*unexpected pos",
                                 re.DOTALL)

#: Below this many free bytes a failed write whose cause was lost (torch's) is put down to a full disk.
_NEARLY_FULL = 1 << 20


class DiskFullError(OSError):
    """No space (or no quota) left on a device while writing ``path``. The write went to a temporary file
    beside it, now removed: ``path`` keeps its previous content and nothing finished earlier is lost."""

    def __init__(self, path: Union[str, Path], needed: Optional[int] = None, free: Optional[int] = None,
                 code: int = errno.ENOSPC) -> None:
        super().__init__(code, os.strerror(code), str(path))
        self.path, self.needed, self.free, self.code = Path(path), needed, free, code

    def __reduce__(self) -> Tuple[Any, ...]:  # through process pools and Ray with its fields
        return type(self), (str(self.path), self.needed, self.free, self.code)

    def __str__(self) -> str:
        what = "disk quota exceeded" if self.code == getattr(errno, "EDQUOT", None) else "no space left on device"
        sizes = [f"{self.needed:,} bytes needed" if self.needed is not None else "",
                 f"{self.free:,} bytes free in {self.path.parent}" if self.free is not None else ""]
        detail = ", ".join(s for s in sizes if s)
        return (f"{what} while writing {self.path}" + (f" ({detail})" if detail else "")
                + ": free some space (or write elsewhere) and run the same command again; what was written "
                  "before is kept")


def find_disk_full(err: Optional[BaseException]) -> Optional[DiskFullError]:
    """The full disk (or quota) behind ``err``: ``err`` or an error it was raised from (``__cause__``,
    ``__context__``, the ``cause`` of Ray's task errors) that is a :class:`DiskFullError` or an OSError with
    errno ENOSPC or EDQUOT (then made a :class:`DiskFullError` naming its file); None for any other error."""
    codes = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err) is DiskFullError:  # not isinstance: Ray's task errors subclass their cause without its fields
            return err
        if isinstance(err, OSError) and not isinstance(err, DiskFullError) and err.errno in codes:
            where = err.filename or "a file"
            return DiskFullError(where, None, _free_bytes(Path(where).parent) if err.filename else None, err.errno)
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__
    return None


def _free_bytes(folder: Path) -> Optional[int]:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _space_error(err: BaseException, path: Path, size: Optional[int], free: Optional[int]) -> Optional[DiskFullError]:
    """The :class:`DiskFullError` that ``err``, raised while writing ``path``, stands for, or None."""
    codes = [e.errno for e in (err, err.__cause__, err.__context__) if isinstance(e, OSError)]
    code = next((c for c in codes if c in (errno.ENOSPC, getattr(errno, "EDQUOT", None))), None)
    if code is None and isinstance(err, RuntimeError) and _TORCH_WRITE_FAILED.search(str(err)):
        if free is not None and free < max(size or 0, _NEARLY_FULL):
            code = errno.ENOSPC  # torch's writer dropped the OSError; the disk is (nearly) full
    return None if code is None else DiskFullError(path, size, free, code)


@contextmanager
def atomic_file(path: Union[str, Path], *, size: Optional[int] = None) -> Iterator[IO[bytes]]:
    """Write ``path`` atomically: the body writes to the yielded binary file, a new temporary file beside
    ``path``, which replaces ``path`` (flushed to disk) only when the body succeeds.

    The file gets the mode a plain ``open`` gives, 0o666 less the umask (a shared results folder stays
    readable by whom the umask allows, unlike ``tempfile.mkstemp``'s 0o600).

    :param size: The bytes the file will take, when known, for the message of a full disk.
    :raises DiskFullError: The disk (or quota) filled up, also where torch's writer reports it as a
        RuntimeError; the temporary file is removed and ``path`` keeps its previous content."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        free = _free_bytes(path.parent) if path.parent.is_dir() else None  # before the removal frees space
        try:
            os.remove(tmp)
        except OSError:
            pass
        full = _space_error(err, path, size, free) if isinstance(err, Exception) else None
        if full is not None:
            raise full from err
        raise
