"""The GAN priors (:mod:`mi_art.priors`): their training's input checks and the terms of their losses."""
from __future__ import annotations

import numpy as np
import pytest

import mi_art as M


def test_gan_prior_refuses_images_outside_zero_one_and_channels_last(digits):
    x = digits.public.x[:64]
    with pytest.raises(ValueError, match=r"values from 0 to 255.*clip_values=\(0, 255\)"):
        M.train_gmi_prior(x * 255, steps=1, width=8)
    with pytest.raises(ValueError, match=r"channels-last.*transpose\(0, 3, 1, 2\)"):
        M.train_gmi_prior(x.transpose(0, 2, 3, 1), steps=1, width=8)
    # the range said: the same prior as from [0, 1] images
    a, _ = M.train_gmi_prior(x * 255, clip_values=(0, 255), steps=2, width=8, batch_size=16, seed=0)
    b, _ = M.train_gmi_prior(x, steps=2, width=8, batch_size=16, seed=0)
    assert all(np.allclose(p.detach(), q.detach(), atol=1e-5) for p, q in zip(a.parameters(), b.parameters()))


def test_kedmi_generator_entropy_term_is_used(target, digits):
    """KEDMI's generator loss has the entropy of the discriminator's classes on its images: a weight large
    enough to see (0.1; the authors' 1e-4 is too small to show in 40 steps) makes the generated images'
    class entropy lower (measured 0.136 against 0.192 without the term)."""
    import torch

    from mi_art.priors.kedmi import entropy

    def class_entropy(weight):
        g, d = M.train_kedmi_prior(target, digits.public.x, steps=40, width=16, batch_size=32, lr=1e-3,
                                   entropy_weight=weight, seed=0)
        torch.manual_seed(1)
        with torch.no_grad():
            return float(entropy(d(g(torch.randn(500, g.latent_dim)))))

    assert class_entropy(0.1) < 0.85 * class_entropy(0.0)
