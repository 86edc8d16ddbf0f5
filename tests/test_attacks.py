"""GMI, KEDMI, VMI and PLG-MI as ART inference attacks: contract, validation, bookkeeping and end-to-end success."""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
import torch
from art.attacks.attack import InferenceAttack
from art.exceptions import EstimatorError
from torch import nn

import mi_art as M
from conftest import IMAGE_SHAPE, NUM_CLASSES, wrap
from mi_art.evaluations import attack_accuracy

ATTACKS = [M.GMI, M.KEDMI, M.VMI, M.PLGMI]


@pytest.fixture(scope="session")
def priors(gmi_prior, kedmi_prior, plgmi_prior):
    return {M.GMI: gmi_prior, M.KEDMI: kedmi_prior, M.VMI: gmi_prior, M.PLGMI: plgmi_prior}


def make(cls, clf, priors, **kwargs):
    gen, disc = priors[cls]
    params = dict(iterations=2, n_reconstructions=2, verbose=False, seed=0)
    params.update(kwargs)
    return cls(clf, gen, disc, **params)


# --------------------------------------------------------------------------- ART contract


@pytest.mark.parametrize("cls", ATTACKS)
def test_is_an_art_inference_attack(cls, target_clf, priors):
    assert issubclass(cls, InferenceAttack)
    attack = make(cls, target_clf, priors)
    assert isinstance(attack, InferenceAttack)
    assert attack.estimator is target_clf


@pytest.mark.parametrize("cls", ATTACKS)
def test_every_keyword_argument_is_an_attack_param(cls):
    keywords = [name for name, p in inspect.signature(cls.__init__).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keywords, "the attack takes its settings as keyword arguments"
    missing = set(keywords) - set(cls.attack_params)
    assert not missing, f"set_params cannot change {sorted(missing)}"


@pytest.mark.parametrize("cls", ATTACKS)
def test_set_params_accepts_known_names(cls, target_clf, priors, p_reg):
    attack = make(cls, target_clf, priors)
    attack.set_params(iterations=7, identity_loss="logit", p_reg=p_reg.numpy(), reg_weight=0.0)
    assert attack.iterations == 7 and attack.identity_loss == "logit" and attack.reg_weight == 0.0


@pytest.mark.parametrize("cls", ATTACKS)
def test_set_params_rejects_unknown_names(cls, target_clf, priors):
    attack = make(cls, target_clf, priors)
    with pytest.raises(ValueError, match="learning_rat"):
        attack.set_params(learning_rat=0.1)


@pytest.mark.parametrize("cls", ATTACKS)
def test_arts_max_iter_is_refused_with_the_name_it_has_here(cls, target_clf, priors):
    """ART's MIFace takes ``max_iter``: given to these attacks (constructor or set_params) it is refused with a
    message naming ``iterations``, not ART's "cannot be set" nor Python's "unexpected keyword argument"."""
    with pytest.raises(ValueError, match=r"takes no 'max_iter' \(the name in ART's attacks\): give iterations="):
        make(cls, target_clf, priors, max_iter=5)
    attack = make(cls, target_clf, priors)
    with pytest.raises(ValueError, match=r"give iterations=\.\.\. instead\. Its parameters: .*iterations"):
        attack.set_params(max_iter=5)


@pytest.mark.parametrize("cls", ATTACKS)
def test_the_progress_bar_counts_the_iterations_asked_for(cls, target_clf, priors, monkeypatch):
    """Several batches: the bar counts to ``iterations`` (it once counted to twice as many) and its
    title names the batch that runs."""
    attack = make(cls, target_clf, priors, iterations=3, n_reconstructions=2, batch_size=2, verbose=True)
    bars, progress = [], attack._progress
    monkeypatch.setattr(attack, "_progress", lambda n: bars.append(progress(n)) or bars[-1])
    attack.infer(None, np.array([0, 1, 2]))  # 3 identities: at least 2 batches of codes or of identities
    assert bars[0].total == 3 and bars[0].n == 3
    assert re.search(r"batch ([2-9])/\1", bars[0].desc), bars[0].desc  # the last of several


def test_brepmi_names_its_own_iteration_budget(target_clf, gmi_prior):
    with pytest.raises(ValueError, match=r"BREPMI takes no 'max_iter'.*give max_iterations=\.\.\. instead"):
        M.BREPMI(target_clf, gmi_prior[0], max_iter=5)


@pytest.mark.parametrize("cls", ATTACKS)
@pytest.mark.parametrize("name,value,match", [
    ("iterations", -1, "iterations"),
    ("iterations", 0, "iterations"),
    ("iterations", 2.5, "iterations"),
    ("n_reconstructions", 0, "n_reconstructions"),
    ("batch_size", 0, "batch_size"),
    ("identity_loss", "foo", "identity_loss"),
    ("learning_rate", 0.0, "learning_rate"),
    ("learning_rate", float("nan"), "learning_rate"),
    ("id_weight", -1.0, "id_weight"),
    ("reg_weight", -0.5, "reg_weight"),
    ("p_reg", np.zeros(7, dtype=np.float32), "p_reg"),
    ("p_reg", np.full(128, np.nan, dtype=np.float32), "p_reg"),
    ("seed", 1.5, "seed"),
    ("verbose", "yes", "verbose"),
    ("surrogates", [object()], "surrogates"),
])
def test_invalid_values_are_rejected(cls, name, value, match, target_clf, priors):
    attack = make(cls, target_clf, priors)
    with pytest.raises(ValueError, match=match):
        attack.set_params(**{name: value})
    gen, disc = priors[cls]
    with pytest.raises(ValueError, match=match):
        cls(target_clf, gen, disc, **{name: value})


@pytest.mark.parametrize("name,value", [("learning_rate", "0.1"), ("reg_weight", "heavy"), ("id_weight", "big"),
                                        ("momentum", "x")])
def test_non_numeric_values_raise_value_error(name, value, target_clf, priors):
    with pytest.raises(ValueError, match=name):
        make(M.GMI, target_clf, priors, **{name: value})


def test_gmi_momentum_is_validated(target_clf, priors):
    with pytest.raises(ValueError, match="momentum"):
        make(M.GMI, target_clf, priors, momentum=1.0)
    attack = make(M.GMI, target_clf, priors)
    with pytest.raises(ValueError, match="momentum"):
        attack.set_params(momentum=-0.1)


def test_generator_and_discriminator_must_be_modules(target_clf, gmi_prior):
    gen, disc = gmi_prior
    with pytest.raises(ValueError, match="generator"):
        M.GMI(target_clf, lambda z: z, disc)


@pytest.mark.parametrize("cls", ATTACKS)
def test_estimator_without_class_gradients_is_refused(cls, priors, digits):
    from art.estimators.classification import BlackBoxClassifier, SklearnClassifier
    from sklearn.tree import DecisionTreeClassifier

    gen, disc = priors[cls]
    x, y = digits.private_train.x[:100], digits.private_train.y[:100]
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x.reshape(len(x), -1), y)
    with pytest.raises(EstimatorError):
        cls(SklearnClassifier(tree, clip_values=(0, 1)), gen, disc)
    blackbox = BlackBoxClassifier(lambda q: np.eye(NUM_CLASSES)[np.zeros(len(q), dtype=int)],
                                  input_shape=IMAGE_SHAPE, nb_classes=NUM_CLASSES, clip_values=(0, 1))
    with pytest.raises(EstimatorError):
        cls(blackbox, gen, disc)


# --------------------------------------------------------------------------- outputs and bookkeeping


@pytest.mark.parametrize("cls", ATTACKS)
def test_output_shape_range_and_bookkeeping(cls, target_clf, priors):
    y = np.array([3, 0, 3, 4])
    attack = make(cls, target_clf, priors, n_reconstructions=3, iterations=3)
    rec = attack.infer(None, y)
    assert rec.shape == (12,) + IMAGE_SHAPE
    assert rec.dtype == np.float32
    assert rec.min() >= 0 and rec.max() <= 1
    np.testing.assert_array_equal(attack.labels_, np.repeat(y, 3))
    np.testing.assert_array_equal(attack.reconstruction_index_, np.tile(np.arange(3), 4))
    # target_confidence_ is the target's softmax probability of the attacked class (ART predict).
    logits = target_clf.predict(rec)
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    expected = probs[np.arange(len(rec)), attack.labels_]
    assert attack.target_confidence_.shape == (12,)
    np.testing.assert_allclose(attack.target_confidence_, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", ATTACKS)
def test_one_hot_labels_are_accepted(cls, target_clf, priors):
    attack = make(cls, target_clf, priors, n_reconstructions=1)
    attack.infer(None, np.eye(NUM_CLASSES)[[2, 4]])
    np.testing.assert_array_equal(attack.labels_, [2, 4])


@pytest.mark.parametrize("cls", ATTACKS)
def test_confidence_goes_through_art_preprocessing(cls, target, priors):
    clf = wrap(target, preprocessing=(0.2, 0.5))
    attack = make(cls, clf, priors, n_reconstructions=2)
    rec = attack.infer(None, np.array([1, 2]))
    probs = torch.softmax(torch.from_numpy(clf.predict(rec)), 1).numpy()
    np.testing.assert_allclose(attack.target_confidence_, probs[np.arange(4), attack.labels_], rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("cls", ATTACKS)
def test_output_follows_clip_values(cls, target, priors):
    clf = wrap(target, clip_values=(0, 255))
    rec = make(cls, clf, priors, n_reconstructions=2).infer(None, np.array([0, 1]))
    assert rec.min() >= 0 and rec.max() <= 255
    assert rec.max() > 1  # mapped from the generator's [0, 1] to the estimator's range


@pytest.mark.parametrize("cls", ATTACKS)
def test_seed_makes_results_reproducible(cls, target_clf, priors):
    y = np.array([0, 2])
    a = make(cls, target_clf, priors, iterations=4, seed=11).infer(None, y)
    b = make(cls, target_clf, priors, iterations=4, seed=11).infer(None, y)
    c = make(cls, target_clf, priors, iterations=4, seed=12).infer(None, y)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("cls", ATTACKS)
def test_batch_size_does_not_change_shape_or_labels(cls, target_clf, priors, attack_labels):
    small = make(cls, target_clf, priors, batch_size=3, n_reconstructions=2)
    large = make(cls, target_clf, priors, batch_size=50, n_reconstructions=2)
    rec_small, rec_large = small.infer(None, attack_labels), large.infer(None, attack_labels)
    assert rec_small.shape == rec_large.shape == (10,) + IMAGE_SHAPE
    np.testing.assert_array_equal(small.labels_, large.labels_)
    np.testing.assert_array_equal(small.reconstruction_index_, large.reconstruction_index_)
    assert np.isfinite(rec_small).all() and np.isfinite(small.target_confidence_).all()


@pytest.mark.parametrize("cls", ATTACKS)
def test_attack_leaves_models_untouched(cls, target, target_clf, priors, surrogates, p_reg):
    gen, disc = priors[cls]
    models = [target, gen, disc, *surrogates]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    flags = [[p.requires_grad for p in m.parameters()] for m in models]
    grads = [[None if p.grad is None else p.grad.clone() for p in m.parameters()] for m in models]
    attack = make(cls, target_clf, priors, identity_loss="logit", p_reg=p_reg, surrogates=surrogates)
    attack.infer(None, np.array([0, 1]))
    for m, state, flag in zip(models, before, flags):
        for k, v in m.state_dict().items():
            torch.testing.assert_close(v, state[k], msg=f"{type(m).__name__}.{k} changed")  # BN stats too
        assert [p.requires_grad for p in m.parameters()] == flag
    # No gradient is accumulated into the models' parameters (only the latents are optimised).
    for m, old in zip(models, grads):
        for p, g in zip(m.parameters(), old):
            assert (p.grad is None) == (g is None)
            if g is not None:
                torch.testing.assert_close(p.grad, g)


def test_surrogates_as_art_estimators(target_clf, priors, surrogates):
    attack = make(M.GMI, target_clf, priors, surrogates=[wrap(s) for s in surrogates], identity_loss="logit")
    assert attack.infer(None, np.array([1])).shape == (2,) + IMAGE_SHAPE


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", ATTACKS)
@pytest.mark.parametrize("y", [np.array([0, 5]), np.array([-1]), np.array([0.5])])
def test_bad_labels(cls, y, target_clf, priors):
    with pytest.raises(ValueError, match="y"):
        make(cls, target_clf, priors).infer(None, y)


@pytest.mark.parametrize("cls", ATTACKS)
def test_x_must_be_none_and_y_is_required(cls, target_clf, priors, digits):
    attack = make(cls, target_clf, priors)
    with pytest.raises(ValueError, match="x is not used"):
        attack.infer(digits.private_train.x[:2], np.array([0, 1]))
    with pytest.raises(ValueError, match="y is required"):
        attack.infer(None)
    with pytest.raises(ValueError, match="empty"):
        attack.infer(None, np.array([], dtype=int))


@pytest.mark.parametrize("cls", ATTACKS)
def test_logit_loss_refuses_a_softmax_model(cls, target, priors):
    clf = wrap(nn.Sequential(target, nn.Softmax(dim=1)))
    attack = make(cls, clf, priors, identity_loss="logit")
    with pytest.raises(ValueError, match="logit"):
        attack.infer(None, np.array([0]))
    # Cross-entropy on probabilities is allowed (it is what the user asked for).
    make(cls, clf, priors, identity_loss="ce").infer(None, np.array([0]))


@pytest.mark.parametrize("cls", ATTACKS)
def test_logit_loss_refuses_a_softmax_surrogate(cls, target_clf, priors, surrogates):
    attack = make(cls, target_clf, priors, identity_loss="logit",
                  surrogates=[surrogates[0], nn.Sequential(surrogates[1], nn.Softmax(dim=1))])
    with pytest.raises(ValueError, match=r"surrogates\[1\]"):
        attack.infer(None, np.array([0]))


@pytest.mark.parametrize("cls", ATTACKS)
def test_generator_shape_must_match_estimator(cls, target_clf, priors):
    _, disc = priors[cls]

    def generator(size, channels):
        if cls is M.PLGMI:
            return M.ConditionalGenerator(size, channels, NUM_CLASSES, width=8)
        return M.Generator(size, channels, width=8)

    gen16 = generator(16, 1)
    with pytest.raises(ValueError, match="shape"):
        cls(target_clf, gen16, disc, iterations=1, verbose=False).infer(None, np.array([0]))
    gen_rgb = generator(8, 3)
    with pytest.raises(ValueError, match="shape"):
        cls(target_clf, gen_rgb, disc, iterations=1, verbose=False).infer(None, np.array([0]))


@pytest.mark.parametrize("cls", ATTACKS)
def test_surrogate_with_wrong_number_of_classes(cls, target_clf, priors):
    wrong = M.make_classifier("mlp", 1, NUM_CLASSES + 1, 8).eval()
    with pytest.raises(ValueError, match=r"surrogates\[0\]"):
        make(cls, target_clf, priors, surrogates=[wrong]).infer(None, np.array([0]))


def test_kedmi_discriminator_with_wrong_k(target_clf, kedmi_prior):
    gen, _ = kedmi_prior
    wrong = M.KEDMIDiscriminator(NUM_CLASSES - 1, 8, 1, width=8).eval()
    with pytest.raises(ValueError, match="class logits"):
        M.KEDMI(target_clf, gen, wrong, iterations=1, verbose=False).infer(None, np.array([0]))


# --------------------------------------------------------------------------- end to end on digits


@pytest.mark.parametrize("cls", ATTACKS)
def test_lomma_reconstructions_fool_an_independent_evaluation_model(cls, target_clf, priors, surrogates, p_reg,
                                                                     eval_model, attack_labels):
    attack = make(cls, target_clf, priors, identity_loss="logit", p_reg=p_reg, surrogates=surrogates,
                  iterations=200, n_reconstructions=4, seed=0)
    rec = attack.infer(None, attack_labels)
    assert rec.shape == (len(attack_labels) * 4,) + IMAGE_SHAPE
    acc = attack_accuracy(eval_model, rec, attack.labels_, rec_index=attack.reconstruction_index_, top_k=(1,))
    # Chance is 1/5. Measured 1.0 for GMI, KEDMI and PLG-MI; a regulariser 4x as strong as the calibrated
    # default (REG_GRADIENT_RATIO 1.0) gives 0.90 (GMI) and 0.80 (KEDMI), 12x gives 0.35 and 0.50: at most one
    # miss in the 20 reconstructions guards the main job's accuracy (0.64 under session 2's regulariser).
    # VMI's reconstructions are samples of a distribution, not each optimised: measured 0.90.
    # PLG-MI (3 seeds on this target): 1.00 with its own margin loss, 0.90 / 0.90 / 0.90 with the logit loss and
    # p_reg, 0.90 / 0.85 / 0.85 LOMMA (p_reg here is the mean feature of the public digits 5-9: other classes).
    assert acc["acc@1"] >= (0.85 if cls in (M.VMI, M.PLGMI) else 0.95), acc
    # Every attacked identity is recovered at least once.
    hits = acc["per_sample_top1"]
    assert all(hits[attack.labels_ == k].any() for k in attack_labels)
    assert attack.target_confidence_.mean() > 0.5


# --------------------------------------------------------------------------- each improvement is used


def _target_features(target, images):
    from mi_art.features import extract_features

    return extract_features(target, torch.from_numpy(images))


@pytest.mark.parametrize("cls", ATTACKS)
def test_p_reg_pulls_reconstructions_towards_the_public_feature_mean(cls, target, target_clf, priors, p_reg,
                                                                   attack_labels):
    """Same seed and loss, with and without p_reg: the regulariser changes the reconstructions and brings
    their target features closer to p_reg."""
    dist = {}
    for name, kwargs in (("off", {}), ("on", dict(p_reg=p_reg, reg_weight=5.0))):
        rec = make(cls, target_clf, priors, identity_loss="logit", iterations=60, seed=0, **kwargs).infer(
            None, attack_labels)
        feats = _target_features(target, rec)
        dist[name] = float(((feats - p_reg) ** 2).mean())
    assert dist["on"] < 0.8 * dist["off"], dist


@pytest.mark.parametrize("cls", ATTACKS)
def test_surrogates_make_reconstructions_that_the_surrogates_recognise(cls, target_clf, priors, surrogates,
                                                                      attack_labels):
    """With the surrogates in the ensemble, the surrogates' own identity loss on the reconstructions is
    lower than without them: the attack really inverts them too."""
    def surrogate_ce(rec, labels):
        x = torch.from_numpy(rec)
        with torch.no_grad():
            return float(np.mean([torch.nn.functional.cross_entropy(s(x), torch.from_numpy(labels)).item()
                                  for s in surrogates]))

    ce = {}
    # PLG-MI's margin loss at learning rate 0.1 drives every model's CE near 0 within 150 steps: compare early
    iterations = 10 if cls is M.PLGMI else 150
    for name, kwargs in (("off", {}), ("on", dict(surrogates=surrogates))):
        attack = make(cls, target_clf, priors, iterations=iterations, seed=0, **kwargs)
        rec = attack.infer(None, attack_labels)
        ce[name] = surrogate_ce(rec, attack.labels_)
    assert ce["on"] < 0.95 * ce["off"], ce  # measured: 0.69 -> 0.59 for GMI


def _logit_losses(models, x, y):
    return [-m(x).gather(1, y[:, None])[:, 0] for m in models]


def _grad_norm(loss, x):
    g, = torch.autograd.grad(loss.sum(), x)
    return g.flatten(1).norm(dim=1).mean()


@pytest.mark.parametrize("with_surrogates", [False, True])
def test_default_reg_weight_fixes_the_regulariser_to_identity_gradient_ratio(target_clf, priors, surrogates, p_reg,
                                                                            with_surrogates):
    """reg_weight=None: on the first images the weight is set so that the regulariser's mean input-gradient
    norm is REG_GRADIENT_RATIO times the identity loss's, the ensemble's mean loss under model augmentation;
    the objective is then that mean loss plus the weight times the raw ||p - p_reg||^2."""
    from mi_art.attacks.base import REG_GRADIENT_RATIO
    from mi_art.features import logits_and_features

    models = (target_clf.model, *surrogates) if with_surrogates else (target_clf.model,)
    attack = make(M.GMI, target_clf, priors, identity_loss="logit", p_reg=p_reg,
                  surrogates=surrogates if with_surrogates else ())
    torch.manual_seed(0)
    images = torch.rand(6, *IMAGE_SHAPE)
    y = torch.arange(6) % NUM_CLASSES
    got = attack._identity_objective(attack._target_view(), images, y)

    x = images.clone().requires_grad_(True)
    g_id = _grad_norm(torch.stack(_logit_losses(models, x, y)).mean(0), x)
    x = images.clone().requires_grad_(True)
    g_reg = _grad_norm(((logits_and_features(target_clf.model, x)[1] - p_reg) ** 2).mean(1), x)
    weight = float(REG_GRADIENT_RATIO * g_id / g_reg)
    assert attack.reg_weight_ == pytest.approx(weight, rel=1e-4)
    with torch.no_grad():
        reg = ((logits_and_features(target_clf.model, images)[1] - p_reg) ** 2).mean(1)
        expected = torch.stack(_logit_losses(models, images, y)).mean(0) + weight * reg
    torch.testing.assert_close(got.detach(), expected, rtol=1e-4, atol=1e-4)
    attack._identity_objective(attack._target_view(), images[:3], y[:3])  # measured once, then kept
    assert attack.reg_weight_ == pytest.approx(weight, rel=1e-4)


def test_model_augmentation_keeps_the_lom_balance(target_clf, priors, surrogates, p_reg):
    """The surrogates' input gradients point elsewhere than the target's, so the ensemble's mean identity
    gradient is shorter; the calibrated weight shrinks with it, by exactly that ratio."""
    torch.manual_seed(0)
    images, y = torch.rand(6, *IMAGE_SHAPE), torch.arange(6) % NUM_CLASSES
    weights = {}
    for name, surr in (("lom", ()), ("lomma", surrogates)):
        attack = make(M.GMI, target_clf, priors, identity_loss="logit", p_reg=p_reg, surrogates=surr)
        attack._identity_objective(attack._target_view(), images, y)
        weights[name] = attack.reg_weight_
    x = images.clone().requires_grad_(True)
    own = _grad_norm(_logit_losses([target_clf.model], x, y)[0], x)
    x = images.clone().requires_grad_(True)
    mean = _grad_norm(torch.stack(_logit_losses([target_clf.model, *surrogates], x, y)).mean(0), x)
    assert 0.05 < float(mean / own) < 1.0
    assert weights["lomma"] / weights["lom"] == pytest.approx(float(mean / own), rel=1e-3)


class _ScaledFeature(nn.Module):
    """The target with its penultimate feature multiplied by ``k`` and its last layer's weights divided by
    ``k``: the same logits, a feature (and p_reg) ``k`` times larger."""

    def __init__(self, target: nn.Module, k: float):
        super().__init__()
        import copy

        self.body = copy.deepcopy(target)
        fc = self.body.fc
        self.body.fc = nn.Identity()
        self.fc = nn.Linear(fc.in_features, fc.out_features)
        with torch.no_grad():
            self.fc.weight.copy_(fc.weight / k)
            self.fc.bias.copy_(fc.bias)
        self.k = k

    def forward(self, x):
        return self.fc(self.body(x) * self.k)


@pytest.mark.parametrize("cls", ATTACKS)
def test_the_default_regulariser_does_not_depend_on_the_feature_scale(cls, target, priors, digits, attack_labels):
    """A ReLU feature 20 times larger (same logits) leaves the default attack unchanged: the calibrated
    weight shrinks by 400. A fixed weight does not (the paper's weight of 1 was set for one feature scale)."""
    big = _ScaledFeature(target, 20.0).eval()
    with torch.no_grad():
        x = torch.from_numpy(digits.private_test.x[:8])
        torch.testing.assert_close(big(x), target(x), rtol=1e-4, atol=1e-4)
    recs, weights = {}, {}
    for name, model in (("small", target), ("big", big)):
        for fixed in (None, 1.0):
            clf = wrap(model)
            p = M.estimate_p_reg(clf, digits.public.x)
            attack = make(cls, clf, priors, identity_loss="logit", p_reg=p, reg_weight=fixed, iterations=40)
            recs[name, fixed] = attack.infer(None, attack_labels)
            weights[name, fixed] = attack.reg_weight_
    assert weights["big", None] == pytest.approx(weights["small", None] / 400, rel=1e-2)
    # the same up to float rounding, which 40 steps of PLG-MI's search can grow to a few hundredths in a pixel
    same = np.abs(recs["big", None] - recs["small", None])
    assert same.mean() < 1e-3 and same.max() < 0.05, (same.mean(), same.max())
    assert np.abs(recs["big", 1.0] - recs["small", 1.0]).mean() > 10 * max(same.mean(), 1e-3)


def test_a_fixed_reg_weight_is_the_papers_objective(target_clf, priors, surrogates, p_reg):
    """reg_weight=1: the paper's mean identity loss + ||p - p_reg||^2, nothing calibrated."""
    from mi_art.features import logits_and_features

    attack = make(M.GMI, target_clf, priors, identity_loss="logit", p_reg=p_reg, reg_weight=1.0,
                  surrogates=surrogates)
    images, y = torch.rand(3, *IMAGE_SHAPE), torch.tensor([0, 1, 2])
    got = attack._identity_objective(attack._target_view(), images, y)
    with torch.no_grad():
        _, feats = logits_and_features(target_clf.model, images)
        expected = (torch.stack(_logit_losses((target_clf.model, *surrogates), images, y)).mean(0)
                    + ((feats - p_reg) ** 2).mean(1))
    torch.testing.assert_close(got.detach(), expected, rtol=1e-5, atol=1e-5)
    assert attack.reg_weight_ == 1.0


class _NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(int(np.prod(IMAGE_SHAPE)), NUM_CLASSES)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


@pytest.mark.parametrize("cls", ATTACKS)
def test_a_model_returning_nan_stops_the_attack_with_a_clear_error(cls, target_clf, priors):
    from mi_art.validation import NonFiniteError

    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        make(cls, target_clf, priors, surrogates=[_NaNModel()]).infer(None, np.arange(2))


# --------------------------------------------------------------------------- every model regularised (surrogate_p_reg)


@pytest.fixture(scope="module")
def surrogate_p_reg(surrogates, digits):
    return [M.estimate_p_reg(s, digits.public.x) for s in surrogates]


def test_surrogate_p_reg_gives_every_model_its_own_regulariser_and_weight(target_clf, priors, surrogates, p_reg,
                                                                           surrogate_p_reg):
    """With surrogate_p_reg the objective is the mean over the models of each one's logit loss plus its own
    ||p_m - p_reg_m||^2, each weight set so that the regulariser's gradient is REG_GRADIENT_RATIO times that
    model's own identity gradient."""
    from mi_art.attacks.base import REG_GRADIENT_RATIO
    from mi_art.features import logits_and_features

    models = (target_clf.model, *surrogates)
    refs = (p_reg, *surrogate_p_reg)
    attack = make(M.GMI, target_clf, priors, identity_loss="logit", p_reg=p_reg, surrogates=surrogates,
                  surrogate_p_reg=surrogate_p_reg)
    torch.manual_seed(0)
    images, y = torch.rand(6, *IMAGE_SHAPE), torch.arange(6) % NUM_CLASSES
    got = attack._identity_objective(attack._target_view(), images, y)

    weights, terms = [], []
    for model, ref in zip(models, refs):
        x = images.clone().requires_grad_(True)
        g_id = _grad_norm(_logit_losses([model], x, y)[0], x)
        x = images.clone().requires_grad_(True)
        g_reg = _grad_norm(((logits_and_features(model, x)[1] - ref) ** 2).mean(1), x)
        weights.append(float(REG_GRADIENT_RATIO * g_id / g_reg))
        with torch.no_grad():
            logits, feats = logits_and_features(model, images)
            terms.append(-logits.gather(1, y[:, None])[:, 0] + weights[-1] * ((feats - ref) ** 2).mean(1))
    assert attack.reg_weights_ == pytest.approx(weights, rel=1e-4)
    assert attack.reg_weight_ == pytest.approx(weights[0], rel=1e-4)
    torch.testing.assert_close(got.detach(), torch.stack(terms).mean(0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls", ATTACKS)
def test_surrogate_p_reg_holds_the_surrogates_features_near_their_public_mean(cls, target_clf, priors, surrogates,
                                                                            p_reg, surrogate_p_reg, attack_labels):
    """Under the logit loss a surrogate's feature, left unregularised (the paper's form), grows away from its
    public mean; its own regulariser holds it closer (same seed and weight, same everything else)."""
    from mi_art.features import extract_features

    dist = {}
    # every model's term is averaged over the 3 models: weight 15 there is the target's weight 5 of the paper's
    # form, plus the surrogates' own regularisers
    for name, extra in (("target only", dict(reg_weight=5.0)),
                        ("every model", dict(reg_weight=15.0, surrogate_p_reg=surrogate_p_reg))):
        rec = make(cls, target_clf, priors, identity_loss="logit", p_reg=p_reg, surrogates=surrogates,
                   iterations=80, seed=0, **extra).infer(None, attack_labels)
        dist[name] = float(np.mean([((extract_features(s, torch.from_numpy(rec)) - ref) ** 2).mean().item()
                                    for s, ref in zip(surrogates, surrogate_p_reg)]))
    assert dist["every model"] < 0.9 * dist["target only"], dist


@pytest.mark.parametrize("value,match", [
    ("no p_reg", "give p_reg too"),
    ("one", "surrogate_p_reg has 1 entries for 2 surrogates"),
    ("short", r"surrogate_p_reg\[0\] has 3 values but surrogates\[0\]'s penultimate feature has 64"),
    ("nan", r"surrogate_p_reg\[1\] contains NaN"),
    ("not a list", "surrogate_p_reg must be a list"),
])
def test_surrogate_p_reg_is_validated(value, match, target_clf, priors, surrogates, p_reg, surrogate_p_reg):
    refs = {"no p_reg": surrogate_p_reg, "one": surrogate_p_reg[:1], "short": [np.zeros(3), surrogate_p_reg[1]],
            "nan": [surrogate_p_reg[0], surrogate_p_reg[1] * float("nan")], "not a list": 3.0}[value]
    with pytest.raises(ValueError, match=match):
        make(M.GMI, target_clf, priors, identity_loss="logit", p_reg=None if value == "no p_reg" else p_reg,
             surrogates=surrogates, surrogate_p_reg=refs)


def test_surrogates_none_is_a_clear_error(target_clf, priors):
    with pytest.raises(ValueError, match="surrogates must be a list of models, got NoneType"):
        make(M.GMI, target_clf, priors, surrogates=None)


def test_a_seed_beyond_torchs_range_is_refused_by_name(target_clf, gmi_prior):
    from mi_art.evaluations.experiment import ExperimentConfig

    with pytest.raises(ValueError, match=r"seed must be an integer .*2\*\*63 - 1"):
        ExperimentConfig(seed=2 ** 70).validate()
    with pytest.raises(ValueError, match="seed"):
        M.GMI(target_clf, *gmi_prior, seed=2 ** 70)
    M.GMI(target_clf, *gmi_prior, seed=2 ** 63 - 1, iterations=1, n_reconstructions=1,
          verbose=False).infer(None, np.array([0]))  # the largest accepted seed works


def test_plgmi_attacks_with_the_margin_loss_by_default(target_clf, plgmi_prior):
    attack = M.PLGMI(target_clf, *plgmi_prior, iterations=1, verbose=False)
    assert attack.identity_loss == "margin" and attack.learning_rate == 0.1


def test_vmi_kl_weight_is_validated(target_clf, gmi_prior):
    with pytest.raises(ValueError, match="kl_weight"):
        M.VMI(target_clf, gmi_prior[0], kl_weight=-1.0)
    with pytest.raises(ValueError, match="samples"):
        M.VMI(target_clf, gmi_prior[0], samples=0)


@pytest.mark.parametrize("cls", [M.VMI, M.PLGMI])
def test_baseline_reconstructions_are_recognised_by_the_judge(cls, target_clf, gmi_prior, plgmi_priors, eval_model,
                                                            attack_labels):
    """Each attack with its own identity loss (VMI: cross-entropy; PLG-MI: max-margin), no LOMMA."""
    prior = gmi_prior if cls is M.VMI else plgmi_priors[0.2]
    # VMI's Adam at its 0.005 moves q about a quarter as far a step as GMI's rate: 200 iterations (1.00;
    # 0.75 after 100)
    attack = cls(target_clf, *prior, iterations=200 if cls is M.VMI else 100, n_reconstructions=4, verbose=False,
                 seed=0)
    rec = attack.infer(None, attack_labels)
    acc = attack_accuracy(eval_model, rec, attack.labels_, rec_index=attack.reconstruction_index_, top_k=(1,))
    assert acc["acc@1"] >= 0.8, acc  # chance 0.2


def test_plgmi_project_codes_is_validated(target_clf, plgmi_prior):
    with pytest.raises(ValueError, match="project_codes must be True or False"):
        M.PLGMI(target_clf, *plgmi_prior, project_codes="yes")


def test_plgmi_refuses_an_unconditional_generator(target_clf, gmi_prior):
    with pytest.raises(ValueError, match="class-conditional"):
        M.PLGMI(target_clf, gmi_prior[0])


def test_plgmi_generator_must_have_the_targets_classes(target_clf):
    gen = M.ConditionalGenerator(8, 1, NUM_CLASSES + 2, width=8)
    with pytest.raises(ValueError, match="classes"):
        M.PLGMI(target_clf, gen, iterations=1, verbose=False).infer(None, np.array([0]))
