"""DP-SGD (:mod:`mi_art.defenses.dp`): epsilon against Opacus's accountant, the delta's default and limits, and
fine-tuning a publicly pre-trained target under DP (its head or a few layers, GroupNorm pre-training or frozen
BatchNorm). Digits, a few epochs: each test trains seconds."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn

import mi_art
from mi_art.defenses import check_defense_params, defended_architecture, dp, get_defense, train_defended_target
from mi_art.defenses.common import parameterised_leaves, snapshot
from mi_art.defenses.dp import default_delta, private_architecture
from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.experiment import ExperimentConfig, Workbench
from mi_art.pretraining import pretrain_classifier, replace_head
from mi_art.training import train_classifier


def test_dp_refuses_a_delta_above_one_over_n():
    with pytest.raises(ValueError, match=r"delta=0.5 is above 1/N"):
        dp.check_params({"noise_multiplier": 1.0, "target_delta": 0.5}, n_train=30)
    assert dp.check_params({"noise_multiplier": 1.0, "target_delta": 0.5, "allow_large_delta": True},
                           30)["target_delta"] == 0.5
    assert dp.check_params({"noise_multiplier": 1.0, "target_delta": 1 / 30}, 30)["target_delta"] == 1 / 30  # kept


@pytest.mark.parametrize("n_train, expected", [(30, 1e-5), (160, 1e-5), (1000, 1e-5), (5000, 2e-6),
                                               (100_000, 1e-7)])
def test_dp_default_delta_is_far_below_one_over_n(n_train, expected):
    """min(1e-5, 1/(100 N)), not 1/N (the earlier default, at which a training image may be released)."""
    assert dp.check_params({"noise_multiplier": 1.0}, n_train=n_train)["target_delta"] == pytest.approx(expected)
    assert dp.default_delta(n_train) == pytest.approx(expected) and expected <= 1 / (100 * n_train)
    assert dp.delta_warning(expected, n_train) is None


def test_dp_delta_warning_names_delta_and_n_at_one_over_ten_n():
    warned = dp.delta_warning(1 / 160, 160)  # the earlier default on AT&T
    assert "delta=0.00625" in warned and "N=160" in warned
    assert dp.delta_warning(1 / 1600, 160) is not None  # at 1/(10 N)
    assert dp.delta_warning(0.99 / 1600, 160) is None and dp.delta_warning(1e-5, 160) is None
    assert dp.delta_warning(None, 160) is None and dp.delta_warning(1e-3, None) is None


def test_a_dp_target_left_at_the_default_delta_is_keyed_apart_from_the_earlier_default():
    """A target cached under delta=1/N (the earlier default) is not served when delta is left out."""
    from mi_art.evaluations.experiment import ExperimentConfig, Workbench
    from mi_art.evaluations.grid import cell_id

    def config(**params):
        return ExperimentConfig(defense="dp-sgd", defense_params={"noise_multiplier": 1.0, **params})

    assert "default_delta" in Workbench(config()).key("target")
    assert "default_delta" not in Workbench(config(target_delta=1e-5)).key("target")
    assert cell_id(config()) != cell_id(config(target_delta=1e-5))
    none = ExperimentConfig()
    assert "default_delta" not in Workbench(none).key("target")


@pytest.mark.parametrize("noise, delta", [(1e6, 0.5), (1e6, 1 / 30), (50.0, 1 / 30)])
def test_epsilon_is_never_negative(noise, delta):
    """Opacus's RDP conversion returns -0.69, -0.03 and -0.02 here (privacy loss nil): reported as 0."""
    assert dp.accountant_epsilon(noise, 0.1, 100, delta) == 0.0
    assert dp.accountant_epsilon(1.0, 0.1, 100, 1 / 30) > 0  # and a real epsilon stays as it is


FAST = dict(epochs=2, batch_size=32, lr=2e-3, device="cpu", seed=0)


@pytest.fixture(scope="module")
def data(small_digits):
    return small_digits


@pytest.fixture(scope="module")
def pretrained(data):
    """A cnn in Opacus's structure (GroupNorm) pre-trained on the public digits, with a private head."""
    torch.manual_seed(0)
    model = private_architecture(mi_art.make_classifier("cnn", 1, data.num_public_classes, 8))
    model = pretrain_classifier(model, data.public.x, data.public.y, num_classes=data.num_public_classes, **FAST)
    torch.manual_seed(1)
    replace_head(model, data.num_classes)
    return model


def _weights(model: nn.Module):
    return {n: snapshot(m) for n, m in parameterised_leaves(model)}


def test_dp_fine_tuning_of_the_head_keeps_every_pretrained_weight_below_it(data, pretrained):
    before = _weights(pretrained)
    model, rec = train_defended_target("dp-sgd", data, model=pretrained, **FAST, noise_multiplier=1.0,
                                       trainable="head")
    after = _weights(model)
    assert after.keys() == before.keys()
    head = list(after)[-1]
    for name in list(after)[:-1]:
        assert all(torch.equal(after[name][k], before[name][k]) for k in after[name]), name
    assert not torch.equal(after[head]["weight"], before[head]["weight"])  # the head trained
    assert rec.details["module_validator_fixed"] is False  # nothing was swapped: pre-trained GroupNorm kept
    assert rec.details["trained_layers"] == 1
    assert rec.details["trained_parameters"] == sum(p.numel() for p in mi_art.last_linear(model).parameters())
    assert all(p.requires_grad for p in model.parameters())  # the frozen layers are handed back trainable


def test_dp_fine_tuning_epsilon_is_a_fresh_accountants(data, pretrained):
    for trainable in ("all", 2):
        _, rec = train_defended_target("dp-sgd", data, model=pretrained, **FAST, target_epsilon=3.0,
                                       trainable=trainable)
        d = rec.details
        accountant = RDPAccountant()
        accountant.history = [(d["noise_multiplier"], d["sample_rate"], d["steps"])]
        assert rec.epsilon == pytest.approx(accountant.get_epsilon(rec.delta), rel=1e-9)
        assert rec.epsilon <= 3.0 * 1.01 and rec.delta == default_delta(len(data.private_train))
        assert d["trained_layers"] == (len(parameterised_leaves(pretrained)) if trainable == "all" else 2)


def test_dp_refuses_a_trainable_count_the_model_cannot_meet(data, pretrained):
    n = len(parameterised_leaves(pretrained))
    with pytest.raises(ValueError, match=rf"trainable={n + 1} .* has {n} parameterised layers"):
        train_defended_target("dp-sgd", data, model=pretrained, **FAST, noise_multiplier=1.0, trainable=n + 1)
    with pytest.raises(ValueError, match="trainable"):
        check_defense_params("dp-sgd", {"noise_multiplier": 1.0, "trainable": "body"})


def test_dp_warns_when_pretrained_batchnorm_would_be_lost(data):
    torch.manual_seed(0)
    model = mi_art.make_classifier("cnn", 1, data.num_classes, 8)
    train_classifier(model, data.public.x[:40], data.public.y[:40] % data.num_classes, **dict(FAST, epochs=1))
    with pytest.warns(UserWarning, match="BatchNorm layers .* were replaced by fresh GroupNorm"):
        train_defended_target("dp-sgd", data, model=model, **dict(FAST, epochs=1), noise_multiplier=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fresh architecture by name has nothing to lose
        warnings.filterwarnings("ignore", message=".*alpha.*")
        train_defended_target("dp-sgd", data, model="cnn", **dict(FAST, epochs=1), noise_multiplier=1.0)


def test_workbench_dp_target_is_fine_tuned_from_its_groupnorm_pretraining(tmp_path, data):
    """With target_pretrain_epochs, the DP target starts from public pre-training in Opacus's structure:
    every layer below the head is the pre-trained one (trainable='head'); the plain pre-training (BatchNorm)
    is keyed apart and not used."""
    config = ExperimentConfig(dataset="digits", target_arch="cnn", target_epochs=1, target_pretrain_epochs=2,
                              defense="dp-sgd", defense_params={"noise_multiplier": 1.0, "trainable": "head"},
                              device="cpu", seed=0)
    bench = Workbench(config, ArtifactCache(tmp_path / "cache"), data=data)
    target = bench.target()
    pre = bench.pretrained("cnn", 2, 0, "target", get_defense("dp-sgd"))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in pre.modules())
    body_pre, body_target = _weights(pre), _weights(target)
    for name in list(body_target)[:-1]:
        assert all(torch.equal(body_target[name][k], body_pre[name][k]) for k in body_target[name]), name
    record = bench.defense_record
    assert record["details"]["pretrained_architecture"] == "groupnorm"
    assert record["details"]["module_validator_fixed"] is False and record["details"]["pretrain_epochs"] == 2


def test_frozen_batch_norm_computes_what_batch_norm_computes_in_eval_mode():
    from mi_art.defenses.dp import FrozenBatchNorm

    torch.manual_seed(0)
    norm = nn.BatchNorm2d(4)
    norm.train()(torch.randn(16, 4, 5, 5) * 3 + 1)  # running statistics away from (0, 1)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(3, 4, 5, 5)
    assert torch.allclose(FrozenBatchNorm(norm)(x), norm.eval()(x), atol=1e-6)
    assert list(FrozenBatchNorm(norm).parameters()) == []  # nothing in it is trained


def test_dp_fine_tuning_of_a_batchnorm_pretrained_model_keeps_its_normalisation(data):
    """batch_norm='freeze': a BatchNorm-pre-trained model is fine-tuned under DP with each BatchNorm frozen into
    its eval-mode map, so the body computes what it computed before (no fresh GroupNorm, no warning)."""
    torch.manual_seed(0)
    model = mi_art.make_classifier("cnn", 1, data.num_public_classes, 8)
    model = pretrain_classifier(model, data.public.x, data.public.y, num_classes=data.num_public_classes, **FAST)
    replace_head(model, data.num_classes)
    x = torch.as_tensor(data.private_test.x[:32])
    with torch.no_grad():
        features_before = mi_art.features.extract_features(model.eval(), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=".*alpha.*")
        tuned, rec = train_defended_target("dp-sgd", data, model=model, **FAST, noise_multiplier=1.0,
                                           trainable="head", batch_norm="freeze")
    with torch.no_grad():
        features_after = mi_art.features.extract_features(tuned, x)
    assert torch.allclose(features_after, features_before, atol=1e-5)  # the whole body as pre-trained
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in tuned.modules())
    assert rec.details["module_validator_fixed"] is False
    arch = defended_architecture("dp-sgd", data, model="cnn", noise_multiplier=1.0, batch_norm="freeze")
    arch.load_state_dict(tuned.state_dict())  # the cache can rebuild the structure to load it


def test_workbench_dp_with_frozen_batch_norm_fine_tunes_the_undefended_targets_pretraining(tmp_path, data):
    config = ExperimentConfig(dataset="digits", target_arch="cnn", target_epochs=1, target_pretrain_epochs=2,
                              defense="dp-sgd", defense_params={"noise_multiplier": 1.0, "trainable": "head",
                                                                "batch_norm": "freeze"},
                              device="cpu", seed=0)
    bench = Workbench(config, ArtifactCache(tmp_path / "cache"), data=data)
    target = bench.target()
    pre = bench.pretrained("cnn", 2, 0, "target")  # the plain (BatchNorm) pre-training, shared with "none"
    assert any(isinstance(m, nn.BatchNorm2d) for m in pre.modules())
    x = torch.as_tensor(data.private_test.x[:16])
    with torch.no_grad():
        assert torch.allclose(mi_art.features.extract_features(target, x),
                              mi_art.features.extract_features(pre.eval(), x), atol=1e-5)
    assert "pretrained_architecture" not in bench.defense_record["details"]


def test_dp_epsilon_matches_opacus_accountant_and_falls_with_noise(data):
    n = len(data.private_train)
    eps = {}
    for sigma in (0.8, 2.0):
        model, rec = train_defended_target("dp-sgd", data, **dict(FAST, epochs=2), noise_multiplier=sigma,
                                           max_physical_batch_size=16)
        steps_per_epoch = math.ceil(n / FAST["batch_size"])
        assert rec.details["sample_rate"] == pytest.approx(1 / steps_per_epoch)
        assert rec.details["steps"] == 2 * steps_per_epoch  # physical batches of 8 add no accountant steps
        # the default delta, min(1e-5, 1/(100 N)), is 1e-5 here (N < 1000), and epsilon is computed at it
        assert n < 1000 and rec.delta == 1e-5 and rec.accountant == "rdp"
        acc = RDPAccountant()
        acc.history = [(sigma, 1 / steps_per_epoch, 2 * steps_per_epoch)]
        assert rec.epsilon == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
        assert rec.epsilon > acc.get_epsilon(1 / n)  # not the epsilon at 1/N, the earlier default
        eps[sigma] = rec.epsilon
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # ModuleValidator.fix
        assert not any(k.startswith("_module.") for k in model.state_dict())
        assert all(not hasattr(p, "grad_sample") for p in model.parameters())
    assert eps[2.0] < eps[0.8]


def test_dp_target_epsilon_is_met(data):
    _, rec = train_defended_target("dp-sgd", data, **dict(FAST, epochs=1), target_epsilon=4.0, target_delta=1e-3)
    assert rec.accountant == "rdp" and rec.delta == 1e-3
    assert 3.5 < rec.epsilon <= 4.0 * 1.01
    assert rec.details["noise_multiplier"] > 0
