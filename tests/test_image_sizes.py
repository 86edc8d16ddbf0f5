"""Any image size >= 8: GAN parts, priors and attacks at the data's size (28x28 MNIST and other
non-powers of two), power-of-two models unchanged, and size problems refused before any training."""
from __future__ import annotations

import re
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
from torch import nn

import mi_art as M
from conftest import wrap
from mi_art.evaluations import surrogate_artifacts, workbench
from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.experiment import ExperimentConfig, Workbench
from mi_art.data import load_digits_data
from mi_art.models import check_builds
from mi_art.priors import PRIORS, Resize, gradient_penalty

SIZES = [8, 24, 28, 32, 48]
POWERS_OF_TWO = {8, 16, 32, 64}
K = 3


def _gan(size: int, channels: int) -> Tuple[M.Generator, M.Critic, M.KEDMIDiscriminator]:
    torch.manual_seed(0)
    return (M.Generator(size, channels, width=4), M.Critic(size, channels, width=4),
            M.KEDMIDiscriminator(K, size, channels, width=4))


# --------------------------------------------------------------------------- GAN parts


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_gan_parts_work_at_the_data_size(size: int, channels: int) -> None:
    gen, critic, disc = _gan(size, channels)
    assert gen.image_size == critic.image_size == disc.image_size == size
    base = 1 << (size - 1).bit_length()
    assert gen.base_size == critic.base_size == disc.base_size == base
    z = torch.randn(4, gen.latent_dim, requires_grad=True)
    fake = gen(z)
    assert fake.shape == (4, channels, size, size)
    assert fake.min() >= 0 and fake.max() <= 1
    scores = critic(fake)
    feats, logits = disc(fake, return_features=True)
    assert scores.shape == (4,)
    assert logits.shape == (4, K) and feats.shape == (4, disc.feature_dim)
    (scores.sum() + logits.sum() + feats.sum()).backward()
    # gradients flow through the resize layers to the latent and to every trainable part
    assert z.grad is not None and z.grad.abs().sum() > 0
    for name, model in (("generator", gen), ("critic", critic), ("discriminator", disc)):
        for pname, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}.{pname}"
        assert any(p.grad.abs().sum() > 0 for p in model.parameters()), name


@pytest.mark.parametrize("size", SIZES)
def test_inputs_gradients_reach_every_pixel(size: int) -> None:
    _, critic, disc = _gan(size, 1)
    x = torch.rand(2, 1, size, size, requires_grad=True)
    (critic(x).sum() + disc(x).sum()).backward()
    assert (x.grad.abs() > 0).all()


@pytest.mark.parametrize("size", SIZES)
def test_resize_layer_only_where_the_size_is_not_a_power_of_two(size: int) -> None:
    for model in _gan(size, 1):
        if size in POWERS_OF_TWO:
            assert model.resize is None
            assert not any(isinstance(m, Resize) for m in model.modules())
        else:
            assert isinstance(model.resize, Resize)


@pytest.mark.parametrize("size", [24, 28, 48])
def test_non_power_of_two_models_are_their_base_models_plus_a_fixed_resize(size: int) -> None:
    """Same parameters as at the next power of two: the resize adds none."""
    base = 1 << (size - 1).bit_length()
    for small, big in zip(_gan(size, 1), _gan(base, 1)):
        a, b = small.state_dict(), big.state_dict()
        assert list(a) == list(b)
        assert all(a[k].shape == b[k].shape for k in a)
        small.load_state_dict(b)


#: state_dict keys and shapes at 16 px, width 4, one channel, K=3, before any size was allowed.
OLD_KEYS: Dict[str, Dict[str, Tuple[int, ...]]] = {
    "Generator": {
        "project.0.weight": (128, 100), "project.1.weight": (128,), "project.1.bias": (128,),
        "project.1.running_mean": (128,), "project.1.running_var": (128,), "project.1.num_batches_tracked": (),
        "body.0.weight": (8, 4, 5, 5), "body.1.weight": (4,), "body.1.bias": (4,), "body.1.running_mean": (4,),
        "body.1.running_var": (4,), "body.1.num_batches_tracked": (), "body.3.weight": (4, 1, 5, 5),
        "body.3.bias": (1,)},
    "Critic": {
        "body.0.weight": (4, 1, 5, 5), "body.0.bias": (4,), "body.2.weight": (8, 4, 5, 5), "body.2.bias": (8,),
        "body.3.weight": (8,), "body.3.bias": (8,), "head.weight": (1, 8, 4, 4), "head.bias": (1,)},
    "KEDMIDiscriminator": {
        "body.0.0.weight": (4, 1, 5, 5), "body.0.0.bias": (4,), "body.0.2.weight": (8, 4, 5, 5),
        "body.0.2.bias": (8,), "body.0.3.weight": (8,), "body.0.3.bias": (8,), "mbd.T": (128, 250),
        "fc.weight": (3, 178), "fc.bias": (3,)},
}


def test_power_of_two_models_keep_their_old_state_dict_keys() -> None:
    """Checkpoints cached before non-powers of two were supported still load."""
    for model in _gan(16, 1):
        keys = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert keys == OLD_KEYS[type(model).__name__]
        assert list(keys) == list(OLD_KEYS[type(model).__name__])  # same order too


@pytest.mark.parametrize("size", [0, 5, 7, 24.0, "28", None])
@pytest.mark.parametrize("build", [
    lambda s: M.Generator(s, 1),
    lambda s: M.Critic(s, 1),
    lambda s: M.KEDMIDiscriminator(5, s, 1),
], ids=["generator", "critic", "kedmi-disc"])
def test_gan_parts_need_an_integer_size_of_at_least_8(build, size) -> None:
    with pytest.raises(ValueError, match=r"image_size must be an integer.*at least 8x8"):
        build(size)


def test_gradient_penalty_differentiates_through_the_resize() -> None:
    _, critic, _ = _gan(28, 1)
    gp = gradient_penalty(critic, torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28))
    gp.backward()  # double backward through the critic's bilinear enlargement
    assert torch.isfinite(gp)
    # every weight gets a gradient (the biases of the last layers do not shape the input gradient)
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for name, p in critic.named_parameters() if name.endswith("weight"))


# --------------------------------------------------------------------------- priors and attacks at 28x28


class TinyNet(nn.Module):
    """A tiny 28x28 classifier, as a user brings one."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 8, 3, 2, 1), nn.ReLU(),
                                  nn.Flatten())
        self.fc = nn.Linear(8 * 7 * 7, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


@pytest.fixture(scope="module")
def mnist_like():
    rng = np.random.default_rng(0)
    return rng.random((48, 1, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def tiny_target():
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="module")
def priors_28(mnist_like, tiny_target):
    gmi = M.train_gmi_prior(mnist_like, steps=2, n_critic=1, batch_size=16, width=4, device="cpu", seed=0)
    kedmi = M.train_kedmi_prior(tiny_target, mnist_like, steps=2, n_critic=1, batch_size=16, width=4,
                                init_generator=gmi[0], device="cpu", seed=0)
    return {M.GMI: gmi, M.KEDMI: kedmi}


@pytest.mark.parametrize("cls", [M.GMI, M.KEDMI])
def test_attack_a_28x28_art_classifier(cls, priors_28, tiny_target) -> None:
    gen, disc = priors_28[cls]
    assert gen.image_size == 28 and gen.base_size == 32
    clf = wrap(tiny_target, input_shape=(1, 28, 28), nb_classes=K)
    attack = cls(clf, gen, disc, iterations=3, n_reconstructions=2, batch_size=K, seed=0, verbose=False)
    recs = attack.infer(None, np.arange(K))
    assert recs.shape == (2 * K, 1, 28, 28)
    assert recs.dtype == np.float32 and np.isfinite(recs).all()
    assert recs.min() >= 0 and recs.max() <= 1
    np.testing.assert_array_equal(attack.labels_, np.repeat(np.arange(K), 2))
    assert attack.target_confidence_.shape == (2 * K,)


def test_attack_still_refuses_a_generator_of_another_size(priors_28, tiny_target) -> None:
    gen = M.Generator(32, 1, width=4)
    clf = wrap(tiny_target, input_shape=(1, 28, 28), nb_classes=K)
    attack = M.GMI(clf, gen, priors_28[M.GMI][1], iterations=1, n_reconstructions=1, verbose=False)
    with pytest.raises(ValueError, match=r"generator makes images of shape \(1, 32, 32\)"):
        attack.infer(None, np.arange(K))


# --------------------------------------------------------------------------- checked before any training


@pytest.fixture
def no_training(monkeypatch):
    """Any training by the Workbench fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the size check")

    for module, name in ((workbench, "train_classifier"), (surrogate_artifacts, "distill_surrogate")):
        monkeypatch.setattr(module, name, refuse)
    for prior in PRIORS.values():  # each prior trains through its registry entry
        monkeypatch.setattr(prior, "train", refuse)


@pytest.fixture(scope="module")
def digits16():
    return load_digits_data(image_size=16)


@pytest.mark.parametrize("field,value,label", [
    ("target_arch", "vgg16bn", "target_arch='vgg16bn'"),
    ("judge_arch", "ir18", "judge_arch='ir18'"),
    ("surrogate_archs", ("cnn-small", "vgg16bn"), "surrogate_archs[1]='vgg16bn'"),
])
def test_workbench_refuses_an_architecture_that_cannot_be_built_at_the_size(digits16, no_training, field, value,
                                                                            label) -> None:
    config = ExperimentConfig(device="cpu", **{field: value})
    with pytest.raises(ValueError, match=re.escape(f"{label} cannot be built for 16x16 images with 1 channel "
                                                   "(dataset 'digits')")):
        Workbench(config, ArtifactCache(None), data=digits16)


def test_workbench_refuses_gan_parts_below_8_px(no_training) -> None:
    tiny = load_digits_data(image_size=6)
    with pytest.raises(ValueError, match=r"GAN generator \(gan_width=32\) cannot be built for 6x6 images.*at least 8x8"):
        Workbench(ExperimentConfig(device="cpu"), ArtifactCache(None), data=tiny)
    # MIFace needs no GAN and no surrogate
    Workbench(ExperimentConfig(device="cpu", attack="miface", variant="baseline"), ArtifactCache(None), data=tiny)


@pytest.mark.parametrize("size", [24, 28])
def test_workbench_accepts_the_defaults_at_non_powers_of_two(no_training, size: int) -> None:
    data = load_digits_data(image_size=size, channels=3)
    Workbench(ExperimentConfig(device="cpu", attack="kedmi"), ArtifactCache(None), data=data)


def test_check_builds_falls_back_to_the_cpu_and_checks_the_output_shape() -> None:
    class NoMeta(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.is_meta:
                raise NotImplementedError("no meta kernel")
            return self.fc(x)

    state = torch.random.get_rng_state()
    check_builds("NoMeta", NoMeta, (2, 4), (2, 2))
    assert torch.equal(state, torch.random.get_rng_state())  # weights drawn without moving the seed
    with pytest.raises(ValueError, match=r"NoMeta cannot be built for 4 inputs: it returns outputs of shape "
                                         r"\(2,\), expected \(3,\)"):
        check_builds("NoMeta", NoMeta, (2, 4), (2, 3), where="4 inputs")
