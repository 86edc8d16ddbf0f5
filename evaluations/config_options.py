"""The command line's options for :class:`~mi_art.evaluations.experiment.ExperimentConfig`'s fields: one
table (:data:`FIELD_OPTIONS`) from which ``mi-art attack`` (defaults: the config's) and ``mi-art evaluate``
(default: the grid's value) generate theirs, so that adding a field to the config adds one row here."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import click

from mi_art.access import ACCESS_LEVELS
from mi_art.models import ARCHITECTURES
from mi_art.training import AUGMENTATIONS
from mi_art.variants import ALIGN_VIEWS

from .config_rules import GAN_AUGMENTATIONS, KEDMI_INITS, SURROGATE_DATA
from .independent import INDEPENDENT_JUDGES
from .experiment import config_defaults

__all__ = ["COUNT", "FIELD_OPTIONS", "FieldOption", "FiniteFloat", "PRETRAIN_EPOCHS", "SEED", "field_options"]

#: A count (epochs, steps, iterations, sizes, workers): an integer >= 1.
COUNT = click.IntRange(min=1)
#: A seed: an integer >= 0.
SEED = click.IntRange(min=0)
#: Epochs of public pre-training: an integer >= 0 (0: train from scratch).
PRETRAIN_EPOCHS = click.IntRange(min=0)
#: A count where 0 turns the thing off.
COUNT_OR_ZERO = click.IntRange(min=0)


class Threads(click.ParamType):
    """torch's CPU threads: a positive count, ``auto`` or ``torch`` (:func:`mi_art.threads.check_threads`)."""

    name = "N|auto|torch"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        from mi_art.threads import check_threads

        try:
            return check_threads("threads", value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


#: A ``--threads`` value.
THREADS = Threads()


class FiniteFloat(click.ParamType):
    """A finite float in ``[low, inf)`` (``(low, inf)`` when ``low_open``): click's ``FloatRange``
    lets "nan" and "inf" through."""

    name = "float"

    def __init__(self, low: float = 0.0, low_open: bool = False) -> None:
        self.low, self.low_open = low, low_open

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if v < self.low or (self.low_open and v == self.low):
            self.fail(f"{value!r} must be {'>' if self.low_open else '>='} {self.low:g}", param, ctx)
        return v


#: ``FieldOption.attack_default`` when ``mi-art attack``'s default is the config's.
_CONFIG_DEFAULT = "config's default"


@dataclass(frozen=True)
class FieldOption:
    """How one config field appears on the command line.

    ``name``: the option when it is not ``--<field with dashes>``; ``switch``: the off form of a boolean
    (``--x/--<switch>``); ``multiple``: repeatable, collected into a tuple; ``commands``: the commands that
    offer it; ``attack_default``: ``mi-art attack``'s default when it is not the config's.
    """

    field: str
    type: Any
    help: str
    name: Optional[str] = None
    switch: Optional[str] = None
    multiple: bool = False
    commands: Tuple[str, ...] = ("attack", "evaluate")
    attack_default: Any = _CONFIG_DEFAULT
    #: What a default of None means, for ``--help``.
    none_means: str = "none"

    @property
    def flag(self) -> str:
        return self.name or "--" + self.field.replace("_", "-")


_ARCH = click.Choice(sorted(ARCHITECTURES))

#: Every config field the commands take as an option, in the order ``--help`` lists them.
FIELD_OPTIONS: Tuple[FieldOption, ...] = (
    FieldOption("iterations", COUNT, "Attack iterations."),
    FieldOption("n_reconstructions", COUNT, "Reconstructions per identity."),
    FieldOption("n_candidates", COUNT,
                "Candidates searched per identity; the --n-reconstructions the target recognises best under random "
                "crops, flips and small rotations are kept (Plug & Play Attacks).", none_means="no selection"),
    FieldOption("search_views", COUNT_OR_ZERO,
                "Random views (crop, flip, rotation, jitter) of each image over which the identity loss is averaged "
                "at every search step (PLG-MI's augmentation, Plug & Play Attacks' transformations); 0: none.",
                none_means=f"under a '+align' variant {ALIGN_VIEWS} (AlignMI's; it needs >= 2), otherwise each attack's own: "
                "PLG-MI 2, the others 0"),
    FieldOption("batch_size", COUNT, "Latent codes (GMI) or identities (KEDMI) optimised together."),
    FieldOption("target_arch", _ARCH, "Architecture of the target."),
    FieldOption("eval_arch", _ARCH, "Architecture of the evaluation models (judges)."),
    FieldOption("target_epochs", COUNT, "Epochs of training the target on the private identities."),
    FieldOption("eval_epochs", COUNT, "Epochs of training each judge on the private identities."),
    FieldOption("target_pretrain_epochs", PRETRAIN_EPOCHS,
                "Epochs of pre-training the target on the public identities (their own labels) before "
                "--target-epochs of fine-tuning every layer on the private ones; 0: from scratch."),
    FieldOption("eval_pretrain_epochs", PRETRAIN_EPOCHS,
                "Epochs of pre-training the evaluation model on the public identities before --eval-epochs of "
                "fine-tuning on the private ones; 0: from scratch."),
    FieldOption("judges", COUNT,
                "Evaluation models trained from independent initialisations: every attack metric is their mean, "
                "reported with the spread over judges (a single judge is itself a draw)."),
    FieldOption("augment", click.Choice(AUGMENTATIONS), "Augmentation of the target's and judges' training images."),
    FieldOption("surrogate_pretrain_epochs", PRETRAIN_EPOCHS,
                "Epochs of pre-training each surrogate on the public identities before distilling the target into "
                "it (the paper's surrogates start from pre-trained weights); 0: from random weights."),
    FieldOption("prior_steps", COUNT, "GMI WGAN-GP generator steps."),
    FieldOption("gan_width", COUNT, "Channel width of the GAN priors' generator and discriminator."),
    FieldOption("gan_augment", click.Choice(GAN_AUGMENTATIONS),
                "Augmentation of the public images the GAN priors train on. auto: 'flip' for face folders and "
                "CelebA (a mirrored face is a face), 'none' for digits and MNIST (a mirrored digit is not a "
                "digit), for each dataset of a grid. Without flips KEDMI's prior on a few hundred public faces "
                "turns to noise."),
    FieldOption("kedmi_steps", COUNT,
                "KEDMI generator steps (each after 5 discriminator steps), warm-started from the GMI generator."),
    FieldOption("kedmi_init", click.Choice(KEDMI_INITS),
                "gmi: KEDMI's generator starts from the GMI prior's; none: from random weights."),
    FieldOption("plgmi_steps", COUNT,
                "PLG-MI conditional generator steps (each after 5 discriminator steps), warm-started from the GMI "
                "generator."),
    FieldOption("surrogate_archs", _ARCH, "Surrogate architecture for MA and LOMMA (repeatable).",
                name="--surrogate", multiple=True),
    FieldOption("surrogate_steps", COUNT,
                "Distillation steps per surrogate, every one run (the student with the lowest KL on held-out "
                "public images is kept)."),
    FieldOption("surrogate_data", click.Choice(SURROGATE_DATA),
                "What the surrogates are distilled on: public images and GMI-prior samples, or public images only."),
    FieldOption("min_surrogate_agreement", click.FloatRange(0, 1),
                "Leave out of the ensemble, with a warning, every surrogate that agrees with the target on fewer "
                "held-out public images than this share (0: use every surrogate)."),
    FieldOption("regularise_surrogates", bool,
                "Under LOMMA, every surrogate's logit loss gets its own p_reg regulariser, as the target's has "
                "(the paper regularises the target only: --no-regularise-surrogates).",
                switch="--no-regularise-surrogates"),
    FieldOption("mixed_precision", bool,
                "Train the target, the judges, their pre-training and the surrogates with bfloat16 forward passes "
                "(faster on CPUs with AVX-512 BF16 or AMX and on recent GPUs; the GAN priors and defended training "
                "stay float32); cached apart from float32 models.", switch="--full-precision"),
    FieldOption("miface_iterations", COUNT, "ART MIFace iterations."),
    FieldOption("access", click.Choice(ACCESS_LEVELS),
                "What the attack may ask of the target: white-box (its gradients), black-box (its scores through "
                "predict, an output defense applied) or label-only (its predicted label). Below white-box the "
                "surrogates (--surrogate) are distilled from its answers and inverted."),
    FieldOption("independent_judge", click.Choice(INDEPENDENT_JUDGES),
                "A judge we did not train, reported beside the trained judges and never averaged with them: dlib's "
                "public face recogniser (nearest identity centroid of its descriptors of the private training "
                "images; pip install \"mi-art[faces]\"), none, or auto (dlib for face folders and CelebA when "
                "installed)."),
    FieldOption("max_queries", COUNT,
                "Queries the target answers in all below white-box, shared by the surrogates.", none_means="no limit"),
)

_CONFIG_DEFAULTS = config_defaults()


def _shown(value: Any, none_means: str) -> str:
    if value is None:
        return none_means
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ", ".join(map(str, value))
    return str(value)


def _decorator(spec: FieldOption, command: str) -> Callable:
    decls = [f"{spec.flag}/{spec.switch}" if spec.switch else spec.flag, spec.field]
    kwargs: dict = {"help": spec.help}
    if spec.type is not bool:
        kwargs["type"] = spec.type
    if spec.multiple:
        kwargs["multiple"] = True
    if command == "attack":
        default = _CONFIG_DEFAULTS[spec.field] if spec.attack_default is _CONFIG_DEFAULT else spec.attack_default
        kwargs.update(default=default, show_default=True if default is not None else spec.none_means)
    else:
        kwargs["default"] = () if spec.multiple else None
        fallback = _shown(_CONFIG_DEFAULTS[spec.field], spec.none_means)
        kwargs["help"] = f"{spec.help} [default: the grid's, else {fallback}]"
    return click.option(*decls, **kwargs)


def field_options(command: str) -> Callable:
    """Decorate a click command with every option of :data:`FIELD_OPTIONS` that ``command`` ("attack" or
    "evaluate") offers; each reaches the command as a keyword named after its config field."""
    if command not in ("attack", "evaluate"):
        raise ValueError(f"command must be 'attack' or 'evaluate', got {command!r}")

    def decorate(func: Callable) -> Callable:
        for spec in reversed(FIELD_OPTIONS):
            if command in spec.commands:
                func = _decorator(spec, command)(func)
        return func

    return decorate


def field_values(command: str, values: dict) -> dict:
    """The config fields among a command's keyword arguments (those :func:`field_options` added)."""
    return {spec.field: values[spec.field] for spec in FIELD_OPTIONS if command in spec.commands}
