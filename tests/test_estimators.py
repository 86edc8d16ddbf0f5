"""The ART estimator is the single source of truth: attacks, helpers and metrics see a target exactly as
its ``predict`` does (preprocessing, clip_values, channels_first), whatever shape its outputs have.

Every case is a model someone trained elsewhere and wrapped in ART their way. Each wraps the tiny digits
target of ``conftest.py`` so that, seen through its estimator, it computes what the target computes on
[0, 1] images: then an attack on the case must give the same reconstructions (in the case's input space)
as the attack on the plain target, and so must the priors, surrogates and p_reg made from it.

For each case: the reconstructions' range and shape, ``target_confidence_`` against the estimator's own
``predict`` for the attacked labels, and metrics given the estimator against the same metrics computed
through ``predict``.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mi_art as M
from conftest import IMAGE_SHAPE, NUM_CLASSES, wrap
from mi_art.evaluations.metrics import attack_accuracy, fid_eval_features, knn_distance, natural_accuracy
from mi_art.renames import RenamedWarning
from mi_art.utils import EstimatorModule, as_module

ATTACKS = [M.GMI, M.KEDMI]
MEAN, STD = 0.3, 0.2  # the ART preprocessing of the cases that have one (scaled by 255 in the 0..255 case)


# --------------------------------------------------------------------------- models as users have them


class Affine(nn.Module):
    """``x * scale + shift``: undoes an ART standardisation, or a 0..255 range, inside the user's model."""

    def __init__(self, scale: float, shift: float = 0.0) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class ChannelsLast(nn.Module):
    """A model taking NHWC images (ART ``channels_first=False``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


class TupleOut(nn.Module):
    """Returns ``(features, logits)``: the logits are not first."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return x.flatten(1), self.net(x)


class DictOut(TupleOut):
    def forward(self, x: torch.Tensor):
        return {"features": x.flatten(1), "logits": self.net(x)}


class Select(nn.Module):
    """The reference for ART's ``predict``, which cannot handle tuple or dict outputs itself."""

    def __init__(self, net: nn.Module, index: Any) -> None:
        super().__init__()
        self.net, self.index = net, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[self.index]


@dataclass
class Case:
    """An estimator, how images in [0, 1] map to its input space, and what its ``predict`` means."""

    clf: Any
    low: float = 0.0
    high: float = 1.0
    channels_last: bool = False
    probabilities: bool = False  # predict returns probabilities (a final softmax)
    reference: Any = None  # an estimator whose predict is the case's (for tuple/dict outputs)
    kwargs: Dict[str, Any] = field(default_factory=dict)  # output_index / feature_layer
    equivalent: bool = True  # computes exactly what the plain target computes on [0, 1] images

    def to_model(self, u: np.ndarray) -> np.ndarray:
        x = self.low + (self.high - self.low) * u
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if self.channels_last else x

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        u = x.transpose(0, 3, 1, 2) if self.channels_last else x
        return (u - self.low) / (self.high - self.low)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (self.reference or self.clf).predict(x)

    def probs(self, x: np.ndarray) -> np.ndarray:
        out = self.predict(x)
        return out if self.probabilities else torch.softmax(torch.from_numpy(out), 1).numpy()

    @property
    def metric_kwargs(self) -> Dict[str, Any]:
        return {k: v for k, v in self.kwargs.items() if k in ("output_index",)}


def conv_head_model() -> nn.Module:
    """A head without nn.Linear: pooled features, a 1x1 convolution to the class logits, flattened."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        body=nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU()), pool=nn.AdaptiveAvgPool2d(1),
        head=nn.Conv2d(16, NUM_CLASSES, 1), flat=nn.Flatten()))


CASES = ["preprocessing", "clip255", "clip255+preprocessing", "channels-last", "softmax", "tuple", "dict",
         "conv-head"]


@pytest.fixture(scope="session")
def conv_head(digits):
    return M.train_classifier(conv_head_model(), digits.private_train.x, digits.private_train.y, epochs=3,
                              augment="none", seed=0)


def make_case(name: str, target: nn.Module, conv_head: nn.Module) -> Case:
    if name == "preprocessing":
        return Case(wrap(nn.Sequential(Affine(STD, MEAN), target), preprocessing=(MEAN, STD)))
    if name == "clip255":
        return Case(wrap(nn.Sequential(Affine(1 / 255), target), clip_values=(0, 255)), high=255.0)
    if name == "clip255+preprocessing":  # trained elsewhere on (x - mean) / std of 0..255 images
        model = nn.Sequential(Affine(255 * STD, 255 * MEAN), Affine(1 / 255), target)
        return Case(wrap(model, clip_values=(0, 255), preprocessing=(255 * MEAN, 255 * STD)), high=255.0)
    if name == "channels-last":
        return Case(wrap(ChannelsLast(target), input_shape=(8, 8, 1), channels_first=False), channels_last=True)
    if name == "softmax":
        return Case(wrap(nn.Sequential(target, nn.Softmax(dim=1))), probabilities=True)
    if name == "tuple":
        return Case(wrap(TupleOut(target)), reference=wrap(Select(TupleOut(target), 1)), kwargs={"output_index": 1})
    if name == "dict":
        return Case(wrap(DictOut(target)), reference=wrap(Select(DictOut(target), "logits")),
                    kwargs={"output_index": "logits"})
    if name == "conv-head":
        return Case(wrap(conv_head), kwargs={"feature_layer": "head"}, equivalent=False)
    raise AssertionError(name)


@pytest.fixture(params=CASES)
def case(request, target, conv_head) -> Case:
    return make_case(request.param, target, conv_head)


@pytest.fixture(params=[name for name in CASES if name != "conv-head"])
def equivalent_case(request, target) -> Case:
    """The cases that compute, through their estimator, what the plain target computes on [0, 1] images."""
    return make_case(request.param, target, None)


@pytest.fixture(scope="session")
def priors(gmi_prior, kedmi_prior):
    return {M.GMI: gmi_prior, M.KEDMI: kedmi_prior}


def run(cls, clf, priors, y=np.arange(NUM_CLASSES), **kwargs):
    gen, disc = priors[cls]
    params = dict(iterations=3, n_reconstructions=2, seed=0, verbose=False)
    params.update(kwargs)
    attack = cls(clf, gen, disc, **params)
    return attack, attack.infer(None, y)


@pytest.fixture(scope="session")
def plain(target_clf, priors):
    """The attacks on the plain target: what every equivalent case must reproduce."""
    return {cls: run(cls, target_clf, priors)[1] for cls in ATTACKS}


# --------------------------------------------------------------------------- every case


@pytest.mark.parametrize("cls", ATTACKS)
def test_range_confidence_and_metrics_follow_the_estimator(cls, case, priors, plain, digits):
    attack, rec = run(cls, case.clf, priors, **case.kwargs)
    n = NUM_CLASSES * 2
    assert rec.shape == (n, *case.clf.input_shape) and rec.dtype == np.float32
    assert rec.min() >= case.low - 1e-4 and rec.max() <= case.high + 1e-3
    if case.high > 1:
        assert rec.max() > 1  # in the estimator's range, not the generator's [0, 1]
    if case.equivalent:  # the same attack as on the plain target, seen in the case's input space
        np.testing.assert_allclose(case.to_unit(rec), plain[cls], atol=2e-4)

    # target_confidence_: the estimator's own predict (softmax of logits; the probabilities of a softmax head)
    probs = case.probs(rec)
    np.testing.assert_allclose(attack.target_confidence_, probs[np.arange(n), attack.labels_], rtol=1e-4, atol=1e-5)

    # a metric given the estimator equals the metric computed through predict
    res = attack_accuracy(case.clf, rec, attack.labels_, top_k=(1,), **case.metric_kwargs)
    hits = case.predict(rec).argmax(1) == attack.labels_
    np.testing.assert_array_equal(res["per_sample_top1"], hits)
    assert res["acc@1"] == pytest.approx(hits.mean())
    test_x = case.to_model(digits.private_test.x)
    expected = (case.predict(test_x).argmax(1) == digits.private_test.y).mean()
    assert natural_accuracy(case.clf, test_x, digits.private_test.y, **case.metric_kwargs) == pytest.approx(expected)


def test_features_metrics_follow_the_estimator(equivalent_case, target, digits):
    """KNN distance and FID on the judge's features, given the estimator and images in its input space,
    equal those of the plain target on [0, 1] images (the judge here is the same network)."""
    case = equivalent_case
    priv = digits.private_all()
    x, y = digits.private_test.x[:20], digits.private_test.y[:20]
    kw = case.metric_kwargs
    got = knn_distance(case.clf, case.to_model(x), y, case.to_model(priv.x), priv.y, **kw)
    want = knn_distance(target, x, y, priv.x, priv.y)
    np.testing.assert_allclose(got["per_sample"], want["per_sample"], rtol=1e-3, atol=1e-4)
    real = priv.x[:40]
    assert fid_eval_features(case.clf, case.to_model(x), case.to_model(real), **kw) == pytest.approx(
        fid_eval_features(target, x, real), rel=1e-3, abs=1e-4)


def test_helpers_follow_the_estimator(equivalent_case, target, digits, gmi_prior):
    """p_reg, KEDMI's prior, the surrogates and top-1 agreement made from the estimator and public images
    in its input space are those made from the plain target on [0, 1] images."""
    case = equivalent_case
    public = digits.public.x[:200]
    ours = case.to_model(public)
    kw = case.metric_kwargs
    p_case, p_plain = M.estimate_p_reg(case.clf, ours, **kw), M.estimate_p_reg(target, public)
    torch.testing.assert_close(p_case, p_plain, rtol=1e-3, atol=1e-4)

    g_case, d_case = M.train_kedmi_prior(case.clf, ours, steps=2, n_critic=2, width=8, seed=0, **kw)
    g_plain, d_plain = M.train_kedmi_prior(target, public, steps=2, n_critic=2, width=8, seed=0)
    z = torch.rand(4, g_plain.latent_dim) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(g_case(z), g_plain(z), rtol=1e-3, atol=1e-3)
        u = torch.from_numpy(public[:8])
        torch.testing.assert_close(d_case(u), d_plain(u), rtol=1e-3, atol=1e-3)

    def fresh() -> nn.Module:
        torch.manual_seed(1)
        return M.make_classifier("mlp", 1, NUM_CLASSES, 8)

    settings: Dict[str, Any] = dict(generator=gmi_prior[0], steps=5, eval_every=5, seed=0)
    s_case = M.distill_surrogate(case.clf, fresh(), ours, **settings, **kw)
    s_plain = M.distill_surrogate(target, fresh(), public, **settings)
    for a, b in zip(s_case.parameters(), s_plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    # agreement: x is in the first model's input space, the bare surrogate gets [0, 1] images
    assert M.top1_agreement(case.clf, s_case, ours, **kw) == pytest.approx(M.top1_agreement(target, s_plain, public))


# --------------------------------------------------------------------------- 0..255 and KEDMI's prior


def test_kedmi_prior_and_surrogates_see_unit_images_of_a_0_255_estimator(target, digits, gmi_prior):
    """KEDMI against clip_values=(0, 255): the discriminator learns the public images in [0, 1], where
    the generator's images are; a surrogate learns on [0, 1] too; the target gets 0..255."""
    clf = wrap(nn.Sequential(Affine(1 / 255), target), clip_values=(0, 255))
    public255 = digits.public.x[:128] * 255
    seen: Dict[str, float] = {"disc": 0.0, "target": 0.0, "student": 0.0}

    def watch(key):
        def hook(_m, inputs):
            seen[key] = max(seen[key], float(inputs[0].detach().max()))
        return hook

    def on_every_discriminator(module, inputs):
        if isinstance(module, M.KEDMIDiscriminator):
            seen["disc"] = max(seen["disc"], float(inputs[0].detach().max()))

    handles = [torch.nn.modules.module.register_module_forward_pre_hook(on_every_discriminator),
               clf.model[0].register_forward_pre_hook(watch("target"))]
    student = M.make_classifier("mlp", 1, NUM_CLASSES, 8)
    handles.append(student.register_forward_pre_hook(watch("student")))
    try:
        M.train_kedmi_prior(clf, public255, steps=2, n_critic=2, width=8, seed=0)
        M.distill_surrogate(clf, student, public255, generator=gmi_prior[0], steps=3, eval_every=3, seed=0)
    finally:
        for h in handles:
            h.remove()
    assert 0.9 < seen["disc"] <= 1.0 + 1e-5
    assert 0.9 < seen["student"] <= 1.0 + 1e-5
    assert seen["target"] > 200


def test_lomma_against_a_0_255_estimator_with_preprocessing_equals_the_plain_attack(target, target_clf, priors,
                                                                                    surrogates, p_reg, digits):
    """The full LOMMA attack (logit loss, p_reg from the estimator, surrogates as bare modules)."""
    case = make_case("clip255+preprocessing", target, None)
    p_case = M.estimate_p_reg(case.clf, case.to_model(digits.public.x))
    torch.testing.assert_close(p_case, p_reg, rtol=1e-3, atol=1e-4)
    for cls in ATTACKS:
        kw = dict(identity_loss="logit", surrogates=surrogates, iterations=4)
        _, rec = run(cls, case.clf, priors, p_reg=p_case, **kw)
        _, ref = run(cls, target_clf, priors, p_reg=p_reg, **kw)
        assert rec.max() > 1
        np.testing.assert_allclose(case.to_unit(rec), ref, atol=2e-4)


# --------------------------------------------------------------------------- probabilities


@pytest.mark.parametrize("cls", ATTACKS)
def test_a_softmax_head_under_ce_is_inverted_through_its_log_probabilities(cls, target, priors, digits):
    """Cross-entropy on probabilities would apply softmax twice and flatten the confidences: the attack
    uses log-probabilities, so it optimises what it optimises on the logits and reports predict's values."""
    soft = wrap(nn.Sequential(target, nn.Softmax(dim=1)))
    logit = wrap(target)
    a_soft, rec_soft = run(cls, soft, priors, iterations=30)
    a_logit, rec_logit = run(cls, logit, priors, iterations=30)
    np.testing.assert_allclose(rec_soft, rec_logit, atol=2e-4)
    np.testing.assert_allclose(a_soft.target_confidence_, a_logit.target_confidence_, atol=1e-4)
    probs = soft.predict(rec_soft)
    np.testing.assert_allclose(a_soft.target_confidence_, probs[np.arange(len(rec_soft)), a_soft.labels_], rtol=1e-4,
                               atol=1e-5)


def test_the_view_detects_probabilities_and_returns_their_logarithm(target):
    view = as_module(wrap(nn.Sequential(target, nn.Softmax(dim=1))))
    x = torch.rand(4, *IMAGE_SHAPE)
    with torch.no_grad():
        out = view(x)
        torch.testing.assert_close(out.exp(), F.softmax(target(x), 1), rtol=1e-5, atol=1e-6)
        assert view.outputs_probabilities
        assert as_module(target)(x) is not None and not as_module(wrap(target)).outputs_probabilities


# --------------------------------------------------------------------------- real model shapes


@pytest.mark.parametrize("cls", ATTACKS)
def test_a_head_without_linear_needs_feature_layer_only_for_p_reg(cls, conv_head, priors, digits):
    clf = wrap(conv_head)
    run(cls, clf, priors, identity_loss="logit")  # no p_reg: no nn.Linear needed anywhere
    p = M.estimate_p_reg(clf, digits.public.x, feature_layer="head")
    assert p.shape == (16,)  # the input of the 1x1 convolution, flattened
    with pytest.raises(ValueError, match="feature_layer"):
        run(cls, clf, priors, identity_loss="logit", p_reg=p)  # by default the (missing) last nn.Linear
    with pytest.raises(ValueError, match="feature_layer='nope'"):
        run(cls, clf, priors, identity_loss="logit", p_reg=p, feature_layer="nope")
    with pytest.raises(ValueError, match="p_reg has 16 values"):
        run(cls, clf, priors, identity_loss="logit", p_reg=p, feature_layer="pool")  # pool's input: 16x8x8
    attack, rec = run(cls, clf, priors, identity_loss="logit", p_reg=p, feature_layer="head")
    assert np.isfinite(rec).all()


def test_the_regulariser_reads_the_named_feature_layer(conv_head, priors, digits):
    from mi_art.features import logits_and_features

    clf = wrap(conv_head)
    p = M.estimate_p_reg(clf, digits.public.x, feature_layer="head")
    attack = M.GMI(clf, *priors[M.GMI], identity_loss="logit", p_reg=p, feature_layer="head", reg_weight=0.5,
                   verbose=False)
    images, y = torch.rand(3, *IMAGE_SHAPE), torch.tensor([0, 1, 2])
    got = attack._identity_objective(EstimatorModule(clf), images, y)
    with torch.no_grad():
        logits, feats = logits_and_features(conv_head, images, "head")
        expected = -logits.gather(1, y[:, None])[:, 0] + 0.5 * ((feats - p) ** 2).mean(1)
    torch.testing.assert_close(got.detach(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_cls", [TupleOut, DictOut])
def test_tuple_and_dict_outputs_without_output_index_say_how_to_adapt(model_cls, target, priors, digits):
    clf = wrap(model_cls(target))
    for call in (lambda: run(M.GMI, clf, priors),
                 lambda: M.estimate_p_reg(clf, digits.public.x[:10]),
                 lambda: M.train_kedmi_prior(clf, digits.public.x[:10], steps=1),
                 lambda: natural_accuracy(clf, digits.private_test.x, digits.private_test.y)):
        with pytest.raises(ValueError, match=r"output_index=.*or wrap the model"):
            call()
    bad = 5 if model_cls is TupleOut else "scores"
    with pytest.raises(ValueError, match="output_index"):
        run(M.GMI, clf, priors, output_index=bad)


@pytest.mark.parametrize("value", [1.5, True, "", [0]])
def test_output_index_and_feature_layer_are_validated(value, target_clf, priors):
    with pytest.raises(ValueError, match="output_index"):
        run(M.GMI, target_clf, priors, output_index=value)
    with pytest.raises(ValueError, match="feature_layer"):
        run(M.GMI, target_clf, priors, feature_layer=value if value != "" else 3)


def test_kedmi_refuses_a_gmi_critic_by_name(target_clf, gmi_prior, kedmi_prior):
    gen, critic = gmi_prior
    with pytest.raises(ValueError, match="Critic.*KEDMIDiscriminator"):
        M.KEDMI(target_clf, gen, critic, verbose=False)
    with pytest.raises(ValueError, match="KEDMIDiscriminator"):
        M.GMI(target_clf, gen, kedmi_prior[1], verbose=False)


# --------------------------------------------------------------------------- any image size


def _generator_makes_28x28() -> Optional[str]:
    try:
        out = M.Generator(28, 1, width=8)(torch.rand(2, M.priors.LATENT_DIM))
    except Exception as err:  # noqa: BLE001 - any failure means: not there yet
        return f"Generator(28, ...) does not work yet: {type(err).__name__}: {err}"
    return None if tuple(out.shape) == (2, 1, 28, 28) else f"Generator(28, ...) makes {tuple(out.shape)}"


@pytest.mark.parametrize("cls", ATTACKS)
def test_28x28_inputs(cls, digits):
    reason = _generator_makes_28x28()
    if reason:
        pytest.skip(reason)

    def up(x):
        return F.interpolate(torch.from_numpy(x), size=28, mode="bilinear", align_corners=False).clamp(0, 1).numpy()

    train_x, test_x, public = up(digits.private_train.x[:300]), up(digits.private_test.x[:60]), up(digits.public.x[:200])
    model = M.train_classifier(M.make_classifier("cnn", 1, NUM_CLASSES, 28), train_x, digits.private_train.y[:300],
                               epochs=1, augment="none", seed=0)
    clf = wrap(nn.Sequential(Affine(1 / 255), model), input_shape=(1, 28, 28), clip_values=(0, 255))
    if cls is M.GMI:
        gen, disc = M.train_gmi_prior(public, steps=2, n_critic=1, width=8, seed=0)
    else:
        gen, disc = M.train_kedmi_prior(clf, public * 255, steps=2, n_critic=1, width=8, seed=0)
    attack = cls(clf, gen, disc, iterations=2, n_reconstructions=2, seed=0, verbose=False)
    rec = attack.infer(None, np.arange(NUM_CLASSES))
    assert rec.shape == (2 * NUM_CLASSES, 1, 28, 28)
    assert rec.min() >= 0 and rec.max() <= 255 + 1e-3 and rec.max() > 1
    probs = torch.softmax(torch.from_numpy(clf.predict(rec)), 1).numpy()
    np.testing.assert_allclose(attack.target_confidence_, probs[np.arange(len(rec)), attack.labels_], rtol=1e-4,
                               atol=1e-5)
    hits = clf.predict(rec).argmax(1) == attack.labels_
    np.testing.assert_array_equal(attack_accuracy(clf, rec, attack.labels_, top_k=(1,))["per_sample_top1"], hits)
    y = digits.private_test.y[:60]
    assert natural_accuracy(clf, test_x * 255, y) == pytest.approx((clf.predict(test_x * 255).argmax(1) == y).mean())


# --------------------------------------------------------------------------- run_attack


def test_run_attack_keeps_a_given_estimator(target, digits, monkeypatch):
    """``run_attack(bench, target=estimator)`` attacks the estimator itself (preprocessing and range kept),
    maps the workbench's [0, 1] data to it, and reports its accuracy as its predict gives it."""
    from mi_art.evaluations import experiment as E

    case = make_case("clip255+preprocessing", target, None)
    config = E.ExperimentConfig(dataset="digits", attack="gmi", variant="lom", target_epochs=1, judge_epochs=1,
                                judge_arch="cnn-small", gmi_steps=2, iterations=2, n_reconstructions=1, gan_width=8,
                                surrogate_archs=())
    bench = E.Workbench(config)
    assert E.wrap_target(case.clf, bench.data, bench.device) is case.clf
    attacked = []
    real_init = M.GMI.__init__

    def spy(self, estimator, *args, **kwargs):
        attacked.append(estimator)
        real_init(self, estimator, *args, **kwargs)

    monkeypatch.setattr(M.GMI, "__init__", spy)
    result = E.run_attack(bench, target=case.clf)
    assert attacked == [case.clf]
    recs = result["reconstructions"]
    assert recs.shape == (NUM_CLASSES, *IMAGE_SHAPE) and recs.min() >= 0 and recs.max() <= 1 + 1e-5
    test = bench.data.private_test
    expected = (case.clf.predict(case.to_model(test.x)).argmax(1) == test.y).mean()
    assert result["target_test_accuracy"] == pytest.approx(expected)
    assert result["target_test_accuracy"] == pytest.approx(natural_accuracy(target, test.x, test.y))
    judge = result["judge_test_accuracy"]  # one epoch: a weak judge, and the result says so
    assert judge < 0.8 and any(f"test accuracy {judge:.3f}" in w for w in result["warnings"]), result["warnings"]


def test_artifacts_made_for_a_given_target_are_keyed_by_that_target(digits, tmp_path):
    """p_reg, surrogates and the KEDMI prior made for a target the workbench did not train are cached under
    that target's weights: never served for the workbench's own target, nor the other way round."""
    import copy

    from mi_art.evaluations import experiment as E
    from mi_art.evaluations.cache import ArtifactCache

    config = E.ExperimentConfig(dataset="digits", target_epochs=1, judge_epochs=1, gmi_steps=1, kedmi_steps=1,
                                gan_width=8, surrogate_archs=("cnn-small",), surrogate_steps=1)
    bench = E.Workbench(config, ArtifactCache(tmp_path), data=digits)
    own = bench.target()
    other = copy.deepcopy(own)
    with torch.no_grad():
        other.fc.weight.mul_(3.0)
        next(other.parameters()).add_(0.5)
    p_other = bench.p_reg(other)  # first: a cache keyed by the workbench's config would now hold it
    p_own = bench.p_reg(own)
    torch.testing.assert_close(p_own, M.estimate_p_reg(own, digits.public.x))
    torch.testing.assert_close(p_other, M.estimate_p_reg(other, digits.public.x))
    torch.testing.assert_close(bench.p_reg(bench.target()), p_own)  # a reloaded own target: the same key
    assert bench.key("surrogate", index=0, target=other) != bench.key("surrogate", index=0, target=own) \
        == bench.key("surrogate", index=0)
    assert bench.key("kedmi-prior", target=other) != bench.key("kedmi-prior", target=own)
    assert bench.key("kedmi-prior", target=own) == bench.key("kedmi-prior")
    assert bench.key("target", model=other) != bench.key("target", model=copy.deepcopy(own))  # other weights, other key


def test_redrawn_target_and_judge_are_the_recipe_from_another_seed_and_keyed_by_their_weights(digits, tmp_path):
    """Workbench.redraw: the configured seed gives the workbench's own model; another seed the same recipe
    from that initialisation (cached, so a second call loads it), whose artifacts follow its weights."""
    from mi_art.evaluations import experiment as E
    from mi_art.evaluations.cache import ArtifactCache

    config = E.ExperimentConfig(dataset="digits", target_epochs=1, judge_epochs=1, augment="none")
    bench = E.Workbench(config, ArtifactCache(tmp_path), data=digits)
    own, judge = bench.target(), bench.judge()
    same, same_judge = bench.redraw("target", config.seed), bench.redraw("judge", config.seed + 1000)
    torch.testing.assert_close(same.fc.weight, own.fc.weight)
    torch.testing.assert_close(same_judge.fc.weight, judge.fc.weight)
    # the workbench's own target: artifacts keyed by its config
    assert bench.key("target", model=same) == bench.key("target")
    other, other_judge = bench.redraw("target", 7), bench.redraw("judge", 7)
    assert type(other) is type(own) and type(other_judge) is type(judge)
    assert not torch.equal(other.fc.weight, own.fc.weight)
    assert not torch.equal(other_judge.fc.weight, judge.fc.weight)
    assert bench.key("target", model=other) != bench.key("target", model=own) == bench.key("target")
    torch.testing.assert_close(bench.redraw("target", 7).fc.weight, other.fc.weight)  # cached
    assert len(list(tmp_path.glob("target-*.pt"))) == 2 and len(list(tmp_path.glob("evaluator-*.pt"))) == 2
    with pytest.raises(ValueError, match="kind must be one of 'target', 'judge', got 'surrogate'"):
        bench.redraw("surrogate", 1)
    # the judges' earlier name still works, reported as renamed; the cached model is found under it
    with pytest.warns(RenamedWarning, match="the kind 'evaluator' is now called 'judge'"):
        earlier = bench.redraw("evaluator", 7)
    torch.testing.assert_close(earlier.fc.weight, other_judge.fc.weight)
    assert len(list(tmp_path.glob("evaluator-*.pt"))) == 2
    with pytest.raises(ValueError, match="seed"):
        bench.redraw("target", -1)
    defended = E.Workbench(E.ExperimentConfig(dataset="digits", defense="rounded"), ArtifactCache(tmp_path),
                           data=digits)
    with pytest.raises(ValueError, match="config.defense is 'rounded'"):
        defended.redraw("target", 1)


@pytest.mark.parametrize("name, grey", [("clip255", 127.5), ("channels-last", 0.5)])
def test_miface_starts_from_mid_grey_in_the_estimators_input_space(name, grey, target, digits, monkeypatch):
    """MIFace gets its start in the estimator's own space: mid-grey of a 0..255 range is 127.5, not 0.5."""
    from art.attacks.inference.model_inversion import MIFace

    from mi_art.attacks.runs import miface_reconstructions
    from mi_art.evaluations import experiment as E
    from mi_art.utils import as_module

    case = make_case(name, target, None)
    seen = []
    monkeypatch.setattr(MIFace, "infer", lambda self, x, y=None, **kw: seen.append(x) or x)
    miface_reconstructions(as_module(case.clf, "target"), np.arange(NUM_CLASSES),
                           E.ExperimentConfig(dataset="digits", miface_iterations=1), digits.input_shape)
    assert seen[0].shape == (NUM_CLASSES, *case.clf.input_shape)
    np.testing.assert_allclose(seen[0], grey)
