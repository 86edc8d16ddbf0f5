"""Defenses as deployed (issue 19): DP-SGD fine-tuning of a publicly pre-trained target, Trap-MID, and
the registry every defense is looked up in (a defense registered here runs in the grid). Digits, a few
epochs: each test trains seconds."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from click.testing import CliRunner
from opacus.accountants import RDPAccountant
from torch import nn

import mi_art
from mi_art.defenses import (DEFENSES, Defense, Trained, check_defense_params, defended_architecture, get_defense,
                             register_defense, train_defended_target, unregister_defense)
from mi_art.defenses import trap
from mi_art.defenses.common import parameterised_leaves, snapshot
from mi_art.defenses.dp import default_delta, private_architecture
from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.cli import main
from mi_art.evaluations.experiment import ExperimentConfig, Workbench
from mi_art.pretraining import pretrain_classifier, replace_head
from mi_art.training import train_classifier

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


# --------------------------------------------------------------------------------------------------
# DP-SGD fine-tuning
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Trap-MID
# --------------------------------------------------------------------------------------------------


def test_trap_mid_plants_trapdoors_and_stays_a_plain_classifier(data):
    params = dict(alpha=0.5, trigger_step=0.01)  # a blend that 8x8 digits can learn in 12 epochs (measured 0.97)
    model, rec = train_defended_target("trap-mid", data, **dict(FAST, epochs=12), **params)
    plain, _ = train_defended_target("trap-mid", data, **dict(FAST, epochs=12), **params, beta=0.0)
    assert rec.details["trapdoor_test_accuracy"] > 0.8  # triggered test images go to the trigger's class
    assert _trapdoor_rate(plain, data, params["alpha"]) < 0.4  # beta = 0: no trapdoor is learned (chance 0.2)
    assert rec.test_accuracy > 0.7
    assert type(model) is type(mi_art.make_classifier("cnn", 1, data.num_classes, 8))  # no trigger at inference
    assert rec.params == {"alpha": 0.5, "beta": 0.2, "trigger_step": 0.01, "discriminator": True}


def _trapdoor_rate(model, data, alpha):
    torch.manual_seed(0)
    triggers = torch.rand((data.num_classes, *data.input_shape))
    return trap.trapdoor_accuracy(model, data.private_test.x, triggers, alpha)


def test_trap_mid_triggers_follow_the_signed_gradient_and_stay_in_range():
    torch.manual_seed(0)
    model = mi_art.make_classifier("cnn", 1, 4, 8)
    loss = trap.TrapdoorLoss(4, (1, 8, 8), alpha=0.1, beta=0.2, trigger_step=0.05, discriminator=True, lr=1e-3,
                             device=torch.device("cpu"), seed=0)
    start = loss.triggers.clone()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(4, (16,))
    value = loss(model.train(), x, y)
    step = (loss.triggers - start).abs()
    moved = step > 0
    assert moved.float().mean() > 0.5  # most pixels of the drawn classes' triggers move
    new = loss.triggers[moved]
    assert (torch.isclose(step[moved], torch.tensor(0.05), atol=1e-6) | (new == 0) | (new == 1)).all()  # sign step
    assert loss.triggers.min() >= 0 and loss.triggers.max() <= 1
    assert value.requires_grad and torch.isfinite(value)
    assert model.training  # the trigger step's eval mode is undone


@pytest.mark.parametrize("params, match", [({"alpha": 0.0}, "alpha"), ({"beta": 1.0}, "beta"),
                                           ({"trigger_step": -1}, "trigger_step"), ({"gamma": 1}, "unknown")])
def test_trap_mid_parameter_checks(params, match):
    with pytest.raises(ValueError, match=match):
        check_defense_params("trap-mid", params)


# --------------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------------


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
    assert {"none", "dp-sgd", "mid", "bido", "nls", "tl", "trap-mid", "reverse-sigmoid"} <= set(DEFENSES)
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
    model, rec = train_defended_target("shrunk-weights", data, **FAST, factor=0.25)
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
eval_epochs = 2
iterations = 5
n_reconstructions = 1
prior_steps = 3
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


# --------------------------------------------------------------------------------------------------
# the report: the frontier reads
# --------------------------------------------------------------------------------------------------


def _cell(out, cid, index, label, defense, params, natural, acc, epsilon=None, details=None):
    row = {"cell_id": cid, "index": index, "dataset": "digits", "defense": defense, "defense_params": params,
           "defense_label": label, "natural_accuracy": natural, "epsilon": epsilon,
           "delta": None if epsilon is None else 1 / 150, "attack": "gmi", "variant": "lomma", "seed": 0,
           "artifact_seed": 0, "acc@1": acc, "acc@1_std": 0.0, "acc@5": 1.0, "acc@5_std": 0.0, "knn_dist": 10.0,
           "fid_eval_features": None, "seconds": 1.0, "cell_seconds": 1.0, "evaluator_test_accuracy": 0.95,
           "n_identities": 5, "n_classes": 5, "n_reconstructions": 5, "iterations": 10}
    if details is not None:
        row["defense_record"] = {"accountant": "rdp", "details": details}
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "cells" / f"{cid}.json").write_text(json.dumps(row))


def test_report_says_what_each_defense_bought_and_what_epsilon_bounds(tmp_path):
    from mi_art.evaluations.report import EPSILON_NOTE, render_report

    out = tmp_path / "out"
    _cell(out, "a", 0, "none", "none", {}, 0.95, 0.80)
    _cell(out, "b", 1, "dp-sgd(target_epsilon=8.0)", "dp-sgd", {"target_epsilon": 8.0}, 0.85, 0.40, epsilon=7.96,
          details={"noise_multiplier": 2.94, "sample_rate": 1.0, "steps": 40, "trainable": 2,
                   "trained_parameters": 3000, "pretrain_epochs": 60})
    _cell(out, "c", 2, "trap-mid", "trap-mid", {}, 0.93, 0.55)
    render_report(out)
    md = (out / "report.md").read_text()
    assert ("**dp-sgd(target_epsilon=8.0)** at epsilon 7.96: natural accuracy 0.850 (-10.0 points against the "
            "undefended 0.950); the strongest attack on it, gmi/lomma, reaches Acc@1 0.400 (-40.0 points against "
            "0.800 undefended); chance is 0.200.") in md
    assert "**trap-mid**: natural accuracy 0.930 (-2.0 points" in md
    assert "| dp-sgd(target_epsilon=8.0) | 0 | 0.850 | 7.96 | 0.00667 | rdp | 2.940 | 1.000 | 40 | 2 (3000 parameters) " \
           "| yes |" in md
    assert EPSILON_NOTE in md
    assert (out / "plots" / "frontier-digits.png").is_file()


def test_report_without_dp_targets_has_no_epsilon_note(tmp_path):
    from mi_art.evaluations.report import EPSILON_NOTE, render_report

    out = tmp_path / "out"
    _cell(out, "a", 0, "none", "none", {}, 0.95, 0.80)
    _cell(out, "c", 1, "trap-mid", "trap-mid", {}, 0.93, 0.55)
    render_report(out)
    md = (out / "report.md").read_text()
    assert EPSILON_NOTE not in md and "### DP-SGD targets" not in md


def test_report_says_what_a_postprocessor_changed_at_each_access_level(tmp_path):
    from mi_art.evaluations.report import render_report

    out = tmp_path / "out"
    _cell(out, "a", 0, "none", "none", {}, 0.95, 0.80)
    _cell(out, "b", 1, "none", "none", {}, 0.95, 0.70)
    _cell(out, "c", 2, "reverse-sigmoid", "reverse-sigmoid", {}, 0.95, 0.80)
    _cell(out, "d", 3, "reverse-sigmoid", "reverse-sigmoid", {}, 0.95, 0.20)
    for cid in "bd":  # the second cell of each target: the same attack through predict's scores
        path = out / "cells" / f"{cid}.json"
        row = json.loads(path.read_text())
        path.write_text(json.dumps({**row, "attack": "gmi[black-box]", "access": "black-box"}))
    render_report(out)
    md = (out / "report.md").read_text()
    assert ("**reverse-sigmoid**: natural accuracy 0.950 (+0.0 points against the undefended 0.950); white-box: "
            "gmi/lomma reaches 0.800 (+0.0 points against 0.800 undefended); black-box: gmi[black-box]/lomma reaches "
            "0.200 (-50.0 points against 0.700 undefended); chance is 0.200.") in md


def test_trap_mid_says_when_its_trapdoors_were_not_learned(data):
    with pytest.warns(UserWarning, match="Trap-MID did not plant its trapdoors"):
        _, rec = train_defended_target("trap-mid", data, **dict(FAST, epochs=1), alpha=0.02)
    assert rec.details["trapdoor_test_accuracy"] < trap.TRAPDOOR_LEARNED
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # learned (0.97 measured): no warning
        train_defended_target("trap-mid", data, **dict(FAST, epochs=12), alpha=0.5)


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
