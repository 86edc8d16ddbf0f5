"""Classifiers, sized by image resolution (the GAN priors' networks are in :mod:`mi_art.priors`).

Every classifier returns logits from ``forward`` and ends with an ``nn.Linear`` named ``fc`` whose
input is the penultimate feature (see :mod:`mi_art.features`). No in-place activations are used,
so every model also trains under Opacus.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torchvision
from torch import nn

from .renames import Renames



def check_image_channels(channels: int) -> None:
    """Images have 1 (greyscale) or 3 (RGB) channels."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")


# --------------------------------------------------------------------------- classifiers


class CNN(nn.Module):
    """Plain CNN: ``blocks`` x (conv3x3-BN-ReLU-maxpool), a hidden ``feature_dim`` layer and ``fc``.

    The default target for 8-32 px images; wider and deeper settings make the evaluation model.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 32,
                 blocks: int | None = None, feature_dim: int = 128, batch_norm: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_image_channels(in_channels)
        blocks = blocks if blocks is not None else max(1, min(3, int(math.log2(image_size)) - 2))
        if image_size // 2 ** blocks < 1:
            raise ValueError(f"{blocks} pooling blocks are too many for {image_size}x{image_size} images")
        layers: List[nn.Module] = []
        c_in = in_channels
        for i in range(blocks):
            c_out = width * 2 ** i
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        side = image_size // 2 ** blocks
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, feature_dim), nn.ReLU(),
                                   nn.Dropout(dropout))
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(self.body(x)))


class MLP(nn.Module):
    """Two hidden layers on flattened pixels: a deliberately different surrogate architecture."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, feature_dim: int = 256) -> None:
        super().__init__()
        check_image_channels(in_channels)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, 2 * feature_dim),
                                   nn.ReLU(), nn.Linear(2 * feature_dim, feature_dim), nn.ReLU())
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Small ResNet (basic blocks, global average pooling) for 8-64 px images."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 16,
                 blocks_per_stage: Tuple[int, ...] = (1, 1, 1)) -> None:
        super().__init__()
        check_image_channels(in_channels)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks_per_stage = tuple(blocks_per_stage)  # how the blocks of ``stages`` group into stages
        stages: List[nn.Module] = []
        c_in = width
        for i, n in enumerate(blocks_per_stage):
            c_out = width * 2 ** i
            for j in range(n):
                stride = 2 if (j == 0 and i > 0 and image_size // 2 ** i >= 2) else 1
                stages.append(_BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))))


class VGG16BN(nn.Module):
    """The papers' VGG16-BN target (GMI/KEDMI/LOMMA code): torchvision's ``vgg16_bn`` features,
    flattened, BatchNorm1d, then ``fc``. Randomly initialised: no weights are downloaded."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 64) -> None:
        super().__init__()
        check_image_channels(in_channels)
        if image_size < 32:
            raise ValueError(f"VGG16-BN pools five times and needs image_size >= 32, got {image_size}")
        features = torchvision.models.vgg16_bn(weights=None).features
        if in_channels != 3:
            features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
        for i, m in enumerate(features):
            if isinstance(m, nn.ReLU):
                features[i] = nn.ReLU()
        self.features = features
        feat_dim = 512 * (image_size // 32) ** 2
        self.embed = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(feat_dim))
        self.fc = nn.Linear(feat_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(self.features(x)))


class _IRBlock(nn.Module):
    """ArcFace-style improved residual block (BN-conv-BN-PReLU-conv-BN + shortcut)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.res = nn.Sequential(nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
                                 nn.BatchNorm2d(c_out), nn.PReLU(c_out),
                                 nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = (nn.MaxPool2d(1, stride) if c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(x) + self.shortcut(x)


_IR_UNITS: Dict[int, Tuple[int, ...]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 152: (3, 8, 36, 3)}


class IRNet(nn.Module):
    """IR-ResNet face backbone (the papers' IR-50/IR-152 "FaceNet" family) sized for 32-128 px.

    Output layer as in face.evoLVe: BN2d, dropout, flatten, linear to 512, BN1d; then ``fc``.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 64, depth: int = 18,
                 width: int = 64, embedding: int = 512) -> None:
        super().__init__()
        check_image_channels(in_channels)
        if depth not in _IR_UNITS:
            raise ValueError(f"IR depth must be one of {sorted(_IR_UNITS)}, got {depth}")
        if image_size < 32:
            raise ValueError(f"IRNet downsamples 16x and needs image_size >= 32, got {image_size}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.PReLU(width))
        self.blocks_per_stage = _IR_UNITS[depth]  # how the blocks of ``body`` group into stages
        blocks: List[nn.Module] = []
        c_in = width
        for i, n in enumerate(_IR_UNITS[depth]):
            c_out = width * 2 ** min(i, 3)
            for j in range(n):
                blocks.append(_IRBlock(c_in, c_out, 2 if j == 0 else 1))
                c_in = c_out
        self.body = nn.Sequential(*blocks)
        side = image_size // 16
        self.embed = nn.Sequential(nn.BatchNorm2d(c_in), nn.Dropout(0.0), nn.Flatten(),
                                   nn.Linear(c_in * side * side, embedding), nn.BatchNorm1d(embedding))
        self.fc = nn.Linear(embedding, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(self.body(self.stem(x))))


class EfficientNet(nn.Module):
    """torchvision EfficientNet-B0/B1/B2 (the paper's surrogates), randomly initialised, any channels."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 64, variant: str = "b0") -> None:
        super().__init__()
        check_image_channels(in_channels)
        builders = {"b0": torchvision.models.efficientnet_b0, "b1": torchvision.models.efficientnet_b1,
                    "b2": torchvision.models.efficientnet_b2}
        if variant not in builders:
            raise ValueError(f"EfficientNet variant must be one of {sorted(builders)}, got {variant!r}")
        net = builders[variant](weights=None)
        if in_channels != 3:
            first = net.features[0][0]
            net.features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, 2, 1, bias=False)
        self.features = net.features
        self.embed = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(net.classifier[1].in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(self.features(x)))


ARCHITECTURES: Dict[str, Callable[..., nn.Module]] = {
    "cnn": lambda c, k, s: CNN(c, k, s),
    "cnn-wide": lambda c, k, s: CNN(c, k, s, width=64, blocks=max(1, min(4, int(math.log2(s)) - 1)),
                                    feature_dim=256, dropout=0.3),
    "cnn-small": lambda c, k, s: CNN(c, k, s, width=16, blocks=max(1, min(2, int(math.log2(s)) - 2)),
                                     feature_dim=64),
    "mlp": lambda c, k, s: MLP(c, k, s),
    "resnet": lambda c, k, s: ResNet(c, k, s),
    # face targets and judges: four stages of basic blocks from 32 channels (half of torchvision's widths)
    "resnet10": lambda c, k, s: ResNet(c, k, s, width=32, blocks_per_stage=(1, 1, 1, 1)),
    "resnet18": lambda c, k, s: ResNet(c, k, s, width=32, blocks_per_stage=(2, 2, 2, 2)),
    "vgg16bn": lambda c, k, s: VGG16BN(c, k, s),
    "ir18": lambda c, k, s: IRNet(c, k, s, depth=18),
    "ir50": lambda c, k, s: IRNet(c, k, s, depth=50),
    "ir152": lambda c, k, s: IRNet(c, k, s, depth=152),
    "efficientnet-b0": lambda c, k, s: EfficientNet(c, k, s, "b0"),
    "efficientnet-b1": lambda c, k, s: EfficientNet(c, k, s, "b1"),
    "efficientnet-b2": lambda c, k, s: EfficientNet(c, k, s, "b2"),
}
#: Earlier names of architectures, still accepted wherever an architecture is named (reported as renamed); the
#: cache keys of models keep them (:meth:`~mi_art.renames.Renames.old`).
RENAMED_ARCHITECTURES = Renames("architecture", {f"efficientnet_{v}": f"efficientnet-{v}" for v in ("b0", "b1", "b2")})
#: Deployed face recognisers (:mod:`mi_art.deployed_faces`): dlib's pretrained network with a head for the
#: identities, by name, and what each trains besides the head. Their head's input is centred on the public
#: images' descriptors (``PretrainedFaceClassifier.centre_on``) before training.
PRETRAINED_FACE_ARCHS = {"dlib-head": "head", "dlib-finetune": "last-unit"}
ARCHITECTURES.update({name: (lambda trainable: lambda c, k, s: _pretrained_face(c, k, trainable))(trainable)
                      for name, trainable in PRETRAINED_FACE_ARCHS.items()})


def _pretrained_face(in_channels: int, num_classes: int, trainable: str) -> nn.Module:
    from .deployed_faces import PretrainedFaceClassifier  # reads dlib's weights only when one is built

    return PretrainedFaceClassifier(in_channels, num_classes, trainable)


def make_classifier(arch: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build a classifier by name (see :data:`ARCHITECTURES`). The model keeps the name as its
    ``architecture_name`` attribute (several names build the same class), which records report. An earlier name
    (:data:`RENAMED_ARCHITECTURES`) builds its architecture under its name now."""
    arch = RENAMED_ARCHITECTURES.new(arch)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    model = ARCHITECTURES[arch](in_channels, num_classes, image_size)
    model.architecture_name = arch
    return model


# --------------------------------------------------------------------------- early size checks


def check_builds(what: str, build: Callable[[], nn.Module], input_shape: Tuple[int, ...],
                 output_shape: Optional[Tuple[int, ...]] = None, where: str = "") -> None:
    """Build a model once and pass a batch of ``input_shape`` through it, before any training.

    Cheap: it runs on PyTorch's ``meta`` device, which allocates no weights and computes nothing (on
    the CPU, without gradients, if an operation has no meta implementation). The random number
    generator is left as it was.

    :param what: How the model is named in the error, e.g. ``"target_arch='vgg16bn'"``.
    :param build: Builds the model.
    :param input_shape: Shape of the probe batch, e.g. ``(2, C, H, W)`` or ``(2, latent_dim)``.
    :param output_shape: The output's expected shape, if it is to be checked.
    :param where: The setting, e.g. ``"16x16 images with 1 channel"``.
    :raises ValueError: Naming ``what`` and ``where`` with the cause, if the model cannot be built,
        fails on the probe batch or returns another shape than ``output_shape``.
    """
    def probe(device: str) -> Tuple[int, ...]:
        with torch.device(device):
            model = build().eval()
            with torch.no_grad():
                return tuple(model(torch.zeros(input_shape)).shape)

    def fail(cause: str) -> ValueError:
        return ValueError(f"{what} cannot be built for {where or f'inputs of shape {tuple(input_shape[1:])}'}: "
                          f"{cause}")

    with torch.random.fork_rng(devices=[]):
        try:
            try:
                shape = probe("meta")
            except ValueError:
                raise
            except Exception:  # an operation without a meta kernel: try for real
                shape = probe("cpu")
        except Exception as err:
            raise fail(str(err).splitlines()[0] if str(err) else type(err).__name__) from err
    if output_shape is not None and shape != tuple(output_shape):
        raise fail(f"it returns outputs of shape {shape[1:]}, expected {tuple(output_shape[1:])}")
