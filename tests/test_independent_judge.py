"""A judge we did not train (:mod:`mi_art.evaluations.independent`): the judge is dlib's published network
unchanged, scores by nearest identity centroid, refuses the word "independent" when it is the target's backbone,
warns when it does not confirm the trained judges. Targets built on the same recogniser: test_deployed_faces.py."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from mi_art.evaluations.independent import EmbeddingJudge, independent_record, shared_with_target

SHARED = Path(os.environ.get("MI_ART_SHARED") or Path(__file__).resolve().parents[2] / "shared")


class _MeanColour(nn.Module):
    """A fixed embedding: each image's mean of each channel (3 numbers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _coloured(values: np.ndarray, noise: float = 0.01, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = values[:, :, None, None] + noise * rng.standard_normal((len(values), 3, 8, 8))
    return np.clip(x, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def colour_judge():
    """Identity k's training images are near colour (k / 9, 1 - k / 9, 0.5): 8 identities, 4 images each."""
    centres = np.stack([[k / 9, 1 - k / 9, 0.5] for k in range(8)])
    y = np.repeat(np.arange(8), 4)
    return EmbeddingJudge(_MeanColour(), _coloured(centres[y]), y, 8, name="colour", device="cpu"), centres


def test_nearest_centroid_scores_what_it_recognises(colour_judge):
    judge, centres = colour_judge
    y = np.arange(8)
    right = judge.score(_coloured(centres[y], seed=1), y)
    assert right["acc@1"] == 1.0 and right["acc@5"] == 1.0 and right["dist"] < 0.05
    shifted = judge.score(_coloured(centres[(y + 4) % 8], seed=2), y)  # each image shows another identity
    assert shifted["acc@1"] == 0.0 and shifted["dist"] > 5 * right["dist"]
    assert judge.accuracy(_coloured(centres[y], seed=3), y) == 1.0


def test_transfer_warning_fires_when_the_trained_judges_are_not_confirmed(colour_judge):
    judge, centres = colour_judge
    y = np.arange(8)
    recs = _coloured(centres[(y + 4) % 8], seed=4)
    record = independent_record(judge, nn.Linear(3, 8), recs, y, _coloured(centres[y], seed=5), y,
                                {"acc@1": 0.9, "acc@1_judge_std": 0.02})
    assert record["independent_acc@1"] == 0.0 and record["independent_ratio"] == 0.0
    assert record["independent"] and any("not confirmed" in w for w in record["independent_warnings"])
    agreeing = independent_record(judge, nn.Linear(3, 8), _coloured(centres[y], seed=6), y,
                                  _coloured(centres[y], seed=5), y, {"acc@1": 1.0, "acc@1_judge_std": 0.0})
    assert agreeing["independent_warnings"] == [] and agreeing["independent_ratio"] == 1.0


def test_dlib_judge_is_dlibs_published_network_untrained(dlib_state):
    from mi_art.evaluations.independent import make_dlib_judge

    x = np.random.default_rng(0).random((6, 3, 32, 32), dtype=np.float32)
    judge = make_dlib_judge(x, np.array([0, 0, 1, 1, 2, 2]), 3, device="cpu")
    state = judge.embedder.state_dict()
    assert set(state) == set(dlib_state)
    assert all(torch.equal(state[k], dlib_state[k]) for k in dlib_state)  # loaded with its sha256 checked
    assert not any(p.requires_grad for p in judge.embedder.parameters())


def test_a_judge_sharing_the_targets_backbone_is_not_called_independent(dlib_state):
    from mi_art import make_classifier
    from mi_art.evaluations.independent import make_dlib_judge

    x = np.random.default_rng(0).random((6, 3, 32, 32), dtype=np.float32)
    y = np.array([0, 0, 1, 1, 2, 2])
    judge = make_dlib_judge(x, y, 3, device="cpu")
    deployed = make_classifier("dlib-head", 3, 3, 32)
    assert shared_with_target(judge, deployed) and not shared_with_target(judge, make_classifier("cnn", 3, 3, 32))
    record = independent_record(judge, deployed, x, y, x, y, {"acc@1": 1.0})
    assert record["independent"] is False and "weights" in " ".join(record["independent_shares"])


def test_attack_records_the_independent_judge(dlib_state, tmp_path):
    from mi_art.evaluations.cli import main

    faces = SHARED / "data" / "att_faces"
    if not faces.is_dir():
        pytest.skip(f"AT&T faces not found at {faces}")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "attack", "--dataset", "image-folder", "--data-root", str(faces), "--data-option", "private=3",
        "--data-option", "image_size=16", "--data-option", "channels=1", "--independent-judge", "dlib",
        "--iterations", "2", "--target-epochs", "1", "--judge-epochs", "1", "--gmi-steps", "2", "--kedmi-steps", "2",
        "--surrogate-steps", "2", "--n-reconstructions", "2", "--variant", "baseline", "--quiet", "--out", str(out),
        "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["independent_judge"] == "dlib" and record["independent"] is True
    assert record["panel_shares"][-1] == "training data (the private training images)"
    assert 0 <= record["independent_acc@1"] <= 1 and record["independent_dist"] > 0
    assert 0 <= record["independent_test_accuracy"] <= 1
    assert "independent judge (dlib)" in result.output
    assert len(list((tmp_path / "cache").glob("independent-descriptors-*"))) == 1  # reused by the next cell


def test_given_training_descriptors_are_not_computed_again(colour_judge):
    judge, centres = colour_judge

    class _Refuses(nn.Module):
        def forward(self, x):
            raise AssertionError("the training images were embedded again")

    y = np.repeat(np.arange(8), 4)
    again = EmbeddingJudge(_Refuses(), _coloured(centres[y]), y, 8, device="cpu", train_features=judge.train_features)
    np.testing.assert_array_equal(again.centroids, judge.centroids)


def test_the_trained_panel_is_labelled_by_what_it_shares_with_the_target():
    from mi_art.evaluations.independent import panel_shares

    other = panel_shares("cnn", "resnet10")
    assert other == ["training data (the private training images)"]
    own_recipe = panel_shares("cnn", "cnn", 60, 60)
    assert own_recipe[0] == "architecture (cnn)" and "pre-training data (the public identities)" in own_recipe
    assert "pre-training data (the public identities)" not in panel_shares("cnn", "cnn", 60, 0)
