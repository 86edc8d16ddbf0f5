"""A model the user trained with Opacus is attacked with its privacy on record: epsilon, delta, accountant, noise
and steps from its PrivacyEngine (or given by hand) reach the attack's record and its printed line; DP-SGD's
delta is called target_delta, as Opacus calls it, with the old name still accepted."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mi_art.defenses import check_defense_params, opacus_record
from mi_art.defenses import dp
from mi_art.evaluations import experiment as E
from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.report import privacy_line

TINY = dict(dataset="digits", target_epochs=1, judge_epochs=1, gmi_steps=2, iterations=2, n_reconstructions=1,
            augment="none", attack="gmi", variant="baseline")


def _opacus_trained(digits, steps: int = 4):
    """A tiny classifier trained by the user's own Opacus loop: make_private_with_epsilon, a few steps."""
    from opacus import PrivacyEngine

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5))
    train = digits.private_train
    loader = DataLoader(TensorDataset(torch.from_numpy(train.x), torch.from_numpy(train.y)), batch_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus's secure-RNG and backward-hook notices
        engine = PrivacyEngine(accountant="rdp")  # Opacus's default "prv" takes 4 s to find the noise here
        model, optimizer, loader = engine.make_private_with_epsilon(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.5), data_loader=loader,
            target_epsilon=8.0, target_delta=1e-5, epochs=1, max_grad_norm=1.0)
        for step, (x, y) in enumerate(loader):
            if step == steps:
                break
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model, engine


@pytest.fixture(scope="module")
def trained(digits):
    return _opacus_trained(digits)


def test_an_opacus_model_is_attacked_with_its_privacy_on_record(trained, digits, tmp_path):
    model, engine = trained
    record = opacus_record(engine, target_delta=1e-5, max_grad_norm=1.0, model=model, dataset=digits)
    assert record.defense == "dp-sgd" and record.delta == 1e-5 and record.accountant == "rdp"
    assert record.epsilon == pytest.approx(engine.get_epsilon(1e-5)) and record.epsilon > 0
    assert record.details["steps"] == 4 and record.details["noise_multiplier"] > 0
    assert record.details["n_train"] == len(digits.private_train) and record.details["source"] == "privacy-engine"
    assert 0 <= record.test_accuracy <= 1

    bench = E.Workbench(E.ExperimentConfig(**TINY), ArtifactCache(tmp_path), data=digits)
    result = E.run_attack(bench, target=model.to_standard_module(), target_record=record)
    saved = json.loads(json.dumps(E.public_record(result), default=str))  # what mi-art attack writes
    assert saved["defense"] == "dp-sgd" and saved["epsilon"] == pytest.approx(record.epsilon)
    assert saved["delta"] == 1e-5 and saved["defense_record"]["accountant"] == "rdp"
    details = saved["defense_record"]["details"]
    assert details["steps"] == 4 and details["noise_multiplier"] == pytest.approx(record.details["noise_multiplier"])
    line = privacy_line(saved)
    assert f"epsilon {record.epsilon:.2f} at delta 1e-05 (rdp accountant" in line and "4 steps" in line
    assert f"noise multiplier {record.details['noise_multiplier']:.3f}" in line and "Opacus" in line
    assert privacy_line({"defense": "none"}) is None


def test_the_facts_may_be_given_by_hand(trained):
    record = opacus_record(target_delta=1e-5, noise_multiplier=1.1, sample_rate=0.05, steps=200, n_train=500)
    assert record.epsilon == pytest.approx(dp.accountant_epsilon(1.1, 0.05, 200, 1e-5))
    assert record.accountant == "rdp" and record.details["source"] == "by hand" and record.details["steps"] == 200
    assert opacus_record(target_delta=1e-5, epsilon=3.0, accountant="prv").epsilon == 3.0
    with pytest.raises(ValueError, match="target_delta is required"):
        opacus_record(epsilon=3.0)
    with pytest.raises(ValueError, match="give privacy_engine, or epsilon, or noise_multiplier"):
        opacus_record(target_delta=1e-5, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="steps given with privacy_engine"):
        opacus_record(trained[1], target_delta=1e-5, steps=3)
    with pytest.warns(DeprecationWarning, match="now called target_delta"):
        assert opacus_record(delta=1e-5, epsilon=1.0).delta == 1e-5


def test_run_attack_wants_the_target_its_record_describes(digits, tmp_path):
    bench = E.Workbench(E.ExperimentConfig(**TINY), ArtifactCache(tmp_path), data=digits)
    record = opacus_record(target_delta=1e-5, epsilon=1.0)
    with pytest.raises(ValueError, match="pass target= too"):
        E.run_attack(bench, target_record=record)
    with pytest.raises(ValueError, match="target_record must be a mi_art.defenses.DefenseRecord"):
        E.run_attack(bench, target=nn.Linear(64, 5), target_record={"epsilon": 1.0})


def test_dp_sgd_takes_target_delta_and_still_delta():
    """Opacus's name; the earlier one is renamed with a DeprecationWarning; both at once are refused."""
    assert check_defense_params("dp-sgd", {"noise_multiplier": 1.0, "target_delta": 1e-4})["target_delta"] == 1e-4
    with pytest.warns(DeprecationWarning, match="delta is now called target_delta") as said:
        checked = check_defense_params("dp-sgd", {"noise_multiplier": 1.0, "delta": 1e-4})
    assert checked["target_delta"] == 1e-4 and "delta" not in checked
    assert said[0].filename == __file__  # the user's line: Python shows a DeprecationWarning there by default
    with pytest.raises(ValueError, match="give target_delta only"):
        check_defense_params("dp-sgd", {"noise_multiplier": 1.0, "delta": 1e-4, "target_delta": 1e-4})
    assert "target_delta" in dp.DEFAULTS and "delta" not in dp.DEFAULTS
    assert dp.DPSGD().defaults_key({"delta": 1e-4}) == {} == dp.DPSGD().defaults_key({"target_delta": 1e-4})
