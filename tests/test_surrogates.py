"""Surrogates (:mod:`mi_art.surrogates`): distilled from the target (with a generator, through an ART estimator, keeping
the best student), and never left out, nor used weak, without a warning."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mi_art as M
from conftest import NUM_CLASSES, assert_matches_golden, wrap
from mi_art.evaluations import experiment as E
from mi_art.evaluations.cache import ArtifactCache

TINY = dict(dataset="digits", target_epochs=2, judge_epochs=2, gmi_steps=2, kedmi_steps=1, gan_width=8,
            iterations=2, n_reconstructions=2, surrogate_steps=1, augment="none")


def _with_agreements(monkeypatch, agreements):
    """Make Workbench.surrogate_report report these held-out public agreements, one per surrogate."""
    real = E.Workbench.surrogate_report

    def report(self, target, surrogates):
        rows = real(self, target, surrogates)
        for row, agreement in zip(rows, agreements):
            row["agreement_public_heldout"] = agreement
        return rows

    monkeypatch.setattr(E.Workbench, "surrogate_report", report)


def _spy_surrogates(monkeypatch):
    seen = []
    real_init = M.GMI.__init__

    def spy(self, *args, **kwargs):
        seen.append(list(kwargs["surrogates"]))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(M.GMI, "__init__", spy)
    return seen


def test_a_surrogate_below_min_agreement_is_left_out_with_a_warning(digits, tmp_path, monkeypatch):
    config = E.ExperimentConfig(attack="gmi", variant="ma", surrogate_archs=("cnn-small", "cnn"),
                                min_surrogate_agreement=0.5, **TINY)
    bench = E.Workbench(config, ArtifactCache(tmp_path), data=digits)
    _with_agreements(monkeypatch, [0.9, 0.3])
    seen = _spy_surrogates(monkeypatch)
    with pytest.warns(UserWarning, match=r"surrogate 1 \(cnn\) agrees with the target on 0.30 .* left out"):
        result = E.run_attack(bench)
    kept = bench.surrogates(bench.target())[0].state_dict()  # the first one, cnn-small
    assert len(seen) == 1 and len(seen[0]) == 1
    assert seen[0][0].state_dict().keys() == kept.keys()
    assert all(torch.equal(v, kept[k]) for k, v in seen[0][0].state_dict().items())
    assert [s["used"] for s in result["surrogates"]] == [True, False]
    assert any("surrogate 1 (cnn)" in w and "left out" in w for w in result["warnings"])

    _with_agreements(monkeypatch, [0.2, 0.3])
    with pytest.warns(UserWarning, match="model augmentation ran on the target alone"):
        result = E.run_attack(bench)
    assert seen[-1] == [] and [s["used"] for s in result["surrogates"]] == [False, False]


def test_a_weak_surrogate_is_used_with_a_warning_and_a_good_one_without(digits, tmp_path, monkeypatch):
    config = E.ExperimentConfig(attack="gmi", variant="ma", surrogate_archs=("cnn-small",), **TINY)
    bench = E.Workbench(config, ArtifactCache(tmp_path), data=digits)
    seen = _spy_surrogates(monkeypatch)
    _with_agreements(monkeypatch, [E.WEAK_SURROGATE_AGREEMENT - 0.05])
    with pytest.warns(UserWarning, match=r"weak surrogate: surrogate 0 \(cnn-small\) agrees with the target on 0.45"):
        result = E.run_attack(bench)
    assert len(seen[-1]) == 1 and result["surrogates"][0]["used"]
    assert any(w.startswith("weak surrogate") for w in result["warnings"])

    _with_agreements(monkeypatch, [E.WEAK_SURROGATE_AGREEMENT + 0.05])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        result = E.run_attack(bench)
    assert len(seen[-1]) == 1 and not any("surrogate" in w for w in result["warnings"])


def test_min_surrogate_agreement_is_validated():
    with pytest.raises(ValueError, match="min_surrogate_agreement"):
        E.ExperimentConfig(min_surrogate_agreement=1.5).validate()
    with pytest.raises(ValueError, match="judges"):
        E.ExperimentConfig(judges=0).validate()


def test_distilled_surrogates_agree_with_target_on_private_data(surrogates, target, digits):
    x = digits.private_test.x
    for s in surrogates:
        assert not s.training
        agree = M.top1_agreement(target, s, x)
        assert agree >= 0.85, f"{type(s).__name__} agrees with the target on {agree:.2f} of private test images"


def test_top1_agreement_counts_equal_predictions(target, digits):
    x = digits.private_test.x[:50]
    assert M.top1_agreement(target, target, x) == 1.0
    shifted = nn.Sequential(target, nn.Linear(NUM_CLASSES, NUM_CLASSES))
    with torch.no_grad():
        shifted[1].weight.copy_(torch.eye(NUM_CLASSES).roll(1, 0))
        shifted[1].bias.zero_()
        pred = target(torch.from_numpy(x)).argmax(1)
    # the shifted model predicts (c + 1) mod K: it never agrees
    assert M.top1_agreement(target, shifted, x) == 0.0
    assert (pred == pred).all()


def test_distillation_keeps_the_best_student_on_held_out_images(target, digits):
    """Early stopping: the returned student is the one with the lowest held-out KL seen, so a run that
    diverges late (huge learning rate after a good start) still returns a good student."""
    x, val = digits.public.x[:400], digits.public.x[400:600]
    torch.manual_seed(0)
    student = M.distill_surrogate(target, M.make_classifier("cnn-small", 1, NUM_CLASSES, 8), x, val_x=val,
                                  steps=400, eval_every=50, patience=100, seed=0)
    from mi_art.surrogates import distillation_loss

    with torch.no_grad():
        kl = distillation_loss(student(torch.from_numpy(val)), target(torch.from_numpy(val))).item()
    fresh = M.make_classifier("cnn-small", 1, NUM_CLASSES, 8).eval()
    with torch.no_grad():
        kl_fresh = distillation_loss(fresh(torch.from_numpy(val)), target(torch.from_numpy(val))).item()
    assert kl < 0.5 * kl_fresh


def test_distillation_runs_every_step_unless_patience_is_given(target, digits):
    """The held-out KL of a few public images can stall while the student still learns the target on the
    private faces (LFW): by default no early stop; ``patience`` restores it."""
    class Stalled(nn.Module):  # its outputs never change, so the held-out KL never improves
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, NUM_CLASSES)
            self.steps = 0

        def forward(self, x):
            self.steps += int(self.training)
            return self.fc(x.flatten(1)) * 0

    x = digits.public.x[:64]
    runs = {}
    for patience in (None, 2):
        student = Stalled()
        M.distill_surrogate(target, student, x, steps=60, eval_every=10, patience=patience, seed=0)
        runs[patience] = student.steps
    assert runs == {None: 60, 2: 30}, runs


def test_distillation_with_a_generator_learns_the_target_on_prior_samples(target, digits, gmi_prior):
    """With ``generator=``, the student is trained on prior samples too: it agrees with the target on
    fresh prior samples (the images the attack explores) far better than a student of public images alone."""
    gen = gmi_prior[0]
    torch.manual_seed(123)
    with torch.no_grad():
        samples = gen(torch.randn(500, gen.latent_dim).clamp(-1, 1)).numpy()
    x = digits.public.x[:100]
    agree = {}
    for name, g in (("public", None), ("public+prior", gen)):
        torch.manual_seed(0)
        student = M.distill_surrogate(target, M.make_classifier("mlp", 1, NUM_CLASSES, 8), x, generator=g,
                                      steps=300, seed=0)
        agree[name] = M.top1_agreement(target, student, samples)
    assert agree["public+prior"] > agree["public"] + 0.05, agree  # measured 0.63 -> 0.72


def test_distill_surrogate_accepts_an_art_estimator(target, digits):
    student = M.distill_surrogate(wrap(target), M.make_classifier("cnn-small", 1, NUM_CLASSES, 8),
                                  digits.public.x[:64], steps=2)
    assert isinstance(student, nn.Module) and not student.training
    with pytest.raises(ValueError, match="temperature"):
        M.distill_surrogate(target, M.make_classifier("mlp", 1, NUM_CLASSES, 8), digits.public.x[:8],
                            temperature=0)


class _PinnedGenerator(nn.Module):
    """A tiny fixed generator (latent 4 -> 1x8x8 in [0, 1]) for the pinned distillations."""

    latent_dim = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.fc = nn.Linear(4, 64)

    def forward(self, z):
        return torch.sigmoid(self.fc(z)).view(-1, 1, 8, 8)


class _PinnedApi:
    """A 5-class API around a fixed module: its probabilities, then (from call ``fail_from``) a 503 for good."""

    def __init__(self, model, fail_from=None) -> None:
        self.model, self.fail_from, self.calls = model, fail_from, 0

    def __call__(self, x):
        self.calls += 1
        if self.fail_from is not None and self.calls >= self.fail_from:
            raise ConnectionError("503 Service Unavailable")
        with torch.no_grad():
            return torch.softmax(self.model(torch.from_numpy(np.asarray(x, np.float32))), 1).numpy()


class _Scaled(nn.Module):
    """Its input times ``factor``: a confident teacher of an untrained network."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def _pinned_distillations():
    """Six distillations of fixed seeds on random 8x8 images, one per path of ``distill_surrogate`` (a module's
    KL with a generator, a split of public_x and a halved learning rate; the best student kept, on val_x at another
    temperature; an oracle's scores until its budget runs out; early stopping; label-only answers; an API that
    fails for good), each summarised by its student's weights, its scores on val, its warnings (and the file they
    are attributed to: the caller's) and the oracle's counts."""
    from art.estimators.classification import BlackBoxClassifier

    def teacher():  # confident: its logits scaled up
        torch.manual_seed(0)
        return nn.Sequential(M.make_classifier("cnn", 1, 5, 8), _Scaled(30.0)).eval()

    def student():
        torch.manual_seed(1)
        return M.make_classifier("mlp", 1, 5, 8)

    def oracle(access="black-box", fail_from=None, max_queries=None):
        api = BlackBoxClassifier(_PinnedApi(teacher(), fail_from), (1, 8, 8), 5, clip_values=(0.0, 1.0))
        return M.PredictOracle(api, access=access, max_queries=max_queries, retries=0, backoff=0)

    rng = np.random.default_rng(0)
    public, val = rng.random((40, 1, 8, 8), dtype=np.float32), rng.random((12, 1, 8, 8), dtype=np.float32)
    fast = dict(steps=12, batch_size=8, eval_every=3, seed=0)
    cases = {
        "module, generator, split, lr_step": (teacher(), dict(generator=_PinnedGenerator(), lr_step=4, **fast)),
        "module, val_x, best kept, temperature": (teacher(), dict(val_x=val, patience=2, temperature=2.0, lr=1.0,
                                                                 augment="none", **fast)),
        "black-box, budget": (oracle(max_queries=60), dict(val_x=val, temperature=3.0, **fast)),
        "black-box, patience": (oracle(), dict(val_x=val, eval_every=1, patience=2, lr=5.0, steps=12, batch_size=8,
                                              seed=0)),
        "label-only, generator": (oracle("label-only"), dict(generator=_PinnedGenerator(), lr_step=5, **fast)),
        "black-box, API down": (oracle(fail_from=8), dict(val_x=val, eval_every=1, steps=12, batch_size=8, lr=5.0,
                                                          temperature=3.0, seed=0)),
    }
    out = {}
    for name, (target, kwargs) in cases.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = M.distill_surrogate(target, student(), public, **kwargs)
        with torch.no_grad():
            scores = model(torch.from_numpy(val))
        out[name] = {
            "weights": {k: [float(v.sum()), float(v.abs().sum())] for k, v in model.state_dict().items()},
            "val_scores": [float(scores.sum()), float(scores.abs().sum())],
            "training": model.training,
            "warnings": [f"{w.category.__name__} at {Path(w.filename).name}: {w.message}" for w in caught],
            "oracle": ([target.calls, target.queries, target.failed_calls]
                       if isinstance(target, M.PredictOracle) else None)}
    return out


def test_distillation_is_pinned():
    """distill_surrogate's students on six fixed distillations (every path: module or oracle, generator, split,
    lr_step, the best student kept, patience, budget, API failure) and their warnings stay what they were when it
    was one function."""
    assert_matches_golden(_pinned_distillations(), "distill_surrogate.json")
