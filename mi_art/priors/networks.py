"""The GAN priors' networks, all sized by image resolution: GMI's generator and WGAN-GP critic, KEDMI's
K-logit discriminator, PLG-MI's class-conditional generator and projection discriminator.

They take any square image size >= 8: they run their layers at the next power of two and, when the size
is not one, resize bilinearly at their edge (see :class:`Generator`). Generators make images in [0, 1].
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models import check_image_channels as _check_channels
from ..validation import check_int

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


class ConditionalBatchNorm(nn.Module):
    """Batch normalisation without its own affine map, followed by a per-class scale and shift (embeddings
    initialised to 1 and 0), as PLG-MI's generator (conditional batch norm). ``dims`` 1 or 2."""

    def __init__(self, num_features: int, num_classes: int, dims: int = 2) -> None:
        super().__init__()
        self.norm = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shape = (-1, x.shape[1]) + (1,) * (x.ndim - 2)
        return self.gamma(y).view(shape) * self.norm(x) + self.beta(y).view(shape)

    def start_from(self, norm: nn.Module) -> None:
        """Every class's scale and shift from a trained (unconditional) batch norm, with its running statistics."""
        with torch.no_grad():
            self.gamma.weight.copy_(norm.weight.expand_as(self.gamma.weight))
            self.beta.weight.copy_(norm.bias.expand_as(self.beta.weight))
            self.norm.running_mean.copy_(norm.running_mean)
            self.norm.running_var.copy_(norm.running_var)
            self.norm.num_batches_tracked.copy_(norm.num_batches_tracked)


class ConditionalGenerator(nn.Module):
    """PLG-MI's class-conditional generator ``G(z, y)``: :class:`Generator`'s layers with every batch norm
    made class-conditional (:class:`ConditionalBatchNorm`); images in [0, 1] at any ``image_size`` >= 8.

    The authors' generator is a ResNet (SNGAN, 64x64, tanh output); this one has the DCGAN layers of the
    GMI prior, so that :meth:`start_from` can start it from a trained GMI generator: every class then
    begins as the public prior, and conditional training only has to tell the classes apart (a few hundred
    public images here, not the paper's 30k+; see ``docs/methods.md``).
    """

    def __init__(self, image_size: int, channels: int, num_classes: int, latent_dim: int = LATENT_DIM,
                 width: int = 32) -> None:
        super().__init__()
        _check_channels(channels)
        num_classes = check_int("num_classes", num_classes, low=1)
        base, stages = _gan_size(image_size)
        self.latent_dim, self.image_size, self.channels, self.base_size = latent_dim, image_size, channels, base
        self.num_classes = num_classes
        c0 = width * 2 ** (stages - 1)
        self.project = nn.Linear(latent_dim, c0 * 16, bias=False)
        self.project_norm = ConditionalBatchNorm(c0 * 16, num_classes, dims=1)
        self.ups, self.norms = nn.ModuleList(), nn.ModuleList()
        c_in = c0
        for _ in range(stages - 1):
            self.ups.append(nn.ConvTranspose2d(c_in, c_in // 2, 5, 2, 2, 1, bias=False))
            self.norms.append(ConditionalBatchNorm(c_in // 2, num_classes))
            c_in //= 2
        self.out = nn.ConvTranspose2d(c_in, channels, 5, 2, 2, 1)
        self._c0 = c0
        self.resize: Optional[Resize] = Resize(image_size, antialias=True) if base != image_size else None

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.project_norm(self.project(z), y)).view(-1, self._c0, 4, 4)
        for up, norm in zip(self.ups, self.norms):
            x = F.relu(norm(up(x), y))
        x = torch.sigmoid(self.out(x))
        return x if self.resize is None else self.resize(x).clamp(0, 1)

    def start_from(self, generator: Generator) -> "ConditionalGenerator":
        """Copy a trained :class:`Generator` of the same size, channels, width and latent size: every class
        then generates what it generates."""
        try:
            with torch.no_grad():
                self.project.weight.copy_(generator.project[0].weight)
                self.project_norm.start_from(generator.project[1])
                convs = [m for m in generator.body if isinstance(m, nn.ConvTranspose2d)]
                norms = [m for m in generator.body if isinstance(m, nn.BatchNorm2d)]
                for up, norm, conv, bn in zip(self.ups, self.norms, convs, norms):
                    up.weight.copy_(conv.weight)
                    norm.start_from(bn)
                self.out.weight.copy_(convs[-1].weight)
                self.out.bias.copy_(convs[-1].bias)
        except (RuntimeError, IndexError, AttributeError, TypeError) as err:
            raise ValueError("init_generator must be a Generator with the image size, channels, width and latent_dim "
                             f"of the conditional generator: {str(err).splitlines()[0]}") from None
        return self


class ProjectionDiscriminator(nn.Module):
    """PLG-MI's discriminator: spectral-normalised strided convolutions (no other normalisation), summed
    over space to a feature ``h``, and the projection score ``w . h + <embed(y), h>`` (Miyato and Koyama,
    2018). The authors' is an SN-ResNet at 64x64; this one has the GMI critic's layers. Any ``image_size``
    >= 8, as :class:`Critic`."""

    def __init__(self, image_size: int, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        _check_channels(channels)
        num_classes = check_int("num_classes", num_classes, low=1)
        base, stages = _gan_size(image_size)
        self.image_size, self.channels, self.base_size, self.num_classes = image_size, channels, base, num_classes
        body, c = _down_stack(channels, stages, width, lambda n: nn.Identity())
        for i, layer in enumerate(body):
            if isinstance(layer, nn.Conv2d):
                body[i] = nn.utils.spectral_norm(layer)
        self.body = body
        self.linear = nn.utils.spectral_norm(nn.Linear(c, 1))
        self.embed = nn.utils.spectral_norm(nn.Embedding(num_classes, c))
        self.resize = _input_resize(image_size, base)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.resize is not None:
            x = self.resize(x)
        h = self.body(x).sum(dim=(2, 3))
        return self.linear(h).view(-1) + (self.embed(y) * h).sum(1)
