"""Tests of the defenses package: the loss pieces on hand-computable cases, DP accounting against
Opacus, TL freezing, every defended model through ART's class_gradient and a tiny GMI attack, and
the parameter checks. Small data (a subset of scikit-learn digits) and 1-4 epochs keep it fast."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from art.defences.postprocessor import ClassLabels, ReverseSigmoid
from art.estimators.classification import PyTorchClassifier
from click.testing import CliRunner
from torch import nn

import mi_art
from mi_art.defenses import (DEFENSES, Defense, DefenseRecord, Trained, VIBHead, accountant_epsilon,
                             check_defense_params, coco, defended_architecture, gaussian_kl, get_defense, hsic,
                             register_defense, smoothed_targets, smoothing_factor, train_defended_target, transfer,
                             unregister_defense, wrap_with_defense)
from mi_art.defenses import bido as bido_mod
from mi_art.defenses import mid as mid_mod
from mi_art.defenses.common import hooks_left, snapshot
from mi_art.defenses.label_smoothing import soft_cross_entropy
from mi_art.defenses.postprocessing import RowwiseClassLabels
from mi_art.evaluations.cli import main
from mi_art.features import last_linear, logits_and_features
from mi_art.training import train_classifier

FAST = dict(epochs=1, batch_size=32, lr=2e-3, device="cpu", seed=0)


@pytest.fixture(scope="module")
def data(small_digits):
    return small_digits


@pytest.fixture(scope="module")
def prior(data):
    return mi_art.train_gmi_prior(data.public.x, steps=5, batch_size=32, width=8, device="cpu", seed=0)


# --------------------------------------------------------------------------------------------------
# MID
# --------------------------------------------------------------------------------------------------


def test_gaussian_kl_hand_cases():
    assert gaussian_kl(torch.zeros(3, 4), torch.ones(3, 4)).item() == pytest.approx(0.0, abs=1e-7)
    mu = torch.tensor([[1.0, 2.0]])
    sigma = torch.tensor([[2.0, 0.5]])
    expected = 0.5 * ((1 + 4 - 1 - math.log(4)) + (4 + 0.25 - 1 - math.log(0.25)))
    assert gaussian_kl(mu, sigma).item() == pytest.approx(expected, rel=1e-6)
    assert gaussian_kl(mu, sigma, bits=True).item() == pytest.approx(expected / math.log(2), rel=1e-6)
    # mean over the batch, sum over dimensions
    two = gaussian_kl(torch.cat([mu, torch.zeros(1, 2)]), torch.cat([sigma, torch.ones(1, 2)]))
    assert two.item() == pytest.approx(expected / 2, rel=1e-6)


def test_vib_head_train_samples_eval_uses_mu():
    torch.manual_seed(0)
    model = mi_art.MLP(1, 5, 8, feature_dim=16)
    head = mid_mod.add_vib_head(model, 5)
    assert isinstance(model.fc, VIBHead) and head.k == 8
    assert last_linear(model) is head.fc  # z is the new penultimate feature
    x = torch.rand(6, 1, 8, 8)
    model.eval()
    logits, feats = logits_and_features(model, x)
    mu, sigma = head.statistics(model.embed(x))
    assert torch.allclose(feats, mu) and torch.equal(model(x), logits)
    assert torch.all(sigma > 0) and torch.allclose(sigma, F.softplus(head.encoder(model.embed(x))[:, 8:] - 5))
    model.train()
    assert not torch.allclose(model(x), model(x))  # z = mu + sigma * eps while training
    y = torch.zeros(6, dtype=torch.long)
    torch.manual_seed(1)
    with_kl = mid_mod.mid_loss(head, beta=0.5)(model, x, y)
    kl_bits = gaussian_kl(head.last_mu, head.last_sigma, bits=True)
    torch.manual_seed(1)
    ce = mid_mod.mid_loss(head, beta=0.0)(model, x, y)
    assert kl_bits.item() > 0
    assert with_kl.item() == pytest.approx(ce.item() + 0.5 * kl_bits.item(), rel=1e-5)


# --------------------------------------------------------------------------------------------------
# BiDO
# --------------------------------------------------------------------------------------------------


def test_hsic_independent_identical_and_dependent():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 10, generator=g)
    indep = torch.randn(300, 10, generator=g)
    assert hsic(x, x).item() == pytest.approx(1.0, abs=1e-5)
    independent = hsic(x, indep).item()
    assert independent < 0.05
    dependent = hsic(x, x ** 2 + 0.1 * indep, sigma=1.0).item()  # non-linear, uncorrelated dependence
    assert dependent > 0.15 and dependent > 4 * independent
    labels = F.one_hot(torch.arange(300) % 4, 4)
    assert hsic(labels, labels, kernel_x="linear", kernel_y="linear").item() == pytest.approx(1.0, abs=1e-5)
    assert 0 <= hsic(x, labels, kernel_y="linear").item() < 0.05


def test_coco_and_hsic_fall_as_dependence_weakens():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 6, generator=g)
    noise = torch.randn(200, 6, generator=g)
    mixes = [(x + k * noise) / math.sqrt(1 + k * k) for k in (0.0, 0.5, 1.0, 3.0, 100.0)]  # unit variance
    for measure in (coco, hsic):
        values = [measure(x, y, sigma=1.0).item() for y in mixes]
        assert all(a > b for a, b in zip(values, values[1:])), (measure.__name__, values)
        assert values[0] > 1.5 * values[-1] > 0
    assert coco(x, x, sigma=1.0).item() == pytest.approx(coco(x, x.clone(), sigma=1.0).item())


def test_bido_hooks_capture_relus_and_are_removed():
    model = mi_art.make_classifier("cnn", 1, 5, 8)
    names = bido_mod.hidden_modules(model)
    assert names and all(isinstance(model.get_submodule(n), nn.ReLU) for n in names)
    with bido_mod.capture_hidden(model, names) as store:
        y = torch.tensor([0, 1, 2, 3])
        x = torch.rand(4, 1, 8, 8)
        plain = bido_mod.bido_loss(store, 5, lambda_x=0.0, lambda_y=0.0)(model, x, y)
        assert plain.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)
        store.clear()
        model(x)
        assert len(store) == len(names) and all(t.dim() == 2 and len(t) == 4 for t in store)
        reg = bido_mod.bido_loss(store, 5, lambda_x=1.0, lambda_y=0.0)(model, x, y)
        assert reg.item() > plain.item()  # + lambda_x * d(X, Z) > 0
        keep = bido_mod.bido_loss(store, 5, lambda_x=0.0, lambda_y=1.0)(model, x, y)
        assert keep.item() < plain.item()  # - lambda_y * d(Z, Y) < 0
    assert hooks_left(model) == []
    with pytest.raises(ValueError, match="layers"):
        bido_mod.hidden_modules(model, ["no.such.layer"])


# --------------------------------------------------------------------------------------------------
# Negative label smoothing
# --------------------------------------------------------------------------------------------------


def test_smoothed_targets_hand_case():
    t = smoothed_targets(torch.tensor([0, 2]), 3, -0.3)
    expected = torch.tensor([[1.2, -0.1, -0.1], [-0.1, -0.1, 1.2]])
    assert torch.allclose(t, expected, atol=1e-6)
    assert torch.allclose(t.sum(1), torch.ones(2))
    assert torch.equal(smoothed_targets(torch.tensor([1]), 3, 0.0), torch.tensor([[0.0, 1.0, 0.0]]))
    logits = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    assert soft_cross_entropy(logits, smoothed_targets(y, 3, 0.0)).item() == pytest.approx(
        F.cross_entropy(logits, y).item(), rel=1e-6)


def test_warmup_schedule():
    factors = [smoothing_factor(e, 8) for e in range(8)]
    assert factors[:4] == [0.0] * 4  # first half: no smoothing
    assert factors[4] == pytest.approx(0.5) and factors[5:] == [1.0, 1.0, 1.0]
    assert all(a <= b for a, b in zip(factors, factors[1:]))


def test_nls_training_follows_schedule(data):
    model, rec = train_defended_target("negative-label-smoothing", data, model="cnn-small", **dict(FAST, epochs=4),
                                       alpha=-0.2)
    assert rec.details["alpha_per_epoch"] == pytest.approx([0.0, 0.0, -0.2, -0.2])
    with pytest.warns(UserWarning, match="increases model inversion"):
        train_defended_target("negative-label-smoothing", data, model="cnn-small", **FAST, alpha=0.1)


# --------------------------------------------------------------------------------------------------
# TL-DMI
# --------------------------------------------------------------------------------------------------


def test_tl_frozen_layers_bit_identical(data):
    torch.manual_seed(0)
    model = mi_art.make_classifier("cnn", 1, data.num_public_classes, 8)  # conv, bn, embed linear, fc
    model = transfer.pretrain_public(model, data, **FAST)
    before = {n: snapshot(m) for n, m in transfer.freezable_layers(model)}
    model, frozen = transfer.fine_tune_private(model, data, 2, **dict(FAST, epochs=2))
    assert frozen == ["body.0", "body.1"]  # conv and its BatchNorm
    layers = dict(transfer.freezable_layers(model))
    for name in frozen:
        after = snapshot(layers[name])
        assert after.keys() == before[name].keys()
        assert all(torch.equal(after[k], before[name][k]) for k in after), name  # params and BN statistics
    assert not torch.equal(layers["embed.1"].weight.detach(), before["embed.1"]["weight"])  # the rest trained
    assert last_linear(model).out_features == data.num_classes
    assert all(p.requires_grad for p in model.parameters())


def test_tl_freeze_counts(data):
    model = mi_art.make_classifier("cnn", 1, 5, 8)
    assert transfer.resolve_freeze(model, 0.5) == 2 and transfer.resolve_freeze(model, 3) == 3
    with pytest.raises(ValueError, match="freeze=4 asks to freeze more layers than the model has"):
        transfer.resolve_freeze(model, 4)


# --------------------------------------------------------------------------------------------------
# Every defense: a plain module that ART's class_gradient and GMI accept
# --------------------------------------------------------------------------------------------------

EXTRA = {"dp-sgd": {"noise_multiplier": 1.0, "accountant": "prv"}, "tl": {"freeze": 2}, "bido": {"measure": "coco", "lambda_y": 5.0}}
#: Defenses that apply to some architectures only: the target they are tried on (default "cnn").
MODELS = {"rolss": "resnet"}


@pytest.mark.parametrize("defense", DEFENSES)
def test_defended_model_through_art_and_gmi(defense, data, prior):
    model, rec = train_defended_target(defense, data, model=MODELS.get(defense, "cnn"), **FAST, **EXTRA.get(defense, {}))
    assert isinstance(rec, DefenseRecord) and rec.defense == defense
    assert not model.training and hooks_left(model) == []
    assert 0.3 < rec.test_accuracy <= 1.0 and rec.train_time_s > 0
    json.loads(json.dumps(rec.to_dict()))
    x = torch.from_numpy(data.private_test.x[:6])
    logits, feats = logits_and_features(model, x)
    assert logits.shape == (6, data.num_classes) and feats.shape[1] == last_linear(model).in_features
    if defense == "mid":
        assert isinstance(model.fc, VIBHead)
    if defense == "dp-sgd":
        d = rec.details
        assert rec.accountant == "prv"
        assert rec.epsilon == pytest.approx(accountant_epsilon(1.0, d["sample_rate"], d["steps"], rec.delta, "prv"))
    else:
        assert rec.epsilon is None and rec.delta is None

    classifier = wrap_with_defense(model, rec)
    grads = classifier.class_gradient(x.numpy(), label=data.private_test.y[:6])
    assert grads.shape == (6, 1, 1, 8, 8) and np.isfinite(grads).all() and np.abs(grads).sum() > 0
    if rec.postprocessor is not None:  # gradients are those of the bare model
        bare = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=5,
                                 clip_values=(0.0, 1.0))
        np.testing.assert_allclose(grads, bare.class_gradient(x.numpy(), label=data.private_test.y[:6]), rtol=1e-6)
        assert not np.allclose(classifier.predict(x.numpy()), bare.predict(x.numpy()))

    gen, critic = prior
    attack = mi_art.GMI(classifier, gen, critic, iterations=3, n_reconstructions=1, batch_size=5, seed=0,
                        verbose=False)
    images = attack.infer(y=np.arange(data.num_classes))
    assert images.shape == (5, 1, 8, 8) and np.isfinite(images).all()
    assert hooks_left(model) == [] and not model.training


def test_record_contents(data):
    _, rec = train_defended_target("reverse-sigmoid", data, **FAST, beta=0.5)
    assert isinstance(rec.postprocessor, ReverseSigmoid) and rec.postprocessor.beta == 0.5
    d = rec.to_dict()
    assert d["postprocessor"] == {"class": "ReverseSigmoid", "params": {"beta": 0.5, "gamma": 0.1}}
    assert d["params"] == {"beta": 0.5, "gamma": 0.1} and d["epsilon"] is None
    assert d["training"]["epochs"] == 1 and d["input_shape"] == [1, 8, 8]


def test_class_labels_one_hot_per_row():
    preds = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert isinstance(RowwiseClassLabels(), ClassLabels)
    np.testing.assert_array_equal(RowwiseClassLabels()(preds), [[1, 0, 0], [0, 0, 1]])


def test_user_module_is_not_modified(data):
    user = mi_art.make_classifier("cnn-small", 1, 5, 8)
    state = snapshot(user)
    model, _ = train_defended_target("mid", data, model=user, **FAST)
    assert model is not user and isinstance(user.fc, nn.Linear)
    assert all(torch.equal(v, state[k]) for k, v in snapshot(user).items())


# --------------------------------------------------------------------------------------------------
# Parameter checks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("defense, params, match", [
    ("dp-sgd", {"target_epsilon": 0.0}, "target_epsilon"),
    ("dp-sgd", {"target_epsilon": -1.0}, "target_epsilon"),
    ("dp-sgd", {"noise_multiplier": 0.0}, "noise_multiplier"),
    ("dp-sgd", {}, "exactly one of target_epsilon"),
    ("dp-sgd", {"target_epsilon": 1.0, "noise_multiplier": 1.0}, "exactly one of target_epsilon"),
    ("dp-sgd", {"noise_multiplier": 1.0, "target_delta": 1.5}, "target_delta"),
    ("dp-sgd", {"noise_multiplier": 1.0, "accountant": "moments"}, "accountant"),
    ("dp-sgd", {"noise_multiplier": 1.0, "max_grad_norm": 0}, "max_grad_norm"),
    ("negative-label-smoothing", {"alpha": 1.0}, "alpha"),
    ("negative-label-smoothing", {"alpha": -1.5}, "alpha"),
    ("mid", {"beta": -0.1}, "beta"),
    ("bido", {"measure": "mmd"}, "measure"),
    ("bido", {"lambda_x": -1}, "lambda_x"),
    ("tl", {"freeze": 50}, "freeze"),
    ("tl", {"freeze": 1.5}, "freeze"),
    ("reverse-sigmoid", {"beta": 0}, "beta"),
    ("rounded", {"decimals": 0}, "decimals"),
    ("mid", {"gamma": 1.0}, "unknown parameter.*'gamma'.*'mid'.*beta"),
    ("none", {"beta": 1.0}, "unknown parameter.*'beta'"),
    ("class-labels", {"cutoff": 0.5}, "unknown parameter.*'cutoff'"),
])
def test_bad_parameters(defense, params, match, data):
    with pytest.raises(ValueError, match=match):
        train_defended_target(defense, data, **FAST, **params)


def test_unknown_defense_lists_valid_names(data):
    with pytest.raises(ValueError,
                       match="unknown defense 'dp'.*dp-sgd.*mid.*bido.*negative-label-smoothing.*tl.*class-labels"):
        train_defended_target("dp", data)
    with pytest.raises(ValueError, match="epochs"):
        train_defended_target("none", data, epochs=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="dataset"):
            train_defended_target("none", data.private_train)


def test_a_defense_is_found_under_its_earlier_name_with_a_note():
    """"nls" is now "negative-label-smoothing": the registry takes the earlier name (case and "_" forgiven as for
    every name), reports it as renamed, and lists only the name now."""
    from mi_art.defenses import check_defense_params
    from mi_art.renames import RenamedWarning

    with pytest.warns(RenamedWarning, match="the defense 'nls' is now called 'negative-label-smoothing'") as said:
        assert get_defense("nls") is get_defense("NLS") is get_defense("negative-label-smoothing")
    assert said[0].filename == __file__
    with pytest.warns(RenamedWarning):
        assert check_defense_params("nls", {"alpha": -0.1})["alpha"] == -0.1
    assert "nls" not in DEFENSES and "nls" not in ", ".join(DEFENSES)
    with pytest.raises(ValueError, match="'nls' is the earlier name of the defense 'negative-label-smoothing'"):
        register_defense(type("Mine", (Defense,), {"name": "nls"})())


class ShrunkWeights(Defense):
    """A toy defense for the registry tests: plain training, then the head's weights scaled down."""

    name = "shrunk-weights"
    summary = "test only"
    defaults = {"factor": 0.5}

    def check_params(self, params, n_train):
        out = super().check_params(params, n_train)
        out["factor"] = mi_art.validation.check_number("factor", out["factor"], low=0, high=1, low_open=True)
        return out

    def train(self, model, dataset, params, settings):
        train = dataset.private_train
        model = train_classifier(model, train.x, train.y, desc=self.name, **settings)
        with torch.no_grad():
            mi_art.last_linear(model).weight.mul_(params["factor"])
        return Trained(model, details={"factor": params["factor"]})


@pytest.fixture
def registered():
    defense = register_defense(ShrunkWeights())
    yield defense
    unregister_defense(defense.name)


def test_registry_lists_every_built_in_defense_and_refuses_unknown_ones():
    assert {"none", "dp-sgd", "mid", "bido", "negative-label-smoothing", "tl", "trap-mid",
            "reverse-sigmoid"} <= set(DEFENSES)
    assert get_defense("Trap_MID").name == "trap-mid"
    with pytest.raises(ValueError, match="unknown defense 'dpsgd'; valid names: none, dp-sgd"):
        get_defense("dpsgd")
    with pytest.raises(ValueError, match="already registered"):
        register_defense(type("Other", (Defense,), {"name": "mid"})())
    with pytest.raises(ValueError, match="lower-case"):
        register_defense(type("Bad", (Defense,), {"name": "Bad_Name"})())


def test_a_registered_defense_trains_checks_and_builds(registered, data):
    assert "shrunk-weights" in DEFENSES
    with pytest.raises(ValueError, match="factor"):
        check_defense_params("shrunk-weights", {"factor": 2})
    model, rec = train_defended_target("shrunk-weights", data, **dict(FAST, epochs=2), factor=0.25)
    assert rec.defense == "shrunk-weights" and rec.details == {"factor": 0.25} and rec.params == {"factor": 0.25}
    arch = defended_architecture("shrunk-weights", data, model="cnn", factor=0.25)
    arch.load_state_dict(model.state_dict())


def test_a_registered_defense_runs_in_the_grid(registered, tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text("""
name = "registry"
attacks = ["gmi"]
variants = ["baseline"]
seeds = [0]
target_epochs = 2
judge_epochs = 2
iterations = 5
n_reconstructions = 1
gmi_steps = 3
gan_width = 8
surrogate_archs = ["mlp"]
surrogate_steps = 2

[[datasets]]
name = "digits"

[[defenses]]
name = "shrunk-weights"
params = [{ factor = 0.25 }]
""")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", "--config", str(grid), "--out", str(out), "--threads", "1",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = json.loads((out / "results.json").read_text())
    assert [(r["defense"], r["defense_params"]) for r in rows] == [("shrunk-weights", {"factor": 0.25})]
    bad = CliRunner().invoke(main, ["evaluate", "--config", str(grid), "--defense", "shrunk-weights:factor=3",
                                    "--out", str(tmp_path / "bad"), "--dry-run"])
    assert bad.exit_code != 0 and "factor" in bad.output
