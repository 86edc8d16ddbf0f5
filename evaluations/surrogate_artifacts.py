"""The Workbench's artifacts learnt from a target: the surrogates distilled from it (from its answers alone below
white-box), their agreement with it, the ``p_reg`` regularisers and the target as its users reach it."""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import torch
from torch import nn

from mi_art import distill_surrogate, estimate_p_reg, top1_agreement
from mi_art.access import PredictOracle
from mi_art.priors import PUBLIC_PRIOR
from mi_art.quality import WeakModelWarning, warn_weak, weak_surrogate_warning
from mi_art.utils import EstimatorModule

from .experiment_config import HELD_OUT_PUBLIC


@contextlib.contextmanager
def _weak_said_later() -> Iterator[None]:
    """Silence :func:`~mi_art.distill_surrogate`'s weak-surrogate warning: the pipeline says it once the surrogates
    are made or loaded from the cache (:meth:`Workbench.checked_surrogates`, ``run_attack``), in its own terms."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WeakModelWarning)
        yield


class SurrogateArtifacts:
    """The :class:`~mi_art.evaluations.workbench.Workbench`'s surrogates, ``p_reg`` and target API, each cached
    through its ``cache``; they use its ``config``, ``data``, ``device``, keys and priors and the classifiers it
    builds."""

    def public_split(self) -> Tuple[np.ndarray, np.ndarray]:
        """(distillation images, held-out images) of the public set: a fixed HELD_OUT_PUBLIC share is
        kept out of distillation for early stopping and for measuring agreement."""
        x = self.data.public.x
        n_val = max(1, int(round(HELD_OUT_PUBLIC * len(x))))
        perm = np.random.default_rng(self.config.seed).permutation(len(x))
        return x[perm[n_val:]], x[perm[:n_val]]

    def _surrogate_start(self, arch: str, seed: int) -> nn.Module:
        """The model a surrogate is distilled into: random weights, or ``arch`` pre-trained on the public
        identities with a fresh head for the private ones."""
        epochs = self.config.surrogate_pretrain_epochs
        return self._pretrained_body(arch, epochs, seed, "surrogate") if epochs else self._initialised(arch, seed)

    def surrogates(self, target: nn.Module) -> List[nn.Module]:
        c = self.config
        train_x, val_x = self.public_split()
        out = []
        for i, arch in enumerate(c.surrogate_archs):
            def train(arch: str = arch, i: int = i) -> nn.Module:
                generator = self.prior(PUBLIC_PRIOR)[0] if c.surrogate_data == "public+prior" else None
                with _weak_said_later():
                    return distill_surrogate(target, self._surrogate_start(arch, c.seed + i), train_x, val_x=val_x,
                                             generator=generator, steps=c.surrogate_steps, augment=c.augment,
                                             mixed_precision=c.mixed_precision, device=self.device,
                                             seed=c.seed + i, verbose=c.verbose, desc=f"distil surrogate {i} ({arch})")

            out.append(self.cache.module("surrogate", self.key("surrogate", index=i, target=target),
                                         lambda arch=arch: self.untrained_classifier(arch), train).to(self.device))
        return out

    def surrogate_report(self, target: nn.Module, surrogates: List[nn.Module]) -> List[Dict[str, Any]]:
        """Each surrogate's top-1 agreement with the target on held-out public images and, as a
        diagnostic the attack never sees, on the private test images."""
        _, val_x = self.public_split()
        return [{"arch": arch,
                 "agreement_public_heldout": top1_agreement(target, s, val_x),
                 "agreement_private_test": top1_agreement(target, s, self.data.private_test.x)}
                for arch, s in zip(self.config.surrogate_archs, surrogates)]

    def checked_surrogates(self, target: nn.Module) -> Tuple[List[nn.Module], List[Dict[str, Any]], List[str]]:
        """:meth:`surrogates` with their :meth:`surrogate_report`, less those whose agreement with the target
        on held-out public images is below ``config.min_surrogate_agreement``. Returns ``(the surrogates
        used, the report of all of them with "used" set, warnings)``: one warning per surrogate left out,
        and one per surrogate used with an agreement below :data:`WEAK_SURROGATE_AGREEMENT`. Each warning
        is also issued through :mod:`warnings`."""
        surrogates = self.surrogates(target)
        report = self.surrogate_report(target, surrogates)
        floor = self.config.min_surrogate_agreement
        used, notes, weak = [], [], []
        for i, (model, row) in enumerate(zip(surrogates, report)):
            agreement = row["agreement_public_heldout"]
            row["used"] = agreement >= floor
            name = f"surrogate {i} ({row['arch']})"
            if not row["used"]:
                notes.append(f"{name} agrees with the target on {agreement:.2f} of held-out public images, below "
                             f"min_surrogate_agreement={floor:g}: it is left out of the ensemble")
            else:
                used.append(model)
                warned = weak_surrogate_warning(agreement, name=name, hint="Distil it longer (surrogate_steps) or "
                                                                           "leave it out (min_surrogate_agreement)")
                weak.extend([warned] if warned else [])
        if surrogates and not used:
            notes.append("every surrogate is below min_surrogate_agreement: model augmentation ran on the target alone")
        for note in notes:
            warnings.warn(note, stacklevel=2)
        warn_weak(weak)
        return used, report, notes + weak

    def p_reg(self, target: nn.Module) -> torch.Tensor:
        return self.cache.tensor("p-reg", self.key("p-reg", target=target),
                                 lambda: estimate_p_reg(target, self.data.public.x))

    def surrogate_p_reg(self, target: nn.Module, index: int, surrogate: nn.Module) -> torch.Tensor:
        """The mean public feature of surrogate ``index`` (:meth:`surrogates`, or :meth:`answer_surrogates`
        below white-box), for its own regulariser."""
        return self.cache.tensor("p-reg", self.key("p-reg", target=target, index=index),
                                 lambda: estimate_p_reg(surrogate, self.data.public.x))

    def api(self, target: nn.Module) -> Any:
        """The target as its users reach it: an ART ``PyTorchClassifier`` whose ``predict`` returns
        probabilities, through the configured output defense (an ART postprocessor) when there is one."""
        from art.estimators.classification import PyTorchClassifier

        from mi_art.defenses.postprocessing import POSTPROCESSORS, Softmax, make_postprocessor

        c, d = self.config, self.data
        post = [Softmax()]
        if c.defense in POSTPROCESSORS:
            post.append(make_postprocessor(c.defense, dict(c.defense_params)))
        model = target.model if isinstance(target, EstimatorModule) else target
        return PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=d.input_shape, nb_classes=d.num_classes,
                                 clip_values=(0.0, 1.0), postprocessing_defences=post,
                                 device_type="gpu" if self.device.type == "cuda" else "cpu")

    def answer_surrogates(self, target: nn.Module) -> Tuple[List[nn.Module], List[int]]:
        """Below white-box: the surrogates distilled from the answers of :meth:`api` alone (scores or labels,
        ``config.access``), each with an equal share of ``config.max_queries``. Returns the surrogates and
        the queries each one's distillation made."""
        c = self.config
        train_x, val_x = self.public_split()
        share = None if c.max_queries is None else max(1, c.max_queries // len(c.surrogate_archs))
        out, queries = [], []
        for i, arch in enumerate(c.surrogate_archs):
            key = self.key("answer-surrogate", index=i, target=target)
            made: Dict[str, int] = {}

            def train(arch: str = arch, i: int = i, made: Dict[str, int] = made) -> nn.Module:
                oracle = PredictOracle(self.api(target), access=c.access, max_queries=share)
                generator = self.prior(PUBLIC_PRIOR)[0] if c.surrogate_data == "public+prior" else None
                with _weak_said_later():
                    model = distill_surrogate(oracle, self._surrogate_start(arch, c.seed + i), train_x, val_x=val_x,
                                              generator=generator, steps=c.surrogate_steps, augment=c.augment,
                                              device=self.device, seed=c.seed + i, verbose=c.verbose,
                                              desc=f"distil surrogate {i} ({arch}) from {c.access} answers")
                made["queries"] = oracle.queries
                self.cache.store_json("answer-surrogate-queries", key, {"queries": oracle.queries})
                return model

            # the queries are counted while the surrogate is distilled: a surrogate whose count is missing or
            # bad is distilled again
            out.append(self.cache.module("answer-surrogate", key, lambda arch=arch: self.untrained_classifier(arch),
                                         train, records=("answer-surrogate-queries",)).to(self.device))
            record = self.cache.json("answer-surrogate-queries", key,
                                     lambda made=made: {"queries": made.get("queries")}, fields=("queries",))
            queries.append(record["queries"])
        return out, queries
