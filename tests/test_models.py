"""Shapes and contracts of the classifiers, GAN generators and discriminators in mi_art.models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import mi_art as M
from mi_art.features import extract_features, last_linear, logits_and_features

SMALL_ARCHS = ["cnn", "cnn-wide", "cnn-small", "mlp", "resnet"]
BIG_ARCHS = ["vgg16bn", "ir18", "ir50", "ir152", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2"]


def test_architecture_registry_is_covered():
    # A new architecture must be added to one of the lists above (and so get a shape test).
    assert set(M.ARCHITECTURES) == set(SMALL_ARCHS) | set(BIG_ARCHS)


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
    assert gen.latent_dim == M.models.LATENT_DIM
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
    disc = M.KEDMIDiscriminator(6, size, 1, width=8, feature_dim=32)
    assert disc.num_classes == 6
    x = torch.rand(4, 1, size, size)
    logits = disc(x)
    feats, logits2 = disc(x, return_features=True)
    assert logits.shape == (4, 6)
    assert feats.shape == (4, 32)
    torch.testing.assert_close(logits, logits2)
    disc.eval()
    with torch.no_grad():
        assert disc(x[:1]).shape == (1, 6)  # minibatch discrimination copes with a batch of one


def test_minibatch_discrimination_depends_on_the_batch():
    torch.manual_seed(0)
    disc = M.KEDMIDiscriminator(3, 8, 1, width=8, feature_dim=16).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        alone = disc(x[:1])
        together = disc(x)[:1]
    assert not torch.allclose(alone, together)


@pytest.mark.parametrize("size", [0, 4, 12, 24, -8])
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
