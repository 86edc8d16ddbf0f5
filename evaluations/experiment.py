"""One attack run end to end: data, target, evaluation model, priors, surrogates, p_reg, the attack
and its metrics. Trained artifacts go through :class:`~evaluations.cache.ArtifactCache`, so runs
that share a target or a prior train it once."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from mi_art import (GMI, KEDMI, Critic, Generator, KEDMIDiscriminator, distill_surrogate, estimate_p_reg,
                    make_classifier, train_classifier, train_gmi_prior, train_kedmi_prior)
from mi_art.data import MIDataset, load_dataset
from mi_art.models import ARCHITECTURES
from mi_art.utils import check_labels, resolve_device, seed_everything

from .cache import ArtifactCache
from .metrics import attack_accuracy, fid_eval_features, knn_distance, natural_accuracy

ATTACKS = ("gmi", "kedmi", "miface")
VARIANTS = ("baseline", "lom", "ma", "lomma")


@dataclass
class ExperimentConfig:
    """Everything one attack run depends on. Defaults suit the embedded digits data on a CPU."""

    dataset: str = "digits"
    defense: str = "none"
    defense_params: Dict[str, Any] = field(default_factory=dict)
    data_root: Optional[str] = None
    data_options: Dict[str, Any] = field(default_factory=dict)
    target_arch: str = "cnn"
    target_epochs: int = 20
    eval_arch: str = "cnn-wide"
    eval_epochs: int = 30
    augment: str = "shift"
    attack: str = "gmi"
    variant: str = "lomma"
    iterations: int = 300
    n_reconstructions: int = 5
    identities: Optional[List[int]] = None
    batch_size: int = 60
    prior_steps: int = 300
    kedmi_steps: int = 600
    gan_width: int = 32
    gan_augment: str = "none"
    surrogate_archs: Tuple[str, ...] = ("resnet", "mlp")
    surrogate_epochs: int = 30
    miface_iterations: int = 300
    seed: int = 0
    attack_seed: int = 0
    device: Optional[str] = None
    verbose: bool = False

    def validate(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; choose one of {ATTACKS}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {VARIANTS}")
        if self.attack == "miface" and self.variant != "baseline":
            raise ValueError("ART's MIFace has no LOM/MA variants: use variant='baseline'")
        for arch in (self.target_arch, self.eval_arch, *self.surrogate_archs):
            if arch not in ARCHITECTURES:
                raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
        for name in ("target_epochs", "eval_epochs", "iterations", "n_reconstructions", "batch_size",
                     "prior_steps", "kedmi_steps", "surrogate_epochs", "miface_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.variant in ("ma", "lomma") and not self.surrogate_archs:
            raise ValueError(f"variant {self.variant!r} needs at least one surrogate architecture")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


class Workbench:
    """Loads the data once and hands out cached artifacts for one dataset."""

    def __init__(self, config: ExperimentConfig, cache: Optional[ArtifactCache] = None,
                 data: Optional[MIDataset] = None) -> None:
        """``data``: the dataset ``config`` names, already loaded (a grid of cells loads it once)."""
        config.validate()
        self.config = config
        self.cache = cache or ArtifactCache(None)
        self.device = resolve_device(config.device)
        root = str(Path(config.data_root).resolve()) if config.data_root else None
        self.data: MIDataset = data if data is not None else load_dataset(config.dataset, root, **config.data_options)
        self._data_key = {"dataset": config.dataset, "root": root, "options": config.data_options}
        self.defense_record: Optional[Dict[str, Any]] = None

    # ---------------------------------------------------------------- keys and shapes

    @property
    def _shape(self) -> Tuple[int, int, int]:
        return self.data.input_shape

    def _classifier(self, arch: str, num_classes: Optional[int] = None) -> nn.Module:
        c, s, _ = self._shape
        return make_classifier(arch, c, num_classes or self.data.num_classes, s)

    def _initialised(self, arch: str, seed: int) -> nn.Module:
        """A fresh classifier whose initial weights depend on ``seed`` alone, not on what the process
        ran before (a cached artifact loaded or trained earlier, a validation pass)."""
        seed_everything(seed)
        return self._classifier(arch)

    def target_key(self) -> Dict[str, Any]:
        c = self.config
        key = {"data": self._data_key, "arch": c.target_arch, "epochs": c.target_epochs, "augment": c.augment,
               "seed": c.seed}
        if c.defense != "none":
            key.update(defense=c.defense, defense_params=c.defense_params)
        return key

    # ---------------------------------------------------------------- artifacts

    def target(self) -> nn.Module:
        """The target, trained under ``config.defense`` (see :func:`defenses.train_defended_target`)."""
        c, d = self.config, self.data
        if c.defense != "none":
            return self._defended_target()
        return self.cache.module(
            "target", self.target_key(), lambda: self._classifier(c.target_arch),
            lambda: train_classifier(self._initialised(c.target_arch, c.seed), d.private_train.x, d.private_train.y,
                                     epochs=c.target_epochs, augment=c.augment, device=self.device, seed=c.seed,
                                     verbose=c.verbose, desc="target")).to(self.device)

    def _defended_target(self) -> nn.Module:
        from defenses import defended_architecture, train_defended_target

        c, key = self.config, self.target_key()
        trained: Dict[str, Any] = {}

        def train() -> nn.Module:
            model, record = train_defended_target(c.defense, self.data, model=c.target_arch, epochs=c.target_epochs,
                                                  augment=c.augment, device=self.device, seed=c.seed,
                                                  verbose=c.verbose, **c.defense_params)
            trained["record"] = record.to_dict()
            # the record is stored before the checkpoint: a run killed between the two writes then
            # finds no checkpoint and retrains, instead of finding a checkpoint without its record
            self.cache.json("defense-record", key, lambda: trained["record"])
            return model

        model = self.cache.module("target", key, lambda: defended_architecture(
            c.defense, self.data, model=c.target_arch, **c.defense_params), train)
        self.defense_record = self.cache.json("defense-record", key, lambda: trained["record"])
        return model.to(self.device)

    def evaluator(self) -> nn.Module:
        """The independent judge: another architecture, trained on the private training split."""
        c, d = self.config, self.data
        key = {"data": self._data_key, "arch": c.eval_arch, "epochs": c.eval_epochs, "augment": c.augment,
               "seed": c.seed + 1000}
        return self.cache.module(
            "evaluator", key, lambda: self._classifier(c.eval_arch),
            lambda: train_classifier(self._initialised(c.eval_arch, c.seed + 1000), d.private_train.x,
                                     d.private_train.y,
                                     epochs=c.eval_epochs, augment=c.augment, device=self.device,
                                     seed=c.seed + 1000, verbose=c.verbose, desc="evaluator")).to(self.device)

    def gmi_prior(self) -> Tuple[nn.Module, nn.Module]:
        c, (ch, s, _) = self.config, self._shape
        key = {"data": self._data_key, "steps": c.prior_steps, "width": c.gan_width, "augment": c.gan_augment,
               "seed": c.seed}
        pair = self.cache.module(
            "gmi-prior", key, lambda: nn.ModuleDict({"g": Generator(s, ch, width=c.gan_width),
                                                     "d": Critic(s, ch, width=c.gan_width)}),
            lambda: nn.ModuleDict(dict(zip("gd", train_gmi_prior(
                self.data.public.x, steps=c.prior_steps, width=c.gan_width, augment=c.gan_augment,
                device=self.device, seed=c.seed, verbose=c.verbose))))).to(self.device)
        return pair["g"].eval(), pair["d"].eval()

    def kedmi_prior(self, target: nn.Module) -> Tuple[nn.Module, nn.Module]:
        c, (ch, s, _) = self.config, self._shape
        key = {"target": self.target_key(), "steps": c.kedmi_steps, "width": c.gan_width,
               "augment": c.gan_augment, "seed": c.seed}
        k = self.data.num_classes
        pair = self.cache.module(
            "kedmi-prior", key, lambda: nn.ModuleDict({"g": Generator(s, ch, width=c.gan_width),
                                                       "d": KEDMIDiscriminator(k, s, ch, width=c.gan_width)}),
            lambda: nn.ModuleDict(dict(zip("gd", train_kedmi_prior(
                target, self.data.public.x, steps=c.kedmi_steps, width=c.gan_width, augment=c.gan_augment,
                device=self.device, seed=c.seed, verbose=c.verbose))))).to(self.device)
        return pair["g"].eval(), pair["d"].eval()

    def surrogates(self, target: nn.Module) -> List[nn.Module]:
        c = self.config
        out = []
        for i, arch in enumerate(c.surrogate_archs):
            key = {"target": self.target_key(), "arch": arch, "epochs": c.surrogate_epochs, "augment": c.augment,
                   "seed": c.seed + i}
            out.append(self.cache.module(
                "surrogate", key, lambda arch=arch: self._classifier(arch),
                lambda arch=arch, i=i: distill_surrogate(target, self._initialised(arch, c.seed + i),
                                                         self.data.public.x, epochs=c.surrogate_epochs,
                                                         augment=c.augment, device=self.device, seed=c.seed + i,
                                                         verbose=c.verbose)).to(self.device))
        return out

    def p_reg(self, target: nn.Module) -> torch.Tensor:
        return self.cache.tensor("p-reg", {"target": self.target_key()},
                                 lambda: estimate_p_reg(target, self.data.public.x))


def wrap_target(model: nn.Module, data: MIDataset, device: torch.device):
    """The target as an ART ``PyTorchClassifier`` (logits out, inputs in [0, 1])."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=data.input_shape,
                             nb_classes=data.num_classes, clip_values=(0.0, 1.0),
                             device_type="gpu" if device.type == "cuda" else "cpu")


def run_attack(bench: Workbench, *, attack: Optional[str] = None, variant: Optional[str] = None,
               attack_seed: Optional[int] = None, target: Optional[nn.Module] = None,
               evaluator: Optional[nn.Module] = None) -> Dict[str, Any]:
    """Run one attack variant and measure it. Returns the result record (metrics, timings, settings)
    with the reconstructions under ``"reconstructions"`` and their labels under ``"labels"``."""
    c, d = bench.config, bench.data
    attack = attack or c.attack
    variant = variant or c.variant
    seed = c.attack_seed if attack_seed is None else attack_seed
    dataclasses.replace(c, attack=attack, variant=variant).validate()
    target = target if target is not None else bench.target()
    evaluator = evaluator if evaluator is not None else bench.evaluator()
    identities = np.arange(d.num_classes) if c.identities is None else check_labels(c.identities, d.num_classes,
                                                                                    "identities")
    estimator = wrap_target(target, d, bench.device)
    seed_everything(seed)
    start = time.perf_counter()
    if attack == "miface":
        recs, labels, rec_index = _run_miface(estimator, identities, c, d)
    else:
        use_lom, use_ma = variant in ("lom", "lomma"), variant in ("ma", "lomma")
        kwargs: Dict[str, Any] = dict(identity_loss="logit" if use_lom else "ce",
                                      p_reg=bench.p_reg(target) if use_lom else None,
                                      surrogates=bench.surrogates(target) if use_ma else [],
                                      iterations=c.iterations, n_reconstructions=c.n_reconstructions,
                                      batch_size=c.batch_size, seed=seed, verbose=c.verbose)
        if attack == "gmi":
            g, disc = bench.gmi_prior()
            cls = GMI
        else:
            g, disc = bench.kedmi_prior(target)
            cls = KEDMI
        start = time.perf_counter()  # artifacts above are shared work, not attack time
        runner = cls(estimator, g, disc, **kwargs)
        recs = runner.infer(None, identities)
        labels, rec_index = runner.labels_, runner.reconstruction_index_
    seconds = time.perf_counter() - start
    priv = d.private_all()
    acc = attack_accuracy(evaluator, recs, labels, rec_index=rec_index, top_k=(1, 5))
    knn = knn_distance(evaluator, recs, labels, priv.x, priv.y)
    success = acc["per_sample_top1"]
    real = priv.x[np.isin(priv.y, identities)]
    fid = fid_eval_features(evaluator, recs[success], real) if success.sum() >= 2 else None
    return {
        "dataset": d.name, "attack": attack, "variant": variant, "attack_seed": seed,
        "acc@1": acc["acc@1"], "acc@1_std": acc["acc@1_std"], "acc@5": acc["acc@5"], "acc@5_std": acc["acc@5_std"],
        "knn_dist": knn["knn_dist"], "fid_eval_features": fid,
        "target_test_accuracy": natural_accuracy(target, d.private_test.x, d.private_test.y),
        "evaluator_test_accuracy": natural_accuracy(evaluator, d.private_test.x, d.private_test.y),
        "seconds": seconds, "seconds_per_reconstruction": seconds / len(recs),
        "n_identities": int(len(identities)), "n_reconstructions": int(len(recs) // len(identities)),
        "iterations": c.miface_iterations if attack == "miface" else c.iterations,
        "reconstructions": recs, "labels": labels,
    }


def _run_miface(estimator: Any, identities: np.ndarray, c: ExperimentConfig,
                d: MIDataset) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ART's MIFace baseline from a grey start (deterministic: one reconstruction per identity)."""
    from art.attacks.inference.model_inversion import MIFace

    attack = MIFace(estimator, max_iter=c.miface_iterations, window_length=100, threshold=0.99,
                    learning_rate=0.1, batch_size=max(1, len(identities)), verbose=c.verbose)
    x0 = np.full((len(identities), *d.input_shape), 0.5, dtype=np.float32)
    recs = attack.infer(x0, identities).astype(np.float32)
    return recs, identities.copy(), np.zeros(len(identities), dtype=np.int64)


def public_record(result: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON-serialisable part of a result (no image arrays)."""
    return {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in result.items()
            if k not in ("reconstructions", "labels")}
