"""The ART side every GAN-based attack shares: the contract (``attack_params``, ``_check_params``, one verb
``infer``), the model set and the identity objective it is given, the prior's term, and bookkeeping.

An attack is four parts, each in its own place: a **prior** (:mod:`mi_art.priors`: networks, training,
the prior's loss, samples), an **identity loss** (:mod:`mi_art.identity`: CE, logit, margin; ``p_reg`` and
its calibration), a **model set** (:mod:`mi_art.surrogates`: the target and its surrogates) and a **latent
search** (:mod:`mi_art.attacks.search`). A subclass says which prior term and which search it uses.

LOMMA (Nguyen et al., "Re-thinking Model Inversion Attacks Against Deep Neural Networks",
CVPR 2023, https://arxiv.org/abs/2304.01669) is not a separate attack: ``identity_loss="logit"``
with ``p_reg`` and ``surrogates=[...]`` turn it on for every attack.
"""
from __future__ import annotations

import abc
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from art.attacks.attack import InferenceAttack
from art.estimators.classification.classifier import ClassGradientsMixin, ClassifierMixin
from art.estimators.estimator import BaseEstimator
from art.estimators.pytorch import PyTorchEstimator
from torch import nn
from tqdm.auto import tqdm

from ..features import check_feature_layer, logits_and_features, penultimate_layer
from ..identity import IDENTITY_LOSSES, REG_GRADIENT_RATIO, IdentityObjective, feature_reference
from ..access import ACCESS_LEVELS, PredictOracle
from ..priors.plgmi import random_views
from ..views import VIEW_TRANSFORMS, alignment_views
from .params import ExplainedParams
from .selection import keep_best, robust_confidence
from ..surrogates import ModelSet
from ..utils import EstimatorModule, check_output_index, eval_mode, module_device, seed_everything
from ..validation import (CHECK_EVERY, check_bool, check_choice, check_count, check_finite_at, check_int,
                          check_list, check_number, check_positive, check_seed)

__all__ = ["CHECK_EVERY", "GANInversionAttack", "REFERENCE_BATCH", "REG_GRADIENT_RATIO"]

# The papers average their losses over a batch of 60 latents; dividing the per-latent sum by this
# constant keeps their learning rates while making each latent's update independent of batch_size.
REFERENCE_BATCH = 60


class GANInversionAttack(ExplainedParams, InferenceAttack, abc.ABC):
    """Base class of the GAN-based model inversion attacks (not used directly). The parameters every attack
    takes:

    :param estimator: The target, an ART ``PyTorchClassifier``. Its ``preprocessing``, ``clip_values``
        and ``channels_first`` are applied as ``predict`` applies them (see :class:`mi_art.utils.EstimatorModule`).
        It returns logits, or probabilities (a final softmax) under ``identity_loss="ce"``, whose logarithm
        the attack then uses.
    :param generator: The prior's generator (images in [0, 1], channels first).
    :param discriminator: The prior's discriminator, on [0, 1] images, where the attack has a prior term.
    :param identity_loss: "ce" (cross-entropy), "logit" (LOMMA's logit maximisation) or "margin" (PLG-MI's
        max-margin loss); the last two need logits.
    :param p_reg: The public feature reference of LOMMA's regulariser, the mean penultimate feature of
        public images (:func:`mi_art.estimate_p_reg`, with the same ``feature_layer``). Adds
        ``reg_weight * ||p - p_reg||^2`` (mean over dimensions) to the identity loss.
    :param reg_weight: The regulariser's weight. None (default): calibrated once per ``infer`` so that
        the regulariser's input gradient is ``REG_GRADIENT_RATIO`` (0.25) times the identity loss's on the
        first prior samples, the ensemble's under model augmentation; the weights used are ``reg_weights_``
        afterwards. A number fixes it (the paper's is 1, for a BatchNorm1d feature).
    :param surrogates: Models distilled from the target (:func:`mi_art.distill_surrogate`), ART
        estimators or torch modules (a bare module takes [0, 1] NCHW images); the identity loss is
        averaged over target and surrogates (model augmentation).
    :param surrogate_p_reg: One mean public feature per surrogate (:func:`mi_art.estimate_p_reg` of each
        surrogate, read at its last ``nn.Linear``), with ``p_reg``: every surrogate's logit loss then gets
        its own regulariser, as the target's does, each weight calibrated to that model's own identity
        gradient. The paper regularises the target alone; a surrogate's logit, distilled with a KL that
        fixes only differences of logits, is then free to grow with its feature norm (docs/methods.md:
        measured on LFW). None: the paper's form.
    :param iterations: Steps of the latent search (per batch; ART's ``max_iter``). 2400, the papers' budget;
        ``mi-art attack``/``evaluate`` and ``ExperimentConfig`` default to 300, sized for the digits on a CPU.
    :param learning_rate: The search's learning rate.
    :param n_reconstructions: Reconstructions per identity.
    :param n_candidates: Candidates searched per identity, of which the ``n_reconstructions`` the target
        recognises best under random crops, flips and small rotations are kept (Plug & Play Attacks' candidate
        selection, :mod:`mi_art.attacks.selection`; their scores in ``selection_scores_``). None (default):
        ``n_reconstructions``, no selection. GMI and PLG-MI search each candidate (cost grows with it); KEDMI
        and VMI draw them from the distribution they learnt. Scoring asks the target (``predict`` without
        white-box access: counted in ``queries_``).
    :param views: Random views of each image (:func:`~mi_art.priors.plgmi.random_views`: a crop of 0.8 to 1 of
        the area, flip, rotation up to 5 degrees, brightness and contrast) over which the identity loss is averaged
        at every step of the search: PLG-MI's augmentation (its default, 2), Plug & Play Attacks'
        transformations during the search (https://arxiv.org/abs/2201.12179), and with several,
        transformation-averaged gradients. A reconstruction must then hold the identity under small changes of
        framing, not at one exact arrangement of pixels. 0 (default for every other attack): the images as
        generated.
    :param view_transform: Which random views (:data:`mi_art.views.VIEW_TRANSFORMS`): ``"plgmi"`` (default), the
        ones above; ``"alignmi"``, AlignMI's geometric ones (:func:`mi_art.views.alignment_views`: a crop of 0.8 to
        1 of the area with an aspect ratio of 0.9 to 1.1, a flip, a rotation of up to 5 degrees, no colour
        change), which its training-free gradient alignment averages over 30 of (``views=30``; the ``"align"``
        improvement of :mod:`mi_art.variants`).
    :param batch_size: Codes (or identities, for the distributional searches) optimised together.
    :param id_weight: Weight of the identity loss against the prior term (the papers' 100).
    :param feature_layer: Name (in ``estimator.model.named_modules()``) of the module whose input is
        the penultimate feature; default the last ``nn.Linear``. Needed only with ``p_reg``.
    :param output_index: Where the logits are in a model returning a tuple (a position) or a dict (a key).
    :param seed: Seed of the search (None: not seeded).
    :param verbose: Show a progress bar.
    :param access: What the attack may ask of the target (:data:`mi_art.access.ACCESS_LEVELS`):
        ``"white-box"`` (its gradients, the default), ``"black-box"`` (the scores ``predict`` returns) or
        ``"label-only"`` (the label ``predict`` ranks first). In the last two the estimator is any ART
        classifier with ``predict`` (``BlackBoxClassifier`` included) and is only ever asked through
        ``predict``, once per reconstruction for ``target_confidence_`` (black-box: its score of the
        identity; label-only: 1 when it answers the identity), counted in ``queries_``. The attack inverts
        the ``surrogates``, which must be trained from the target's answers
        (:func:`mi_art.distill_surrogate` with a :class:`mi_art.access.PredictOracle`): the first stands
        in for the target (``p_reg`` is its feature reference, ``feature_layer`` names its layer), the
        others are its ensemble (``surrogate_p_reg``: one reference each).

    A subclass sets :attr:`needs_discriminator`, checks its prior (:meth:`_check_discriminator`) and
    implements :meth:`_run`, which calls one search of :mod:`mi_art.attacks.search` with the loss
    :meth:`_objective` assembles."""

    attack_params = InferenceAttack.attack_params + [
        "identity_loss", "p_reg", "reg_weight", "surrogates", "surrogate_p_reg", "iterations", "learning_rate",
        "n_reconstructions", "n_candidates", "views", "view_transform", "batch_size", "id_weight", "feature_layer",
        "output_index", "seed", "verbose", "access",
    ]
    _estimator_requirements = (BaseEstimator, PyTorchEstimator, ClassifierMixin, ClassGradientsMixin)
    #: Whether the attack's loss has a prior term, for which it takes the prior's discriminator.
    needs_discriminator = True
    #: The name of the prior it inverts (:data:`mi_art.priors.PRIORS`).
    prior: str = ""
    #: Its name in progress bars and result tables; a subclass that does not set it gets its class name.
    title: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "title" not in cls.__dict__:
            cls.title = cls.__name__

    def __init__(self, estimator: Any, generator: nn.Module, discriminator: Optional[nn.Module] = None, *,
                 identity_loss: str = "ce", p_reg: Any = None, reg_weight: Optional[float] = None,
                 surrogates: Sequence[Any] = (), surrogate_p_reg: Optional[Sequence[Any]] = None,
                 iterations: int = 2400, learning_rate: float = 0.02,
                 n_reconstructions: int = 5, n_candidates: Optional[int] = None, views: int = 0,
                 view_transform: str = "plgmi", batch_size: int = 60,
                 id_weight: float = 100.0,
                 feature_layer: Optional[str] = None, output_index: Any = None,
                 seed: Optional[int] = None, verbose: bool = True, access: str = "white-box", **unknown: Any) -> None:
        self._refuse_unknown(unknown)
        self.access = check_choice("access", access, ACCESS_LEVELS)
        if self.access != "white-box":  # predict alone: any ART classifier
            self._estimator_requirements = (BaseEstimator, ClassifierMixin)
        super().__init__(estimator=estimator)
        if not isinstance(generator, nn.Module):
            raise ValueError("generator must be a torch.nn.Module instance")
        if self.needs_discriminator and not isinstance(discriminator, nn.Module):
            raise ValueError("discriminator must be a torch.nn.Module instance: the prior's discriminator, whose "
                             "score is the attack's prior term")
        self.generator = generator
        self.discriminator = discriminator
        self.identity_loss = identity_loss
        self.p_reg = p_reg
        self.reg_weight = reg_weight
        self.surrogates = list(surrogates) if isinstance(surrogates, (list, tuple)) else surrogates
        self.surrogate_p_reg = (list(surrogate_p_reg) if isinstance(surrogate_p_reg, (list, tuple))
                                else surrogate_p_reg)
        self.iterations = iterations
        self.learning_rate = learning_rate
        self.n_reconstructions = n_reconstructions
        self.n_candidates = n_candidates
        self.views = views
        self.view_transform = view_transform
        self.batch_size = batch_size
        self.id_weight = id_weight
        self.feature_layer = feature_layer
        self.output_index = output_index
        self.seed = seed
        self.verbose = verbose
        self.labels_: Optional[np.ndarray] = None
        self.reconstruction_index_: Optional[np.ndarray] = None
        self.target_confidence_: Optional[np.ndarray] = None
        self.selection_scores_: Optional[np.ndarray] = None
        self.queries_: int = 0
        self._identity: Optional[IdentityObjective] = None
        self._check_params()

    # ------------------------------------------------------------------ ART contract

    def _check_params(self) -> None:
        check_choice("identity_loss", self.identity_loss, IDENTITY_LOSSES)
        check_choice("access", self.access, ACCESS_LEVELS)
        surrogates = check_list("surrogates", self.surrogates, item="model")
        self._oracle: Optional[PredictOracle] = None
        if self.access != "white-box":
            if not surrogates:
                raise ValueError(f"access={self.access!r} inverts surrogates trained from the target's answers, "
                                 "not the target: give surrogates=[...] (mi_art.distill_surrogate with a "
                                 f"mi_art.PredictOracle(estimator, access={self.access!r}))")
            self._oracle = PredictOracle(self.estimator, access=self.access)
        for name in ("iterations", "n_reconstructions", "batch_size"):
            check_count(name, getattr(self, name))
        if self.n_candidates is not None:
            check_count("n_candidates", self.n_candidates)
            if self.n_candidates < self.n_reconstructions:
                raise ValueError(f"n_candidates={self.n_candidates} is below n_reconstructions="
                                 f"{self.n_reconstructions}: the kept reconstructions are chosen among the "
                                 "candidates, so give n_candidates >= n_reconstructions (or None: no selection)")
        check_int("views", self.views, low=0, hint=" (0: the images as generated)")
        check_choice("view_transform", self.view_transform, VIEW_TRANSFORMS)
        for name in ("learning_rate", "id_weight"):
            check_positive(name, getattr(self, name))
        if self.reg_weight is not None:
            check_number("reg_weight", self.reg_weight, low=0)
        check_bool("verbose", self.verbose)
        check_seed("seed", self.seed)
        check_output_index(self.output_index)
        # the feature layer is looked for only when named or needed (p_reg): no nn.Linear is required otherwise
        layer_name = check_feature_layer(self.feature_layer)
        self._feature_module = None if layer_name is None else penultimate_layer(self._attacked_model, layer_name)
        self._model_set = ModelSet(self._target_view(), surrogates if self._oracle is None else surrogates[1:])
        self._surrogate_modules = self._model_set.surrogates
        self._p_reg_tensor = None
        if self.p_reg is not None:
            self._feature_module = penultimate_layer(self._attacked_model, layer_name)
            self._p_reg_tensor = feature_reference("p_reg", self.p_reg, self._feature_dim(self._feature_module),
                                                   "the target's" if self._oracle is None else "surrogates[0]'s")
        self._surrogate_p_reg = None
        if self.surrogate_p_reg is not None:
            refs = check_list("surrogate_p_reg", self.surrogate_p_reg, item="feature reference")
            if self.p_reg is None:
                raise ValueError("surrogate_p_reg regularises the surrogates as p_reg regularises the target: "
                                 "give p_reg too, or leave surrogate_p_reg out")
            first = 0 if self._oracle is None else 1  # black-box: surrogates[0] is the target's stand-in
            if len(refs) != len(self._surrogate_modules):
                raise ValueError(f"surrogate_p_reg has {len(refs)} entries for {len(self._surrogate_modules)} "
                                 "surrogates: give one per surrogate, in the same order"
                                 + ("" if first == 0 else f" after surrogates[0] (access={self.access!r}: "
                                                          "p_reg is surrogates[0]'s)"))
            self._surrogate_p_reg = [
                feature_reference(f"surrogate_p_reg[{i}]", ref, self._model_set.feature_size(i + 1),
                                  f"surrogates[{i + first}]'s") for i, ref in enumerate(refs)]
        self._identity = None

    def _target_view(self) -> EstimatorModule:
        """The model whose gradients the attack follows in the target's place (:class:`~mi_art.utils.EstimatorModule`):
        the target (white-box), else the first surrogate. Images in the unit space are mapped to its input
        space by ``from_unit``; ART preprocessing; ``output_index``."""
        if self._oracle is None:
            return EstimatorModule(self.estimator, output_index=self.output_index, what="target")
        return EstimatorModule(self.surrogates[0], output_index=self.output_index, what="surrogates[0]")

    @property
    def _attacked_model(self) -> nn.Module:
        """The torch module behind :meth:`_target_view`."""
        return self._target_view().model

    def _input_shape(self) -> Tuple[int, ...]:
        """The shape of one image in the input space of :meth:`_target_view`."""
        return tuple(self.estimator.input_shape) if self._oracle is None else self._oracle.unit_shape

    def _feature_dim(self, layer: nn.Module) -> int:
        """Size of the attacked model's penultimate feature: an ``nn.Linear``'s ``in_features``, else measured
        on two blank inputs."""
        if isinstance(layer, nn.Linear):
            return layer.in_features
        view = self._target_view()
        x = torch.zeros(2, *self._input_shape(), device=self._device)
        with torch.no_grad(), eval_mode(view.model):
            return int(logits_and_features(view, x, layer)[1].shape[1])

    # ------------------------------------------------------------------ the verb

    def infer(self, x: Optional[np.ndarray] = None, y: Optional[np.ndarray] = None, **kwargs: Any) -> np.ndarray:
        """Reconstruct ``n_reconstructions`` images for every identity in ``y``.

        :param x: Not used (the attack starts from the GAN prior); must be None.
        :param y: Identities (class indices, or one-hot rows) to reconstruct.
        :return: Reconstructions of shape ``(len(y) * n_reconstructions, *estimator.input_shape)`` in the
            estimator's input space (its ``clip_values`` range and layout: what ``estimator.predict``
            takes), ordered as ``np.repeat(y, n_reconstructions)``. Afterwards ``labels_``,
            ``reconstruction_index_`` and ``target_confidence_`` (the target's probability of the attacked
            identity for each reconstruction, as ``estimator.predict`` gives it: the softmax of its
            logits, or its own probabilities for a model ending in softmax) describe them; ``reg_weights_``
            the regularisers' weights (the target's first, ``reg_weight_``).
        """
        if x is not None:
            raise ValueError("x is not used by GAN-based model inversion: pass the identities to attack as y")
        if y is None:
            raise ValueError("y is required: the identities (class indices) to reconstruct")
        labels = self._check_labels(y)
        seed_everything(self.seed)
        if self._oracle is not None:
            self._oracle.queries = 0
        target = self._target_view()
        self._identity = self._new_identity(target)
        saved = self._freeze()
        try:
            self._check_models(target)
            images = self._run(torch.from_numpy(labels).to(self._device))
            images = self._select(target, images, labels)
            with torch.no_grad():
                y_rep = torch.from_numpy(np.repeat(labels, self.n_reconstructions)).to(self._device)
                confidence = torch.cat([self._confidence(target, images[i:i + 256], y_rep[i:i + 256])
                                        for i in range(0, len(images), 256)])
                out = (target.from_unit(images).cpu().numpy() if self._oracle is None
                       else self._oracle.from_unit(images))
        finally:
            self._restore(saved)
        n = self.n_reconstructions
        self.labels_ = np.repeat(labels, n)
        self.reconstruction_index_ = np.tile(np.arange(n), len(labels))
        self.target_confidence_ = confidence.cpu().numpy()
        return out

    @property
    def _codes_per_identity(self) -> int:
        """Images the search makes per identity: ``n_candidates`` when selecting, else ``n_reconstructions``."""
        return self.n_candidates or self.n_reconstructions

    def _select(self, target: EstimatorModule, images: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
        """The ``n_reconstructions`` of each identity's candidates that keep the target's confidence best
        under random views (:mod:`mi_art.attacks.selection`); all of them without selection."""
        codes, keep = self._codes_per_identity, self.n_reconstructions
        self.selection_scores_ = None
        if codes == keep:
            return images
        y = torch.from_numpy(np.repeat(labels, codes)).to(images.device)
        scores = robust_confidence(lambda views, ys: self._confidence(target, views, ys), images, y,
                                   seed=self.seed)
        kept = keep_best(scores, codes, keep)
        self.selection_scores_ = scores[kept].cpu().numpy()
        return images[kept]

    @property
    def reg_weights_(self) -> Optional[List[float]]:
        """The regularisers' weights of the last ``infer`` (the target's, then each regularised surrogate's)."""
        return None if self._identity is None else self._identity.reg_weights

    @property
    def reg_weight_(self) -> Optional[float]:
        """The target regulariser's weight of the last ``infer``."""
        weights = self.reg_weights_
        return None if weights is None else weights[0]

    # ------------------------------------------------------------------ shared machinery

    @property
    def _device(self) -> torch.device:
        if self._oracle is None:
            return self.estimator.device
        source = self._target_view().source
        return source.device if hasattr(source, "device") else module_device(source)

    def _check_labels(self, y: Any) -> np.ndarray:
        from ..utils import check_labels

        return check_labels(y, self.estimator.nb_classes)

    def _new_identity(self, target: EstimatorModule) -> IdentityObjective:
        return IdentityObjective([target, *self._surrogate_modules], self.identity_loss,
                                 feature_module=self._feature_module, p_reg=self._p_reg_tensor,
                                 surrogate_p_reg=self._surrogate_p_reg, reg_weight=self.reg_weight)

    def _probe(self) -> torch.Tensor:
        """Two images of the generator, for the checks before the search."""
        return self.generator(torch.zeros(2, self._latent_dim, device=self._device).uniform_(-1, 1))

    def _check_models(self, target: EstimatorModule) -> None:
        """Shapes agree, outputs are logits when the logit or margin loss is asked for (the first forward pass
        of each view also detects a model returning probabilities, see :class:`~mi_art.utils.EstimatorModule`),
        and the prior's discriminator scores the generator's images as the attack needs."""
        device = self._device
        for model in (self.generator, self.discriminator, *self._surrogate_modules):
            if model is not None:
                model.to(device)
        with torch.no_grad():
            images = self._probe()
            probe = target.from_unit(images) if self._oracle is None else torch.from_numpy(self._oracle.from_unit(images))
            expected = tuple(self.estimator.input_shape)
            if tuple(probe.shape[1:]) != expected:
                raise ValueError(f"the generator makes images of shape {tuple(probe.shape[1:])} (in the estimator's "
                                 f"layout) but the estimator expects inputs of shape {expected}")
            if self._oracle is not None and tuple(images.shape[1:]) != self._input_shape():
                raise ValueError(f"the generator makes images of shape {tuple(images.shape[1:])} but surrogates[0] "
                                 f"takes {self._input_shape()}")
            self._model_set.check_outputs(images, self.estimator.nb_classes,
                                          needs_logits=None if self.identity_loss == "ce" else self.identity_loss)
            if self.discriminator is not None:
                self._check_discriminator(images)

    def _check_discriminator(self, images: torch.Tensor) -> None:
        """The prior's discriminator scores the generator's ``images`` as the attack needs (see subclasses)."""

    @property
    def _latent_dim(self) -> int:
        return int(getattr(self.generator, "latent_dim", 100))

    def _freeze(self) -> Tuple[List[Tuple[nn.Parameter, bool]], List[Tuple[nn.Module, bool]]]:
        """Put every model in eval mode without parameter gradients; returns what to restore."""
        models = [self.generator, self._attacked_model, *self._surrogate_modules]
        if self.discriminator is not None:
            models.insert(1, self.discriminator)
        grads = [(p, p.requires_grad) for m in models for p in m.parameters()]
        modes = [(sub, sub.training) for m in models for sub in m.modules()]
        for p, _ in grads:
            p.requires_grad_(False)
        for m in models:
            m.eval()
        return grads, modes

    @staticmethod
    def _restore(saved: Tuple[List[Tuple[nn.Parameter, bool]], List[Tuple[nn.Module, bool]]]) -> None:
        grads, modes = saved
        for p, flag in grads:
            p.requires_grad_(flag)
        for module, training in modes:
            module.training = training

    def _identity_objective(self, target: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample identity loss of unit-space ``images`` over the model set
        (:class:`~mi_art.identity.IdentityObjective`)."""
        if self._identity is None:
            self._identity = self._new_identity(target)
        return self._identity(images, labels)

    def _objective(self, images: torch.Tensor, labels: torch.Tensor, prior: torch.Tensor,
                   iteration: int = 0) -> torch.Tensor:
        """The scalar loss of a search step: the per-sample ``prior`` term plus ``id_weight`` times the identity
        loss (averaged over ``views`` random views of the images, if any), summed and divided by
        :data:`REFERENCE_BATCH`; checked for NaN every :data:`CHECK_EVERY` iterations."""
        target = self._identity.target
        if self.views:
            view = alignment_views if self.view_transform == "alignmi" else random_views
            identity = sum(self._identity_objective(target, view(images), labels)
                           for _ in range(self.views)) / self.views
        else:
            identity = self._identity_objective(target, images, labels)
        per_sample = prior + self.id_weight * identity
        loss = per_sample.sum() / REFERENCE_BATCH
        return check_finite_at(loss, "the attack's loss (a prior, the target or a surrogate returned NaN or "
                               "infinity)", iteration, self.iterations)

    @torch.no_grad()
    def _confidence(self, target: EstimatorModule, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The target's probability of ``labels`` for unit-space ``images``: the softmax of its logits (of
        the log-probabilities of a model returning probabilities: its own probabilities); without white-box
        access, what ``predict`` answers (label-only: 1 for the identity's label, else 0), counted."""
        if self._oracle is not None:
            probs = self._oracle.answers(images)
            self.queries_ = self._oracle.queries
            return probs.gather(1, labels.view(-1, 1)).squeeze(1)
        probs = F.softmax(target(target.from_unit(images)), 1)
        return probs.gather(1, labels.view(-1, 1)).squeeze(1)

    def _progress(self, n_codes: int):
        """A bar over the search's ``iterations``, restarted for each batch of ``batch_size`` of ``n_codes``
        (:mod:`~mi_art.attacks.search` names the batch in its title)."""
        bar = tqdm(total=self.iterations, desc=self.title, disable=not self.verbose)
        bar.search_title = self.title
        return bar

    @abc.abstractmethod
    def _run(self, labels: torch.Tensor) -> torch.Tensor:
        """Return the reconstructions in [0, 1] (the generator's space), on the device, ordered as
        ``labels.repeat_interleave(n_reconstructions)``."""
