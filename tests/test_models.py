"""Shapes and contracts of the classifiers (mi_art.models) and the GAN priors' networks (mi_art.priors.networks)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import mi_art as M
from mi_art.features import extract_features, last_linear, logits_and_features

SMALL_ARCHS = ["cnn", "cnn-wide", "cnn-small", "mlp", "resnet", "resnet10", "resnet18"]
BIG_ARCHS = ["vgg16bn", "ir18", "ir50", "ir152", "efficientnet-b0", "efficientnet-b1", "efficientnet-b2"]
#: dlib's pretrained recogniser with a head (mi_art.deployed_faces; training: tests/test_deployed_faces.py).
PRETRAINED_ARCHS = ["dlib-head", "dlib-finetune"]


def test_architecture_registry_is_covered():
    # A new architecture must be added to one of the lists above (and so get a shape test).
    assert set(M.ARCHITECTURES) == set(SMALL_ARCHS) | set(BIG_ARCHS) | set(PRETRAINED_ARCHS)


def test_an_architecture_is_built_under_its_earlier_name_with_a_note():
    """The EfficientNets' earlier names ("efficientnet_b0": an underscore among dashed names) build them, reported
    as renamed; the model is named as now."""
    from mi_art.renames import RenamedWarning

    with pytest.warns(RenamedWarning, match="the architecture 'efficientnet_b0' is now called 'efficientnet-b0'"):
        model = M.make_classifier("efficientnet_b0", 1, 3, 16)
    assert model.architecture_name == "efficientnet-b0" and "efficientnet_b0" not in M.ARCHITECTURES
    assert set(M.models.RENAMED_ARCHITECTURES.table.values()) <= set(M.ARCHITECTURES)


@pytest.mark.parametrize("arch", PRETRAINED_ARCHS)
def test_pretrained_face_classifier_shapes(arch):
    from mi_art.face_recognizer import dlib_weights_path

    try:
        dlib_weights_path()
    except FileNotFoundError:
        pytest.skip("dlib's face recognition weights are not installed (pip install \"mi-art[faces]\")")
    model = M.make_classifier(arch, 1, 4, 16).eval()
    x = torch.rand(2, 1, 16, 16)  # grey 16 px: repeated to RGB and resized to 150 px inside
    with torch.no_grad():
        logits, feats = logits_and_features(model, x)
    assert logits.shape == (2, 4) and feats.shape == (2, 128)  # the descriptor is the penultimate feature
    with torch.no_grad():
        torch.testing.assert_close(model.fc(feats), logits)
    assert last_linear(model) is model.fc
    assert not any(getattr(m, "inplace", False) for m in model.modules())


# --------------------------------------------------------------------------- classifiers


@pytest.mark.parametrize("arch", SMALL_ARCHS)
@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_small_classifier_shapes(arch, size, channels):
    torch.manual_seed(0)
    model = M.make_classifier(arch, channels, 7, size).eval()
    x = torch.rand(3, channels, size, size)
    with torch.no_grad():
        logits, feats = logits_and_features(model, x)
    assert logits.shape == (3, 7)
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 7
    # The captured feature is exactly the input of `fc`: fc(features) reproduces the logits.
    assert feats.shape == (3, model.fc.in_features)
    with torch.no_grad():
        torch.testing.assert_close(model.fc(feats), logits)
    assert last_linear(model) is model.fc


@pytest.mark.parametrize("arch,channels", [("vgg16bn", 1), ("ir18", 3)])
def test_big_classifier_smoke_32px(arch, channels):
    # vgg16bn with 1 channel also exercises the replaced first convolution.
    torch.manual_seed(0)
    model = M.make_classifier(arch, channels, 4, 32).eval()
    x = torch.rand(2, channels, 32, 32)
    with torch.no_grad():
        logits, feats = logits_and_features(model, x)
    assert logits.shape == (2, 4)
    with torch.no_grad():
        torch.testing.assert_close(model.fc(feats), logits)
    # No in-place ReLU anywhere (Opacus compatibility promised by the module docstring).
    assert not any(getattr(m, "inplace", False) for m in model.modules())


@pytest.mark.parametrize("arch", ["vgg16bn", "ir18"])
def test_big_classifier_rejects_small_images(arch):
    with pytest.raises(ValueError, match="image_size"):
        M.make_classifier(arch, 3, 4, 16)


def test_extract_features_restores_training_mode_and_batches():
    torch.manual_seed(0)
    model = M.make_classifier("cnn-wide", 1, 5, 8)  # dropout 0.3: train/eval outputs differ
    model.train()
    x = torch.rand(10, 1, 8, 8)
    feats = extract_features(model, x, batch_size=3)
    assert model.training
    model.eval()
    with torch.no_grad():
        _, expected = logits_and_features(model, x)
    torch.testing.assert_close(feats, expected)


def test_logits_and_features_custom_model_with_named_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.rand(5, 1, 2, 2)
    logits, feats = logits_and_features(model, x)
    expected = torch.relu(model[1](x.flatten(1)))
    torch.testing.assert_close(feats, expected)
    assert last_linear(model) is model[3]
    with pytest.raises(ValueError, match="nn.Linear"):
        last_linear(model, "2")
    with pytest.raises(ValueError, match="no sub-module"):
        last_linear(model, "nope")
    with pytest.raises(ValueError, match="no nn.Linear"):
        last_linear(nn.Sequential(nn.Flatten()))


# --------------------------------------------------------------------------- GAN parts


@pytest.mark.parametrize("size", [8, 16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_shape_and_range(size, channels):
    torch.manual_seed(0)
    gen = M.Generator(size, channels, width=8)
    assert gen.latent_dim == M.priors.LATENT_DIM
    gen.train()
    out = gen(torch.randn(4, gen.latent_dim))
    assert out.shape == (4, channels, size, size)
    gen.eval()
    with torch.no_grad():
        extreme = gen(torch.randn(4, gen.latent_dim) * 100)
    assert extreme.shape == (4, channels, size, size)
    assert extreme.min() >= 0 and extreme.max() <= 1
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_critic_one_score_per_image(size):
    torch.manual_seed(0)
    critic = M.Critic(size, 3, width=8)
    scores = critic(torch.rand(5, 3, size, size))
    assert scores.shape == (5,)
    # Scores are unbounded (WGAN): no sigmoid at the end.
    assert isinstance(critic.head, nn.Conv2d)


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_kedmi_discriminator_shapes(size):
    torch.manual_seed(0)
    disc = M.KEDMIDiscriminator(6, size, 1, width=8)
    assert disc.num_classes == 6
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in disc.modules())  # real and fake batches stay apart
    x = torch.rand(4, 1, size, size)
    logits = disc(x)
    feats, logits2 = disc(x, return_features=True)
    assert logits.shape == (4, 6)
    assert feats.shape == (4, disc.feature_dim) == (4, 8 * 2 ** (int(math.log2(size)) - 3) * 16)
    torch.testing.assert_close(logits, logits2)
    disc.eval()
    with torch.no_grad():
        assert disc(x[:1]).shape == (1, 6)  # minibatch discrimination copes with a batch of one


def test_minibatch_discrimination_depends_on_the_batch():
    torch.manual_seed(0)
    disc = M.KEDMIDiscriminator(3, 8, 1, width=8).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        alone = disc(x[:1])
        together = disc(x)[:1]
    assert not torch.allclose(alone, together)


@pytest.mark.parametrize("size", [0, 4, 7, -8, 16.0, "32"])  # any integer >= 8 works (tests/test_image_sizes.py)
@pytest.mark.parametrize("build", [
    lambda s: M.Generator(s, 1),
    lambda s: M.Critic(s, 1),
    lambda s: M.KEDMIDiscriminator(5, s, 1),
], ids=["generator", "critic", "kedmi-disc"])
def test_gan_parts_reject_bad_image_size(build, size):
    with pytest.raises(ValueError, match="image_size"):
        build(size)


@pytest.mark.parametrize("channels", [0, 2, 4])
@pytest.mark.parametrize("build", [
    lambda c: M.Generator(8, c),
    lambda c: M.Critic(8, c),
    lambda c: M.KEDMIDiscriminator(5, 8, c),
    lambda c: M.make_classifier("cnn", c, 5, 8),
    lambda c: M.make_classifier("resnet", c, 5, 8),
    lambda c: M.make_classifier("ir18", c, 5, 32),
    lambda c: M.make_classifier("mlp", c, 5, 8),
], ids=["generator", "critic", "kedmi-disc", "cnn", "resnet", "ir18", "mlp"])
def test_bad_channels_raise(build, channels):
    with pytest.raises(ValueError, match="channels"):
        build(channels)


def test_make_classifier_rejects_unknown_arch_and_too_few_classes():
    with pytest.raises(ValueError, match="unknown architecture"):
        M.make_classifier("alexnet", 1, 5, 8)
    with pytest.raises(ValueError, match="num_classes"):
        M.make_classifier("cnn", 1, 1, 8)
    with pytest.raises(ValueError, match="too many"):
        M.CNN(1, 5, 8, blocks=4)


# --------------------------------------------------------------------------- big classifiers: forward and backward


@pytest.mark.parametrize("arch", ["ir50", "ir152", "efficientnet-b0", "efficientnet-b1", "efficientnet-b2"])
def test_big_classifier_forward_backward_32px(arch):
    """One training step's forward and backward at 32x32, batch 2, one channel (the replaced first
    convolution): logits of the right shape, fc on the captured feature, and a finite, non-zero
    gradient on every parameter, the first convolution included."""
    torch.manual_seed(0)
    model = M.make_classifier(arch, 1, 4, 32).train()
    x = torch.rand(2, 1, 32, 32)
    logits, feats = logits_and_features(model, x)
    assert logits.shape == (2, 4)
    torch.testing.assert_close(model.fc(feats), logits)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1  # the convolution that sees the image
    assert first.weight.grad is not None and torch.isfinite(first.weight.grad).all()
    assert first.weight.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# --------------------------------------------------------------------------- training the classifiers: SGD, flips


class _Linear8x8(nn.Module):
    """A linear classifier of 8x8 images (no dropout, no batch norm: one step is computable by hand)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_train_classifier_sgd_takes_momentum_steps_on_a_cosine_schedule():
    """Two full-batch steps of optimizer="sgd" equal SGD with momentum 0.9 computed by hand, with the
    cosine schedule's learning rates 0.1 then 0.05 (lr * (1 + cos(pi / 2)) / 2)."""
    import copy

    import torch.nn.functional as F

    from mi_art.training import train_classifier

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 8, 8, generator=gen)
    y = torch.arange(20) % 5
    torch.manual_seed(0)
    start = _Linear8x8()
    reference = copy.deepcopy(start)
    buffers = None
    for lr in (0.1, 0.05):
        grads = torch.autograd.grad(F.cross_entropy(reference(x), y), list(reference.parameters()))
        buffers = list(grads) if buffers is None else [0.9 * b + g for b, g in zip(buffers, grads)]
        with torch.no_grad():
            for p, b in zip(reference.parameters(), buffers):
                p -= lr * b
    trained = train_classifier(copy.deepcopy(start), x.numpy(), y.numpy(), epochs=2, batch_size=len(x), lr=0.1,
                               weight_decay=0.0, optimizer="sgd", augment="none", device="cpu", seed=0)
    for p, q in zip(trained.parameters(), reference.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-6)
    # Adam from the same start lands elsewhere: the optimizer option is honoured
    adam = train_classifier(copy.deepcopy(start), x.numpy(), y.numpy(), epochs=2, batch_size=len(x), lr=0.1,
                            weight_decay=0.0, optimizer="adam", augment="none", device="cpu", seed=0)
    assert not torch.allclose(adam.fc.weight, reference.fc.weight, atol=1e-3)


def _flip_split(out: torch.Tensor, plain: torch.Tensor, flipped: torch.Tensor):
    """Indices of the rows of ``out`` equal to ``plain`` and to ``flipped``; None if a row is neither."""
    same = [i for i in range(len(out)) if torch.equal(out[i], plain[i])]
    flip = [i for i in range(len(out)) if torch.equal(out[i], flipped[i])]
    return (same, flip) if sorted(same + flip) == list(range(len(out))) else None


@pytest.mark.parametrize("mode", ["flip", "flip-shift", "shift"])
def test_augment_batch_flips_rows_horizontally(mode):
    from mi_art.training import augment_batch

    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8)  # random images: none is its own mirror image
    out = augment_batch(x, mode)
    assert out.shape == x.shape
    if "shift" in mode:  # one shift of up to 8 // 8 = 1 pixel (reflect padding) for the whole batch
        padded, padded_flipped = (torch.nn.functional.pad(v, (1, 1, 1, 1), mode="reflect") for v in (x, x.flip(3)))
        splits = [_flip_split(out, padded[..., dy:dy + 8, dx:dx + 8], padded_flipped[..., dy:dy + 8, dx:dx + 8])
                  for dy in range(3) for dx in range(3)]
        splits = [s for s in splits if s is not None]
        assert len(splits) >= 1, "the output is no shift of the (flipped) images"
        same, flip = splits[0]
    else:
        split = _flip_split(out, x, x.flip(3))
        assert split is not None, "a row is neither the image nor its horizontal mirror"
        same, flip = split
    if "flip" in mode:
        # about half of the rows are mirrored (each independently with probability 1/2), the others not
        assert 16 <= len(flip) <= 48 and len(same) == 64 - len(flip)
    else:
        assert flip == []
