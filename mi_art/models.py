"""Classifiers, GAN generators and discriminators, all sized by image resolution.

Every classifier returns logits from ``forward`` and ends with an ``nn.Linear`` named ``fc`` whose
input is the penultimate feature (see :mod:`mi_art.features`). No in-place activations are used,
so every model also trains under Opacus.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Tuple

import torch
import torchvision
from torch import nn

LATENT_DIM = 100


def _check_size(image_size: int, minimum: int = 8) -> int:
    """Number of 2x resampling stages between 4x4 and ``image_size`` (which must be 4 * 2**n)."""
    stages = math.log2(image_size / 4) if image_size > 0 else -1
    if image_size < minimum or stages != int(stages):
        raise ValueError(f"image_size must be a power of two >= {minimum} (8, 16, 32, 64, 128), got {image_size}")
    return int(stages)


def _check_channels(channels: int) -> None:
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
        _check_channels(in_channels)
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
        _check_channels(in_channels)
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
        _check_channels(in_channels)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
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
        _check_channels(in_channels)
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
        _check_channels(in_channels)
        if depth not in _IR_UNITS:
            raise ValueError(f"IR depth must be one of {sorted(_IR_UNITS)}, got {depth}")
        if image_size < 32:
            raise ValueError(f"IRNet downsamples 16x and needs image_size >= 32, got {image_size}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.PReLU(width))
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
        _check_channels(in_channels)
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
    "vgg16bn": lambda c, k, s: VGG16BN(c, k, s),
    "ir18": lambda c, k, s: IRNet(c, k, s, depth=18),
    "ir50": lambda c, k, s: IRNet(c, k, s, depth=50),
    "ir152": lambda c, k, s: IRNet(c, k, s, depth=152),
    "efficientnet_b0": lambda c, k, s: EfficientNet(c, k, s, "b0"),
    "efficientnet_b1": lambda c, k, s: EfficientNet(c, k, s, "b1"),
    "efficientnet_b2": lambda c, k, s: EfficientNet(c, k, s, "b2"),
}


def make_classifier(arch: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build a classifier by name (see :data:`ARCHITECTURES`)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return ARCHITECTURES[arch](in_channels, num_classes, image_size)


# --------------------------------------------------------------------------- GAN parts


class Generator(nn.Module):
    """DCGAN generator of GMI: latent -> Linear -> 4x4 -> transposed convs -> Sigmoid image in [0, 1].

    For 32 px and ``width=32`` the channels are 128-64-32, as in the reference notes.
    """

    def __init__(self, image_size: int, channels: int, latent_dim: int = LATENT_DIM, width: int = 32) -> None:
        super().__init__()
        _check_channels(channels)
        stages = _check_size(image_size)
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        c0 = width * 2 ** (stages - 1)
        self.project = nn.Sequential(nn.Linear(latent_dim, c0 * 16, bias=False), nn.BatchNorm1d(c0 * 16), nn.ReLU())
        layers: List[nn.Module] = []
        c_in = c0
        for _ in range(stages - 1):
            layers += [nn.ConvTranspose2d(c_in, c_in // 2, 5, 2, 2, 1, bias=False), nn.BatchNorm2d(c_in // 2), nn.ReLU()]
            c_in //= 2
        layers += [nn.ConvTranspose2d(c_in, channels, 5, 2, 2, 1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)
        self._c0 = c0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).view(-1, self._c0, 4, 4))


def _down_stack(channels: int, stages: int, width: int, norm: Callable[[int], nn.Module]) -> Tuple[nn.Sequential, int]:
    layers: List[nn.Module] = [nn.Conv2d(channels, width, 5, 2, 2), nn.LeakyReLU(0.2)]
    c = width
    for _ in range(stages - 1):
        layers += [nn.Conv2d(c, 2 * c, 5, 2, 2), norm(2 * c), nn.LeakyReLU(0.2)]
        c *= 2
    return nn.Sequential(*layers), c


class Critic(nn.Module):
    """WGAN-GP critic of GMI: strided convs with InstanceNorm, one unbounded score per image."""

    def __init__(self, image_size: int, channels: int, width: int = 32) -> None:
        super().__init__()
        _check_channels(channels)
        self.body, c = _down_stack(channels, _check_size(image_size), width,
                                   lambda n: nn.InstanceNorm2d(n, affine=True))
        self.head = nn.Conv2d(c, 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).view(-1)


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al., 2016), as in KEDMI's discriminator."""

    def __init__(self, in_features: int, out_features: int = 50, kernel_dims: int = 5) -> None:
        super().__init__()
        self.out_features, self.kernel_dims = out_features, kernel_dims
        self.T = nn.Parameter(torch.randn(in_features, out_features * kernel_dims) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x @ self.T).view(-1, self.out_features, self.kernel_dims)
        l1 = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(3)
        o = torch.exp(-l1).sum(0) - 1  # minus the self-similarity exp(0)
        return torch.cat([x, o], 1)


class KEDMIDiscriminator(nn.Module):
    """KEDMI's inversion-specific discriminator: K class logits, "real" probability Z/(Z+1).

    As in the authors' code: strided convolutions with instance normalisation (batch statistics would
    mix real and generated batches), minibatch discrimination on the flattened convolutional features,
    then the K logits. ``forward`` returns the logits; ``forward(x, return_features=True)`` returns
    ``(features, logits)``, the flattened convolutional features being what the generator's
    feature-matching loss compares.
    """

    def __init__(self, num_classes: int, image_size: int, channels: int, width: int = 32) -> None:
        super().__init__()
        _check_channels(channels)
        body, c = _down_stack(channels, _check_size(image_size), width,
                              lambda n: nn.InstanceNorm2d(n, affine=True))
        self.body = nn.Sequential(body, nn.Flatten())
        self.feature_dim = c * 16
        self.mbd = MinibatchDiscrimination(self.feature_dim)
        self.fc = nn.Linear(self.feature_dim + self.mbd.out_features, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feat = self.body(x)
        logits = self.fc(self.mbd(feat))
        return (feat, logits) if return_features else logits
