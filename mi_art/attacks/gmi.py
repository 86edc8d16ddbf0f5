"""GMI: "The Secret Revealer: Generative Model-Inversion Attacks Against Deep Neural Networks"
(Zhang et al., CVPR 2020, https://arxiv.org/abs/1911.07135), with LOMMA's improvements available
through ``identity_loss``, ``p_reg`` and ``surrogates``."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..losses import wgan_prior_loss
from ..models import KEDMIDiscriminator
from ..utils import EstimatorModule
from ..validation import check_number
from .base import GANInversionAttack


class GMI(GANInversionAttack):
    """Generative model inversion: optimise latent codes of a public WGAN-GP prior so that the
    generated images are judged real by the critic and classified as the attacked identity.

    Minimises ``-D(G(z)) + id_weight * L_id(T(G(z)), y)`` over ``z`` with Nesterov SGD (momentum
    0.9), clamping ``z`` to [-1, 1] after each step. Each of the ``n_reconstructions`` per identity
    is an independent random restart; all requested identities are optimised together in batches
    of ``batch_size`` latent codes.

    :param estimator: The target, an ART ``PyTorchClassifier``. Its ``preprocessing``, ``clip_values``
        and ``channels_first`` are applied as ``predict`` applies them (see :class:`mi_art.utils.EstimatorModule`).
        It returns logits, or probabilities (a final softmax) under ``identity_loss="ce"``, whose logarithm
        the attack then uses.
    :param generator: GMI generator (latent -> NCHW image in [0, 1]); see :func:`mi_art.train_gmi_prior`.
    :param discriminator: Its WGAN-GP critic (one score per image), on [0, 1] images.
    :param identity_loss: "ce" (GMI) or "logit" (LOMMA's logit maximisation; needs logits).
    :param p_reg: The public feature reference of LOMMA's regulariser, the mean penultimate feature of
        public images (:func:`mi_art.estimate_p_reg`, with the same ``feature_layer``). Adds
        ``reg_weight * ||p - p_reg||^2`` (mean over dimensions) to the identity loss.
    :param reg_weight: The regulariser's weight. None (default): calibrated once per ``infer`` so that
        the regulariser's input gradient is ``REG_GRADIENT_RATIO`` (0.25) times the identity loss's on the
        first prior samples, the ensemble's under model augmentation; the weight used is ``reg_weight_``
        afterwards. A number fixes it (the paper's is 1, for a BatchNorm1d feature).
    :param surrogates: Models distilled from the target (:func:`mi_art.distill_surrogate`), ART
        estimators or torch modules (a bare module takes [0, 1] NCHW images); the identity loss is
        averaged over target and surrogates.
    :param surrogate_p_reg: One mean public feature per surrogate (:func:`mi_art.estimate_p_reg` of each
        surrogate, read at its last ``nn.Linear``), with ``p_reg``: every surrogate's logit loss then gets
        its own regulariser, as the target's does, each weight calibrated to that model's own identity
        gradient (``reg_weights_``). The paper regularises the target alone; a surrogate's logit,
        distilled with a KL that fixes only differences of logits, is then free to grow with its feature
        norm (docs/methods.md: measured on LFW). None: the paper's form.
    :param feature_layer: Name (in ``estimator.model.named_modules()``) of the module whose input is
        the penultimate feature; default the last ``nn.Linear``. Needed only with ``p_reg``.
    :param output_index: Where the logits are in a model returning a tuple (a position) or a dict (a key).
    """

    def __init__(self, estimator: Any, generator: nn.Module, discriminator: nn.Module, *,
                 identity_loss: str = "ce", p_reg: Any = None, reg_weight: Optional[float] = None,
                 surrogates: Sequence[Any] = (), surrogate_p_reg: Optional[Sequence[Any]] = None,
                 iterations: int = 2400, learning_rate: float = 0.02,
                 n_reconstructions: int = 5, batch_size: int = 60, id_weight: float = 100.0,
                 momentum: float = 0.9, feature_layer: Optional[str] = None, output_index: Any = None,
                 seed: Optional[int] = None, verbose: bool = True) -> None:
        self.momentum = momentum
        super().__init__(estimator, generator, discriminator, identity_loss=identity_loss, p_reg=p_reg,
                         reg_weight=reg_weight, surrogates=surrogates, surrogate_p_reg=surrogate_p_reg,
                         iterations=iterations,
                         learning_rate=learning_rate, n_reconstructions=n_reconstructions,
                         batch_size=batch_size, id_weight=id_weight, feature_layer=feature_layer,
                         output_index=output_index, seed=seed, verbose=verbose)

    attack_params = GANInversionAttack.attack_params + ["momentum"]

    def _check_params(self) -> None:
        super()._check_params()
        check_number("momentum", self.momentum, low=0, high=1, high_open=True)
        if isinstance(self.discriminator, KEDMIDiscriminator):
            raise ValueError("discriminator is a KEDMIDiscriminator (K class logits): GMI needs the WGAN-GP critic of "
                             "its prior (mi_art.train_gmi_prior); use mi_art.KEDMI with a KEDMI prior")

    def _check_discriminator(self, scores: torch.Tensor) -> None:
        if scores.numel() != len(scores):
            raise ValueError(f"the discriminator returns scores of shape {tuple(scores.shape)}: GMI needs a WGAN-GP "
                             "critic with one score per image (mi_art.train_gmi_prior)")

    def _run(self, target: EstimatorModule, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        device = self._device
        all_labels = torch.from_numpy(np.repeat(labels, self.n_reconstructions)).to(device)
        images, confidence = [], []
        bar = self._progress(self.iterations * -(-len(all_labels) // self.batch_size), "GMI")
        for start in range(0, len(all_labels), self.batch_size):
            y = all_labels[start:start + self.batch_size]
            z = torch.randn(len(y), self._latent_dim, device=device).clamp_(-1, 1).requires_grad_(True)
            opt = torch.optim.SGD([z], lr=self.learning_rate, momentum=self.momentum, nesterov=self.momentum > 0)
            for it in range(self.iterations):
                fake = self.generator(z)
                loss = self._objective(target, fake, y, wgan_prior_loss(self.discriminator(fake)), it)
                z.grad, = torch.autograd.grad(loss, [z])
                opt.step()
                with torch.no_grad():
                    z.clamp_(-1, 1)
                bar.update(1)
            with torch.no_grad():
                fake = self.generator(z)
            images.append(target.from_unit(fake).cpu())
            confidence.append(self._confidence(target, fake, y).cpu())
        bar.close()
        return torch.cat(images).numpy(), torch.cat(confidence).numpy()
