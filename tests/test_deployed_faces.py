"""Targets as deployed (:mod:`mi_art.deployed_faces`): dlib's recogniser with a trained head (and optionally its
last block), its descriptor centred on the public faces; a head-only target, DP-SGD included, trains no weight of
the recogniser."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn


@pytest.mark.parametrize("arch, trained_units", [("dlib-head", ()), ("dlib-finetune", ("units.13.",))])
def test_deployed_target_trains_only_its_head_and_chosen_block(dlib_state, arch, trained_units):
    from mi_art import make_classifier, train_classifier

    rng = np.random.default_rng(0)
    x, y = rng.random((12, 3, 32, 32), dtype=np.float32), np.repeat(np.arange(3), 4)
    model = make_classifier(arch, 3, 3, 32)
    head = model.fc.weight.detach().clone()
    train_classifier(model, x, y, epochs=2, batch_size=6, lr=0.01)
    assert not torch.equal(model.fc.weight, head)
    state = model.backbone.state_dict()
    changed = {k for k in dlib_state if not torch.equal(state[k], dlib_state[k])}
    expected = {k for k in dlib_state if k.startswith(trained_units) or (trained_units and k.startswith("descriptor"))}
    assert changed == expected


def test_centre_on_takes_the_public_faces_common_direction_out_of_the_heads_input(dlib_state):
    from mi_art import make_classifier

    rng = np.random.default_rng(0)
    public, x = rng.random((10, 3, 16, 16), dtype=np.float32), torch.from_numpy(rng.random((4, 3, 16, 16),
                                                                                           dtype=np.float32))
    model = make_classifier("dlib-head", 3, 3, 16)
    plain = model.embedding(x)
    model.centre_on(torch.from_numpy(public))
    with torch.no_grad():
        units = nn.functional.normalize(model.backbone(torch.from_numpy(public)), dim=1)
    assert torch.allclose(model.centre, units.mean(0), atol=1e-6) and model.centre.norm() > 0.5
    assert torch.allclose((units - model.centre).mean(0), torch.zeros(128), atol=1e-6)
    centred = model.embedding(x)
    assert torch.allclose(centred.norm(dim=1), torch.full((4,), 128 ** 0.5), atol=1e-3)
    assert (centred - plain).abs().max() > 0.5  # the head sees the centred descriptor
    assert torch.equal(model.state_dict()["centre"], model.centre)  # saved and loaded with the model


def test_workbench_centres_deployed_targets_on_public_images_and_dp_trains_the_head_alone(dlib_state, small_digits,
                                                                                         tmp_path):
    from mi_art.evaluations.cache import ArtifactCache
    from mi_art.evaluations.experiment import ExperimentConfig, Workbench

    dp = {"target_epsilon": 8.0, "trainable": "head", "dp_epochs": 1, "dp_optimizer": "sgd", "dp_lr": 1.0,
          "target_delta": 1e-5, "dp_augment": "none"}
    config = ExperimentConfig(dataset="digits", target_arch="dlib-head", target_epochs=1, defense="dp-sgd",
                              defense_params=dp, device="cpu")
    bench = Workbench(config, ArtifactCache(tmp_path), data=small_digits)
    assert bench.key("target")["embedding"] == "centred-on-public"
    target = bench.target()
    with torch.no_grad():
        units = nn.functional.normalize(target.backbone(torch.from_numpy(small_digits.public.x)), dim=1)
    assert torch.allclose(target.centre, units.mean(0), atol=1e-5)
    state = target.backbone.state_dict()
    assert all(torch.equal(state[k], dlib_state[k]) for k in dlib_state)  # DP-SGD trained no recogniser weight
    assert bench.defense_record["details"]["trainable"] == "head"
    assert bench.defense_record["delta"] == 1e-5 and 0 < bench.defense_record["epsilon"] <= 8.0 + 1e-6
