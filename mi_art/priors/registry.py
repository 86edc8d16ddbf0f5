"""Every prior by name (:data:`PRIORS`, :func:`register_prior`, :func:`get_prior`): each entry owns how its
prior is built, trained, keyed in the artifact cache and checked against the data's image size, so the
pipeline (:class:`~mi_art.evaluations.workbench.Workbench`) trains any registered prior the same way.

An entry's callables are given the workbench (``bench``), of which they use: ``bench.config`` (the run's
:class:`~mi_art.evaluations.experiment_config.ExperimentConfig`, or a config with the fields they read),
``bench.data`` (:class:`~mi_art.data.MIDataset`, images in [0, 1]), ``bench.device``, ``bench.key(kind, ...)``
(:class:`~mi_art.evaluations.artifact_keys.ArtifactKeys`: ``bench.key("data")``, the data's part of a cache key;
``bench.key("target", model=target)``, the target's part; ``bench.key("<name>-prior")``, another prior's key) and
``bench.prior(name)`` (another prior, e.g. the one it starts from)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from ..registry import Registry
from .gmi import train_gmi_prior
from .kedmi import train_kedmi_prior
from .networks import LATENT_DIM, ConditionalGenerator, Critic, Generator, KEDMIDiscriminator, ProjectionDiscriminator
from .plgmi import few_public_images_note, train_plgmi_prior

__all__ = ["PRIORS", "PUBLIC_PRIOR", "PriorSpec", "SizeCheck", "get_prior", "priors_needed", "register_prior",
           "unregister_prior"]

#: ``(what, build, input shape, output shape)``: a part of a prior built and run at the data's size before any
#: training (:func:`mi_art.models.check_builds`).
SizeCheck = Tuple[str, Callable[[], nn.Module], Tuple[int, ...], Tuple[int, ...]]


@dataclass(eq=False)
class PriorSpec:
    """One prior kind.

    :param name: Its name (an attack's ``prior``); its cache artifacts are ``"<name>-prior"``.
    :param per_target: Whether it is trained against a target (then cached per target).
    :param train: Its training function, called as ``train(*args, **kwargs)`` with ``arguments(bench,
        target)``; returns ``(generator, discriminator)`` (the discriminator may be None).
    :param arguments: ``(args, kwargs)`` of ``train`` for the workbench's config (and ``target``, None for
        a prior made without one).
    :param build: The untrained parts ``{"g": generator, "d": discriminator}`` a checkpoint is loaded into.
    :param key: Its cache key for the workbench's config and ``target``: what it is made from.
    :param steps_field: The config field holding its training steps (the record's and the caveat's budget).
    :param data_note: ``data_note(n_public_images, n_classes)``: a sentence for every result record, or None.
    :param starts_from: The priors it is started from for a config (trained or loaded first).
    :param size_checks: Its parts as :data:`SizeCheck` for ``(channels, size, n_classes, width)``.
    :param face_steps: The training steps below which its face reconstructions were blurred (a caveat in
        face runs' records; None: no caveat).
    """

    name: str
    per_target: bool
    train: Callable[..., Tuple[nn.Module, Optional[nn.Module]]]
    arguments: Callable[[Any, Optional[nn.Module]], Tuple[tuple, Dict[str, Any]]]
    build: Callable[[Any], Dict[str, nn.Module]]
    key: Callable[[Any, Optional[nn.Module]], Dict[str, Any]]
    steps_field: str
    data_note: Callable[[int, int], Optional[str]] = lambda n_public, n_classes: None
    starts_from: Callable[[Any], Tuple[str, ...]] = lambda config: ()
    size_checks: Callable[[int, int, int, int], List[SizeCheck]] = lambda channels, size, n_classes, width: []
    face_steps: Optional[int] = None

    @property
    def cache_kind(self) -> str:
        """The kind its checkpoint, training record, sample grid and quality are cached under."""
        return f"{self.name}-prior"


#: The priors by name (the ``prior`` of each attack; :func:`register_prior` adds one).
PRIORS: Registry[PriorSpec] = Registry("prior", PriorSpec)


def register_prior(spec: PriorSpec, *, replace: bool = False) -> PriorSpec:
    """Make the prior ``spec`` known by its name to the attacks and the pipeline; returns it."""
    return PRIORS.register(spec, replace=replace)


def unregister_prior(name: str) -> None:
    """Forget the prior ``name``."""
    PRIORS.unregister(name)


def get_prior(name: str) -> PriorSpec:
    """The registered prior ``name``; a ValueError naming the valid ones otherwise."""
    return PRIORS.lookup(name)


def priors_needed(name: Optional[str], config: Any) -> Tuple[str, ...]:
    """The prior ``name`` (None: none) and those it starts from for ``config``, each once, dependencies first."""
    out: List[str] = []

    def visit(prior: str) -> None:
        for start in get_prior(prior).starts_from(config):
            visit(start)
        if prior not in out:
            out.append(prior)

    if name is not None:
        visit(name)
    return tuple(out)


# ---------------------------------------------------------------- the built-in priors

#: The target-independent prior on public images: what surrogates distilled on "public+prior" learn on, what
#: BREP-MI searches and what KEDMI and PLG-MI start from.
PUBLIC_PRIOR = "gmi"


def _generator_checks(channels: int, size: int, width: int) -> List[SizeCheck]:
    return [(f"the GAN generator (gan_width={width})", lambda: Generator(size, channels, width=width),
             (2, LATENT_DIM), (2, channels, size, size))]


def _critic_checks(channels: int, size: int, n_classes: int, width: int) -> List[SizeCheck]:
    # PLG-MI's conditional networks have the same layers as the generator and the critic
    return _generator_checks(channels, size, width) + [
        (f"the GMI critic (gan_width={width})", lambda: Critic(size, channels, width=width),
         (2, channels, size, size), (2,))]


def _kedmi_checks(channels: int, size: int, n_classes: int, width: int) -> List[SizeCheck]:
    return _generator_checks(channels, size, width) + [
        (f"the KEDMI discriminator (gan_width={width})", lambda: KEDMIDiscriminator(n_classes, size, channels,
                                                                                     width=width),
         (2, channels, size, size), (2, n_classes))]


def _shape(bench: Any) -> Tuple[int, int, int, int]:
    """(channels, size, private identities, GAN width) of the workbench's data and config."""
    channels, size, _ = bench.data.input_shape
    return channels, size, bench.data.num_classes, bench.config.gan_width


def _run_settings(bench: Any) -> Dict[str, Any]:
    c = bench.config
    return dict(width=c.gan_width, device=bench.device, seed=c.seed, verbose=c.verbose)


# The keys below are those of the cached artifacts made before the registry (tests/test_registries.py pins
# them): a change to one makes every cached prior of that kind be trained again.

def _gmi_key(bench: Any, target: Optional[nn.Module]) -> Dict[str, Any]:
    c = bench.config
    return {"data": bench.key("data"), "steps": c.gmi_steps, "width": c.gan_width, "augment": c.gan_augment,
            "seed": c.seed}


def _kedmi_key(bench: Any, target: Optional[nn.Module]) -> Dict[str, Any]:
    c = bench.config
    key = {"target": bench.key("target", model=target), "steps": c.kedmi_steps, "width": c.gan_width,
           "augment": c.gan_augment, "seed": c.seed, "version": 2}
    if c.kedmi_init == PUBLIC_PRIOR:
        key["init"] = bench.key(f"{PUBLIC_PRIOR}-prior")
    return key


def _plgmi_key(bench: Any, target: Optional[nn.Module]) -> Dict[str, Any]:
    c = bench.config
    return {"target": bench.key("target", model=target), "steps": c.plgmi_steps, "width": c.gan_width,
            "seed": c.seed, "init": bench.key(f"{PUBLIC_PRIOR}-prior"), "version": 1}


def _gmi_arguments(bench: Any, target: Optional[nn.Module]) -> Tuple[tuple, Dict[str, Any]]:
    c = bench.config
    return (bench.data.public.x,), dict(steps=c.gmi_steps, augment=c.gan_augment, **_run_settings(bench))


def _kedmi_arguments(bench: Any, target: Optional[nn.Module]) -> Tuple[tuple, Dict[str, Any]]:
    """KEDMI's GAN for ``target``, warm-started from the public prior's generator unless ``kedmi_init`` is
    "none"."""
    c = bench.config
    init = bench.prior(PUBLIC_PRIOR)[0] if c.kedmi_init == PUBLIC_PRIOR else None
    return (target, bench.data.public.x), dict(steps=c.kedmi_steps, augment=c.gan_augment, init_generator=init,
                                               **_run_settings(bench))


def _plgmi_arguments(bench: Any, target: Optional[nn.Module]) -> Tuple[tuple, Dict[str, Any]]:
    """PLG-MI's conditional GAN for ``target``, started from the public prior's generator."""
    c = bench.config
    return (target, bench.data.public.x), dict(steps=c.plgmi_steps, init_generator=bench.prior(PUBLIC_PRIOR)[0],
                                               **_run_settings(bench))


def _gmi_parts(bench: Any) -> Dict[str, nn.Module]:
    ch, s, _, w = _shape(bench)
    return {"g": Generator(s, ch, width=w), "d": Critic(s, ch, width=w)}


def _kedmi_parts(bench: Any) -> Dict[str, nn.Module]:
    ch, s, k, w = _shape(bench)
    return {"g": Generator(s, ch, width=w), "d": KEDMIDiscriminator(k, s, ch, width=w)}


def _plgmi_parts(bench: Any) -> Dict[str, nn.Module]:
    ch, s, k, w = _shape(bench)
    return {"g": ConditionalGenerator(s, ch, k, width=w), "d": ProjectionDiscriminator(s, ch, k, width=w)}


#: The face benchmarks' prior budgets (benchmarks/attack_variants.py without --quick): see
#: :data:`mi_art.evaluations.workbench.FACE_PRIOR_STEPS`.
_BUILT_IN: Sequence[PriorSpec] = (
    # a WGAN-GP on public images, independent of the target (GMI, VMI, BREP-MI)
    PriorSpec(PUBLIC_PRIOR, per_target=False, train=train_gmi_prior, arguments=_gmi_arguments, build=_gmi_parts,
              key=_gmi_key, steps_field="gmi_steps", size_checks=_critic_checks, face_steps=1500),
    # a GAN whose discriminator learns the target's soft labels on public images, one per target (KEDMI)
    PriorSpec("kedmi", per_target=True, train=train_kedmi_prior, arguments=_kedmi_arguments, build=_kedmi_parts,
              key=_kedmi_key, steps_field="kedmi_steps", size_checks=_kedmi_checks, face_steps=200,
              starts_from=lambda c: (PUBLIC_PRIOR,) if c.kedmi_init == PUBLIC_PRIOR else ()),
    # a class-conditional GAN on public images pseudo-labelled by the target, one per target (PLG-MI)
    PriorSpec("plgmi", per_target=True, train=train_plgmi_prior, arguments=_plgmi_arguments, build=_plgmi_parts,
              key=_plgmi_key, steps_field="plgmi_steps", data_note=few_public_images_note,
              size_checks=_critic_checks, face_steps=1000, starts_from=lambda c: (PUBLIC_PRIOR,)),
)
for _spec in _BUILT_IN:
    register_prior(_spec)
