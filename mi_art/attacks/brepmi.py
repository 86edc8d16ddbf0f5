"""BREP-MI: "Label-Only Model Inversion Attacks via Boundary Repulsion" (Kahla et al., CVPR 2022,
https://arxiv.org/abs/2203.01925): a label-only attack that asks the target directly, with no surrogate."""
from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import torch
from art.attacks.attack import InferenceAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator
from torch import nn
from tqdm.auto import tqdm

from ..access import PredictOracle
from .params import ExplainedParams
from ..training import show_progress
from ..utils import module_device, seed_everything
from ..validation import (check_bool, check_count, check_labels, check_number, check_optional_count, check_positive,
                          check_seed)


class BREPMI(ExplainedParams, InferenceAttack):
    """Boundary-repelling model inversion from the target's labels alone.

    For each reconstruction, a latent code of a public GAN prior whose image the target labels as the
    identity (found among random codes); then, per step, ``sphere_points`` codes on a sphere of radius ``R``
    around it are labelled by the target, and the code moves away from those outside the identity's region
    (the mean of their directions, step ``min(R / 3, 3)``), a step that would leave the region being refused.
    When more than ``inside_fraction`` of the sphere is inside, ``R`` grows by ``expansion``: the code has
    moved deeper into the identity's region. A chain stops after ``patience`` steps at one radius;
    the attack after ``max_iterations`` steps or when ``max_queries`` cannot pay another step.

    As the authors' code (``m-kahla/Label-Only-Model-Inversion-Attacks-via-Boundary-Repulsion``): 32 sphere
    points, starting radius 2, expansion 1.3 when more than 75% of them are inside, repulsion from the
    outside points only, codes clamped to [-1.5, 1.5], initial codes among batches of 256. Deviations: all
    chains step together (one ``predict`` call per step for all of them); ``patience`` is 100, not 1000,
    and ``max_iterations`` caps the steps, for CPU budgets; the sphere's points are clamped into the code
    box too (each repelling along its direction from the code), and ``R`` stops growing at the box's
    diagonal ``2 * clamp * sqrt(latent_dim)``, where a chain counts its steps towards ``patience``
    (unclamped, the radii grow until the points lie far outside a box of half-width 1.5, among codes the
    prior never saw; the clamp costs a few reconstructions on digits: the final radii and Acc@1 with and
    without it are measured in docs/methods.md, "Access: white-box, black-box, label-only").

    :param estimator: Any ART classifier with ``predict`` (a ``BlackBoxClassifier`` included): only the
        label it ranks first is used (:class:`mi_art.access.PredictOracle`, label-only), every image counted.
    :param generator: The public GAN prior's generator (:func:`mi_art.train_gmi_prior`).
    :param n_reconstructions: Chains (reconstructions) per identity, each from its own initial code.
    :param max_queries: The query budget (None: no limit); ``queries_`` after :meth:`infer`.
    """

    attack_params = InferenceAttack.attack_params + [
        "sphere_points", "initial_radius", "expansion", "inside_fraction", "patience", "max_iterations",
        "clamp", "init_batch", "init_tries", "max_queries", "n_reconstructions", "seed", "verbose"]
    _estimator_requirements = (BaseEstimator, ClassifierMixin)
    renamed_params = {"max_iter": "max_iterations", "iterations": "max_iterations"}

    def __init__(self, estimator: Any, generator: nn.Module, *, sphere_points: int = 32, initial_radius: float = 2.0,
                 expansion: float = 1.3, inside_fraction: float = 0.75, patience: int = 100,
                 max_iterations: int = 1000, clamp: float = 1.5, init_batch: int = 256, init_tries: int = 20,
                 max_queries: Optional[int] = None, n_reconstructions: int = 1, seed: Optional[int] = None,
                 verbose: bool = True, **unknown: Any) -> None:
        self._refuse_unknown(unknown)
        super().__init__(estimator=estimator)
        if not isinstance(generator, nn.Module):
            raise ValueError("generator must be a torch.nn.Module instance")
        self.generator = generator
        self.sphere_points, self.initial_radius, self.expansion = sphere_points, initial_radius, expansion
        self.inside_fraction, self.patience, self.max_iterations = inside_fraction, patience, max_iterations
        self.clamp, self.init_batch, self.init_tries = clamp, init_batch, init_tries
        self.max_queries, self.n_reconstructions, self.seed, self.verbose = max_queries, n_reconstructions, seed, verbose
        self.labels_: Optional[np.ndarray] = None
        self.reconstruction_index_: Optional[np.ndarray] = None
        self.radius_: Optional[np.ndarray] = None
        self.initialised_: Optional[np.ndarray] = None
        self.queries_ = 0
        self._check_params()

    def _check_params(self) -> None:
        for name in ("sphere_points", "patience", "max_iterations", "init_batch", "init_tries", "n_reconstructions"):
            check_count(name, getattr(self, name))
        check_positive("initial_radius", self.initial_radius)
        check_number("expansion", self.expansion, low=1, low_open=True, hint=" (the radius grows by this factor)")
        check_number("inside_fraction", self.inside_fraction, low=0, high=1, high_open=True)
        check_positive("clamp", self.clamp)
        check_optional_count("max_queries", self.max_queries)
        check_seed("seed", self.seed)
        check_bool("verbose", self.verbose)

    @torch.no_grad()
    def infer(self, x: Optional[np.ndarray] = None, y: Optional[np.ndarray] = None, **kwargs: Any) -> np.ndarray:
        """Reconstruct ``n_reconstructions`` images for every identity in ``y``, in the estimator's input space,
        ordered as ``np.repeat(y, n_reconstructions)``. Afterwards ``labels_``, ``reconstruction_index_``,
        ``radius_`` (each chain's final radius, at most the code box's diagonal: larger is deeper inside the
        identity's region),
        ``initialised_`` (whether a code the target labels as the identity was found to start from) and
        ``queries_``."""
        if x is not None:
            raise ValueError("x is not used by BREP-MI (it starts from the GAN prior): pass the identities as y")
        if y is None:
            raise ValueError("y is required: the identities (class indices) to reconstruct")
        labels = np.repeat(check_labels(y, self.estimator.nb_classes), self.n_reconstructions)
        seed_everything(self.seed)
        oracle = PredictOracle(self.estimator, access="label-only", max_queries=self.max_queries)
        gen = self.generator.eval()
        device = module_device(gen)
        dim = int(getattr(gen, "latent_dim", 100))
        target = torch.from_numpy(labels).to(device)

        def labels_of(z: torch.Tensor) -> torch.Tensor:
            return oracle.answers(gen(z)).argmax(1).to(device)

        z, found = self._initial_codes(labels_of, target, dim, device, oracle)
        radius = torch.full((len(z),), float(self.initial_radius), device=device)
        box_diagonal = 2 * self.clamp * dim ** 0.5  # a sphere this wide has every point outside the box
        since_change = torch.zeros(len(z), dtype=torch.long, device=device)
        active = found.clone()
        p = self.sphere_points
        bar = tqdm(total=self.max_iterations, desc="BREP-MI", disable=not self.verbose)
        try:
            for _ in range(self.max_iterations):
                idx = active.nonzero().squeeze(1)
                if len(idx) == 0:
                    break
                cost = len(idx) * (p + 1)
                if oracle.remaining() is not None and oracle.remaining() < cost:
                    break
                directions = torch.randn(len(idx), p, dim, device=device)
                directions = directions / directions.norm(dim=2, keepdim=True) * radius[idx, None, None]
                # the sphere's points, kept in the prior's code box: outside it the generator's images say
                # nothing of the identity's region
                points = (z[idx, None, :] + directions).clamp(-self.clamp, self.clamp)
                inside = (labels_of(points.reshape(-1, dim)).view(len(idx), p) == target[idx, None]).float()
                grow = inside.mean(1) > self.inside_fraction
                # repulsion only: the mean direction towards the outside points, negated
                towards = points - z[idx, None, :]
                towards = towards / towards.norm(dim=2, keepdim=True).clamp_min(1e-12)
                step_dir = -((1 - inside)[:, :, None] * towards).mean(1)
                step = torch.clamp(radius[idx] / 3, max=3.0)
                z_new = (z[idx] + step[:, None] * step_dir).clamp(-self.clamp, self.clamp)
                keep = labels_of(z_new) == target[idx]
                z[idx[keep]] = z_new[keep]
                grown = idx[grow & (radius[idx] < box_diagonal)]  # at the diagonal the sphere cannot grow further
                radius[grown] = (radius[grown] * self.expansion).clamp(max=box_diagonal)
                since_change[idx] += 1
                since_change[grown] = 0
                active[idx[since_change[idx] >= self.patience]] = False
                bar.update(1)
                show_progress(bar, cost + len(idx))  # the sphere's points and the moved codes, each one query
        finally:
            bar.close()
        self.labels_ = labels
        self.reconstruction_index_ = np.tile(np.arange(self.n_reconstructions), len(labels) // self.n_reconstructions)
        self.radius_ = radius.cpu().numpy()
        self.initialised_ = found.cpu().numpy()
        self.queries_ = oracle.queries
        return oracle.from_unit(gen(z))

    def _initial_codes(self, labels_of: Any, target: torch.Tensor, dim: int, device: torch.device,
                       oracle: PredictOracle):
        """For every chain a random code the target labels as its identity (among ``init_tries`` batches of
        ``init_batch``). Chains without one start from a random code and do not move; a warning says so."""
        z = torch.empty(len(target), dim, device=device).uniform_(-self.clamp, self.clamp)
        found = torch.zeros(len(target), dtype=torch.bool, device=device)
        for _ in range(self.init_tries):
            if found.all() or (oracle.remaining() is not None and oracle.remaining() < self.init_batch):
                break
            candidates = torch.randn(self.init_batch, dim, device=device).clamp(-self.clamp, self.clamp)
            predicted = labels_of(candidates)
            for i in (~found).nonzero().squeeze(1).tolist():
                hits = (predicted == target[i]).nonzero().squeeze(1)
                if len(hits):
                    z[i] = candidates[hits[torch.randint(len(hits), (1,)).item()]]
                    found[i] = True
        if not found.all():
            missing = sorted(set(target[~found].tolist()))
            warnings.warn(f"BREP-MI found no prior image the target labels as identities {missing} in "
                          f"{self.init_tries} batches of {self.init_batch}: their reconstructions are random prior "
                          "samples (raise init_tries)", stacklevel=3)
        return z, found
