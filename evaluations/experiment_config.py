"""What one attack run depends on: :class:`ExperimentConfig`, each field declared once with its rule, help and
grid scope (:data:`SETTINGS`), and what the configuration alone can refuse before anything is trained
(:func:`query_budget_problem`)."""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from mi_art import distill_surrogate
from mi_art.access import ACCESS_LEVELS
from mi_art.attacks import get_attack
from mi_art.defenses.registry import RENAMED_DEFENSES
from mi_art.training import AUGMENTATIONS
from mi_art.variants import ALIGN_VIEWS, Variant, parse_variant

from .config_rules import (ARCHITECTURE, ARCHITECTURE_LIST, ATTACK, COUNT, FLAG, GAN_AUGMENTATIONS, ID_WEIGHT,
                           INDEPENDENT_JUDGE, KEDMI_INITS, PRETRAIN_EPOCHS, SEARCH_VIEWS, SEED, SHARE, SURROGATE_DATA,
                           VARIANT, choice, gan_augment_for, optional_count)
from .settings import Settings, accepts_earlier_names, setting

#: share of the public images held out from distillation (early stopping, agreement reported).
HELD_OUT_PUBLIC = 0.1


@accepts_earlier_names
@dataclass
class ExperimentConfig:
    """Everything one attack run depends on. Defaults suit the embedded digits data on a CPU.

    Each field is declared once, here (:func:`~mi_art.evaluations.settings.setting`): its default, its rule, its
    help and where a grid may set it. The config's checks, the commands' options and the grid's keys are derived
    from these declarations (:data:`SETTINGS`)."""

    dataset: str = setting("digits", checked_by="load_dataset (mi_art.data), with the data folder", budget=False)
    defense: str = setting("none", checked_by="the defense registry (mi_art.defenses.get_defense)", budget=False,
                           values=RENAMED_DEFENSES)
    defense_params: Dict[str, Any] = setting(
        default_factory=dict, checked_by="the defense's own parameter check (mi_art.defenses.check_defense_params)",
        budget=False)
    data_root: Optional[str] = setting(None, checked_by="load_dataset (mi_art.data): the folder must exist",
                                       budget=False)
    data_options: Dict[str, Any] = setting(default_factory=dict,
                                           checked_by="load_dataset (mi_art.data): the loader's own arguments",
                                           budget=False)
    attack: str = setting("gmi", ATTACK, "The attack (a grid lists them under attacks).", option=False, budget=False)
    variant: str = setting("lomma", VARIANT, "The attack's variant (a grid lists them under variants).", option=False,
                           budget=False)
    identities: Optional[List[int]] = setting(None, checked_by="the Workbench, against the data's number of identities")
    iterations: int = setting(300, COUNT, "Attack iterations.")
    n_reconstructions: int = setting(5, COUNT, "Reconstructions per identity.")
    # Plug & Play Attacks' selection, mi_art.attacks.selection
    n_candidates: Optional[int] = setting(
        None, optional_count(" (None: no selection)"),
        "Candidates searched per identity; the --n-reconstructions the target recognises best under random "
        "crops, flips and small rotations are kept (Plug & Play Attacks).", none_means="no selection",
        in_id="when-set")
    # GANInversionAttack's views
    search_views: Optional[int] = setting(
        None, SEARCH_VIEWS,
        "Random views (crop, flip, rotation, jitter) of each image over which the identity loss is averaged "
        "at every search step (PLG-MI's augmentation, Plug & Play Attacks' transformations); 0: none.",
        none_means=f"under a '+align' variant {ALIGN_VIEWS} (AlignMI's; it needs >= 2), otherwise each attack's "
        "own: PLG-MI 2, the others 0", in_id="when-set")
    id_weight: Optional[float] = setting(
        None, ID_WEIGHT, "Weight of the identity loss against the prior's term in the GAN attacks' search.",
        none_means="each attack's own: 100 (the papers'), PLG-MI 1", in_id="when-set")
    batch_size: int = setting(60, COUNT, "Latent codes (GMI) or identities (KEDMI) optimised together.")
    target_arch: str = setting("cnn", ARCHITECTURE, "Architecture of the target.")
    judge_arch: str = setting("cnn-wide", ARCHITECTURE, "Architecture of the judges (the evaluation models).",
                              was="eval_arch")
    target_epochs: int = setting(20, COUNT, "Epochs of training the target on the private identities.")
    judge_epochs: int = setting(30, COUNT, "Epochs of training each judge on the private identities.",
                                was="eval_epochs")
    # mi_art.pretraining
    target_pretrain_epochs: int = setting(
        0, PRETRAIN_EPOCHS,
        "Epochs of pre-training the target on the public identities (their own labels) before "
        "--target-epochs of fine-tuning every layer on the private ones; 0: from scratch.", in_id="when-set")
    judge_pretrain_epochs: int = setting(
        0, PRETRAIN_EPOCHS,
        "Epochs of pre-training each judge on the public identities before --judge-epochs of "
        "fine-tuning on the private ones; 0: from scratch.", in_id="when-set", was="eval_pretrain_epochs")
    # judge j is initialised from seed + JUDGE_SEED_OFFSET + j
    judges: int = setting(
        1, COUNT,
        "Evaluation models trained from independent initialisations: every attack metric is their mean, "
        "reported with the spread over judges (a single judge is itself a draw).", in_id="when-set")
    augment: str = setting("shift", choice(AUGMENTATIONS),
                           "Augmentation of the target's and judges' training images.")
    surrogate_pretrain_epochs: int = setting(
        0, PRETRAIN_EPOCHS,
        "Epochs of pre-training each surrogate on the public identities before distilling the target into "
        "it (the paper's surrogates start from pre-trained weights); 0: from random weights.", in_id="when-set")
    gmi_steps: int = setting(300, COUNT, "GMI WGAN-GP generator steps.", was="prior_steps")
    gan_width: int = setting(32, COUNT, "Channel width of the GAN priors' generator and discriminator.")
    # "auto" is resolved when the config is made (config_rules.gan_augment_for): the field holds what the run uses
    gan_augment: str = setting(
        "auto", choice(GAN_AUGMENTATIONS),
        "Augmentation of the public images the GAN priors train on. auto: 'flip' for face folders and "
        "CelebA (a mirrored face is a face), 'none' for digits and MNIST (a mirrored digit is not a "
        "digit), for each dataset of a grid. Without flips KEDMI's prior on a few hundred public faces "
        "turns to noise.")
    kedmi_steps: int = setting(
        150, COUNT,
        "KEDMI generator steps (each after 5 discriminator steps), warm-started from the GMI generator.")
    kedmi_init: str = setting("gmi", choice(KEDMI_INITS),
                              "gmi: KEDMI's generator starts from the GMI prior's; none: from random weights.")
    plgmi_steps: int = setting(
        300, COUNT,
        "PLG-MI conditional generator steps (each after 5 discriminator steps), warm-started from the GMI "
        "generator.", in_id="when-set")
    surrogate_archs: Tuple[str, ...] = setting(("cnn-small", "cnn"), ARCHITECTURE_LIST,
                                               "Surrogate architecture for MA and LOMMA (repeatable).",
                                               flag="--surrogate", multiple=True)
    surrogate_steps: int = setting(
        300, COUNT,
        "Distillation steps per surrogate, every one run (the student with the lowest KL on held-out "
        "public images is kept).")
    surrogate_data: str = setting(
        "public+prior", choice(SURROGATE_DATA),
        "What the surrogates are distilled on: public images and GMI-prior samples, or public images only.")
    # below WEAK_SURROGATE_AGREEMENT a surrogate warns whatever this is
    min_surrogate_agreement: float = setting(
        0.0, SHARE,
        "Leave out of the ensemble, with a warning, every surrogate that agrees with the target on fewer "
        "held-out public images than this share (0: use every surrogate).", in_id="when-set")
    regularise_surrogates: bool = setting(
        True, FLAG,
        "Under LOMMA, every surrogate's logit loss gets its own p_reg regulariser, as the target's has "
        "(the paper regularises the target only: --no-regularise-surrogates).",
        switch="--no-regularise-surrogates", in_id="when-set")
    # mi_art.training.mixed_precision_context
    mixed_precision: bool = setting(
        False, FLAG,
        "Train the target, the judges, their pre-training and the surrogates with bfloat16 forward passes "
        "(faster on CPUs with AVX-512 BF16 or AMX and on recent GPUs; the GAN priors and defended training "
        "stay float32); cached apart from float32 models.", switch="--full-precision", in_id="when-set")
    miface_iterations: int = setting(300, COUNT, "ART MIFace iterations.")
    access: str = setting(
        "white-box", choice(ACCESS_LEVELS),
        "What the attack may ask of the target: white-box (its gradients), black-box (its scores through "
        "predict, an output defense applied) or label-only (its predicted label). Below white-box the "
        "surrogates (--surrogate) are distilled from its answers and inverted.", in_id="when-set")
    # mi_art.evaluations.independent
    independent_judge: str = setting(
        "auto", INDEPENDENT_JUDGE,
        "A judge we did not train, reported beside the trained judges and never averaged with them: dlib's "
        "public face recogniser (nearest identity centroid of its descriptors of the private training "
        "images; pip install \"mi-art[faces]\"), none, or auto (dlib for face folders and CelebA when "
        "installed).", in_id="when-set")
    # the attack's own check of its reconstructions adds one query per reconstruction
    max_queries: Optional[int] = setting(
        None, optional_count(" (None: no limit)"),
        "Queries the target answers in all below white-box, shared by the surrogates.", none_means="no limit",
        in_id="when-set")
    seed: int = setting(0, SEED, "Seed of data split, models and priors.", option=False, budget=False)
    attack_seed: int = setting(
        0, SEED, "Seed of the attack alone (its starting codes); --seed keeps the target, judges, priors and "
        "surrogates, so runs that differ only here reuse them from the cache.", option=False, budget=False)
    device: Optional[str] = setting(None, checked_by="mi_art.utils.resolve_device, against this machine's GPUs",
                                    budget=False, in_id="never")
    verbose: bool = setting(False, FLAG, "Progress bars inside long steps.", option=False, budget=False,
                            in_id="never")

    def __post_init__(self) -> None:
        self.gan_augment = gan_augment_for(self.dataset, self.gan_augment)

    def validate(self) -> None:
        """Every field by its rule (:data:`PARAMETER_RULES`), then the rules between fields
        (:meth:`check_relations`). A ``gan_augment`` of "auto", or an earlier name, set after the config was made is
        resolved here."""
        for key, value in SETTINGS.resolved(vars(self), "ExperimentConfig").items():
            setattr(self, key, value)
        self.gan_augment = gan_augment_for(self.dataset, self.gan_augment)
        for key, rule in PARAMETER_RULES.items():
            rule(key, getattr(self, key))
        self.check_relations()

    def check_relations(self) -> None:
        """The rules between fields, for a config whose fields were each checked where they were given (a grid's
        cells: :func:`~mi_art.evaluations.grid_schema.check_grid` checked every value once)."""
        spec = get_attack(self.attack)
        if not spec.variants and self.variant != "baseline":
            raise ValueError(f"{spec.title} has no variants (LOM, MA, align), got variant={self.variant!r}: use "
                             "variant='baseline'")
        tl_epochs = self.defense_params.get("pretrain_epochs") if self.defense == "tl" else None
        if self.target_pretrain_epochs and tl_epochs is not None and tl_epochs != self.target_pretrain_epochs:
            raise ValueError(f"target_pretrain_epochs={self.target_pretrain_epochs} and defense 'tl' with "
                             f"pretrain_epochs={tl_epochs!r}: TL-DMI's pre-training is the target's; give one "
                             "number of epochs (leave pretrain_epochs out to use target_pretrain_epochs)")
        if self.access not in spec.access_levels:
            raise ValueError(f"{spec.title} {spec.access_note or 'runs under ' + ', '.join(spec.access_levels)}: it "
                             f"has no access={self.access!r} form")
        if self.access != "white-box":
            if not self.surrogate_archs and spec.variants:
                raise ValueError(f"access={self.access!r} inverts surrogates distilled from the target's answers: "
                                 "give at least one surrogate architecture")
        if "ma" in parse_variant(self.variant) and not self.surrogate_archs:
            raise ValueError(f"variant {self.variant!r} needs at least one surrogate architecture")
        from mi_art.defenses import DEFENSES, check_defense_architecture

        if self.defense in DEFENSES:  # RoLSS applies to residual networks only: refused here, before training
            check_defense_architecture(self.defense, self.target_arch)
        improvements = parse_variant(self.variant).improvements
        if "align" in improvements and self.search_views is not None and self.search_views < 2:
            raise ValueError(f"search_views={self.search_views} with variant {self.variant!r}: gradient alignment "
                             "averages the identity loss over random views: 0 would turn it off, 1 averages "
                             "nothing; give search_views >= 2 (None: "
                             f"{ALIGN_VIEWS}, AlignMI's), or variant {Variant(improvements - {'align'}).name!r} "
                             "(without '+align')")
        if self.n_candidates is not None and self.n_candidates < self.n_reconstructions:
            raise ValueError(f"n_candidates={self.n_candidates} is below n_reconstructions={self.n_reconstructions}: "
                             "the kept reconstructions are chosen among the candidates (give n_candidates >= "
                             "n_reconstructions, or None: no selection)")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


#: :class:`ExperimentConfig`'s declarations, and the tables derived from them.
SETTINGS = Settings(ExperimentConfig)
ExperimentConfig.__doc__ = (f"{inspect.cleandoc(ExperimentConfig.__doc__ or '')}\n\n"
                            f"Its fields:\n\n{SETTINGS.describe()}\n")
#: field -> ``rule(name, value)``, which raises a ValueError naming ``name``, the value and what is valid.
PARAMETER_RULES = SETTINGS.rules
#: Fields without a rule, and where they are checked: against the data or the machine, not alone.
CHECKED_ELSEWHERE = SETTINGS.checked_elsewhere


def _default(function: Any, parameter: str) -> Any:
    return inspect.signature(function).parameters[parameter].default


#: The batch the surrogates are distilled in (distill_surrogate's default: answer_surrogates passes none): what the
#: least query budget is made of, with what an attack asks first (its entry's ``least_queries``).
DISTILL_BATCH_SIZE = _default(distill_surrogate, "batch_size")


def query_budget_problem(config: ExperimentConfig, n_public: int) -> Optional[str]:
    """Why ``config.max_queries`` cannot pay for the least the run asks of the target through ``predict`` (None
    when it can), in the user's own value: below white-box each surrogate is distilled on an equal share of it,
    which first has the target answer the held-out public images and then a batch per step; an attack that asks
    the target itself first (its entry's ``least_queries``: BREP-MI looks for a starting code in a batch of
    candidate codes) needs that much. Known from the configuration and the number of public images, before
    anything is trained."""
    c = config
    if c.max_queries is None:
        return None
    given = f"max_queries={c.max_queries}"
    spec = get_attack(c.attack)
    if spec.least_queries is not None:
        need, what = spec.least_queries
        if c.max_queries < need:
            return f"{given} cannot pay {what}; give max_queries >= {need}"
        return None
    if c.access == "white-box" or not spec.variants or not c.surrogate_archs:
        return None
    k = len(c.surrogate_archs)
    n_val = max(1, int(round(HELD_OUT_PUBLIC * n_public)))
    batch = min(DISTILL_BATCH_SIZE, max(1, n_public - n_val))
    batch *= 2 if c.surrogate_data == "public+prior" else 1  # as many prior samples as public images
    need = n_val + batch
    if c.max_queries // k >= need:
        return None
    return (f"{given} is too small for access={c.access!r}: the {k} surrogate{'s share' if k > 1 else ' gets'} it "
            f"({c.max_queries // k} queries each), and distilling one takes at least {need} ({n_val} held-out public "
            f"images it is checked on, then a batch of {batch} per step); give max_queries >= {need * k}")


def config_defaults() -> Dict[str, Any]:
    """Every :class:`ExperimentConfig` field's declared default (``gan_augment``: "auto", before any dataset
    resolves it), for the commands' options and the grid's budgets."""
    return dict(SETTINGS.defaults)
