"""Trap-MID (:mod:`mi_art.defenses.trap`): trapdoors planted by triggers that follow the signed gradient, a plain
classifier at inference, its parameter checks and the warning when its trapdoors were not learned."""
from __future__ import annotations

import warnings

import pytest
import torch

import mi_art
from mi_art.defenses import check_defense_params, train_defended_target, trap


FAST = dict(epochs=2, batch_size=32, lr=2e-3, device="cpu", seed=0)


@pytest.fixture(scope="module")
def data(small_digits):
    return small_digits


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


def test_trap_mid_says_when_its_trapdoors_were_not_learned(data):
    with pytest.warns(UserWarning, match="Trap-MID did not plant its trapdoors"):
        _, rec = train_defended_target("trap-mid", data, **dict(FAST, epochs=1), alpha=0.02)
    assert rec.details["trapdoor_test_accuracy"] < trap.TRAPDOOR_LEARNED
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # learned (0.97 measured): no warning
        train_defended_target("trap-mid", data, **dict(FAST, epochs=12), alpha=0.5)
