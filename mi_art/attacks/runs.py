"""How the pipeline runs the attacks that are not GAN latent searches with variants (their
:class:`~mi_art.attacks.registry.AttackSpec` ``run``): ART's MIFace and BREP-MI, "baseline" only."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..priors import PUBLIC_PRIOR, prior_samples
from .brepmi import BREPMI
from .registry import AttackJob, AttackOutcome, AttackSpec


def run_miface(job: AttackJob) -> AttackOutcome:
    """ART's MIFace baseline on the estimator behind ``job.target_view`` (its
    :class:`mi_art.utils.EstimatorModule`), from a mid-grey start in the estimator's input space (0.5 of
    its ``clip_values`` range, in its layout; deterministic: one reconstruction per identity)."""
    with job.bench.stages.stage(*job.stage):
        recs, labels, index = miface_reconstructions(job.target_view, job.identities, job.bench.config,
                                                     job.bench.data.input_shape)
    return AttackOutcome(recs, labels, index)


def miface_reconstructions(target_view: Any, identities: np.ndarray, config: Any, input_shape: tuple):
    """MIFace's ``(reconstructions, labels, reconstruction index)`` for ``identities``, ``config.miface_iterations``
    iterations (see :func:`run_miface`)."""
    from art.attacks.inference.model_inversion import MIFace

    attack = MIFace(target_view.estimator, max_iter=config.miface_iterations, window_length=100, threshold=0.99,
                    learning_rate=0.1, batch_size=max(1, len(identities)), verbose=config.verbose)
    grey = np.full((len(identities), *input_shape), 0.5, dtype=np.float32)
    x0 = np.asarray(target_view.from_unit(grey), dtype=np.float32)
    recs = attack.infer(x0, identities).astype(np.float32)
    return recs, identities.copy(), np.zeros(len(identities), dtype=np.int64)


def describe_miface(config: Any, variant: str, n_identities: int) -> str:
    return f"ART MIFace, {config.miface_iterations} iterations, {n_identities} identities x 1"


def run_brepmi(job: AttackJob) -> AttackOutcome:
    """BREP-MI (:class:`mi_art.BREPMI`) on the labels of the target's ``predict`` (``bench.api``, the cell's
    output defense applied), with the public prior, ``iterations`` steps at most and ``max_queries``."""
    bench, c = job.bench, job.bench.config
    generator = bench.prior(PUBLIC_PRIOR)[0]
    attack = BREPMI(bench.api(job.unit_target), generator, max_iterations=c.iterations,
                    n_reconstructions=c.n_reconstructions, max_queries=c.max_queries, seed=job.seed, verbose=c.verbose)
    with bench.stages.stage(*job.stage):
        recs = attack.infer(None, job.identities)
    budget = bench.prior_budget(PUBLIC_PRIOR)
    record = {"queries": attack.queries_, "access": "label-only", "query_budget": c.max_queries, "prior": budget,
              "prior_samples": prior_samples(bench.prior(PUBLIC_PRIOR)[0], budget["samples"], seed=c.seed)}
    return AttackOutcome(recs.astype(np.float32), attack.labels_, attack.reconstruction_index_, record)


def describe_brepmi(config: Any, variant: str, n_identities: int) -> str:
    budget = (f"BREPMI {variant}, {config.iterations} iterations at most, {n_identities} identities x "
              f"{config.n_reconstructions} reconstructions")
    return budget + (f", at most {config.max_queries} queries" if config.max_queries is not None else "")


_INIT_BATCH = BREPMI.__init__.__kwdefaults__["init_batch"]

MIFACE = AttackSpec("miface", "ART MIFace", variants=False, access_levels=("white-box",),
                    access_note="needs the target's gradients", run=run_miface,
                    iterations_field="miface_iterations", describe=describe_miface)
# label-only: it asks the target's labels alone, which every access level gives
BREP_MI = AttackSpec("brepmi", "BREP-MI", prior=PUBLIC_PRIOR, variants=False, attack_class=BREPMI, run=run_brepmi,
                     describe=describe_brepmi,
                     least_queries=(_INIT_BATCH, f"BREP-MI's first search for starting codes ({_INIT_BATCH} queries: "
                                                 "one batch of candidate codes)"))
