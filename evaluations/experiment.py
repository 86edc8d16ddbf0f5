"""One attack run end to end: data, target, evaluation model, priors, surrogates, p_reg, the attack
and its metrics. Trained artifacts go through :class:`~mi_art.evaluations.cache.ArtifactCache`, so runs
that share a target or a prior train it once."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from mi_art import distill_surrogate, estimate_p_reg, make_classifier, top1_agreement, train_classifier
from mi_art.attacks import AttackJob, get_attack
from mi_art.data import MIDataset, expand_preset, load_dataset
from mi_art.priors import PRIORS, PUBLIC_PRIOR, get_prior, prior_samples, priors_needed, save_sample_grid
from mi_art.defenses.registry import RENAMED_DEFENSES
from mi_art.models import PRETRAINED_FACE_ARCHS, RENAMED_ARCHITECTURES
from mi_art.pretraining import fine_tune_classifier, pretrain_classifier, replace_head
from mi_art.utils import EstimatorModule, resolve_device, seed_everything
from mi_art.face_recognizer import DLIB_WEIGHTS_SHA256, load_dlib_face_recognizer
from mi_art.threads import thread_record
from mi_art.access import ACCESS_LEVELS, PredictOracle
from mi_art.training import AUGMENTATIONS
from mi_art.variants import ALIGN_VIEWS, Variant, attack_kwargs, parse_variant
from mi_art.quality import (WEAK_SURROGATE_AGREEMENT, WeakModelWarning, warn_weak, weak_model_warnings,
                            weak_surrogate_warning)
from mi_art.validation import check_choice, check_int, check_labels

from .cache import ArtifactCache
from .config_rules import (ARCHITECTURE, ARCHITECTURE_LIST, ATTACK, COUNT, FLAG, GAN_AUGMENTATIONS, ID_WEIGHT,
                           INDEPENDENT_JUDGE, KEDMI_INITS, PRETRAIN_EPOCHS, SEARCH_VIEWS, SEED, SHARE, SURROGATE_DATA,
                           VARIANT, choice, gan_augment_for, needs_gmi_prior, optional_count)
from .independent import (FACE_DATASETS, EmbeddingJudge, embed_images, independent_record, panel_shares,
                          resolve_independent_judge)
from .metrics import fid_eval_features, judge_panel, natural_accuracy
from .settings import Settings, accepts_earlier_names, setting
from .stages import StageLog

#: share of the public images held out from distillation (early stopping, agreement reported).
HELD_OUT_PUBLIC = 0.1
#: The evaluation models' initialisation seeds are ``config.seed + JUDGE_SEED_OFFSET + j`` for judge ``j``:
#: other draws than the target's (``config.seed``).
JUDGE_SEED_OFFSET = 1000
#: A prior's quality is the FID between this many of its samples and the public images, at most
#: PRIOR_FID_PUBLIC of them (a seeded sample): beyond a few thousand the real side's statistics change little,
#: and each image costs a pass through the judge.
PRIOR_FID_SAMPLES = 500
PRIOR_FID_PUBLIC = 5000
#: Samples of the prior a run shows (its prior sample grid; one beside each row of reconstructions).
PRIOR_GRID_SAMPLES = 32
#: The prior training steps the face benchmarks use (benchmarks/attack_variants.py without --quick): below them
#: the priors made grey ovals and blurred faces on AT&T that the judges still scored high, and the priors' FID on
#: the judge's features does not tell this apart (issue 36; measured in
#: benchmarks/results/attack_variants_att_quick.md), so the warning is keyed to the budget. Each prior's entry holds
#: its own (``face_steps``).
FACE_PRIOR_STEPS = {name: spec.face_steps for name, spec in PRIORS.items() if spec.face_steps is not None}
#: What every defense record holds: a cached record without them is another artifact's, set aside.
DEFENSE_RECORD_FIELDS = ("defense", "params", "test_accuracy", "epsilon", "delta")


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


def _key_name(arch: str) -> str:
    """An architecture's name as artifacts' cache keys spell it: a renamed one under its earlier name
    (``efficientnet_b0``), so that models cached before the rename are found."""
    return RENAMED_ARCHITECTURES.old(arch)


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


class Workbench:
    """Loads the data once and hands out cached artifacts for one dataset."""

    def __init__(self, config: ExperimentConfig, cache: Optional[ArtifactCache] = None,
                 data: Optional[MIDataset] = None, stages: Optional[StageLog] = None, *,
                 checked: bool = False) -> None:
        """``data``: the dataset ``config`` names, already loaded (a grid of cells loads it once). ``stages``
        names each long step before it starts (default: the cache's, else silent); the cache then names the
        artifacts it trains through it too. ``checked``: every value of ``config`` was checked by its rule where it
        was given (a grid's cell: :func:`~mi_art.evaluations.grid_schema.check_grid`), so only the rules between
        fields and the checks against the data run here; otherwise :meth:`ExperimentConfig.validate` runs first."""
        if checked:
            config.check_relations()
        else:
            config.validate()
        self.config = config
        self.cache = cache or ArtifactCache(None)
        self.stages: StageLog = stages or self.cache.stages or StageLog()
        if self.cache.stages is None:
            self.cache.stages = self.stages
        self.device = resolve_device(config.device)
        root = str(Path(config.data_root).resolve()) if config.data_root else None
        if data is None:
            with self.stages.stage("loading the data", f"{config.dataset}" + (f" from {root}" if root else "")):
                data = load_dataset(config.dataset, root, **config.data_options)
        self.data: MIDataset = data
        # artifacts are keyed by what they were made from: the data's content, not only its name
        # (not the name the user gives it: renaming a data set does not retrain its models)
        self._data_key = {"dataset": config.dataset,
                          "options": expand_preset(config.dataset, {k: v for k, v in config.data_options.items()
                                                                    if k != "name"}),
                          "content": data_fingerprint(self.data)}
        self.defense_record: Optional[Dict[str, Any]] = None
        # the models target() and evaluator() returned: artifacts made with them are keyed by their configs
        self._own_targets: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()
        self._own_evaluators: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()
        self._public_centre: Optional[torch.Tensor] = None  # a deployed face recogniser's, once computed
        self._check_sizes()
        self._check_against_data()

    def _check_against_data(self) -> None:
        """Before any training: what the configuration asks of this data, the identities among its private
        ones and a query budget that pays for the least the run asks of the target."""
        c, d = self.config, self.data
        if c.identities is not None:
            check_labels(c.identities, d.num_classes, "identities")
        problem = query_budget_problem(c, len(d.public.x))
        if problem is not None:
            raise ValueError(problem)

    def _check_sizes(self) -> None:
        """Before any training: every architecture the run can build (target, evaluation model and,
        for the GAN attacks, the surrogates and GAN parts) builds and runs at the data's size and
        channels. Cheap (no weights are allocated); a ValueError names the architecture and the size."""
        from mi_art.models import check_builds

        c, (ch, s, _) = self.config, self._shape
        k = max(2, self.data.num_classes)
        where = f"{s}x{s} images with {ch} channel{'s' if ch > 1 else ''} (dataset {self.data.name!r})"
        archs = [("target_arch", c.target_arch), ("judge_arch", c.judge_arch)]
        spec = get_attack(c.attack)
        if spec.variants or spec.prior is not None:  # the surrogates' architectures, as the prior's, are checked
            archs += [(f"surrogate_archs[{i}]", a) for i, a in enumerate(c.surrogate_archs)]
        for name, arch in archs:
            check_builds(f"{name}={arch!r}", lambda arch=arch: make_classifier(arch, ch, k, s), (2, ch, s, s),
                         (2, k), where)
        checked = set()
        for prior in self.priors_needed():  # each part of every prior the run trains or loads
            for what, build, shape_in, shape_out in get_prior(prior).size_checks(ch, s, k, c.gan_width):
                if what not in checked:
                    checked.add(what)
                    check_builds(what, build, shape_in, shape_out, where)

    def priors_needed(self) -> Tuple[str, ...]:
        """The priors a run of the config trains or loads: its attack's, those that one starts from, and the
        public prior when surrogates distilled on "public+prior" learn on its samples."""
        c = self.config
        needed = priors_needed(get_attack(c.attack).prior, c)
        return needed + ((PUBLIC_PRIOR,) if PUBLIC_PRIOR not in needed and needs_gmi_prior(c) else ())

    # ---------------------------------------------------------------- keys and shapes

    @property
    def _shape(self) -> Tuple[int, int, int]:
        return self.data.input_shape

    def untrained_classifier(self, arch: str, num_classes: Optional[int] = None) -> nn.Module:
        """A fresh ``arch`` for this data's images (``num_classes`` outputs; default: the private identities)."""
        c, s, _ = self._shape
        return make_classifier(arch, c, num_classes or self.data.num_classes, s)

    def _initialised(self, arch: str, seed: int) -> nn.Module:
        """A fresh classifier whose initial weights depend on ``seed`` alone, not on what the process
        ran before (a cached artifact loaded or trained earlier, a validation pass)."""
        seed_everything(seed)
        return self._centred(self.untrained_classifier(arch))

    def _centred(self, model: nn.Module) -> nn.Module:
        """``model``, a deployed face recogniser's head input centred on the public images' descriptors
        (``PretrainedFaceClassifier.centre_on``; computed once per workbench); other models as they are."""
        if not hasattr(model, "centre_on"):
            return model
        if self._public_centre is None:
            self._public_centre = model.centre_on(self.data.public.x).centre.detach().cpu().clone()
        model.centre.copy_(self._public_centre)
        return model

    def _embedding_key(self, arch: str) -> Dict[str, Any]:
        """What a deployed face recogniser's key owes to its head's input being centred on the public
        images (nothing for other architectures: their keys stay as they were)."""
        return {"embedding": "centred-on-public"} if arch in PRETRAINED_FACE_ARCHS else {}

    def target_key(self) -> Dict[str, Any]:
        c = self.config
        key = {"data": self._data_key, "arch": _key_name(c.target_arch), "epochs": c.target_epochs,
               "augment": c.augment, "seed": c.seed}
        if c.target_pretrain_epochs:  # only then: the keys of targets trained from scratch stay as they were
            key["pretrain_epochs"] = c.target_pretrain_epochs
        if c.defense != "none":
            from mi_art.defenses import get_defense

            key.update(defense=RENAMED_DEFENSES.old(c.defense), defense_params=c.defense_params,
                       **get_defense(c.defense).defaults_key(c.defense_params))
        return {**key, **self._classifier_recipe_key(), **self._embedding_key(c.target_arch)}

    def _precision_key(self) -> Dict[str, Any]:
        """What mixed precision adds to a model's key: nothing in float32 (older keys stay valid)."""
        return {"mixed_precision": True} if self.config.mixed_precision else {}

    def _classifier_recipe_key(self) -> Dict[str, Any]:
        """What a trained classifier's key owes to the training code: its BatchNorm statistics re-estimated
        after training (``train_classifier``'s default), so that no checkpoint trained before is served."""
        return {"batch_norm": "re-estimated", **self._precision_key()}

    def pretrained_key(self, arch: str, epochs: int, seed: int) -> Dict[str, Any]:
        """The cache key of :meth:`pretrained`'s model (without a defense's architecture tag)."""
        return {"data": self._data_key, "arch": _key_name(arch), "epochs": epochs, "augment": self.config.augment,
                "seed": seed, **self._classifier_recipe_key(), **self._embedding_key(arch)}

    def pretrained(self, arch: str, epochs: int, seed: int, desc: str, defense: Any = None,
                   params: Optional[Dict[str, Any]] = None) -> nn.Module:
        """A fresh ``arch`` (initialised from ``seed``) pre-trained ``epochs`` on the public identities, with
        their classification layer (cached: the target under every defense shares one, except a defense
        whose fine-tuning needs another structure from the start: ``defense.pretraining_architecture``,
        e.g. DP-SGD's GroupNorm, keyed apart by its ``pretraining_tag``)."""
        c, d = self.config, self.data
        key = self.pretrained_key(arch, epochs, seed)
        params = None if defense is None else {**defense.defaults, **(params or {})}
        tag = "" if defense is None else defense.pretraining_tag(params)
        shape = (lambda m: defense.pretraining_architecture(m, params)) if tag else (lambda m: m)
        if tag:
            key["architecture"] = tag
        return self.cache.module(
            "pretrained", key, lambda: shape(self.untrained_classifier(arch, d.num_public_classes)),
            lambda: pretrain_classifier(shape(self._initialised(arch, seed)), d.public.x, d.public.y,
                                        num_classes=d.num_public_classes, epochs=epochs, augment=c.augment,
                                        mixed_precision=c.mixed_precision, device=self.device, seed=seed,
                                        verbose=c.verbose,
                                        desc=f"{desc}: pre-train (public)")).to(self.device)

    def _pretrained_body(self, arch: str, epochs: int, seed: int, desc: str, defense: Any = None,
                         params: Optional[Dict[str, Any]] = None) -> nn.Module:
        """:meth:`pretrained` with a fresh classification layer for the private identities (seeded by ``seed``)."""
        model = self.pretrained(arch, epochs, seed, desc, defense, params)
        seed_everything(seed)
        replace_head(model, self.data.num_classes)
        return model

    def _trained_classifier(self, arch: str, epochs: int, pretrain_epochs: int, seed: int, desc: str) -> nn.Module:
        """``arch`` trained on the private training split: from scratch, or fine-tuned (every layer) from
        the public pre-training when ``pretrain_epochs`` > 0."""
        c, d = self.config, self.data
        train = d.private_train
        kwargs = dict(epochs=epochs, augment=c.augment, mixed_precision=c.mixed_precision, device=self.device,
                      seed=seed, verbose=c.verbose)
        if not pretrain_epochs:
            return train_classifier(self._initialised(arch, seed), train.x, train.y, desc=desc, **kwargs)
        model = self.pretrained(arch, pretrain_epochs, seed, desc)
        return fine_tune_classifier(model, train.x, train.y, d.num_classes, desc=f"{desc}: fine-tune (private)",
                                    **kwargs)

    # ---------------------------------------------------------------- artifacts

    def target(self) -> nn.Module:
        """The target, trained under ``config.defense`` (see :func:`mi_art.defenses.train_defended_target`)."""
        c = self.config
        if c.defense != "none":
            model = self._defended_target()
        else:
            model = self._from_recipe("target", c.seed, "target")
        self._own_targets.add(model)
        return model

    def _key_of(self, target: Optional[nn.Module]) -> Dict[str, Any]:
        """The cache key of what an artifact is made from: ``target_key()`` for None or a model :meth:`target`
        returned, else a fingerprint of the given model's weights (and of its estimator's input mapping),
        so that a prior, surrogate or p_reg made for another target is never served for this one."""
        if target is None or target in self._own_targets:
            return self.target_key()
        return {"given-target": model_fingerprint(target)}

    def _defended_target(self) -> nn.Module:
        from mi_art.defenses import check_defense_params, defended_architecture, get_defense, train_defended_target

        c, key = self.config, self.target_key()
        defense = get_defense(c.defense)
        checked = check_defense_params(c.defense, dict(c.defense_params), n_train=len(self.data.private_train))
        trained: Dict[str, Any] = {}

        params = dict(c.defense_params)
        if c.target_pretrain_epochs and c.defense == "tl":  # TL-DMI's own pre-training is the target's
            params["pretrain_epochs"] = c.target_pretrain_epochs

        def train() -> nn.Module:
            model: Any = c.target_arch
            from_body = bool(c.target_pretrain_epochs) and c.defense != "tl"
            if from_body:  # the defense trains from the pre-trained body
                model = self._pretrained_body(c.target_arch, c.target_pretrain_epochs, c.seed, "target", defense,
                                              checked)
            elif c.target_arch in PRETRAINED_FACE_ARCHS:  # its head's input centred on the public images first
                model = self._initialised(c.target_arch, c.seed)  # seeded, as the undefended target's
            model, record = train_defended_target(c.defense, self.data, model=model, epochs=c.target_epochs,
                                                  augment=c.augment, device=self.device, seed=c.seed,
                                                  verbose=c.verbose, **params)
            if from_body:
                record.details["pretrain_epochs"] = c.target_pretrain_epochs
                tag = defense.pretraining_tag(checked)
                if tag:
                    record.details["pretrained_architecture"] = tag
            trained["record"] = record.to_dict()
            self.cache.store_json("defense-record", key, trained["record"])
            return model

        def lost() -> Dict[str, Any]:
            where = self.cache.json_path("defense-record", key)
            raise RuntimeError(f"the defense record of the cached target ({where}) is missing after the target "
                               "was loaded or trained")

        # the record (epsilon, steps, training time, TL's pre-training accuracy) is a fact of the training:
        # a target whose record is missing or bad is trained again with it (records=)
        model = self.cache.module("target", key, lambda: defended_architecture(
            c.defense, self.data, model=c.target_arch, **params), train, records=("defense-record",))
        self.defense_record = self.cache.json("defense-record", key, lambda: trained.get("record") or lost(),
                                              fields=DEFENSE_RECORD_FIELDS)
        return model.to(self.device)

    def evaluator_key(self) -> Dict[str, Any]:
        c = self.config
        key = {"data": self._data_key, "arch": _key_name(c.judge_arch), "epochs": c.judge_epochs,
               "augment": c.augment, "seed": c.seed + JUDGE_SEED_OFFSET}
        if c.judge_pretrain_epochs:  # only then: the keys of judges trained from scratch stay as they were
            key["pretrain_epochs"] = c.judge_pretrain_epochs
        return {**key, **self._classifier_recipe_key(), **self._embedding_key(c.judge_arch)}

    def evaluator(self) -> nn.Module:
        """The independent judge: another architecture, trained on the private training split (after
        ``config.judge_pretrain_epochs`` of pre-training on the public identities, when > 0). The first
        of :meth:`evaluators`."""
        model = self._from_recipe("evaluator", self.config.seed + JUDGE_SEED_OFFSET, "evaluator")
        self._own_evaluators.add(model)
        return model

    def independent_judge(self) -> Optional[EmbeddingJudge]:
        """The judge we did not train (``config.independent_judge``; :mod:`mi_art.evaluations.independent`) over
        the private training images, or None when there is none. Built once per workbench."""
        if not hasattr(self, "_independent"):
            self._independent = None
            if resolve_independent_judge(self.config.independent_judge, self.config.dataset) is not None:
                train, embedder = self.data.private_train, load_dlib_face_recognizer(device="cpu")
                key = {"data": self._data_key, "judge": "dlib", "weights": DLIB_WEIGHTS_SHA256}
                # the training images' descriptors are the same for every cell of a data set: cached
                features = self.cache.tensor("independent-descriptors", key, lambda: torch.from_numpy(
                    embed_images(embedder, train.x, device=self.device)))
                self._independent = EmbeddingJudge(embedder, train.x, train.y, self.data.num_classes, name="dlib",
                                                   device=self.device, train_features=features.numpy())
        return self._independent

    def evaluators(self) -> List[nn.Module]:
        """The panel of ``config.judges`` evaluation models: :meth:`evaluator`, then the same recipe from
        the next initialisation seeds (``config.seed + JUDGE_SEED_OFFSET + j``), each cached."""
        first = self.config.seed + JUDGE_SEED_OFFSET
        return [self.evaluator()] + [self.redraw("evaluator", first + j) for j in range(1, self.config.judges)]

    def redraw(self, kind: str, seed: int) -> nn.Module:
        """The target's (``kind="target"``) or the evaluation model's (``"evaluator"``) recipe trained from
        initialisation ``seed`` instead of the configured one (cached), to measure how much a result owes
        to the draw of that model. The configured seed (``config.seed``; the judge's is ``config.seed +
        JUDGE_SEED_OFFSET``) gives :meth:`target` / :meth:`evaluator` themselves; any other model is not the
        workbench's own, so priors, surrogates and p_reg made for it are keyed by its weights."""
        c = self.config
        kind, seed = check_choice("kind", kind, ("target", "evaluator")), check_int("seed", seed, low=0)
        if kind == "target" and c.defense != "none":
            raise ValueError(f"redraw('target') trains the undefended recipe; config.defense is "
                             f"{c.defense!r}: train that target with another config.seed instead")
        if seed == (c.seed if kind == "target" else c.seed + JUDGE_SEED_OFFSET):
            return self.target() if kind == "target" else self.evaluator()
        return self._from_recipe(kind, seed, f"{kind} seed {seed}")

    def _from_recipe(self, kind: str, seed: int, desc: str) -> nn.Module:
        """The undefended target's or the evaluation model's recipe trained from initialisation ``seed``,
        cached under its key with that seed."""
        c = self.config
        if kind == "target":
            arch, epochs, pre, key = c.target_arch, c.target_epochs, c.target_pretrain_epochs, self.target_key()
        else:
            arch, epochs, pre, key = c.judge_arch, c.judge_epochs, c.judge_pretrain_epochs, self.evaluator_key()
        return self.cache.module(
            kind, {**key, "seed": seed}, lambda: self.untrained_classifier(arch),
            lambda: self._trained_classifier(arch, epochs, pre, seed, desc)).to(self.device)

    @property
    def data_key(self) -> Dict[str, Any]:
        """The data's part of every artifact's cache key: its name, options and content."""
        return self._data_key

    def key_of(self, target: Optional[nn.Module]) -> Dict[str, Any]:
        """The target's part of an artifact's cache key (:meth:`_key_of`)."""
        return self._key_of(target)

    def prior_key(self, name: str, target: Optional[nn.Module] = None) -> Dict[str, Any]:
        """The cache key of the prior ``name`` (its entry's ``key``), for ``target`` when it is made per target."""
        spec = get_prior(name)
        return spec.key(self, target if spec.per_target else None)

    def _prior_key(self, kind: str, target: Optional[nn.Module] = None) -> Dict[str, Any]:
        """:meth:`prior_key` by the prior's cache kind (``"<name>-prior"``)."""
        return self.prior_key(kind[:-len("-prior")], target)

    def _timed_prior(self, kind: str, key: Dict[str, Any], build, train) -> nn.ModuleDict:
        """Load or train a prior; a freshly trained one gets a record of its training seconds and a grid
        of its samples beside the checkpoint."""
        timing: Dict[str, float] = {}

        def timed() -> nn.ModuleDict:
            start = time.perf_counter()
            pair = train()
            timing["seconds"] = time.perf_counter() - start
            self.cache.store_json(f"{kind}-record", key, {"train_seconds": timing["seconds"]})
            return pair

        pair = self.cache.module(kind, key, build, timed).to(self.device)
        grid = self.cache.sidecar(kind, key, ".png")
        if grid is not None and not grid.is_file():
            save_sample_grid(pair["g"], grid, seed=self.config.seed)
        return pair

    def gmi_prior(self) -> Tuple[nn.Module, nn.Module]:
        """The public prior (:data:`mi_art.priors.PUBLIC_PRIOR`, GMI's): ``(generator, critic)``."""
        return self.prior(PUBLIC_PRIOR)  # type: ignore[return-value]

    def prior(self, name: str, target: Optional[nn.Module] = None) -> Tuple[nn.Module, Optional[nn.Module]]:
        """The prior ``name`` of :data:`mi_art.priors.PRIORS`: ``(generator, discriminator)`` (None when it has
        none), for ``target`` when the prior is made per target (default: :meth:`target`). Loaded from the
        cache under its entry's ``key``, else trained by its entry's ``train``."""
        spec = get_prior(name)
        if not spec.per_target:
            target = None
        elif target is None:
            target = self.target()

        def train() -> nn.ModuleDict:
            args, kwargs = spec.arguments(self, target)
            parts = spec.train(*args, **kwargs)
            return nn.ModuleDict({part: m for part, m in zip("gd", parts) if m is not None})

        pair = self._timed_prior(spec.cache_kind, spec.key(self, target), lambda: nn.ModuleDict(spec.build(self)),
                                 train)
        return pair["g"].eval(), (pair["d"].eval() if "d" in pair else None)

    def prior_report(self, kind: str, target: Optional[nn.Module] = None,
                     evaluator: Optional[nn.Module] = None) -> Dict[str, Any]:
        """Training seconds (None when it was trained before records were kept) and quality of a prior
        (``kind``: its cache kind, ``"<name>-prior"`` of :data:`mi_art.priors.PRIORS`): FID between
        :data:`PRIOR_FID_SAMPLES` of its samples and the public images (a seeded sample of
        :data:`PRIOR_FID_PUBLIC` of a larger set), on the evaluation model's features."""
        name = kind[:-len("-prior")]
        key = self.prior_key(name, target)
        gen = self.prior(name, target)[0]
        # a record lost or set aside is not worth training the prior again: its seconds are then unknown
        seconds = self.cache.json(f"{kind}-record", key, lambda: {"train_seconds": None},
                                  fields=("train_seconds",))["train_seconds"]
        evaluator = evaluator if evaluator is not None else self.evaluator()
        judge_key = (self.evaluator_key() if evaluator in self._own_evaluators
                     else {"given-evaluator": model_fingerprint(evaluator)})

        def quality() -> Dict[str, Any]:
            fake = prior_samples(gen, PRIOR_FID_SAMPLES, seed=self.config.seed)
            public = self.data.public.x
            if len(public) > PRIOR_FID_PUBLIC:  # a seeded sample: every public image's features cost a pass
                public = public[np.random.default_rng(self.config.seed).permutation(len(public))[:PRIOR_FID_PUBLIC]]
            return {"fid_public": fid_eval_features(evaluator, fake, public)}

        fid = self.cache.json(f"{kind}-quality", {"prior": key, "evaluator": judge_key}, quality,
                              fields=("fid_public",))
        report = {"train_seconds": seconds, **fid}
        caveat = prior_caveat(name, self.prior_budget(name)["steps"], self.config.dataset)
        return report | ({"caveat": caveat} if caveat else {})

    def prior_budget(self, name: str) -> Dict[str, Any]:
        """What a run's record says of the prior ``name`` it searched beside its quality: its name, training
        steps and the samples its figures show."""
        return {"name": name, "steps": getattr(self.config, get_prior(name).steps_field), "samples": PRIOR_GRID_SAMPLES}

    def public_split(self) -> Tuple[np.ndarray, np.ndarray]:
        """(distillation images, held-out images) of the public set: a fixed HELD_OUT_PUBLIC share is
        kept out of distillation for early stopping and for measuring agreement."""
        x = self.data.public.x
        n_val = max(1, int(round(HELD_OUT_PUBLIC * len(x))))
        perm = np.random.default_rng(self.config.seed).permutation(len(x))
        return x[perm[n_val:]], x[perm[:n_val]]

    def surrogate_key(self, i: int, target: Optional[nn.Module] = None) -> Dict[str, Any]:
        c = self.config
        key = {"target": self._key_of(target), "arch": _key_name(c.surrogate_archs[i]),
               "steps": c.surrogate_steps, "augment": c.augment, "seed": c.seed + i, "data": c.surrogate_data,
               "version": 3}
        if c.surrogate_data == "public+prior":
            key["prior"] = self.prior_key(PUBLIC_PRIOR)
        if c.surrogate_pretrain_epochs:  # only then: the keys of surrogates distilled from scratch stay as they were
            key["pretrain_epochs"] = c.surrogate_pretrain_epochs
        return {**key, **self._precision_key()}

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

            out.append(self.cache.module("surrogate", self.surrogate_key(i, target),
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
        return self.cache.tensor("p-reg", {"target": self._key_of(target), "version": 3},
                                 lambda: estimate_p_reg(target, self.data.public.x))

    def surrogate_p_reg(self, target: nn.Module, index: int, surrogate: nn.Module) -> torch.Tensor:
        """The mean public feature of surrogate ``index`` (:meth:`surrogates`, or :meth:`answer_surrogates`
        below white-box), for its own regulariser."""
        key = (self.surrogate_key(index, target) if self.config.access == "white-box"
               else self.answer_surrogate_key(index, target))
        return self.cache.tensor("p-reg", {"surrogate": key, "version": 1},
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

    def answer_surrogate_key(self, i: int, target: Optional[nn.Module] = None) -> Dict[str, Any]:
        c = self.config
        return {**self.surrogate_key(i, target), "access": c.access, "max_queries": c.max_queries,
                "defense": RENAMED_DEFENSES.old(c.defense), "defense_params": dict(c.defense_params)}

    def answer_surrogates(self, target: nn.Module) -> Tuple[List[nn.Module], List[int]]:
        """Below white-box: the surrogates distilled from the answers of :meth:`api` alone (scores or labels,
        ``config.access``), each with an equal share of ``config.max_queries``. Returns the surrogates and
        the queries each one's distillation made."""
        c = self.config
        train_x, val_x = self.public_split()
        share = None if c.max_queries is None else max(1, c.max_queries // len(c.surrogate_archs))
        out, queries = [], []
        for i, arch in enumerate(c.surrogate_archs):
            key = self.answer_surrogate_key(i, target)
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


@contextlib.contextmanager
def _weak_said_later() -> Iterator[None]:
    """Silence :func:`~mi_art.distill_surrogate`'s weak-surrogate warning: the pipeline says it once the surrogates
    are made or loaded from the cache (:meth:`Workbench.checked_surrogates`, ``run_attack``), in its own terms."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WeakModelWarning)
        yield


def model_fingerprint(model: nn.Module) -> str:
    """A content hash of a model's parameters and buffers; for an :class:`~mi_art.utils.EstimatorModule`,
    of the wrapped model and of its estimator's preprocessing, clip values and layout too."""
    h = hashlib.sha1()
    if isinstance(model, EstimatorModule):
        if model.estimator is not None:
            e = model.estimator
            h.update(repr((e.preprocessing, e.clip_values, e.channels_first, model.output_index)).encode())
        model = model.model
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def data_fingerprint(data: MIDataset) -> str:
    """A content hash of a dataset's three splits (images, labels) and identity names."""
    h = hashlib.sha256()
    for split in (data.private_train, data.private_test, data.public):
        for arr in (split.x, split.y):
            arr = np.ascontiguousarray(arr)
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
    h.update(repr((data.private_identities, data.public_identities)).encode())
    return h.hexdigest()[:16]


def wrap_target(model: Any, data: MIDataset, device: torch.device):
    """The target as an ART ``PyTorchClassifier``: an ART estimator is returned as it is (its
    ``preprocessing``, ``clip_values`` and ``channels_first`` are the target's); a bare module is
    wrapped with logits out and inputs in [0, 1], the dataset's range."""
    from art.estimators.classification import PyTorchClassifier
    from art.estimators.pytorch import PyTorchEstimator

    if isinstance(model, PyTorchEstimator):
        if model.nb_classes != data.num_classes:
            raise ValueError(f"target has {model.nb_classes} classes but dataset {data.name!r} has "
                             f"{data.num_classes} private identities")
        return model
    if not isinstance(model, nn.Module):
        raise ValueError(f"target must be an ART PyTorch estimator or a torch.nn.Module, got {type(model).__name__}")
    return PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=data.input_shape,
                             nb_classes=data.num_classes, clip_values=(0.0, 1.0),
                             device_type="gpu" if device.type == "cuda" else "cpu")


@dataclass
class VariantModels:
    """What a variant's improvements are made of, for one target at the workbench's access level."""

    #: What the attack is given: the target's estimator at white-box, its API (:meth:`Workbench.api`) below.
    estimator: Any
    #: The surrogates the loss is also taken over (model augmentation), or below white-box the surrogates learnt
    #: from the target's answers, the first inverted in the target's place.
    surrogates: List[nn.Module]
    #: LOM's mean public feature of the model inverted (the target, or below white-box its first surrogate).
    p_reg: Optional[torch.Tensor]
    #: One mean public feature per other surrogate, for their own regularisers (``regularise_surrogates``).
    surrogate_p_reg: Optional[List[torch.Tensor]]
    #: The record's fields: ``"surrogates"`` (each one's report, "used" set), ``"access"``, ``"query_budget"``.
    record: Dict[str, Any]
    #: Warnings about the surrogates (weak ones; those left out).
    notes: List[str]


def variant_models(bench: Workbench, estimator: Any, unit_target: nn.Module,
                   improvements: Sequence[str]) -> VariantModels:
    """The surrogates, ``p_reg`` and the surrogates' ``p_reg`` that ``improvements`` need (LOM: ``p_reg``; MA: the
    surrogates; both: each surrogate's ``p_reg`` too), made or loaded by ``bench`` only when needed, and what
    the attack inverts (``estimator``, the target's, at white-box). Below white-box the target is reached
    through ``predict`` alone: the surrogates learnt from its answers are what is inverted, the first in the
    target's place, and MA adds the others."""
    c = bench.config
    use_lom, use_ma = "lom" in improvements, "ma" in improvements
    surrogates: List[nn.Module] = []
    surrogate_p_reg = None
    record: Dict[str, Any] = {}
    notes: List[str] = []
    if c.access != "white-box":
        estimator = bench.api(unit_target)
        learnt, queries = bench.answer_surrogates(unit_target)
        record["surrogates"] = bench.surrogate_report(unit_target, learnt)
        for row, q in zip(record["surrogates"], queries):
            row["queries"] = q
        record["access"], record["query_budget"] = c.access, c.max_queries
        surrogates = learnt if use_ma else learnt[:1]
        weak = []
        for i, row in enumerate(record["surrogates"]):
            row["used"] = i < len(surrogates)
            warned = weak_surrogate_warning(row["agreement_public_heldout"], name=f"surrogate {i} ({row['arch']})",
                                            hint="Distil it longer (surrogate_steps) or with more queries "
                                                 "(max_queries)") if row["used"] else None
            weak.extend([warned] if warned else [])
        warn_weak(weak)
        notes.extend(weak)
        p_reg = bench.surrogate_p_reg(unit_target, 0, surrogates[0]) if use_lom else None
        if use_lom and use_ma and c.regularise_surrogates and len(surrogates) > 1:
            surrogate_p_reg = [bench.surrogate_p_reg(unit_target, i, s) for i, s in enumerate(surrogates) if i]
    else:
        if use_ma:
            surrogates, record["surrogates"], notes = bench.checked_surrogates(unit_target)
            if use_lom and c.regularise_surrogates:
                used = [i for i, row in enumerate(record["surrogates"]) if row["used"]]
                surrogate_p_reg = [bench.surrogate_p_reg(unit_target, i, s) for i, s in zip(used, surrogates)]
        p_reg = bench.p_reg(unit_target) if use_lom else None
    return VariantModels(estimator, surrogates, p_reg, surrogate_p_reg, record, notes)


def run_attack(bench: Workbench, *, attack: Optional[str] = None, variant: Optional[str] = None,
               attack_seed: Optional[int] = None, target: Any = None, evaluator: Any = None,
               target_record: Any = None) -> Dict[str, Any]:
    """Run one attack variant and measure it. Returns the result record (metrics, timings, settings)
    with the reconstructions under ``"reconstructions"`` and their labels under ``"labels"``.

    Every attack metric is judged by a panel of evaluation models (:func:`~mi_art.evaluations.metrics.judge_panel`):
    ``"acc@1"``, ``"knn_dist"``, ... are means over the judges, ``"acc@1_judges"`` each judge's value and
    ``"acc@1_judge_std"`` the spread over judges; ``"evaluator_test_accuracy"`` is the judges' mean held-out
    accuracy (``"evaluator_test_accuracies"`` each judge's). ``"precision"``, ``"recall"``, ``"density"`` and
    ``"coverage"`` compare the reconstructions with the attacked identities' training images on the judges'
    features; ``"per_identity"`` lists each attacked identity's figures (:func:`identity_leakage`).

    ``target`` defaults to the workbench's target, ``evaluator`` to its panel (:meth:`Workbench.evaluators`);
    ``evaluator`` may also be one judge or a list of judges. Each may be a module or an ART estimator,
    which is used as it is (never re-wrapped: its preprocessing and input range stay). The workbench's
    data is in [0, 1] channels first: everything the attack does not see through the target estimator
    (priors, surrogates, p_reg, the judge, the accuracies) gets it mapped to each model's input space by
    :class:`mi_art.utils.EstimatorModule`, and the reconstructions are returned in [0, 1] too.

    ``target_record`` is the :class:`~mi_art.defenses.record.DefenseRecord` (or its ``to_dict()``) of a
    ``target`` trained elsewhere, e.g. with Opacus (:func:`mi_art.defenses.opacus_record`): the result then
    carries it under ``"defense_record"``, with its ``"defense"``, ``"epsilon"`` and ``"delta"`` beside the
    metrics, and its delta is checked as a DP-SGD target's. Without it, a target the workbench trained under a
    defense has the workbench's record (``bench.defense_record``)."""
    from mi_art.utils import as_module

    c, d = bench.config, bench.data
    if target_record is not None and target is None:
        raise ValueError("target_record describes a target you give: pass target= too (the workbench's own "
                         "target has its own record, bench.defense_record)")
    given_record = None if target_record is None else _target_record(target_record)
    attack = attack or c.attack
    variant = variant or c.variant
    seed = c.attack_seed if attack_seed is None else attack_seed
    if (attack, variant) != (c.attack, c.variant):  # the workbench checked its config
        dataclasses.replace(c, attack=attack, variant=variant).validate()
    target = target if target is not None else bench.target()
    judges = bench.evaluators() if evaluator is None else (list(evaluator) if isinstance(evaluator, (list, tuple))
                                                            else [evaluator])
    if not judges:
        raise ValueError("evaluator is an empty list: give at least one evaluation model, or None for the "
                         "workbench's panel")
    identities = np.arange(d.num_classes) if c.identities is None else check_labels(c.identities, d.num_classes,
                                                                                    "identities")
    estimator = wrap_target(target, d, bench.device)
    target_view = as_module(estimator, "target")

    def on_unit_images(model: Any, what: str) -> Any:
        """``model`` taking the workbench's [0, 1] images: a bare module as it is, an estimator through the
        view that maps them to its input space (the one place: EstimatorModule)."""
        return model if isinstance(model, nn.Module) else as_module(model, what, unit_input=True)

    unit_target = on_unit_images(target, "target")
    unit_judges = [on_unit_images(j, f"evaluator[{i}]") for i, j in enumerate(judges)]
    unit_judge = unit_judges[0]  # judges the priors' quality
    extra: Dict[str, Any] = {}
    notes: List[str] = []
    seed_everything(seed)
    spec = get_attack(attack)
    attacking = _attack_stage(c, attack, variant, len(identities))
    start = time.perf_counter()
    if not spec.gan_search:  # an attack run its own way (ART's MIFace, BREP-MI): its entry's run
        outcome = spec.run(AttackJob(bench, target_view, unit_target, identities, seed, attacking))
        recs, labels, rec_index = outcome.reconstructions, outcome.labels, outcome.reconstruction_index
        extra.update(outcome.record)
    else:
        # what the variant's improvements are made of (variant_models); mi_art.attack_kwargs turns it into the
        # attack's arguments
        improvements = parse_variant(variant)
        use_lom = "lom" in improvements
        models = variant_models(bench, estimator, unit_target, improvements)
        estimator, surrogates = models.estimator, models.surrogates
        extra.update(models.record)
        notes.extend(models.notes)
        kwargs = attack_kwargs(improvements, access=c.access, p_reg=models.p_reg, surrogates=surrogates,
                               surrogate_p_reg=models.surrogate_p_reg, views=c.search_views)
        kwargs.update(iterations=c.iterations, n_reconstructions=c.n_reconstructions, n_candidates=c.n_candidates,
                      batch_size=c.batch_size, seed=seed, verbose=c.verbose)
        if c.id_weight is not None:
            kwargs["id_weight"] = c.id_weight
        cls = spec.attack_class
        data_note = get_prior(spec.prior).data_note(len(d.public.x), d.num_classes)
        if data_note:
            notes.append(data_note)
        # a prior made against the target (KEDMI's soft labels, PLG-MI's pseudo-labels and margin loss) is
        # made against the first surrogate when the target answers through predict alone
        prior_target = unit_target if c.access == "white-box" else surrogates[0]
        g, disc = bench.prior(spec.prior, prior_target)
        extra["prior"] = {**bench.prior_report(get_prior(spec.prior).cache_kind, prior_target, unit_judge),
                          **bench.prior_budget(spec.prior)}
        notes.extend([extra["prior"]["caveat"]] if "caveat" in extra["prior"] else [])
        extra["prior_samples"] = prior_samples(g, PRIOR_GRID_SAMPLES, seed=c.seed)
        start = time.perf_counter()  # artifacts above are shared work, not attack time
        runner = cls(estimator, g, disc, **kwargs)
        with bench.stages.stage(*attacking):
            recs = runner.infer(None, identities)
        labels, rec_index = runner.labels_, runner.reconstruction_index_
        if c.access != "white-box":
            extra["queries"] = sum(row["queries"] or 0 for row in extra["surrogates"]) + runner.queries_
        if use_lom:
            extra["reg_weight"] = runner.reg_weight_
            extra["reg_weights"] = runner.reg_weights_
    seconds = time.perf_counter() - start
    recs = target_view.to_unit(np.asarray(recs, dtype=np.float32))  # the target's input space -> [0, 1]
    if spec.gan_search:
        extra["feature_norms"] = feature_norms([unit_target, *surrogates], recs, d.public.x)
        extra["n_candidates"] = c.n_candidates
        extra["search_views"] = runner.views
        extra["id_weight"] = runner.id_weight
    elif c.n_candidates is not None:
        notes.append(f"n_candidates={c.n_candidates} was not used: {attack} selects no candidates (the GAN attacks do)")
    if not spec.gan_search:
        for name in ("search_views", "id_weight"):
            if getattr(c, name) is not None:
                notes.append(f"{name}={getattr(c, name)} was not used: {attack} searches no GAN prior's codes")
    priv = d.private_all()
    independent = bench.independent_judge()
    with bench.stages.stage("judging", f"{len(recs)} reconstructions by {len(unit_judges)} trained judge(s)"
                            + (", and dlib's face recogniser" if independent is not None else "")):
        panel = judge_panel(unit_judges, recs, labels, priv.x, priv.y, rec_index=rec_index, top_k=(1, 5),
                            train_x=d.private_train.x, train_y=d.private_train.y)
        if independent is not None:
            extra.update(independent_record(independent, target, recs, labels, d.private_test.x, d.private_test.y,
                                            panel))
    extra["per_identity"] = identity_leakage(panel.pop("per_identity"), extra.pop("independent_per_identity", None),
                                             d.private_identities)
    if independent is not None:
        notes.extend(extra["independent_warnings"])
    elif c.independent_judge == "auto" and c.dataset in FACE_DATASETS:
        notes.append("no independent judge: dlib's face recogniser is not installed (pip install \"mi-art[faces]\"); "
                     "every figure here is the trained judges' alone")
    record = given_record if given_record is not None else bench.defense_record
    if record is not None:
        from mi_art.defenses.dp import delta_warning

        n_train = (record.get("details") or {}).get("n_train") or len(d.private_train)
        warned = delta_warning(record.get("delta"), n_train)
        notes.extend([warned] if warned else [])
    if given_record is not None:
        extra.update(defense=given_record.get("defense"), epsilon=given_record.get("epsilon"),
                     delta=given_record.get("delta"), defense_record=given_record)
    defended = given_record.get("defense", "none") != "none" if given_record is not None else c.defense != "none"
    target_accuracy = natural_accuracy(unit_target, d.private_test.x, d.private_test.y)
    judge_accuracies = [natural_accuracy(j, d.private_test.x, d.private_test.y) for j in unit_judges]
    judge_accuracy = float(np.mean(judge_accuracies))
    return {
        "dataset": d.name, "attack": attack, "variant": variant, "attack_seed": seed, **panel,
        "target_test_accuracy": target_accuracy, "evaluator_test_accuracy": judge_accuracy,
        "evaluator_test_accuracies": judge_accuracies,
        "panel_shares": panel_shares(c.target_arch, c.judge_arch, c.target_pretrain_epochs, c.judge_pretrain_epochs),
        "warnings": weak_model_warnings(target_accuracy=target_accuracy, judge_accuracy=judge_accuracy,
                                        n_classes=panel["num_classes"], defended=defended) + notes,
        "seconds": seconds, "seconds_per_reconstruction": seconds / len(recs),
        "n_identities": int(len(identities)), "n_reconstructions": int(len(recs) // len(identities)),
        "iterations": getattr(c, spec.iterations_field), **thread_record(),
        **extra, "reconstructions": recs, "labels": labels,
    }


def _target_record(record: Any) -> Dict[str, Any]:
    """A given target's record as a JSON-safe dict: a :class:`~mi_art.defenses.record.DefenseRecord` or its
    ``to_dict()``."""
    as_dict = record.to_dict() if hasattr(record, "to_dict") else record
    if not isinstance(as_dict, dict) or "defense" not in as_dict:
        raise ValueError("target_record must be a mi_art.defenses.DefenseRecord (e.g. mi_art.defenses.opacus_record) "
                         f"or its to_dict(), got {type(record).__name__}")
    return dict(as_dict)


def _attack_stage(c: ExperimentConfig, attack: str, variant: str, n_identities: int) -> Tuple[str, str]:
    """``(what, budget)`` of the attack's line (:meth:`~mi_art.evaluations.stages.StageLog.stage`): its entry's
    ``describe``, else the GAN attacks' form."""
    spec = get_attack(attack)
    if spec.describe is not None:
        return "attacking", spec.describe(c, variant, n_identities)
    budget = (f"{attack.upper()} {variant}, {c.iterations} iterations, "
              f"{n_identities} identities x {c.n_reconstructions} reconstructions")
    if c.n_candidates is not None:
        budget += f" kept of {c.n_candidates} candidates"
    return "attacking", budget + (f", at most {c.max_queries} queries" if c.max_queries is not None else "")


def feature_norms(models: List[Any], recs: np.ndarray, public_x: np.ndarray, n_public: int = 500) -> List[Optional[Dict[str, float]]]:
    """For each model (the target, then the surrogates): the mean norm of its penultimate feature on (up to
    ``n_public``) public images and on the reconstructions, all in [0, 1] channels first. A look at what the
    logit loss does to each model's features: a norm far above the public one is a feature no real image
    gives. None for a model whose feature cannot be read at its last ``nn.Linear``."""
    from mi_art.features import extract_features

    out: List[Optional[Dict[str, float]]] = []
    for model in models:
        try:
            norm = {name: float(extract_features(model, torch.from_numpy(np.ascontiguousarray(x))).norm(dim=1).mean())
                    for name, x in (("public", public_x[:n_public]), ("reconstructions", recs))}
        except ValueError:
            norm = None
        out.append(norm)
    return out


def prior_caveat(name: str, steps: int, dataset: str) -> Optional[str]:
    """What a prior trained ``steps`` means for a face run's pictures and Acc@1, when below
    :data:`FACE_PRIOR_STEPS`; None otherwise and for data other than faces."""
    needed = get_prior(name).face_steps
    if dataset not in FACE_DATASETS or needed is None or steps >= needed:
        return None
    return (f"the {name.upper()} prior trained {steps} steps, below the {needed} of the face benchmarks: at such "
            "budgets the AT&T reconstructions were blurred faces and grey ovals. Look at the prior's samples: the "
            "reconstructions are images like them, and Acc@1 is the judges' vote on them, not a count of "
            "recognisable faces; train the prior longer (gmi_steps, kedmi_steps, plgmi_steps) for sharper ones")


def identity_leakage(panel_rows: List[Dict[str, Any]], independent_rows: Optional[List[Dict[str, Any]]],
                     names: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """A record's ``"per_identity"``: the panel's row of each attacked identity (its reconstructions' Acc@1 and
    KNN distance, its number of private training images), with the independent judge's Acc@1 and distance
    where there is one, and the identity's name."""
    independent = {row["identity"]: row for row in independent_rows or []}
    out = []
    for row in panel_rows:
        row = dict(row)
        if names is not None and 0 <= row["identity"] < len(names):
            row["name"] = str(names[row["identity"]])
        extra = independent.get(row["identity"], {})
        row.update({k: v for k, v in extra.items() if k.startswith("independent_")})
        out.append(row)
    return out


def public_record(result: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON-serialisable part of a result (no image arrays)."""
    return {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in result.items()
            if k not in ("reconstructions", "labels", "prior_samples")}
