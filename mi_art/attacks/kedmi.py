"""KEDMI: "Knowledge-Enriched Distributional Model Inversion Attacks" (Chen et al., ICCV 2021,
https://arxiv.org/abs/2010.04092), with LOMMA's improvements available through ``identity_loss``,
``p_reg`` and ``surrogates``."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import nn

from ..losses import kedmi_prior_loss
from ..models import Critic
from ..utils import EstimatorModule
from .base import GANInversionAttack


class KEDMI(GANInversionAttack):
    """Distributional model inversion with an inversion-specific GAN prior.

    For each identity a Gaussian over the latent space (mean ``mu``, init 0; log-variance, init 1)
    is learned with Adam: each step samples ``z = mu + exp(logvar / 2) * eps`` (clamped to [-1, 1])
    and minimises ``-log(Z/(Z+1)) + id_weight * L_id`` where ``Z = sum_k exp(D_k(G(z)))``. Afterwards
    ``n_reconstructions`` samples per identity are drawn. Identities are optimised together in
    batches of ``batch_size`` identities.

    :param estimator: The target, an ART ``PyTorchClassifier`` (preprocessing, ``clip_values`` and
        ``channels_first`` applied as ``predict`` applies them); logits, or probabilities under
        ``identity_loss="ce"``.
    :param generator: KEDMI generator (NCHW images in [0, 1]); see :func:`mi_art.train_kedmi_prior`.
    :param discriminator: Its K-logit discriminator (K = the target's number of classes), trained on
        [0, 1] images; a GMI ``Critic`` is refused.
    :param identity_loss: "ce" (KEDMI) or "logit" (LOMMA's logit maximisation; needs logits).
    :param p_reg: The mean public feature from :func:`mi_art.estimate_p_reg` (same ``feature_layer``);
        see :class:`mi_art.GMI`.
    :param reg_weight: None (default) calibrates it to the identity loss's gradient, a number fixes it
        (see :class:`mi_art.GMI`); the weight used is ``reg_weight_`` after ``infer``.
    :param surrogates: Models distilled from the target, ART estimators or torch modules.
    :param surrogate_p_reg: One mean public feature per surrogate, with ``p_reg``: each surrogate's logit
        loss gets its own regulariser (see :class:`mi_art.GMI`); None: the paper's form (the target's only).
    :param feature_layer: Name of the module whose input is the penultimate feature (default: the
        last ``nn.Linear``); needed only with ``p_reg``.
    :param output_index: Where the logits are in a tuple (position) or dict (key) output.
    """

    def _check_params(self) -> None:
        super()._check_params()
        if isinstance(self.discriminator, Critic):
            raise ValueError("discriminator is GMI's WGAN-GP Critic (one score per image): KEDMI needs a "
                             "KEDMIDiscriminator with K class logits, trained against this target by "
                             "mi_art.train_kedmi_prior; use mi_art.GMI with the Critic")

    def _check_discriminator(self, scores: torch.Tensor) -> None:
        k = self.estimator.nb_classes
        if scores.ndim != 2 or scores.shape[1] != k:
            raise ValueError(f"the KEDMI discriminator returns scores of shape {tuple(scores.shape)}: KEDMI needs K={k} "
                             "class logits per image (a KEDMIDiscriminator from mi_art.train_kedmi_prior)")

    def _check_models(self, target: EstimatorModule) -> None:
        super()._check_models(target)
        k = getattr(self.discriminator, "num_classes", None)
        if k is not None and k != self.estimator.nb_classes:
            raise ValueError(f"the KEDMI discriminator has {k} class logits but the target has "
                             f"{self.estimator.nb_classes} classes: train the prior against this target")

    def _run(self, target: EstimatorModule, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        device, latent, n = self._device, self._latent_dim, self.n_reconstructions
        images, confidence = [], []
        bar = self._progress(self.iterations * -(-len(labels) // self.batch_size), "KEDMI")
        for start in range(0, len(labels), self.batch_size):
            y = torch.from_numpy(labels[start:start + self.batch_size]).to(device)
            mu = torch.zeros(len(y), latent, device=device, requires_grad=True)
            log_var = torch.ones(len(y), latent, device=device, requires_grad=True)
            opt = torch.optim.Adam([mu, log_var], lr=self.learning_rate)
            for it in range(self.iterations):
                z = (mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)).clamp(-1, 1)
                fake = self.generator(z)
                loss = self._objective(target, fake, y, kedmi_prior_loss(self.discriminator(fake)), it)
                mu.grad, log_var.grad = torch.autograd.grad(loss, [mu, log_var])
                opt.step()
                bar.update(1)
            with torch.no_grad():
                std = torch.exp(0.5 * log_var)
                z = (mu.repeat_interleave(n, 0) + std.repeat_interleave(n, 0) * torch.randn(len(y) * n, latent,
                                                                                             device=device)).clamp(-1, 1)
                fake = self.generator(z)
            y_rep = y.repeat_interleave(n)
            images.append(target.from_unit(fake).cpu())
            confidence.append(self._confidence(target, fake, y_rep).cpu())
        bar.close()
        return torch.cat(images).numpy(), torch.cat(confidence).numpy()
