"""Candidate selection (:mod:`mi_art.attacks.selection`, Plug & Play Attacks): every attack keeps, of its
candidates, those the target recognises best under random crops, flips and small rotations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mi_art as M
from mi_art.attacks.selection import keep_best, random_views, robust_confidence
from test_attacks import ATTACKS, make, priors  # noqa: F401 (the priors fixture)


class _CornerOrBrightness(nn.Module):
    """Class 0's logit: 2 x the mean brightness plus 20 x the top-left pixel; class 1's: 5. A lone bright
    corner pixel wins on the exact image and is lost as soon as the framing moves; a uniformly bright
    image keeps its (smaller) lead under every view."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 2 * x.mean(dim=(1, 2, 3)) + 20 * x[:, 0, 0, 0]
        return torch.stack([score, torch.full_like(score, 5.0)], 1)


def _confidence(model: nn.Module):
    return lambda x, y: torch.softmax(model(x), 1).gather(1, y.view(-1, 1)).squeeze(1)


def test_selection_keeps_the_candidate_that_survives_a_change_of_framing():
    fragile = torch.zeros(1, 1, 16, 16)
    fragile[0, 0, 0, 0] = 1.0
    robust = torch.full((1, 1, 16, 16), 0.3)
    candidates = torch.cat([fragile, robust, robust.clone(), fragile.clone()])  # two identities, two each
    labels = torch.zeros(4, dtype=torch.long)
    confidence = _confidence(_CornerOrBrightness())
    clean = confidence(candidates, labels)
    assert clean[0] > 0.99 and clean[1] < 0.9  # the exact image favours the fragile candidate
    scores = robust_confidence(confidence, candidates, labels, seed=0)
    assert scores[1] > 0.8 and scores[0] < 0.5
    assert keep_best(scores, 2, 1).tolist() == [1, 2]
    assert keep_best(clean, 2, 1).tolist() == [0, 3]  # without the views the wrong ones would be kept


def test_random_views_crop_flip_and_rotate_within_their_ranges():
    image = torch.linspace(0, 1, 16).repeat(16, 1).view(1, 1, 16, 16)  # brightness grows left to right
    views = random_views(image, 64, torch.Generator().manual_seed(0))
    assert views.shape == (64, 1, 16, 16) and views.min() >= 0 and views.max() <= 1
    left_brighter = (views[..., :8].mean(dim=(1, 2, 3)) > views[..., 8:].mean(dim=(1, 2, 3))).float().mean()
    assert 0.25 < left_brighter < 0.75  # flipped about half the time
    assert not torch.allclose(views[0], views[1])


@pytest.mark.parametrize("cls", ATTACKS)
def test_every_attack_keeps_its_best_candidates(cls, target_clf, priors):  # noqa: F811
    attack = make(cls, target_clf, priors, n_reconstructions=2, n_candidates=5)
    recs = attack.infer(None, np.array([0, 1]))
    assert recs.shape[0] == 4 and attack.labels_.tolist() == [0, 0, 1, 1]
    scores = attack.selection_scores_.reshape(2, 2)
    assert (scores[:, 0] >= scores[:, 1]).all()
    plain = make(cls, target_clf, priors, n_reconstructions=5)
    plain.infer(None, np.array([0, 1]))
    assert plain.selection_scores_ is None


@pytest.mark.parametrize("cls", ATTACKS)
def test_fewer_candidates_than_reconstructions_is_refused(cls, target_clf, priors):  # noqa: F811
    with pytest.raises(ValueError, match="n_candidates=1 is below n_reconstructions=2"):
        make(cls, target_clf, priors, n_reconstructions=2, n_candidates=1)
