"""The Workbench: loads a data set once and hands out every trained artifact (the target under its defense, the
judges, pre-trained models, the priors, the surrogates, ``p_reg``) through the
:class:`~mi_art.evaluations.cache.ArtifactCache`, keyed by what made it, so that runs sharing a target or a prior
train it once."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from mi_art import make_classifier, train_classifier
from mi_art.attacks import get_attack
from mi_art.data import MIDataset, load_dataset
from mi_art.face_recognizer import load_dlib_face_recognizer
from mi_art.features import penultimate_layer
from mi_art.models import PRETRAINED_FACE_ARCHS
from mi_art.pretraining import fine_tune_classifier, pretrain_classifier, replace_head
from mi_art.priors import PRIORS, PUBLIC_PRIOR, get_prior, prior_samples, priors_needed, save_sample_grid
from mi_art.renames import Renames
from mi_art.utils import resolve_device, seed_everything
from mi_art.validation import check_choice, check_int, check_labels

from .artifact_keys import JUDGE_KIND, JUDGE_SEED_OFFSET, ArtifactKeys
from .cache import ArtifactCache
from .config_rules import needs_gmi_prior
from .experiment_config import ExperimentConfig, query_budget_problem
from .independent import FACE_DATASETS, EmbeddingJudge, embed_images, resolve_independent_judge
from .metrics import fid_eval_features
from .stages import StageLog
from .surrogate_artifacts import SurrogateArtifacts

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
#: The Workbench's renamed methods and :meth:`Workbench.redraw`'s renamed kinds ("judge" is the one word for the
#: models that score an attack); the earlier names still work, reported as renamed.
RENAMED_METHODS = Renames("method", {"evaluator": "judge", "evaluators": "judges"})
RENAMED_KINDS = Renames("kind", {"evaluator": "judge"})
#: What every defense record holds: a cached record without them is another artifact's, set aside.
DEFENSE_RECORD_FIELDS = ("defense", "params", "test_accuracy", "epsilon", "delta")


class Workbench(SurrogateArtifacts):
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
        #: Every artifact's cache key: ``key(kind, **parts)`` (:class:`~.artifact_keys.ArtifactKeys`).
        self.key = ArtifactKeys(self, data)
        self.defense_record: Optional[Dict[str, Any]] = None
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
        self._check_feature_layer(ch, k, s)
        checked = set()
        for prior in self.priors_needed():  # each part of every prior the run trains or loads
            for what, build, shape_in, shape_out in get_prior(prior).size_checks(ch, s, k, c.gan_width):
                if what not in checked:
                    checked.add(what)
                    check_builds(what, build, shape_in, shape_out, where)

    def _check_feature_layer(self, channels: int, num_classes: int, size: int) -> None:
        """A named ``feature_layer`` is a module of the model the attack inverts (the target at white-box, below it
        the first surrogate), before anything is trained."""
        c = self.config
        if c.feature_layer is None:
            return
        field, arch = (("target_arch", c.target_arch) if c.access == "white-box" or not c.surrogate_archs
                       else ("surrogate_archs[0]", c.surrogate_archs[0]))
        try:
            penultimate_layer(make_classifier(arch, channels, num_classes, size), c.feature_layer)
        except ValueError as error:
            raise ValueError(f"{error} ({arch!r}, the model inverted, is the configuration's {field})") from None

    def priors_needed(self) -> Tuple[str, ...]:
        """The priors a run of the config trains or loads: its attack's, those that one starts from, and the
        public prior when surrogates distilled on "public+prior" learn on its samples."""
        c = self.config
        needed = priors_needed(get_attack(c.attack).prior, c)
        return needed + ((PUBLIC_PRIOR,) if PUBLIC_PRIOR not in needed and needs_gmi_prior(c) else ())

    # ---------------------------------------------------------------- classifiers

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

    def pretrained(self, arch: str, epochs: int, seed: int, desc: str, defense: Any = None,
                   params: Optional[Dict[str, Any]] = None) -> nn.Module:
        """A fresh ``arch`` (initialised from ``seed``) pre-trained ``epochs`` on the public identities, with
        their classification layer (cached: the target under every defense shares one, except a defense
        whose fine-tuning needs another structure from the start: ``defense.pretraining_architecture``,
        e.g. DP-SGD's GroupNorm, keyed apart by its ``pretraining_tag``)."""
        c, d = self.config, self.data
        params = None if defense is None else {**defense.defaults, **(params or {})}
        tag = "" if defense is None else defense.pretraining_tag(params)
        shape = (lambda m: defense.pretraining_architecture(m, params)) if tag else (lambda m: m)
        return self.cache.module(
            "pretrained", self.key("pretrained", arch=arch, epochs=epochs, seed=seed, architecture=tag),
            lambda: shape(self.untrained_classifier(arch, d.num_public_classes)),
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
        return self.key.own("target", model)

    def _defended_target(self) -> nn.Module:
        from mi_art.defenses import check_defense_params, defended_architecture, get_defense, train_defended_target

        c, key = self.config, self.key("target")
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

    def judge(self) -> nn.Module:
        """The trained judge (an evaluation model): another architecture, trained on the private training split
        (after ``config.judge_pretrain_epochs`` of pre-training on the public identities, when > 0). The first
        of :meth:`judges`."""
        model = self._from_recipe(JUDGE_KIND, self.config.seed + JUDGE_SEED_OFFSET, "judge")
        return self.key.own(JUDGE_KIND, model)

    def evaluator(self) -> nn.Module:
        """:meth:`judge`, under its earlier name (reported as renamed)."""
        RENAMED_METHODS.report("evaluator", "Workbench")
        return self.judge()

    def independent_judge(self) -> Optional[EmbeddingJudge]:
        """The judge we did not train (``config.independent_judge``; :mod:`mi_art.evaluations.independent`) over
        the private training images, or None when there is none. Built once per workbench."""
        if not hasattr(self, "_independent"):
            self._independent = None
            if resolve_independent_judge(self.config.independent_judge, self.config.dataset) is not None:
                train, embedder = self.data.private_train, load_dlib_face_recognizer(device="cpu")
                # the training images' descriptors are the same for every cell of a data set: cached
                features = self.cache.tensor("independent-descriptors", self.key("independent-descriptors"),
                                             lambda: torch.from_numpy(embed_images(embedder, train.x,
                                                                                   device=self.device)))
                self._independent = EmbeddingJudge(embedder, train.x, train.y, self.data.num_classes, name="dlib",
                                                   device=self.device, train_features=features.numpy())
        return self._independent

    def judges(self) -> List[nn.Module]:
        """The panel of ``config.judges`` evaluation models: :meth:`judge`, then the same recipe from
        the next initialisation seeds (``config.seed + JUDGE_SEED_OFFSET + j``), each cached."""
        first = self.config.seed + JUDGE_SEED_OFFSET
        return [self.judge()] + [self.redraw("judge", first + j) for j in range(1, self.config.judges)]

    def evaluators(self) -> List[nn.Module]:
        """:meth:`judges`, under its earlier name (reported as renamed)."""
        RENAMED_METHODS.report("evaluators", "Workbench")
        return self.judges()

    def redraw(self, kind: str, seed: int) -> nn.Module:
        """The target's (``kind="target"``) or the judge's (``"judge"``; ``"evaluator"`` is its earlier name,
        reported as renamed) recipe trained from initialisation ``seed`` instead of the configured one (cached),
        to measure how much a result owes to the draw of that model. The configured seed (``config.seed``; the
        judge's is ``config.seed + JUDGE_SEED_OFFSET``) gives :meth:`target` / :meth:`judge` themselves; any
        other model is not the workbench's own, so priors, surrogates and p_reg made for it are keyed by its
        weights."""
        c = self.config
        kind = check_choice("kind", RENAMED_KINDS.new(kind, "Workbench.redraw"), ("target", "judge"))
        seed = check_int("seed", seed, low=0)
        if kind == "target" and c.defense != "none":
            raise ValueError(f"redraw('target') trains the undefended recipe; config.defense is "
                             f"{c.defense!r}: train that target with another config.seed instead")
        if seed == (c.seed if kind == "target" else c.seed + JUDGE_SEED_OFFSET):
            return self.target() if kind == "target" else self.judge()
        return self._from_recipe("target" if kind == "target" else JUDGE_KIND, seed, f"{kind} seed {seed}")

    def _from_recipe(self, kind: str, seed: int, desc: str) -> nn.Module:
        """The undefended target's (``kind="target"``) or the evaluation model's (:data:`JUDGE_KIND`) recipe
        trained from initialisation ``seed``, cached under its key with that seed."""
        c = self.config
        if kind == "target":
            arch, epochs, pre = c.target_arch, c.target_epochs, c.target_pretrain_epochs
        else:
            arch, epochs, pre = c.judge_arch, c.judge_epochs, c.judge_pretrain_epochs
        return self.cache.module(
            kind, {**self.key(kind), "seed": seed}, lambda: self.untrained_classifier(arch),
            lambda: self._trained_classifier(arch, epochs, pre, seed, desc)).to(self.device)

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

        pair = self._timed_prior(spec.cache_kind, self.key(spec.cache_kind, target=target),
                                 lambda: nn.ModuleDict(spec.build(self)), train)
        return pair["g"].eval(), (pair["d"].eval() if "d" in pair else None)

    def prior_report(self, kind: str, target: Optional[nn.Module] = None,
                     judge: Optional[nn.Module] = None) -> Dict[str, Any]:
        """Training seconds (None when it was trained before records were kept) and quality of a prior
        (``kind``: its cache kind, ``"<name>-prior"`` of :data:`mi_art.priors.PRIORS`): FID between
        :data:`PRIOR_FID_SAMPLES` of its samples and the public images (a seeded sample of
        :data:`PRIOR_FID_PUBLIC` of a larger set), on the features of ``judge`` (default: :meth:`judge`)."""
        name = kind[:-len("-prior")]
        key = self.key(kind, target=target)
        gen = self.prior(name, target)[0]
        # a record lost or set aside is not worth training the prior again: its seconds are then unknown
        seconds = self.cache.json(f"{kind}-record", key, lambda: {"train_seconds": None},
                                  fields=("train_seconds",))["train_seconds"]
        judge = judge if judge is not None else self.judge()

        def quality() -> Dict[str, Any]:
            fake = prior_samples(gen, PRIOR_FID_SAMPLES, seed=self.config.seed)
            public = self.data.public.x
            if len(public) > PRIOR_FID_PUBLIC:  # a seeded sample: every public image's features cost a pass
                public = public[np.random.default_rng(self.config.seed).permutation(len(public))[:PRIOR_FID_PUBLIC]]
            return {"fid_public": fid_eval_features(judge, fake, public)}

        fid = self.cache.json(f"{kind}-quality", self.key(f"{kind}-quality", target=target, judge=judge),
                              quality, fields=("fid_public",))
        report = {"train_seconds": seconds, **fid}
        caveat = prior_caveat(name, self.prior_budget(name)["steps"], self.config.dataset)
        return report | ({"caveat": caveat} if caveat else {})

    def prior_budget(self, name: str) -> Dict[str, Any]:
        """What a run's record says of the prior ``name`` it searched beside its quality: its name, training
        steps and the samples its figures show."""
        return {"name": name, "steps": getattr(self.config, get_prior(name).steps_field), "samples": PRIOR_GRID_SAMPLES}


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
