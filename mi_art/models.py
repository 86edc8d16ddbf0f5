"""Classifiers, GAN generators and discriminators, all sized by image resolution.

The GAN parts take any square image size >= 8: they run their layers at the next power of two and,
when the size is not one, resize bilinearly at their edge (see :class:`Generator`).

Every classifier returns logits from ``forward`` and ends with an ``nn.Linear`` named ``fc`` whose
input is the penultimate feature (see :mod:`mi_art.features`). No in-place activations are used,
so every model also trains under Opacus.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .validation import check_int

LATENT_DIM = 100


#: Smallest image size of the GAN parts (one 2x stage above their 4x4 seed).
MIN_GAN_SIZE = 8


def _gan_size(image_size: int) -> Tuple[int, int]:
    """``(base, stages)``: the power of two >= ``image_size`` the GAN layers run at, and its number of
    2x resampling stages from 4x4. ``image_size`` is any integer >= :data:`MIN_GAN_SIZE`."""
    image_size = check_int("image_size", image_size, low=MIN_GAN_SIZE,
                           hint=" (the GAN generator, critic and discriminator need images of at least 8x8)")
    base = 1 << (image_size - 1).bit_length()
    return base, base.bit_length() - 3


class Resize(nn.Module):
    """Fixed, differentiable bilinear resize of ``(N, C, H, W)`` images to ``size`` x ``size``; no parameters.

    Bilinear weights are non-negative and sum to one, so images in [0, 1] stay in [0, 1]. ``antialias``
    low-pass filters when shrinking (as the data loaders do); it changes nothing when enlarging.
    """

    def __init__(self, size: int, antialias: bool) -> None:
        super().__init__()
        self.size, self.antialias = size, antialias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                             antialias=self.antialias)

    def extra_repr(self) -> str:
        return f"size={self.size}, antialias={self.antialias}"


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
    # face targets and judges: four stages of basic blocks from 32 channels (half of torchvision's widths)
    "resnet10": lambda c, k, s: ResNet(c, k, s, width=32, blocks_per_stage=(1, 1, 1, 1)),
    "resnet18": lambda c, k, s: ResNet(c, k, s, width=32, blocks_per_stage=(2, 2, 2, 2)),
    "vgg16bn": lambda c, k, s: VGG16BN(c, k, s),
    "ir18": lambda c, k, s: IRNet(c, k, s, depth=18),
    "ir50": lambda c, k, s: IRNet(c, k, s, depth=50),
    "ir152": lambda c, k, s: IRNet(c, k, s, depth=152),
    "efficientnet_b0": lambda c, k, s: EfficientNet(c, k, s, "b0"),
    "efficientnet_b1": lambda c, k, s: EfficientNet(c, k, s, "b1"),
    "efficientnet_b2": lambda c, k, s: EfficientNet(c, k, s, "b2"),
}


def make_classifier(arch: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build a classifier by name (see :data:`ARCHITECTURES`). The model keeps the name as its
    ``architecture_name`` attribute (several names build the same class), which records report."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    model = ARCHITECTURES[arch](in_channels, num_classes, image_size)
    model.architecture_name = arch
    return model


# --------------------------------------------------------------------------- GAN parts


class Generator(nn.Module):
    """DCGAN generator of GMI: latent -> Linear -> 4x4 -> transposed convs -> Sigmoid image in [0, 1].

    For 32 px and ``width=32`` the channels are 128-64-32, as in the reference notes.

    Any ``image_size`` >= 8 works. The transposed convolutions double the side from 4x4, so they make
    ``base_size`` = the next power of two >= ``image_size``; when ``image_size`` is not a power of two
    a last, fixed layer (``resize``) shrinks the image bilinearly with antialiasing to ``image_size``
    (28x28 MNIST: 32 -> 28), the way the data loaders resize images. The whole canvas is used, the
    output stays in [0, 1] and gradients reach every pixel. At a power of two there is no such layer
    (``resize`` is None): the architecture and its ``state_dict`` keys are unchanged.
    ``image_size`` is the output's size.
    """

    def __init__(self, image_size: int, channels: int, latent_dim: int = LATENT_DIM, width: int = 32) -> None:
        super().__init__()
        _check_channels(channels)
        base, stages = _gan_size(image_size)
        self.latent_dim, self.image_size, self.channels, self.base_size = latent_dim, image_size, channels, base
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
        self.resize: Optional[Resize] = Resize(image_size, antialias=True) if base != image_size else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.body(self.project(z).view(-1, self._c0, 4, 4))
        # the clamp only removes float rounding: bilinear weights keep [0, 1]
        return x if self.resize is None else self.resize(x).clamp(0, 1)


def _down_stack(channels: int, stages: int, width: int, norm: Callable[[int], nn.Module]) -> Tuple[nn.Sequential, int]:
    layers: List[nn.Module] = [nn.Conv2d(channels, width, 5, 2, 2), nn.LeakyReLU(0.2)]
    c = width
    for _ in range(stages - 1):
        layers += [nn.Conv2d(c, 2 * c, 5, 2, 2), norm(2 * c), nn.LeakyReLU(0.2)]
        c *= 2
    return nn.Sequential(*layers), c


def _input_resize(image_size: int, base: int) -> Optional[Resize]:
    """The critic's and discriminator's first layer when ``image_size`` is not a power of two: bilinear
    enlargement to ``base`` (the inverse of the generator's last layer)."""
    return Resize(base, antialias=False) if base != image_size else None


class Critic(nn.Module):
    """WGAN-GP critic of GMI: strided convs with InstanceNorm, one unbounded score per image.

    Any ``image_size`` >= 8 works. The convolutions run at ``base_size`` = the next power of two >=
    ``image_size``; when ``image_size`` is not one, a fixed first layer (``resize``) enlarges the
    input bilinearly to ``base_size`` (the mirror of :class:`Generator`'s last layer; it is
    differentiable twice, as the gradient penalty needs). At a power of two there is no such layer
    and the architecture and ``state_dict`` keys are unchanged.
    """

    def __init__(self, image_size: int, channels: int, width: int = 32) -> None:
        super().__init__()
        _check_channels(channels)
        base, stages = _gan_size(image_size)
        self.image_size, self.channels, self.base_size = image_size, channels, base
        self.body, c = _down_stack(channels, stages, width, lambda n: nn.InstanceNorm2d(n, affine=True))
        self.head = nn.Conv2d(c, 1, 4)
        self.resize = _input_resize(image_size, base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize is not None:
            x = self.resize(x)
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

    Any ``image_size`` >= 8 works, as for :class:`Critic`: at a size that is not a power of two a
    fixed first layer (``resize``) enlarges the input bilinearly to ``base_size``, the next power of
    two, where the convolutions run; at a power of two the architecture is unchanged.
    """

    def __init__(self, num_classes: int, image_size: int, channels: int, width: int = 32) -> None:
        super().__init__()
        _check_channels(channels)
        base, stages = _gan_size(image_size)
        self.image_size, self.channels, self.base_size = image_size, channels, base
        body, c = _down_stack(channels, stages, width, lambda n: nn.InstanceNorm2d(n, affine=True))
        self.body = nn.Sequential(body, nn.Flatten())
        self.feature_dim = c * 16
        self.mbd = MinibatchDiscrimination(self.feature_dim)
        self.fc = nn.Linear(self.feature_dim + self.mbd.out_features, num_classes)
        self.num_classes = num_classes
        self.resize = _input_resize(image_size, base)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if self.resize is not None:
            x = self.resize(x)
        feat = self.body(x)
        logits = self.fc(self.mbd(feat))
        return (feat, logits) if return_features else logits


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
