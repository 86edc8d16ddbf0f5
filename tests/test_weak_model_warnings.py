"""Weak-model warnings (mi_art.quality): their rules; the Python API gives the pipeline's (a weak surrogate from
distill_surrogate, a weak judge or target from attack_accuracy, each once, with the pipeline's thresholds), and
``mi-art attack``'s record and the report carry them."""
from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mi_art as M
from mi_art.evaluations.cli import main
from mi_art.evaluations.metrics import attack_accuracy
from mi_art.evaluations.report import render_report, weak_model_warnings
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

    config = E.ExperimentConfig(dataset="digits", target_epochs=1, judge_epochs=1, gmi_steps=2, surrogate_steps=1,
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
                                max_queries=2000, target_epochs=1, judge_epochs=1, gmi_steps=2, surrogate_steps=1,
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


TINY_ATTACK = ["attack", "--attack", "miface", "--miface-iterations", "2", "--target-epochs", "10", "--quiet"]


def test_attack_warns_for_a_weak_judge_and_not_for_a_good_one(tmp_path):
    runner = CliRunner()
    # a small judge after one epoch (a cnn-wide's is no longer weak once its BatchNorm is re-estimated)
    weak = runner.invoke(main, [*TINY_ATTACK, "--judge-arch", "cnn-small", "--judge-epochs", "1",
                                "--out", str(tmp_path / "weak"),
                                "--cache-dir", str(tmp_path / "cache")])
    assert weak.exit_code == 0, weak.output
    record = json.loads((tmp_path / "weak" / "results.json").read_text())
    assert record["judge_test_accuracy"] < WEAK_JUDGE_ACCURACY
    assert len(record["warnings"]) == 1 and "weak evaluation model" in record["warnings"][0]
    assert "warning: weak evaluation model" in weak.output and "(chance 0.20)" in weak.output

    good = runner.invoke(main, [*TINY_ATTACK, "--judge-epochs", "10", "--judge-pretrain-epochs", "1",
                                "--target-pretrain-epochs", "1", "--out", str(tmp_path / "good"),
                                "--cache-dir", str(tmp_path / "cache")])
    assert good.exit_code == 0, good.output
    record = json.loads((tmp_path / "good" / "results.json").read_text())
    assert record["judge_test_accuracy"] >= WEAK_JUDGE_ACCURACY and record["target_test_accuracy"] >= 0.5
    assert record["warnings"] == [] and "warning:" not in good.output
    assert record["config"]["target_pretrain_epochs"] == record["config"]["judge_pretrain_epochs"] == 1


def test_warning_rules():
    assert weak_model_warnings(judge_accuracy=0.95, target_accuracy=0.9, n_classes=5) == []
    (w,) = weak_model_warnings(judge_accuracy=0.7, n_classes=5)
    assert w.startswith("weak evaluation model: test accuracy 0.700 < 0.8; chance is 0.200 with 5 classes")
    (w,) = weak_model_warnings(judge_accuracy=0.3, n_classes=5)
    assert "evaluation model is close to chance" in w and "under 2x chance (0.400)" in w
    # the chance bar stays below 1 with few classes: a 0.95 judge on 2 classes is fine
    assert weak_model_warnings(judge_accuracy=0.95, n_classes=2) == []
    # an undefended target below 0.5 is weak; a defended one only when close to chance
    assert "weak target" in weak_model_warnings(target_accuracy=0.3, n_classes=100)[0]
    assert weak_model_warnings(target_accuracy=0.3, n_classes=100, defended=True) == []
    assert "defended target is close to chance" in weak_model_warnings(target_accuracy=0.3, n_classes=5,
                                                                       defended=True)[0]
    assert weak_model_warnings(judge_accuracy=None, target_accuracy=float("nan"), n_classes=None) == []


def _row(cid, index, judge, seed=0, defense="none", natural=0.9):
    return {"cell_id": cid, "index": index, "dataset": "digits", "defense": defense, "defense_params": {},
            "defense_label": defense, "natural_accuracy": natural, "epsilon": None, "delta": None, "attack": "gmi",
            "variant": "baseline", "seed": seed, "artifact_seed": seed, "acc@1": 0.6, "acc@1_std": 0.1,
            "acc@5": None, "acc@5_std": None, "knn_dist": 1.0, "fid_eval_features": None, "seconds": 1.0,
            "cell_seconds": 1.0, "judge_test_accuracy": judge, "n_identities": 2, "n_classes": 5,
            "n_reconstructions": 2, "iterations": 10}


@pytest.mark.parametrize("judge,warned", [(0.95, False), (0.6, True)])
def test_report_warns_for_a_weak_judge(tmp_path, judge, warned):
    cells = tmp_path / "cells"
    cells.mkdir()
    for row in (_row("a", 0, judge), _row("b", 1, judge, defense="mid", natural=0.3)):
        (cells / f"{row['cell_id']}.json").write_text(json.dumps(row))
    render_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert f"Evaluation model test accuracy: {judge:.3f} (chance 0.200 with 5 classes)." in md
    assert ("weak evaluation model: test accuracy 0.600" in md) is warned
    assert "mid: the defended target is close to chance: test accuracy 0.300" in md  # 0.3 < 2 x 0.2
    rows = {r["cell_id"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert bool(rows["a"]["warnings"]) is warned
    assert any("defended target is close to chance" in w for w in rows["b"]["warnings"])
