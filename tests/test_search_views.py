"""Random views during the search (``views``): every attack averages its identity loss over random crops,
flips, rotations and jitters of each image at every step (PLG-MI's augmentation, Plug & Play Attacks'
transformations during the search)."""
from __future__ import annotations

import numpy as np
import pytest

import mi_art as M
import mi_art.attacks.base as base
from test_attacks import ATTACKS, make, priors  # noqa: F401 (the priors fixture)


def _counting(monkeypatch) -> list:
    calls = []
    real = base.random_views

    def counted(x):
        calls.append(len(x))
        return real(x)

    monkeypatch.setattr(base, "random_views", counted)
    return calls


@pytest.mark.parametrize("cls", ATTACKS)
def test_every_attack_averages_its_identity_loss_over_views(cls, target_clf, priors, monkeypatch):  # noqa: F811
    calls = _counting(monkeypatch)
    make(cls, target_clf, priors, iterations=2, views=3).infer(None, np.array([0, 1]))
    assert len(calls) == 3 * 2  # three views at each of two steps (one batch)
    calls.clear()
    make(cls, target_clf, priors, iterations=2, views=0).infer(None, np.array([0, 1]))
    assert calls == []


def test_views_default_to_the_authors_settings(target_clf, priors):  # noqa: F811
    assert make(M.PLGMI, target_clf, priors).views == 2  # PLG-MI's authors search under two views
    assert make(M.GMI, target_clf, priors).views == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_views_must_be_a_count_or_zero(bad, target_clf, priors):  # noqa: F811
    with pytest.raises(ValueError, match=f"views must be an integer.*got {bad!r}"):
        make(M.GMI, target_clf, priors, views=bad)
