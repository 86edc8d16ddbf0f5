"""One table of bad inputs, by input class: every case must end in a clear error that names the
parameter (a ``ValueError`` from Python, a click usage error from the command line), never in a raw
traceback from deep inside torch or click, nor in a silent wrong result.

Input classes: numbers (non-finite values, zero or negative counts, floats where an integer is
needed, bools, strings), labels (only class indices or exact one-hot rows), CLI options, data
options (``--data-option`` keys and values, a grid's ``options``), grid keys and defense parameters.

:func:`count_cases` counts the table per input class (cases tried, and cases whose validation is still
pending); ``python tests/test_bad_input.py`` runs the table and prints, per input class, the cases
tried and the cases that give a clear error.

Everything is sized for a shared 2-core machine: each case fails before any training (or, where the
validation is still pending, after a few steps on 8x8 digits).
"""
from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import torch
from click.testing import CliRunner

#: Cases whose check is not wired yet: they stay in the table and are expected to fail (xfail, not
#: strict) until the check exists. Empty: every case gives a clear error.
PENDING = pytest.mark.xfail(reason="validation pending", strict=False)
PENDING_IDS: frozenset = frozenset()

NAN, INF = float("nan"), float("inf")
NUM_CLASSES = 5


@dataclass(frozen=True)
class Case:
    """One bad input: ``call()`` must raise a ``ValueError`` naming ``param`` (for CLI cases, ``args``
    must end in a usage error, exit status 2, naming ``param``)."""

    input_class: str
    name: str
    param: str
    call: Optional[Callable[[], Any]] = None
    args: Optional[Tuple[str, ...]] = None
    skip: Optional[str] = None

    @property
    def id(self) -> str:
        return f"{self.input_class.replace(' ', '-')}:{self.name}"

    @property
    def pending(self) -> bool:
        return self.id in PENDING_IDS


# --------------------------------------------------------------------------------------------------
# Small shared objects, built on first use (collection stays instant)
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _digits():
    from mi_art.data import Split, load_digits_data

    full = load_digits_data()

    def subset(split, per_class):
        idx = np.concatenate([np.flatnonzero(split.y == c)[:per_class] for c in np.unique(split.y)])
        return Split(split.x[idx], split.y[idx])

    import dataclasses

    return dataclasses.replace(full, private_train=subset(full.private_train, 6), public=subset(full.public, 6))


def _x(n: int = 10) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 8, 8), dtype=np.float32)


def _y(n: int = 10) -> np.ndarray:
    return np.arange(n) % NUM_CLASSES


def _model() -> torch.nn.Module:
    import mi_art

    torch.manual_seed(0)
    return mi_art.make_classifier("cnn-small", 1, NUM_CLASSES, 8)


@functools.lru_cache(maxsize=None)
def _estimator():
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(_model().eval(), loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                             nb_classes=NUM_CLASSES, clip_values=(0.0, 1.0))


@functools.lru_cache(maxsize=None)
def _gan(kind: str = "gmi"):
    from mi_art.priors import Critic, Generator, KEDMIDiscriminator

    torch.manual_seed(0)
    disc = Critic(8, 1, width=8) if kind == "gmi" else KEDMIDiscriminator(NUM_CLASSES, 8, 1, width=8)
    return Generator(8, 1, width=8).eval(), disc.eval()


def _attack(kind: str = "gmi", **kwargs: Any):
    from mi_art import GMI, KEDMI

    g, d = _gan(kind)
    params = dict(iterations=1, n_reconstructions=1, batch_size=5, verbose=False, seed=0)
    params.update(kwargs)
    return (GMI if kind == "gmi" else KEDMI)(_estimator(), g, d, **params)


def _train_classifier(**kwargs: Any):
    from mi_art import train_classifier

    params = dict(epochs=1, batch_size=8, device="cpu", augment="none")
    params.update(kwargs)
    y = params.pop("y", _y())
    return train_classifier(_model(), _x(), y, **params)


def _gmi_prior(**kwargs: Any):
    from mi_art import train_gmi_prior

    params = dict(steps=1, batch_size=4, n_critic=1, width=8, device="cpu")
    params.update(kwargs)
    return train_gmi_prior(_x(8), **params)


def _kedmi_prior(**kwargs: Any):
    from mi_art import train_kedmi_prior

    params = dict(steps=1, batch_size=4, width=8, device="cpu")
    params.update(kwargs)
    return train_kedmi_prior(_model().eval(), _x(8), **params)


def _distill(**kwargs: Any):
    from mi_art import distill_surrogate

    params = dict(steps=2, batch_size=4, device="cpu", augment="none")
    params.update(kwargs)
    return distill_surrogate(_model().eval(), _model(), _x(12), **params)


def _p_reg(**kwargs: Any):
    from mi_art import estimate_p_reg

    params = dict(device="cpu")
    params.update(kwargs)
    return estimate_p_reg(_model().eval(), _x(8), **params)


def _defended(defense: str = "none", **kwargs: Any):
    from mi_art.defenses import train_defended_target

    params = dict(epochs=1, batch_size=16, lr=1e-3, device="cpu", seed=0)
    params.update(kwargs)
    return train_defended_target(defense, _digits(), **params)


def _grid(**keys: Any):
    from mi_art.evaluations.grid import check_grid

    return check_grid(keys)


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------

#: Bad values for a count (epochs, steps, iterations, batch sizes, ``n``): (label, value).
BAD_COUNTS: List[Tuple[str, Any]] = [("zero", 0), ("negative", -3), ("float", 2.5), ("integral-float", 3.0),
                                     ("bool", True), ("string", "3"), ("nan", NAN)]
#: Bad values for a positive number (learning rates, temperatures, weights).
BAD_POSITIVE: List[Tuple[str, Any]] = [("zero", 0.0), ("negative", -0.1), ("nan", NAN), ("inf", INF),
                                       ("bool", True), ("string", "0.1")]
#: Bad values for a non-negative number (regulariser weights, weight decay).
BAD_NON_NEGATIVE: List[Tuple[str, Any]] = [("negative", -1.0), ("nan", NAN), ("inf", INF), ("bool", False),
                                           ("string", "0")]


def _number_cases() -> List[Case]:
    cases: List[Case] = []

    def add(where: str, param: str, bad: Sequence[Tuple[str, Any]], make: Callable[[Any], Any]) -> None:
        for label, value in bad:
            cases.append(Case("numbers", f"{where}.{param}={label}", param,
                              call=(lambda make=make, value=value: make(value))))

    # training (mi_art/training.py)
    add("train_classifier", "epochs", BAD_COUNTS, lambda v: _train_classifier(epochs=v))
    add("train_classifier", "batch_size", BAD_COUNTS, lambda v: _train_classifier(batch_size=v))
    add("train_classifier", "lr", BAD_POSITIVE, lambda v: _train_classifier(lr=v))
    add("train_gmi_prior", "steps", BAD_COUNTS, lambda v: _gmi_prior(steps=v))
    add("train_gmi_prior", "lr", BAD_POSITIVE, lambda v: _gmi_prior(lr=v))
    add("train_kedmi_prior", "steps", BAD_COUNTS, lambda v: _kedmi_prior(steps=v))
    add("distill_surrogate", "lr_step", BAD_COUNTS, lambda v: _distill(lr_step=v))
    add("distill_surrogate", "temperature", BAD_POSITIVE, lambda v: _distill(temperature=v))
    add("distill_surrogate", "steps", BAD_COUNTS[:4], lambda v: _distill(steps=v))
    add("estimate_p_reg", "n", BAD_COUNTS, lambda v: _p_reg(n=v))
    add("estimate_p_reg", "batch_size", BAD_COUNTS[:4], lambda v: _p_reg(batch_size=v))
    # attacks (mi_art/attacks/*)
    add("GMI", "iterations", BAD_COUNTS, lambda v: _attack(iterations=v))
    add("GMI", "n_reconstructions", BAD_COUNTS[:5], lambda v: _attack(n_reconstructions=v))
    add("GMI", "batch_size", BAD_COUNTS[:5], lambda v: _attack(batch_size=v))
    add("GMI", "learning_rate", BAD_POSITIVE, lambda v: _attack(learning_rate=v))
    add("GMI", "id_weight", BAD_POSITIVE[:4], lambda v: _attack(id_weight=v))
    add("GMI", "reg_weight", BAD_NON_NEGATIVE, lambda v: _attack(reg_weight=v))
    add("GMI", "momentum", [("one", 1.0), ("negative", -0.5), ("nan", NAN)], lambda v: _attack(momentum=v))
    add("KEDMI", "iterations", BAD_COUNTS[:5], lambda v: _attack("kedmi", iterations=v))
    add("KEDMI", "learning_rate", BAD_POSITIVE[:4], lambda v: _attack("kedmi", learning_rate=v))
    # the generic training settings of a defended target (defenses/api.py)
    add("train_defended_target", "epochs", BAD_COUNTS, lambda v: _defended(epochs=v))
    add("train_defended_target", "batch_size", BAD_COUNTS, lambda v: _defended(batch_size=v))
    add("train_defended_target", "lr", BAD_POSITIVE, lambda v: _defended(lr=v))
    add("train_defended_target", "weight_decay", BAD_NON_NEGATIVE, lambda v: _defended(weight_decay=v))
    add("train_defended_target", "seed", [("negative", -1), ("float", 1.5), ("bool", True)],
        lambda v: _defended(seed=v))
    return cases


PROBABILITIES = np.full((10, NUM_CLASSES), 1.0 / NUM_CLASSES)
SCORES = np.random.default_rng(0).normal(size=(10, NUM_CLASSES))
SOFT_ONE_HOT = np.eye(NUM_CLASSES)[_y()] * 0.9 + 0.02


def _label_cases() -> List[Case]:
    from mi_art.validation import check_labels

    bad = [("probabilities", PROBABILITIES), ("scores", SCORES), ("soft-one-hot", SOFT_ONE_HOT),
           ("non-integer", np.array([0.0, 1.5, 2.0])), ("bool", np.array([True, False])),
           ("out-of-range", np.array([0, 5])), ("negative", np.array([0, -1])), ("nan", np.array([0.0, NAN])),
           ("one-hot-wrong-width", np.eye(3)), ("3-d", np.zeros((2, 5, 1), dtype=int)), ("empty", np.array([], int)),
           ("strings", np.array(["0", "1"]))]
    cases = [Case("labels", f"check_labels:{label}", "y",
                  call=(lambda v=v: check_labels(v, NUM_CLASSES, "y"))) for label, v in bad]
    cases += [
        Case("labels", "train_classifier:probabilities", "y", call=lambda: _train_classifier(y=PROBABILITIES)),
        Case("labels", "train_classifier:scores", "y", call=lambda: _train_classifier(y=SCORES)),
        Case("labels", "GMI.infer:probabilities", "y", call=lambda: _attack().infer(None, PROBABILITIES)),
        Case("labels", "GMI.infer:soft-one-hot", "y", call=lambda: _attack().infer(None, SOFT_ONE_HOT)),
        Case("labels", "KEDMI.infer:scores", "y", call=lambda: _attack("kedmi").infer(None, SCORES)),
        Case("labels", "smoothed_targets:float", "labels", call=lambda: _smoothed(torch.tensor([0.2, 0.8]))),
        Case("labels", "smoothed_targets:2-d", "labels", call=lambda: _smoothed(torch.eye(NUM_CLASSES))),
    ]
    return cases


def _smoothed(labels: torch.Tensor):
    from mi_art.defenses import smoothed_targets

    return smoothed_targets(labels, NUM_CLASSES, -0.05)


def _cli_cases() -> List[Case]:
    a = ("attack", "--quiet")
    e = ("evaluate", "--dry-run")  # a dry run trains nothing even if a check were missing
    rows = [
        (a, ["--iterations", "0"], "--iterations"),
        (a, ["--iterations", "2.5"], "--iterations"),
        (a, ["--iterations", "many"], "--iterations"),
        (a, ["--n-reconstructions", "-1"], "--n-reconstructions"),
        (a, ["--batch-size", "0"], "--batch-size"),
        (a, ["--target-epochs", "0"], "--target-epochs"),
        (a, ["--judge-epochs", "-2"], "--judge-epochs"),
        (a, ["--gmi-steps", "0"], "--gmi-steps"),
        (a, ["--kedmi-steps", "1e3"], "--kedmi-steps"),
        (a, ["--surrogate-steps", "0"], "--surrogate-steps"),
        (a, ["--miface-iterations", "0"], "--miface-iterations"),
        (a, ["--seed", "-1"], "--seed"),
        (a, ["--attack-seed", "1.5"], "--attack-seed"),
        (a, ["--dataset", "cifar"], "--dataset"),
        (a, ["--attack", "fgsm"], "--attack"),
        (a, ["--variant", "lomm"], "--variant"),
        (a, ["--target-arch", "resnet9000"], "--target-arch"),
        (a, ["--surrogate", "nope"], "--surrogate"),
        (a, ["--identities", "3-1"], "--identities"),
        (a, ["--identities", "-2"], "--identities"),
        (a, ["--identities", "1,1"], "--identities"),
        (a, ["--identities", "a,b"], "--identities"),
        (a, ["--device", "gpu"], "--device"),
        (a, ["--device", "cuda:99"], "--device"),
        (a, ["--data-root", "/tmp"], "--data-root"),
        (a, ["--dataset", "image-folder", "--data-root", "/nonexistent/faces"], "--data-root"),
        (a, ["--dataset", "mnist"], "--data-root"),
        (e, ["--workers", "0"], "--workers"),
        (e, ["--threads", "-1"], "--threads"),
        (e, ["--gpus-per-task", "nan"], "--gpus-per-task"),
        (e, ["--gpus-per-task", "-1"], "--gpus-per-task"),
        (e, ["--cpus-per-task", "0"], "--cpus-per-task"),
        (e, ["--cpus-per-task", "inf"], "--cpus-per-task"),
        (e, ["--seeds", "0,0"], "--seeds"),
        (e, ["--seeds", "4-0"], "--seeds"),
        (e, ["--seeds", "x"], "--seeds"),
        (e, ["--name", "../escape"], "--name"),
        (e, ["--config", "/nonexistent/grid.toml"], "--config"),
        (e, ["--device", "cuda:99"], "--device"),
        (e, ["--executor", "dask"], "--executor"),
        (e, ["--seed-scope", "some"], "--seed-scope"),
        (e, ["--iterations", "0"], "--iterations"),
        (e, ["--gan-width", "-4"], "--gan-width"),
        (e, ["--defense", "nonsense"], "--defense"),
        (e, ["--defense", "mid:beta=-1"], "--defense"),
        (e, ["--defense", "mid:beta=NaN"], "--defense"),
        (e, ["--defense", "mid:gamma=1"], "--defense"),
        (e, ["--defense", "dp-sgd:noise_multiplier=0"], "--defense"),
        (e, ["--defense", "mid:beta"], "--defense"),
    ]
    cases = [Case("CLI options", f"{cmd[0]} {' '.join(args)}", param, args=(*cmd, *args))
             for cmd, args, param in rows]
    cases.append(Case("CLI options", "attack --device cuda", "--device", args=(*a, "--device", "cuda"),
                      skip="CUDA is available here" if torch.cuda.is_available() else None))
    return cases


def _data_option_cases() -> List[Case]:
    a = ("attack", "--quiet")
    e = ("evaluate", "--dry-run")
    rows = [
        (a, ["--data-option", "imagesize=32"], "imagesize"),
        (a, ["--data-option", "root=/tmp"], "root"),
        (a, ["--data-option", "image_size"], "--data-option"),
        (a, ["--data-option", "image_size=0"], "image_size"),
        (a, ["--data-option", "image_size=NaN"], "image_size"),
        (a, ["--data-option", "image_size=8.5"], "image_size"),
        (a, ["--data-option", "channels=2"], "channels"),
        (a, ["--data-option", "test_fraction=1.5"], "test_fraction"),
        (a, ["--data-option", "seed=-1"], "seed"),
        (a, ["--data-option", "seed=1", "--data-option", "seed=2"], "seed"),
        (a, ["--dataset", "image-folder", "--data-root", "/tmp", "--data-option", "private=0"], "private"),
        (a, ["--dataset", "image-folder", "--data-root", "/tmp", "--data-option", "num_private=3"], "num_private"),
        (a, ["--dataset", "celeba", "--data-root", "/tmp", "--data-option", "num_private=-5"], "num_private"),
        (a, ["--dataset", "mnist", "--data-root", "/tmp", "--data-option", "max_per_class=0"], "max_per_class"),
        (e, ["--data-option", "bogus=1"], "bogus"),
        (e, ["--data-option", "test_fraction=0"], "test_fraction"),
    ]
    cases = [Case("data options", f"{cmd[0]} {' '.join(args)}", param, args=(*cmd, *args))
             for cmd, args, param in rows]
    # the same keys in a grid file
    grid_rows = [("unknown", {"imagesize": 32}, "imagesize"),
                 ("image_size=-8", {"image_size": -8}, "image_size"),
                 ("channels=2", {"channels": 2}, "channels"),
                 ("test_fraction=nan", {"test_fraction": NAN}, "test_fraction"),
                 ("not-a-table", [("image_size", 8)], "data_options")]
    cases += [Case("data options", f"grid options {label}", param,
                   call=(lambda o=o: _grid(datasets=[{"name": "digits", "data_options": o}])))
              for label, o, param in grid_rows]
    return cases


def _grid_cases() -> List[Case]:
    rows = [
        ("unknown key", {"iteration": 5}, "iteration"),
        ("attacks as a string", {"attacks": "gmi"}, "attacks"),
        ("unknown attack", {"attacks": ["gmi", "fgsm"]}, "attacks"),
        ("repeated variant", {"variants": ["lomma", "lomma"]}, "variants"),
        ("empty variants", {"variants": []}, "variants"),
        ("seeds as a string", {"seeds": "0-4"}, "seeds"),
        ("negative seed", {"seeds": [-1]}, "seeds"),
        ("float seed", {"seeds": [1.0]}, "seeds"),
        ("empty seeds", {"seeds": []}, "seeds"),
        ("seed_scope", {"seed_scope": "some"}, "seed_scope"),
        ("artifact_seed", {"artifact_seed": -1}, "artifact_seed"),
        ("device", {"device": "gpu"}, "device"),
        ("name with a slash", {"name": "a/b"}, "name"),
        ("gan_width -4", {"gan_width": -4}, "gan_width"),
        ("target_epochs float", {"target_epochs": 2.5}, "target_epochs"),
        ("iterations integral float", {"iterations": 10.0}, "iterations"),
        ("iterations bool", {"iterations": True}, "iterations"),
        ("iterations string", {"iterations": "10"}, "iterations"),
        ("gmi_steps zero", {"gmi_steps": 0}, "gmi_steps"),
        ("batch_size nan", {"batch_size": NAN}, "batch_size"),
        ("target_arch", {"target_arch": "resnet9000"}, "target_arch"),
        ("augment", {"augment": "rotate"}, "augment"),
        ("surrogate_archs as a string", {"surrogate_archs": "mlp"}, "surrogate_archs"),
        ("unknown surrogate arch", {"surrogate_archs": ["mlp", "nope"]}, "surrogate_archs"),
        ("identities reversed range", {"identities": "5-2"}, "identities"),
        ("identities negative", {"identities": [0, -1]}, "identities"),
        ("identities floats", {"identities": [0.5]}, "identities"),
        ("datasets as a string", {"datasets": "digits"}, "datasets"),
        ("unknown dataset", {"datasets": [{"name": "cifar"}]}, "datasets"),
        ("unknown dataset key", {"datasets": [{"name": "digits", "rooot": "/x"}]}, "rooot"),
        ("dataset budget", {"datasets": [{"name": "digits", "judge_epochs": 0}]}, "judge_epochs"),
        ("dataset data_root not a string", {"datasets": [{"name": "mnist", "data_root": 3}]}, "data_root"),
        ("defenses as a table", {"defenses": {"name": "none"}}, "defenses"),
        ("unknown defense", {"defenses": ["nonsense"]}, "defenses"),
        ("unknown defense key", {"defenses": [{"name": "mid", "param": {"beta": 0.1}}]}, "param"),
        ("defense params a string", {"defenses": [{"name": "mid", "params": "beta=0.1"}]}, "params"),
    ]
    return [Case("grid keys", label, param, call=(lambda keys=keys: _grid(**keys))) for label, keys, param in rows]


def _defense_cases() -> List[Case]:
    rows = [
        ("dp-sgd", {"noise_multiplier": 0}, "noise_multiplier"),
        ("dp-sgd", {"noise_multiplier": NAN}, "noise_multiplier"),
        ("dp-sgd", {"noise_multiplier": True}, "noise_multiplier"),
        ("dp-sgd", {"noise_multiplier": "1.0"}, "noise_multiplier"),
        ("dp-sgd", {"target_epsilon": INF}, "target_epsilon"),
        ("dp-sgd", {"target_epsilon": -1.0}, "target_epsilon"),
        ("dp-sgd", {}, "target_epsilon"),
        ("dp-sgd", {"noise_multiplier": 1.0, "max_grad_norm": NAN}, "max_grad_norm"),
        ("dp-sgd", {"noise_multiplier": 1.0, "target_delta": 0}, "target_delta"),
        ("dp-sgd", {"noise_multiplier": 1.0, "target_delta": 1.5}, "target_delta"),
        ("dp-sgd", {"noise_multiplier": 1.0, "accountant": "moments"}, "accountant"),
        ("dp-sgd", {"noise_multiplier": 1.0, "max_physical_batch_size": 0}, "max_physical_batch_size"),
        ("dp-sgd", {"noise_multiplier": 1.0, "max_physical_batch_size": 8.0}, "max_physical_batch_size"),
        ("mid", {"beta": -0.1}, "beta"),
        ("mid", {"beta": NAN}, "beta"),
        ("mid", {"beta": INF}, "beta"),
        ("mid", {"beta": True}, "beta"),
        ("mid", {"bottleneck_dim": 0}, "bottleneck_dim"),
        ("mid", {"bottleneck_dim": 2.5}, "bottleneck_dim"),
        ("mid", {"gamma": 1.0}, "gamma"),
        ("bido", {"lambda_x": NAN}, "lambda_x"),
        ("bido", {"lambda_y": -1}, "lambda_y"),
        ("bido", {"sigma": 0}, "sigma"),
        ("bido", {"measure": "mmd"}, "measure"),
        ("bido", {"layers": "conv1"}, "layers"),
        ("bido", {"layers": []}, "layers"),
        ("negative-label-smoothing", {"alpha": NAN}, "alpha"),
        ("negative-label-smoothing", {"alpha": 1.0}, "alpha"),
        ("negative-label-smoothing", {"alpha": -1.5}, "alpha"),
        ("negative-label-smoothing", {"alpha": "-0.05"}, "alpha"),
        ("negative-label-smoothing", {"warmup": 1.0}, "warmup"),
        ("negative-label-smoothing", {"ramp": 1.5}, "ramp"),
        ("tl", {"freeze": -1}, "freeze"),
        ("tl", {"freeze": 1.5}, "freeze"),
        ("tl", {"freeze": NAN}, "freeze"),
        ("tl", {"freeze": True}, "freeze"),
        ("tl", {"freeze": "half"}, "freeze"),
        ("tl", {"freeze": 99}, "freeze"),
        ("tl", {"pretrain_epochs": 0}, "pretrain_epochs"),
        ("tl", {"pretrain_epochs": 2.5}, "pretrain_epochs"),
        ("tl", {"pretrain_lr": 0}, "pretrain_lr"),
        ("tl", {"pretrain_lr": NAN}, "pretrain_lr"),
        ("reverse-sigmoid", {"beta": 0}, "beta"),
        ("reverse-sigmoid", {"gamma": INF}, "gamma"),
        ("high-confidence", {"cutoff": 0}, "cutoff"),
        ("high-confidence", {"cutoff": 1.5}, "cutoff"),
        ("rounded", {"decimals": 0}, "decimals"),
        ("rounded", {"decimals": 2.5}, "decimals"),
        ("rounded", {"decimals": True}, "decimals"),
        ("gaussian-noise", {"scale": 0}, "scale"),
        ("gaussian-noise", {"scale": NAN}, "scale"),
        ("rolss", {"model": "resnet", "blocks": 0}, "blocks"),
        ("rolss", {"model": "resnet", "blocks": 2.5}, "blocks"),
        ("rolss", {"model": "resnet", "blocks": 2}, "blocks"),  # its last stage has one block
        ("rolss", {"model": "cnn"}, "cnn"),  # no skip connections to remove
        ("none", {"beta": 1.0}, "beta"),
        ("class-labels", {"cutoff": 0.5}, "cutoff"),
    ]
    cases = [Case("defense parameters", f"{d}:{','.join(f'{k}={v!r}' for k, v in p.items()) or 'no parameters'}",
                  param, call=(lambda d=d, p=p: _defended(d, **p))) for d, p, param in rows]
    cases += [
        Case("defense parameters", "defense name", "defense", call=lambda: _defended("dp")),
        Case("defense parameters", "model name", "model", call=lambda: _defended(model="resnet9000")),
        Case("defense parameters", "optimizer", "optimizer", call=lambda: _defended(optimizer="adamw")),
        Case("defense parameters", "augment", "augment", call=lambda: _defended(augment="rotate")),
        Case("defense parameters", "verbose", "verbose", call=lambda: _defended(verbose="yes")),
        Case("defense parameters", "device", "device", call=lambda: _defended(device="cuda:99")),
        Case("defense parameters", "dataset", "dataset", call=lambda: _train_defended_on_split()),
        Case("defense parameters", "smoothing_factor epoch", "epoch", call=lambda: _call("smoothing_factor", -1, 10)),
        Case("defense parameters", "smoothing_factor epochs", "epochs", call=lambda: _call("smoothing_factor", 0, 0)),
        Case("defense parameters", "smoothing_factor warmup", "warmup",
             call=lambda: _call("smoothing_factor", 0, 10, warmup=NAN)),
        Case("defense parameters", "accountant_epsilon noise_multiplier", "noise_multiplier",
             call=lambda: _call("accountant_epsilon", 0.0, 0.1, 10, 1e-5)),
        Case("defense parameters", "accountant_epsilon sample_rate", "sample_rate",
             call=lambda: _call("accountant_epsilon", 1.0, 1.5, 10, 1e-5)),
        Case("defense parameters", "accountant_epsilon steps", "steps",
             call=lambda: _call("accountant_epsilon", 1.0, 0.1, 2.5, 1e-5)),
        Case("defense parameters", "gaussian_kernel sigma", "sigma",
             call=lambda: _call("gaussian_kernel", torch.zeros(3, 2), sigma=0)),
        Case("defense parameters", "VIBHead bottleneck_dim", "bottleneck_dim",
             call=lambda: _call("VIBHead", 16, NUM_CLASSES, bottleneck_dim=0)),
        Case("defense parameters", "wrap_with_defense clip_values", "clip_values",
             call=lambda: _wrap(clip_values=(1.0, 0.0))),
    ]
    return cases


def _call(name: str, *args: Any, **kwargs: Any):
    from mi_art import defenses

    return getattr(defenses, name)(*args, **kwargs)


def _train_defended_on_split():
    from mi_art.defenses import train_defended_target

    return train_defended_target("none", _digits().private_train, epochs=1)


def _wrap(**kwargs: Any):
    from mi_art.defenses import DefenseRecord, wrap_with_defense

    record = DefenseRecord(defense="none", params={}, test_accuracy=0.0, train_time_s=0.0, architecture="cnn-small",
                           num_classes=NUM_CLASSES, input_shape=(1, 8, 8))
    return wrap_with_defense(_model(), record, **kwargs)


CASES: List[Case] = (_number_cases() + _label_cases() + _cli_cases() + _data_option_cases() + _grid_cases()
                     + _defense_cases())


def count_cases(cases: Sequence[Case] = CASES) -> Dict[str, Dict[str, int]]:
    """Per input class: ``{"cases": cases tried, "pending": cases whose check is still to be wired}``,
    in table order."""
    out: Dict[str, Dict[str, int]] = {}
    for c in cases:
        row = out.setdefault(c.input_class, {"cases": 0, "pending": 0})
        row["cases"] += 1
        row["pending"] += int(c.pending)
    return out


def closing_table(outcomes: Optional[Dict[str, bool]] = None, cases: Sequence[Case] = CASES) -> str:
    """A Markdown table: input class, cases tried, cases that give a clear error. ``outcomes`` maps a
    case id to whether it gave a clear error (from a run); without it, every case not pending counts."""
    rows = ["| input class | cases tried | cases that give a clear error |", "|---|---:|---:|"]
    totals = [0, 0]
    for cls, row in count_cases(cases).items():
        if outcomes is None:
            clear = row["cases"] - row["pending"]
        else:
            clear = sum(bool(outcomes.get(c.id)) for c in cases if c.input_class == cls)
        rows.append(f"| {cls} | {row['cases']} | {clear} |")
        totals[0] += row["cases"]
        totals[1] += clear
    rows.append(f"| all | {totals[0]} | {totals[1]} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------------


def _names(message: str, param: str) -> bool:
    """``message`` names ``param`` as a word (``epochs`` is not named by ``pretrain_epochs``)."""
    return re.search(r"(?<![A-Za-z0-9_-])" + re.escape(param) + r"(?![A-Za-z0-9_])", message) is not None


def _params() -> List[Any]:
    out = []
    for c in CASES:
        marks = [PENDING] if c.pending else []
        if c.skip:
            marks.append(pytest.mark.skip(reason=c.skip))
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


@pytest.mark.parametrize("case", _params())
def test_bad_input_gives_a_clear_error(case: Case) -> None:
    if case.args is not None:
        from mi_art.evaluations.cli import main

        result = CliRunner().invoke(main, list(case.args))
        assert result.exit_code == 2, f"expected a usage error (exit 2), got {result.exit_code}: {result.output}"
        assert "Traceback" not in result.output
        assert _names(result.output, case.param), result.output
        return
    with pytest.raises(ValueError) as err:
        case.call()
    assert _names(str(err.value), case.param), str(err.value)


def test_count_cases_covers_every_input_class():
    counts = count_cases()
    assert list(counts) == ["numbers", "labels", "CLI options", "data options", "grid keys", "defense parameters"]
    assert sum(r["cases"] for r in counts.values()) == len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)  # ids are unique
    table = closing_table({c.id: True for c in CASES})
    assert f"| all | {len(CASES)} | {len(CASES)} |" in table


def test_grid_reports_every_problem_at_once(tmp_path):
    """A grid with several mistakes is refused by `--dry-run` with all of them listed in one error."""
    from mi_art.evaluations.cli import main
    from mi_art.evaluations.grid import GridError, check_grid

    bad = {"attacks": "gmi", "gan_width": -4, "target_epochs": 2.5, "iteration": 5, "seeds": [0, -1],
           "defenses": [{"name": "mid", "params": [{"beta": NAN}]}]}
    with pytest.raises(GridError) as err:
        check_grid(bad)
    assert len(err.value.problems) == 6, err.value.problems
    for key in ("attacks", "gan_width", "target_epochs", "'iteration'", "seeds[1]", "beta"):
        assert key in str(err.value), key
    config = tmp_path / "bad.toml"
    config.write_text('attacks = "gmi"\ngan_width = -4\ntarget_epochs = 2.5\niteration = 5\nseeds = [0, -1]\n'
                      '[[defenses]]\nname = "mid"\nparams = [{ beta = nan }]\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", "--config", str(config), "--dry-run", "--out", str(out)])
    assert result.exit_code == 1 and "6 problems" in result.output, result.output
    for key in ("attacks", "gan_width", "target_epochs", "'iteration'", "seeds[1]", "beta"):
        assert key in result.output, key
    assert "Traceback" not in result.output and not out.exists()


def test_an_unexpected_error_is_one_line_and_a_log(tmp_path, monkeypatch):
    """Even a bug (here a TypeError deep inside a run) reaches the user as one line naming the log
    that holds the full traceback; the exit status is not zero."""
    from mi_art.evaluations import experiment
    from mi_art.evaluations.cli import main

    def bug(*args: Any, **kwargs: Any) -> None:
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(experiment.Workbench, "__init__", bug)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["attack", "--out", str(out), "--quiet"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: unexpected TypeError"), result.output
    assert "Traceback" not in result.output
    log = next(out.glob("mi-art-error-*.log"))
    assert str(log) in lines[0]
    assert "Traceback" in log.read_text() and "unsupported operand" in log.read_text()


def test_an_error_of_ray_is_reported_as_rays_with_what_to_do(tmp_path, monkeypatch):
    """A Ray start-up timeout is Ray's error, not a bug of mi-art: the line says so and how to run without Ray."""
    from mi_art.evaluations import executors
    from mi_art.evaluations.cli import main

    class GetTimeoutError(Exception):
        pass

    GetTimeoutError.__module__ = "ray.exceptions"  # as Ray's own class is

    def timeout(*args: Any, **kwargs: Any) -> None:
        raise GetTimeoutError("Timed out while waiting for the Ray head node to start")

    monkeypatch.setattr(executors, "evaluate_grid", timeout)
    result = CliRunner().invoke(main, ["evaluate", "--preset", "quick", "--out", str(tmp_path / "run"),
                                       "--executor", "ray", "--no-progress"])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: Ray failed (GetTimeoutError: Timed out while waiting"), result.output
    assert "not mi-art's" in line and "--executor local" in line and "a bug" not in line


@pytest.mark.parametrize("defense, params", [("dp-sgd", {"noise_multiplier": 1.0}), ("mid", {})])
def test_defended_training_that_diverges_stops_with_a_clear_error(defense, params):
    """A learning rate that blows the weights up ends in NonFiniteError, never in NaN weights returned
    with a reported accuracy (DP-SGD's own loop included)."""
    from mi_art.validation import NonFiniteError

    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        _defended(defense, lr=1e30, optimizer="sgd", epochs=2, **params)


def test_defense_accuracy_keeps_submodule_modes():
    """The defenses' accuracy is mi_art.evaluations.metrics.natural_accuracy: a sub-module deliberately in
    eval mode stays so after it (``model.train(was_training)`` would flip it back to training)."""
    from mi_art.defenses import api
    from mi_art.evaluations.metrics import natural_accuracy

    assert api.natural_accuracy is natural_accuracy
    model = _model().train()
    frozen = next(m for m in model.modules() if list(m.parameters(recurse=False)))
    frozen.eval()
    natural_accuracy(model, _x(), _y())
    assert model.training and not frozen.training


if __name__ == "__main__":  # pragma: no cover - the closing note's table
    class _Collect:
        def __init__(self) -> None:
            self.outcomes: Dict[str, bool] = {}

        def pytest_runtest_logreport(self, report: Any) -> None:
            if report.when == "call" and report.nodeid.endswith("]"):
                self.outcomes[report.nodeid[report.nodeid.index("[") + 1:-1]] = report.passed

    collector = _Collect()
    pytest.main(["-q", "-p", "no:cacheprovider", __file__, "-k", "test_bad_input_gives_a_clear_error"],
                plugins=[collector])
    print(closing_table(collector.outcomes))
    sys.exit(0)
