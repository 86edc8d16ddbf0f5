"""The one validation layer of mi-art: type, range and finiteness, checked once, with messages that
name the parameter, the value and what would be valid.

Every public function, attack, defense, loader, CLI option and grid key validates its arguments with
these helpers, so that a mistake gives the same kind of ``ValueError`` wherever it is made.
"""
from __future__ import annotations

import numbers
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, TypeVar

import numpy as np
import torch

T = TypeVar("T")


class NonFiniteError(ValueError):
    """A model's outputs, loss or weights became NaN or infinite during training or an attack."""


def is_int(value: Any) -> bool:
    """A Python or NumPy integer (booleans excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """A finite real number (booleans excluded)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and bool(np.isfinite(float(value))))


def _interval(low: Optional[float], high: Optional[float], low_open: bool, high_open: bool) -> str:
    lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
    return f"{lo}, {hi}"


def _outside(v: float, low: Optional[float], high: Optional[float], low_open: bool, high_open: bool) -> bool:
    too_low = low is not None and (v <= low if low_open else v < low)
    too_high = high is not None and (v >= high if high_open else v > high)
    return too_low or too_high


def check_number(name: str, value: Any, *, low: Optional[float] = None, high: Optional[float] = None,
                 low_open: bool = False, high_open: bool = False, hint: str = "") -> float:
    """``value`` must be a finite real number (not a bool or a string) in the interval given; returns a float."""
    if not is_number(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}{hint}")
    v = float(value)
    if _outside(v, low, high, low_open, high_open):
        raise ValueError(f"{name} must be in {_interval(low, high, low_open, high_open)}, got {value!r}{hint}")
    return v


def check_positive(name: str, value: Any, hint: str = "") -> float:
    """A finite number > 0 (learning rates, temperatures, weights)."""
    return check_number(name, value, low=0, low_open=True, hint=hint)


def check_int(name: str, value: Any, *, low: Optional[int] = None, high: Optional[int] = None,
              hint: str = "") -> int:
    """``value`` must be an integer (not a float such as 3.0, a bool or a string) in ``[low, high]``."""
    if not is_int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}{hint}")
    v = int(value)
    if _outside(v, low, high, False, False):
        raise ValueError(f"{name} must be an integer in {_interval(low, high, False, False)}, got {value!r}{hint}")
    return v


def check_count(name: str, value: Any, hint: str = "") -> int:
    """A positive integer (epochs, steps, batch sizes, iterations, sample counts)."""
    return check_int(name, value, low=1, hint=hint)


def check_optional_count(name: str, value: Any, hint: str = "") -> Optional[int]:
    return None if value is None else check_count(name, value, hint=hint)


#: The largest seed torch accepts (``torch.manual_seed`` takes a signed 64-bit integer).
MAX_SEED = 2 ** 63 - 1


def check_seed(name: str, value: Any) -> Optional[int]:
    """``None`` or an integer from 0 to :data:`MAX_SEED`."""
    return None if value is None else check_int(name, value, low=0, high=MAX_SEED, hint=" (at most 2**63 - 1, torch's limit)")


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: Any, choices: Iterable[T]) -> T:
    """``value`` must be one of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value  # type: ignore[return-value]


def check_list(name: str, value: Any, *, item: str = "item") -> list:
    """A list or tuple (not a string, a dict or a single object)."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list of {item}s, got {type(value).__name__} {value!r:.80}")
    return list(value)


def repeated(values: Iterable[T]) -> list:
    """The values that occur more than once, each once, in order of first repetition: one pass with a set (a
    ``values.count(v)`` per value is quadratic, minutes for a range of a million seeds). Values must be hashable."""
    seen: set = set()
    again: dict = {}
    for v in values:
        if v in seen:
            again[v] = None
        seen.add(v)
    return list(again)


# ------------------------------------------------------------------------------------------ arrays


def as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check_unit_images(x: Any, name: str = "x", clip_values: Optional[Tuple[float, float]] = None, *,
                      shape: Optional[Tuple[int, ...]] = None, user: str = "a GAN prior",
                      fix: Optional[str] = None) -> np.ndarray:
    """The one range and layout check of images meant for the unit space, where GAN priors (their generator
    ends in a sigmoid), surrogates, oracles and bare modules work: [0, 1], channels first. ``clip_values``
    ``(lo, hi)`` maps them from that range first. Channels-last input, images of another ``shape``
    ``(C, H, W)`` and values outside the range are refused with the fix named (``user``: who works in
    [0, 1], for the message; ``fix``: how to bring images there, default: divide by 255 or pass
    ``clip_values``). Returns float32 NCHW in [0, 1]."""
    arr = as_numpy(x)
    if arr.ndim == 4 and arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
        raise ValueError(f"{name} looks channels-last, shape {arr.shape} (N, H, W, C): give (N, C, H, W) images, "
                         f"e.g. {name}.transpose(0, 3, 1, 2)")
    arr = check_images(arr, name, shape)
    if clip_values is not None:
        lo, hi = (check_number(f"clip_values[{i}]", v) for i, v in enumerate(clip_values))
        if not lo < hi:
            raise ValueError(f"clip_values must be (min, max) with min < max, got {clip_values!r}")
        arr = (arr - lo) / (hi - lo)
    low, high = float(arr.min()), float(arr.max())
    if low < -1e-6 or high > 1 + 1e-6:
        if fix is None:
            fix = ("scale them to [0, 1] (e.g. divide 0..255 images by 255) or pass clip_values=(0, 255)"
                   if clip_values is None else f"they are outside clip_values={tuple(clip_values)}")
        raise ValueError(f"{name} has values from {low:g} to {high:g}, but {user} works on images in [0, 1]: {fix}")
    return arr


def check_clip_range(x: Any, name: str, clip_values: Tuple[Any, Any], what: str = "model") -> None:
    """``x``, images meant for a model whose input range is ``clip_values`` (what its ``predict`` takes), must
    be able to be there: ValueError when a value lies outside the range, or when every value is within 1 of
    the range's low end although the range spans far more (e.g. [0, 1] images for a (0, 255) model: no real
    8-bit image is that dark). ``what`` names the model in the message."""
    lo, hi = float(np.min(np.asarray(clip_values[0]))), float(np.max(np.asarray(clip_values[1])))
    values = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if values.numel() == 0:
        return
    vmin, vmax = float(values.min()), float(values.max())
    slack = 1e-3 * (hi - lo)
    if vmin < lo - slack or vmax > hi + slack:
        raise ValueError(f"{name} has values in [{vmin:.4g}, {vmax:.4g}], outside the {what}'s clip_values "
                         f"({lo:g}, {hi:g}): give the images in the estimator's input space, as its predict "
                         "takes them")
    if hi - lo > 2 and vmax <= lo + 1 and values.numel() >= 64:
        raise ValueError(f"{name} lies in [{vmin:.4g}, {vmax:.4g}] but the {what}'s clip_values are "
                         f"({lo:g}, {hi:g}): these look like images in [0, 1]; give them in the estimator's "
                         f"input space (e.g. {'' if lo == 0 else f'{lo:g} + '}x * {hi - lo:g}), as its predict "
                         "takes them")


def check_images(x: Any, name: str = "x", shape: Optional[Tuple[int, ...]] = None) -> np.ndarray:
    """Validate an image batch (N, C, H, W) of finite real numbers; returns it as float32 numpy."""
    x = as_numpy(x)
    if x.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold numbers, got an array of dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be a 4-d batch of images (N, C, H, W), got an array of shape {x.shape}")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} has images of shape {tuple(x.shape[1:])}, expected {tuple(shape)}")
    if len(x) == 0:
        raise ValueError(f"{name} is empty")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_index_vector(name: str, value: Any, *, length: Optional[int] = None, length_name: str = "the inputs",
                       low: Optional[int] = 0) -> np.ndarray:
    """A 1-D array of integers (integral floats allowed) >= ``low``, of ``length`` entries when given (the
    length of ``length_name``). Returns int64."""
    y = as_numpy(value)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array of integers, got shape {y.shape}")
    if length is not None and len(y) != length:
        raise ValueError(f"length mismatch: {name} has {len(y)} entries but {length_name} has {length}")
    if y.dtype.kind == "b":
        raise ValueError(f"{name} must hold integer values, got booleans")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise ValueError(f"{name} must hold integer values, got non-integer values")
    elif y.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer values, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if low is not None and y.size and y.min() < low:
        raise ValueError(f"{name} must hold values >= {low}, got {int(y.min())}")
    return y


def check_labels(y: Any, num_classes: int, name: str = "y", length: Optional[int] = None, *,
                 length_name: str = "the inputs", classes: str = "") -> np.ndarray:
    """Validate class labels in ``[0, num_classes)``: a 1-D array of integer indices, or exact one-hot
    rows (a single 1 per row, zeros elsewhere). Anything else (probabilities, scores) is refused,
    never argmax-ed. ``length``: the number of inputs ``length_name`` holds; ``classes``: where the
    classes come from, for the message (e.g. " (the model has 10 outputs)"). Returns int64 indices."""
    y = as_numpy(y)
    if y.ndim == 2:
        if y.shape[1] != num_classes:
            raise ValueError(f"{name} has shape {y.shape}: one-hot labels need {num_classes} columns, "
                             f"or give a 1-D array of class indices")
        if y.dtype.kind not in "fiub" or not (np.isin(y, (0, 1)).all() and (y.sum(1) == 1).all()):
            raise ValueError(f"{name} is 2-D but its rows are not one-hot (a single 1, zeros elsewhere): give "
                             f"class indices, not probabilities or scores")
        y = y.argmax(1)
    if y.ndim == 1 and len(y) == 0:
        raise ValueError(f"{name} is empty: give at least one class")
    y = check_index_vector(name, y, length=length, length_name=length_name, low=None)
    bad = y[(y < 0) | (y >= num_classes)]
    if bad.size:
        raise ValueError(f"{name} has labels out of range [0, {num_classes - 1}]{classes}: "
                         f"{sorted(set(bad.tolist()))[:10]}")
    return y


#: How often a training loop or an attack reads whether its loss is still finite (and always at its last
#: step): on an accelerator each read is a host-device synchronisation that would stall every step. A NaN
#: or infinite loss leaves NaN weights or codes behind it, so the next read still sees it.
CHECK_EVERY = 50


def check_finite_at(value: torch.Tensor, what: str, step: int, steps: int) -> torch.Tensor:
    """:func:`check_finite` at step 0, every :data:`CHECK_EVERY` steps and the last of ``steps``; ``value``
    unchanged (and unread) at the others."""
    if step % CHECK_EVERY == 0 or step == steps - 1:
        check_finite(value, what)
    return value


def check_finite(value: torch.Tensor, what: str) -> torch.Tensor:
    """Stop a training run or an attack as soon as ``value`` (a loss, outputs) stops being finite."""
    if not bool(torch.isfinite(value).all()):
        raise NonFiniteError(f"{what} became NaN or infinite: lower the learning rate, check the inputs' "
                             f"range, or check the model for a division by zero or an overflow")
    return value


def check_module_finite(module: torch.nn.Module, what: str) -> None:
    """Refuse to return a model whose weights are NaN or infinite."""
    for name, p in module.state_dict().items():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise NonFiniteError(f"{what}: parameter {name!r} became NaN or infinite during training; lower the "
                                 f"learning rate or check the inputs")


def check_sequence_of(name: str, value: Any, allowed: Sequence[type], what: str) -> list:
    """A list/tuple whose every element is an instance of one of ``allowed``."""
    items = check_list(name, value, item=what)
    for i, v in enumerate(items):
        if not isinstance(v, tuple(allowed)):
            raise ValueError(f"{name}[{i}] must be a {what}, got {type(v).__name__}")
    return items


def check_optional_positive(name: str, value: Any, hint: str = "") -> Optional[float]:
    """``None`` or a finite number > 0 (e.g. a learning rate that defaults to another one)."""
    return None if value is None else check_positive(name, value, hint=hint)


def check_device(name: str, value: Any) -> Optional[str]:
    """``None``/"auto", "cpu", "cuda", "cuda:N" or "mps", checked against what this machine has:
    CUDA requested without CUDA, or a GPU index past the last visible GPU, is refused. Returns the
    device as a string (``None`` for "auto")."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    valid = "'auto', 'cpu' or 'cuda[:N]'"
    if not isinstance(value, (str, torch.device)):
        raise ValueError(f"{name} must be {valid}, got {type(value).__name__} {value!r}")
    try:
        device = torch.device(value.strip().lower() if isinstance(value, str) else value)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name} must be {valid}, got {value!r}") from None
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} is {str(value)!r} but CUDA is not available on this machine; use 'cpu' or "
                             f"'auto'")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name} is {str(value)!r} but this machine has {count} CUDA device(s): use cuda:0"
                             + (f" to cuda:{count - 1}" if count > 1 else ""))
        return str(device)
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{name} is {str(value)!r} but Apple's MPS is not available on this machine; use 'cpu' "
                             f"or 'auto'")
        return str(device)
    raise ValueError(f"{name} must be {valid}, got {value!r} (device type {device.type!r} is not supported)")


def _library_folders() -> Tuple[Path, ...]:
    """The folders of mi-art's code: ``mi_art`` and, in a checkout, ``defenses`` and ``evaluations`` beside it
    (installed as ``mi_art.defenses`` and ``mi_art.evaluations``)."""
    folders = []
    for name in ("mi_art", "mi_art.defenses", "mi_art.evaluations"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            folders.append(Path(module.__file__).resolve().parent)
    return tuple(folders)


def user_stacklevel() -> int:
    """The ``stacklevel`` of :func:`warnings.warn`, called by the caller of this function, that names the first
    line outside mi-art: the user's, whichever of mi-art's functions passed the value on (so that a
    ``DeprecationWarning``, shown by default only for the user's own code, is shown)."""
    folders = _library_folders()
    frame, level = sys._getframe(1), 1
    while frame is not None:
        path = Path(frame.f_code.co_filename).resolve()
        if not any(folder == path.parent or folder in path.parents for folder in folders):
            return level
        frame, level = frame.f_back, level + 1
    return level


def renamed(params: Dict[str, Any], old: str, new: str, where: str, reason: str = "") -> Dict[str, Any]:
    """``params`` with the earlier name ``old`` renamed ``new``, with a ``DeprecationWarning`` that names the
    user's line; ``old`` and ``new`` together are refused. ``where``: whose parameter it is, ``reason`` why it
    was renamed (", as Opacus calls it"), for the messages."""
    if old not in params:
        return dict(params)
    if new in params:
        raise ValueError(f"give {new} only: {old} is its earlier name, got {old}={params[old]!r} and "
                         f"{new}={params[new]!r}")
    warnings.warn(f"{where}'s parameter {old} is now called {new}{reason}; {old} will be removed",
                  DeprecationWarning, stacklevel=user_stacklevel())
    return {(new if k == old else k): v for k, v in params.items()}
