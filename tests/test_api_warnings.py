"""The Python API gives the pipeline's weak-model warnings (mi_art.quality): a weak surrogate from
distill_surrogate, a weak judge or target from attack_accuracy, each once, with the pipeline's thresholds."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

import mi_art as M
from mi_art.evaluations.metrics import attack_accuracy
from mi_art.quality import WEAK_JUDGE_ACCURACY, WEAK_SURROGATE_AGREEMENT, WeakModelWarning


def _weak(record) -> list:
    return [w for w in record if issubclass(w.category, WeakModelWarning)]


def test_distill_surrogate_warns_once_of_a_weak_surrogate(target, digits):
    """A student that barely moved from its random start agrees with the target on few held-out public images:
    one warning, with the pipeline's threshold; a student that is the target's copy gives none."""
    torch.manual_seed(3)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        M.distill_surrogate(target, M.make_classifier("mlp", 1, 5, 8), digits.public.x, steps=1, lr=1e-9,
                            eval_every=1, seed=0)
    (weak,) = _weak(record)
    assert str(weak.message).startswith("weak surrogate: the distilled MLP agrees with the target on ")
    assert f"(< {WEAK_SURROGATE_AGREEMENT:g})" in str(weak.message)
    assert weak.filename == __file__  # attributed to the caller's line
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        M.distill_surrogate(target, copy.deepcopy(target), digits.public.x, steps=1, lr=1e-9, seed=0)
    assert _weak(record) == []


def test_the_pipeline_warns_of_a_weak_surrogate_once(digits, tmp_path):
    """The pipeline says it in its own terms (surrogate index, its options) and the API's duplicate is silenced."""
    from mi_art.evaluations import experiment as E
    from mi_art.evaluations.cache import ArtifactCache

    config = E.ExperimentConfig(dataset="digits", target_epochs=1, eval_epochs=1, prior_steps=2, surrogate_steps=1,
                                surrogate_archs=("mlp",), surrogate_data="public", augment="none")
    bench = E.Workbench(config, ArtifactCache(tmp_path), data=digits)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _, report, notes = bench.checked_surrogates(bench.target())
    assert report[0]["agreement_public_heldout"] < WEAK_SURROGATE_AGREEMENT  # one distillation step: weak
    (weak,) = _weak(record)
    assert str(weak.message).startswith("weak surrogate: surrogate 0 (mlp)")
    assert "surrogate_steps" in str(weak.message) and str(weak.message) in notes
    assert weak.filename == __file__  # the user's line, however deep in mi-art it was found


def test_attack_accuracy_warns_once_of_a_weak_judge_and_target(eval_model, target, digits):
    x, y = digits.private_test.x[:20], digits.private_test.y[:20]
    torch.manual_seed(0)
    untrained = M.make_classifier("cnn-wide", 1, 5, 8)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        acc = attack_accuracy(untrained, x, y, test_x=digits.private_test.x, test_y=digits.private_test.y)
    (weak,) = _weak(record)
    assert acc["judge_test_accuracy"] < WEAK_JUDGE_ACCURACY and acc["warnings"] == [str(weak.message)]
    assert "evaluation model" in str(weak.message) and weak.filename == __file__
    with warnings.catch_warnings(record=True) as record:  # a good judge, a good target: nothing to say
        warnings.simplefilter("always")
        acc = attack_accuracy(eval_model, x, y, test_x=digits.private_test.x, test_y=digits.private_test.y,
                              target=target)
    assert _weak(record) == [] and acc["warnings"] == [] and acc["target_test_accuracy"] > 0.9
    torch.manual_seed(1)
    weak_target = M.make_classifier("cnn", 1, 5, 8)
    with pytest.warns(WeakModelWarning, match="target is close to chance"):
        acc = attack_accuracy(eval_model, x, y, test_x=digits.private_test.x, test_y=digits.private_test.y,
                              target=weak_target)
    assert acc["target_test_accuracy"] < 0.4
    with warnings.catch_warnings():  # without held-out images it cannot know: no warning, as before
        warnings.simplefilter("error", WeakModelWarning)
        assert "warnings" not in attack_accuracy(untrained, x, y)


def test_attack_accuracy_refuses_half_a_test_set(eval_model, target, digits):
    x, y = digits.private_test.x[:4], digits.private_test.y[:4]
    with pytest.raises(ValueError, match="test_x and test_y together"):
        attack_accuracy(eval_model, x, y, test_x=x)
    with pytest.raises(ValueError, match="give them too"):
        attack_accuracy(eval_model, x, y, target=target)


def test_the_pipeline_warns_of_weak_surrogates_learnt_from_answers(digits, tmp_path):
    """Below white-box, the surrogates learnt from the target's answers are warned of as the white-box ones: once
    each, in the record too (distill_surrogate's own warning is silenced, so a cached surrogate says the same)."""
    from mi_art.evaluations import experiment as E
    from mi_art.evaluations.cache import ArtifactCache

    config = E.ExperimentConfig(dataset="digits", access="black-box", attack="gmi", variant="baseline",
                                max_queries=2000, target_epochs=1, eval_epochs=1, prior_steps=2, surrogate_steps=1,
                                surrogate_archs=("mlp",), surrogate_data="public", iterations=2, n_reconstructions=1,
                                augment="none")
    for _ in range(2):  # made, then loaded from the cache
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            result = E.run_attack(E.Workbench(config, ArtifactCache(tmp_path), data=digits))
        assert result["surrogates"][0]["agreement_public_heldout"] < WEAK_SURROGATE_AGREEMENT
        (weak,) = [w for w in _weak(record) if "surrogate" in str(w.message)]
        assert str(weak.message).startswith("weak surrogate: surrogate 0 (mlp)") and "max_queries" in str(weak.message)
        assert str(weak.message) in result["warnings"]
