"""Precision, recall, density and coverage (:func:`mi_art.evaluations.metrics.prdc`, Naeem et al., ICML 2020) on
feature sets where they are known, and in every record of a judge panel (means over the judges)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mi_art.evaluations.metrics import PRDC_METRICS, judge_panel, prdc


def _points(n: int = 40, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_identical_sets_are_fully_precise_recalled_and_covered():
    real = _points()
    out = prdc(real, real.copy())
    assert out == {"precision": 1.0, "recall": 1.0, "density": pytest.approx(1.0), "coverage": 1.0}


def test_disjoint_far_sets_score_zero():
    real = _points()
    assert prdc(real, _points(seed=1) + 1000.0) == {"precision": 0.0, "recall": 0.0, "density": 0.0,
                                                    "coverage": 0.0}


#: Real points 0, 1, ..., 9 on a line; with k=2 the ends' balls have radius 2, the others' radius 1.
LINE = np.arange(10, dtype=float)[:, None]


def test_hand_computed_values_on_a_line():
    # three fakes at 4.5: each strictly inside the balls of 4 and 5 only; coinciding, their own balls are empty
    out = prdc(LINE, np.array([[4.5]] * 3), k=2)
    assert out == {"precision": 1.0, "recall": 0.0, "density": 1.0, "coverage": 0.2}
    # 0.5 lies in the balls of 0 and 1; 100-102 in none; 0.5's ball (its 2nd fake neighbour, 100.5 away) holds
    # every real point
    out = prdc(LINE, np.array([[0.5], [100.0], [101.0], [102.0]]), k=2)
    assert out == {"precision": 0.25, "recall": 1.0, "density": 0.25, "coverage": 0.2}


def test_a_tight_fake_set_is_precise_but_recalls_little():
    real = _points()
    tight = prdc(real, 0.01 * _points(n=10, seed=3))
    assert tight["precision"] == 1.0 and tight["recall"] < 0.5 and tight["coverage"] < 0.5


def test_too_few_points_give_none_and_bad_input_is_refused():
    real = _points()
    few = prdc(real, real[:3])
    assert few["recall"] is None and few["precision"] == 1.0
    assert prdc(real[:5], real)["precision"] is None
    with pytest.raises(ValueError, match="same width"):
        prdc(real, real[:, :3])
    with pytest.raises(ValueError, match="finite 2-D"):
        prdc(real, np.full((7, 6), np.nan))


def test_every_panel_record_has_them(target, digits):
    priv = digits.private_all()
    x = torch.from_numpy(digits.private_test.x[:30])
    y = digits.private_test.y[:30]
    panel = judge_panel([target, target], x, y, priv.x, priv.y, train_x=digits.private_train.x,
                        train_y=digits.private_train.y)
    for m in PRDC_METRICS:
        assert panel[m] is not None and len(panel[f"{m}_judges"]) == 2 and panel[f"{m}_judge_std"] == 0.0
    # real test digits against the training digits of their classes: mostly inside the real manifold
    assert panel["precision"] > 0.5 and panel["coverage"] > 0.0
