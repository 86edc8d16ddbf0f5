"""Tests of mi_art.evaluations.metrics on tiny hand-set models whose results can be computed by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from mi_art.evaluations import (
    PenultimateFeatures,
    attack_accuracy,
    fid,
    fid_eval_features,
    knn_distance,
    natural_accuracy,
    predict_logits,
)
from mi_art.evaluations.metrics import chance_level, topk_applicable


# --------------------------------------------------------------------------------------------------
# Hand-set models
# --------------------------------------------------------------------------------------------------
def score_model(num_classes: int) -> nn.Module:
    """Logits = the flattened image: an image (1, 1, K) *is* its score vector."""
    layer = nn.Linear(num_classes, num_classes, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(num_classes))
    return nn.Sequential(nn.Flatten(), layer)


def as_images(rows) -> np.ndarray:
    """(N, K) rows -> (N, 1, 1, K) float32 images."""
    arr = np.asarray(rows, dtype=np.float32)
    return arr[:, None, None, :]


def feature_model(select: np.ndarray, num_classes: int = 3) -> nn.Module:
    """Penultimate feature = select @ flattened image (hand-set first layer, zero bias)."""
    select = torch.as_tensor(select, dtype=torch.float32)
    first = nn.Linear(select.shape[1], select.shape[0])
    with torch.no_grad():
        first.weight.copy_(select)
        first.bias.zero_()
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), first, nn.Linear(select.shape[0], num_classes))


# Scores of 6 reconstructions over 4 classes, their identities and rounds.
#   round 0: top-1 right for s0, s1; s2 is right at rank 2       -> top1 2/3, top2 1, top3 1
#   round 1: top-1 right for s3; s4, s5 are right at rank 3      -> top1 1/3, top2 1/3, top3 1
SCORES = [
    [0.9, 0.1, 0.2, 0.3],  # y=0 rank 1
    [0.1, 0.8, 0.0, 0.0],  # y=1 rank 1
    [0.5, 0.1, 0.4, 0.0],  # y=2 rank 2
    [0.7, 0.0, 0.0, 0.0],  # y=0 rank 1
    [0.1, 0.2, 0.3, 0.4],  # y=1 rank 3
    [0.0, 0.9, 0.1, 0.5],  # y=2 rank 3
]
LABELS = [0, 1, 2, 0, 1, 2]
ROUNDS = [0, 0, 0, 1, 1, 1]
TOP1 = [True, True, False, True, False, False]


# --------------------------------------------------------------------------------------------------
# attack_accuracy / predict_logits / natural_accuracy
# --------------------------------------------------------------------------------------------------
def test_attack_accuracy_mean_std_over_rounds_is_exact():
    # shuffle so that rounds are interleaved: grouping must follow rec_index, not position
    perm = np.array([4, 0, 5, 2, 1, 3])
    x = as_images(SCORES)[perm]
    y = np.array(LABELS)[perm]
    rec = np.array(ROUNDS)[perm]
    res = attack_accuracy(score_model(4), x, y, rec_index=rec, top_k=(1, 2, 3, 5))

    assert res["acc@1"] == pytest.approx(0.5)
    assert res["acc@1_std"] == pytest.approx(1 / 6)  # population std of (2/3, 1/3)
    assert res["acc@2"] == pytest.approx(2 / 3)
    assert res["acc@2_std"] == pytest.approx(1 / 3)  # population std of (1, 1/3)
    assert res["acc@3"] == pytest.approx(1.0)
    assert res["acc@3_std"] == pytest.approx(0.0)
    # k=5 > 4 classes is clipped to 4: every label is in the top 4
    assert res["acc@5"] == pytest.approx(1.0)
    assert res["acc@5_std"] == pytest.approx(0.0)
    # chance: a judge ranking its 4 classes at random
    assert (res["chance@1"], res["chance@2"], res["chance@3"], res["chance@5"]) == (0.25, 0.5, 0.75, 1.0)
    assert res["num_classes"] == 4 and not topk_applicable(5, res["num_classes"])
    assert res["per_sample_top1"].dtype == np.bool_
    np.testing.assert_array_equal(res["per_sample_top1"], np.array(TOP1)[perm])


def test_attack_accuracy_single_round_and_unequal_rounds():
    x, y = as_images(SCORES), np.array(LABELS)
    res = attack_accuracy(score_model(4), x, y)  # default top_k=(1, 5), one round
    assert set(res) == {"acc@1", "acc@1_std", "acc@5", "acc@5_std", "chance@1", "chance@5", "num_classes",
                        "per_sample_top1"}
    assert res["acc@1"] == pytest.approx(0.5)
    assert res["acc@1_std"] == 0.0
    assert res["acc@5"] == pytest.approx(1.0)

    # rounds of unequal size: mean over rounds (1 + 0) / 2 differs from the pooled 1/4
    idx = [0, 2, 4, 5]  # s0 right; s2, s4, s5 wrong at top-1
    res = attack_accuracy(score_model(4), x[idx], y[idx], rec_index=[0, 1, 1, 1], top_k=(1,))
    assert res["acc@1"] == pytest.approx(0.5)
    assert res["acc@1_std"] == pytest.approx(0.5)
    assert "acc@5" not in res and "chance@5" not in res


def test_attack_accuracy_equals_the_rank_of_the_label_in_the_logits():
    """On a random model, Acc@k per round is the share of samples whose label ranks in the top k of
    the logits (ranks computed here with numpy's argsort), averaged over rounds."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 7))
    x = torch.rand(40, 1, 8, 8)
    y = torch.randint(0, 7, (40,)).numpy()
    rounds = np.arange(40) % 4
    res = attack_accuracy(model, x, y, rec_index=rounds, top_k=(1, 3, 5))
    with torch.no_grad():
        logits = model(x).numpy()
    rank = (np.argsort(-logits, axis=1) == y[:, None]).argmax(axis=1)  # 0: the label has the top logit
    for k in (1, 3, 5):
        per_round = [(rank[rounds == r] < k).mean() for r in range(4)]
        assert res[f"acc@{k}"] == pytest.approx(np.mean(per_round)), k
        assert res[f"acc@{k}_std"] == pytest.approx(np.std(per_round)), k
        assert res[f"chance@{k}"] == pytest.approx(k / 7)
    # the model does not reach every k: the values must come from the ranks, not from a bound
    assert 0 < res["acc@1"] < res["acc@3"] < res["acc@5"] < 1
    np.testing.assert_array_equal(res["per_sample_top1"], rank == 0)


def test_acc_at_k_is_not_applicable_at_or_above_the_number_of_classes():
    """With K classes Acc@K is 1 whatever the images: a model that always ranks the label last still
    scores 1. The result says so through chance@k = 1 and topk_applicable."""
    x = as_images([[0.0, 0.5, 0.6, 0.7, 0.9]] * 3)  # label 0 always ranks last of 5
    res = attack_accuracy(score_model(5), x, [0, 0, 0], top_k=(1, 4, 5, 6))
    assert (res["acc@1"], res["acc@4"], res["acc@5"], res["acc@6"]) == (0.0, 0.0, 1.0, 1.0)
    assert (res["chance@1"], res["chance@4"], res["chance@5"], res["chance@6"]) == (0.2, 0.8, 1.0, 1.0)
    assert res["num_classes"] == 5
    assert [topk_applicable(k, 5) for k in (1, 4, 5, 6)] == [True, True, False, False]


@pytest.mark.parametrize("k, num_classes, chance", [(1, 5, 0.2), (5, 5, 1.0), (5, 10, 0.5), (5, 300, 5 / 300),
                                                    (1, 1, 1.0), (7, 3, 1.0)])
def test_chance_level_is_min_k_classes_over_classes(k, num_classes, chance):
    assert chance_level(k, num_classes) == pytest.approx(chance)
    assert topk_applicable(k, num_classes) == (k < num_classes)


@pytest.mark.parametrize("k, num_classes", [(0, 5), (1, 0), (True, 5), (1.5, 5), (2, -1)])
def test_chance_level_rejects_non_positive_integers(k, num_classes):
    with pytest.raises(ValueError, match="positive integer"):
        chance_level(k, num_classes)
    with pytest.raises(ValueError, match="positive integer"):
        topk_applicable(k, num_classes)


def test_predict_logits_eval_mode_batched_and_mode_restored():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.5), nn.Linear(16, 5))
    model.train()
    x = np.random.default_rng(0).random((10, 1, 8, 8)).astype(np.float32)
    a = predict_logits(model, x, batch_size=3)
    b = predict_logits(model, torch.as_tensor(x))
    assert a.shape == (10, 5)
    torch.testing.assert_close(a, b)  # dropout off: eval mode, batching does not matter
    assert model.training and model[2].training  # mode restored
    model.eval()
    torch.testing.assert_close(a, model(torch.as_tensor(x)).detach())


def test_natural_accuracy_hand_set_model():
    x = as_images([[1, 0, 0], [0, 2, 1], [0, 1, 3], [5, 0, 1]])  # arg-max 0, 1, 2, 0
    assert natural_accuracy(score_model(3), x, [0, 1, 2, 2]) == pytest.approx(0.75)
    assert natural_accuracy(score_model(3), x, np.array([1, 1, 1, 1])) == pytest.approx(0.25)
    assert natural_accuracy(score_model(3), x, torch.tensor([0, 1, 2, 0]), batch_size=1) == 1.0


# --------------------------------------------------------------------------------------------------
# knn_distance
# --------------------------------------------------------------------------------------------------
def test_knn_distance_hand_computed_same_identity_only():
    model = feature_model(np.eye(2))  # penultimate feature = the 2 pixels
    private_x = as_images([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [0.9, 0.1]])
    private_y = [0, 0, 1, 2]
    x = as_images([[0.4, 0.5], [0.2, 0.9], [0.9, 0.8]])
    y = [0, 1, 0]
    res = knn_distance(model, x, y, private_x, private_y)
    # sample 0: nearest of identity 0 is (0, 0): 0.16 + 0.25; identity 1's (0.5, 0.5) is closer
    # (0.01) but must not count. sample 1: (0.5, 0.5): 0.09 + 0.16. sample 2: (1, 1): 0.01 + 0.04.
    expected = np.array([0.41, 0.25, 0.05])
    np.testing.assert_allclose(res["per_sample"], expected, atol=1e-6)
    assert res["knn_dist"] == pytest.approx(expected.mean(), abs=1e-6)
    assert res["knn_dist_std"] == pytest.approx(expected.std(), abs=1e-6)


def test_knn_distance_uses_penultimate_features_not_pixels():
    # the feature keeps pixel 0 only (doubled): pixel 1 differences are invisible
    model = feature_model(np.array([[2.0, 0.0]]))
    private_x = as_images([[0.1, 0.0], [0.8, 1.0]])
    x = as_images([[0.3, 1.0]])
    res = knn_distance(model, x, [0], private_x, [0, 0])
    # features: private 0.2, 1.6; reconstruction 0.6 -> nearest 0.2, squared distance 0.16
    assert res["knn_dist"] == pytest.approx(0.16, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------------
def reference_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.fixture(scope="module")
def real_images() -> torch.Tensor:
    return torch.rand(60, 1, 2, 2, generator=torch.Generator().manual_seed(3)) * 0.5


def test_fid_identical_sets_is_zero(real_images):
    assert fid(real_images, real_images.clone(), feature_extractor=nn.Flatten()) == pytest.approx(0.0, abs=1e-6)


def test_fid_mean_shift_equals_squared_shift_and_grows(real_images):
    # equal covariances: FID = ||mean shift||^2 = 4 pixels * c^2
    small = fid(real_images + 0.1, real_images, feature_extractor=nn.Flatten(), batch_size=7)
    large = fid(real_images + 0.2, real_images, feature_extractor=nn.Flatten())
    assert small == pytest.approx(4 * 0.1 ** 2, rel=1e-4)
    assert large == pytest.approx(4 * 0.2 ** 2, rel=1e-4)
    assert large > small > 0.01


def test_fid_matches_reference_formula_with_custom_extractor(real_images):
    # a custom extractor with parameters, different covariances on both sides, images not 299x299
    torch.manual_seed(4)
    extractor = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh())
    fake = torch.rand(45, 1, 2, 2, generator=torch.Generator().manual_seed(5)) ** 2
    with torch.no_grad():
        f_fake = extractor(fake).double().numpy()
        f_real = extractor(real_images).double().numpy()
    value = fid(fake, real_images.numpy(), feature_extractor=extractor, batch_size=16)
    assert value > 1e-3
    assert value == pytest.approx(reference_fid(f_fake, f_real), rel=1e-4, abs=1e-8)


def test_fid_eval_features_uses_eval_model_features(real_images):
    # E's penultimate feature keeps pixels 0 and 1 only
    select = np.zeros((2, 4))
    select[0, 0] = select[1, 1] = 1.0
    model = feature_model(select)
    model.train()
    shift_hidden = real_images.clone()
    shift_hidden.view(60, 4)[:, 2:] += 0.3  # invisible to E
    shift_seen = real_images.clone()
    shift_seen.view(60, 4)[:, 0] += 0.3  # seen by E

    assert fid(shift_hidden, real_images, feature_extractor=nn.Flatten()) == pytest.approx(0.18, rel=1e-4)
    assert fid_eval_features(model, shift_hidden, real_images) == pytest.approx(0.0, abs=1e-6)
    assert fid_eval_features(model, shift_seen, real_images, batch_size=8) == pytest.approx(0.09, rel=1e-4)
    assert model.training  # E's mode restored
    feats = PenultimateFeatures(model)(real_images[:3])
    torch.testing.assert_close(feats, real_images[:3].view(3, 4)[:, :2])


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------
X6, Y6 = as_images(SCORES), np.array(LABELS)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: attack_accuracy(score_model(4), X6, Y6[:5]), "length mismatch"),
        (lambda: attack_accuracy(score_model(4), X6[:, 0], Y6), "4-d"),
        (lambda: attack_accuracy(score_model(4), X6, [0, 1, 2, 0, 1, 4]), r"out of range.*4 outputs.*\[4\]"),
        (lambda: attack_accuracy(score_model(4), X6, [0, 1, 2, 0, 1, -1]), r"out of range.*\[-1\]"),
        (lambda: attack_accuracy(score_model(4), X6, Y6, rec_index=[0, 1]), "rec_index"),
        (lambda: attack_accuracy(score_model(4), X6, Y6, rec_index=[0, 0, 0, 1, 1, -1]), "rec_index"),
        (lambda: attack_accuracy(score_model(4), X6, Y6, top_k=(1, 0)), "top_k"),
        (lambda: attack_accuracy(score_model(4), X6[:0], Y6[:0]), "empty"),
        (lambda: natural_accuracy(score_model(4), np.where(X6 > 0.85, np.nan, X6), Y6), "NaN"),
        (lambda: natural_accuracy(score_model(4), X6, Y6 + 0.5), "integer"),
        (lambda: natural_accuracy(score_model(4), X6, Y6[:, None]), "1-d"),
        (lambda: predict_logits(score_model(4), X6, batch_size=0), "batch_size"),
        (lambda: knn_distance(feature_model(np.eye(2)), as_images([[0, 0], [1, 1]]), [0, 2],
                              as_images([[0, 0], [1, 1]]), [0, 1]), "identity 2"),
        (lambda: knn_distance(feature_model(np.eye(2)), as_images([[0, 0]]), [0],
                              as_images([[0, 0], [1, 1]]), [0, 3]), "private_y.*out of range|out of range.*private_y"),
        (lambda: knn_distance(feature_model(np.eye(2)), as_images([[0, 0]]), [0],
                              as_images([[0, 0], [1, 1]]), [0]), "length mismatch.*private_y"),
        (lambda: fid(torch.rand(1, 1, 2, 2), torch.rand(5, 1, 2, 2), feature_extractor=nn.Flatten()),
         "at least 2.*fake_x has 1"),
        (lambda: fid(torch.rand(5, 1, 2, 2), torch.full((5, 1, 2, 2), float("nan")),
                     feature_extractor=nn.Flatten()), "real_x contains NaN"),
        (lambda: fid_eval_features(feature_model(np.eye(2)), torch.rand(4, 2), torch.rand(4, 1, 1, 2)), "fake_x.*4-d"),
    ],
)
def test_bad_input_raises_value_error_naming_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fid_called_model_first_says_which_function_takes_the_model(target):
    from mi_art.evaluations.metrics import fid

    x = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"fid_eval_features\(model, fake_x, real_x\)"):
        fid(target, x, x)


# --------------------------------------------------------------------------------------------------
# Outputs and messages, pinned
# --------------------------------------------------------------------------------------------------
def _pinned_metrics():
    """attack_accuracy (rounds, k above the classes, a held-out set with a judge and a weak target, defended or
    not), knn_distance, fid and fid_eval_features on fixed inputs, and the message of every refusal."""
    import warnings

    torch.manual_seed(0)
    judge = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    target = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval()
    rng = np.random.default_rng(0)
    x, test_x = rng.random((12, 1, 4, 4), dtype=np.float32), rng.random((20, 1, 4, 4), dtype=np.float32)
    y, test_y, rounds = np.tile(np.arange(4), 3), np.arange(20) % 4, np.repeat(np.arange(3), 4)
    out = {}

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value.tolist() if isinstance(value, np.ndarray) else value

    for defended in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            acc = attack_accuracy(judge, x, y, rec_index=rounds, top_k=(1, 2, 9), test_x=test_x, test_y=test_y,
                                  target=target, target_defended=defended)
        out[f"attack_accuracy, defended={defended}"] = {**plain(acc), "issued": [str(w.message) for w in caught]}
    out["attack_accuracy, one k"] = plain(attack_accuracy(judge, x, y, top_k=3))
    out["knn_distance"] = plain(knn_distance(judge, x, y, test_x, test_y, batch_size=5))
    out["knn_distance, a layer"] = plain(knn_distance(judge, x, y, test_x, test_y, feature_layer="1"))
    out["fid"] = fid(x, test_x, feature_extractor=nn.Flatten(), batch_size=7)
    out["fid_eval_features"] = fid_eval_features(judge, x, test_x, batch_size=5)

    bad = {
        "acc, test_x alone": lambda: attack_accuracy(judge, x, y, test_x=test_x),
        "acc, target without test_x": lambda: attack_accuracy(judge, x, y, target=target),
        "acc, empty top_k": lambda: attack_accuracy(judge, x, y, top_k=()),
        "acc, top_k 0": lambda: attack_accuracy(judge, x, y, top_k=(1, 0)),
        "acc, labels": lambda: attack_accuracy(judge, x, y + 3),
        "acc, rec_index": lambda: attack_accuracy(judge, x, y, rec_index=rounds[:5]),
        "knn, identity": lambda: knn_distance(judge, x, y, test_x[:2], test_y[:2]),
        "knn, identities": lambda: knn_distance(judge, x, y, test_x[:1], test_y[:1]),
        "knn, batch_size": lambda: knn_distance(judge, x, y, test_x, test_y, batch_size=0),
        "knn, private_y": lambda: knn_distance(judge, x, y, test_x, test_y[:3]),
        "fid, model first": lambda: fid(judge, x, test_x),
        "fid, no extractor": lambda: fid(x, test_x),
        "fid, misplaced": lambda: fid(x, test_x, nn.Flatten()),
        "fid, one image": lambda: fid(x[:1], test_x, feature_extractor=nn.Flatten()),
        "fid, one real": lambda: fid(x, test_x[:1], feature_extractor=nn.Flatten()),
        "fid, extractor": lambda: fid(x, test_x, feature_extractor=lambda t: t),
        "fid, batch_size": lambda: fid(x, test_x, feature_extractor=nn.Flatten(), batch_size=0),
        "fid, not a tensor": lambda: fid(x, test_x, feature_extractor=_Listing()),
        "fid, degenerate": lambda: fid(np.zeros_like(x), np.zeros_like(test_x), feature_extractor=nn.Flatten()),
        "fid, infinite": lambda: fid(x, test_x, feature_extractor=_Infinite()),
    }
    for name, call in bad.items():
        try:
            call()
            out[name] = "no error"
        except ValueError as err:
            out[name] = f"ValueError: {err}"
    return out


class _Listing(nn.Module):
    def forward(self, x):
        return [x]


class _Infinite(nn.Module):
    def forward(self, x):
        return x.flatten(1) / 0


def test_the_metrics_outputs_and_messages_are_pinned():
    """attack_accuracy, knn_distance, fid and fid_eval_features: every output and refusal on fixed inputs stays
    what it was before they were split (tests/golden/metrics.json)."""
    from conftest import assert_matches_golden

    assert_matches_golden(_pinned_metrics(), "metrics.json")
