"""Training helpers: targets, priors, distilled surrogates, p_reg, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mi_art as M
from conftest import NUM_CLASSES, wrap


def accuracy(model, x, y):
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def fc_inputs(model, x):
    """Penultimate features by a forward hook on ``model.fc``, eval mode (independent of mi_art.features)."""
    store = []
    handle = model.fc.register_forward_hook(lambda m, inp, out: store.append(inp[0].detach().clone()))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.from_numpy(x))
    finally:
        handle.remove()
        model.train(was_training)
    return store[0]


# --------------------------------------------------------------------------- classifiers


def test_target_reaches_high_test_accuracy(target, digits):
    assert not target.training  # returned in eval mode
    assert accuracy(target, digits.private_test.x, digits.private_test.y) >= 0.9


def test_eval_model_is_an_accurate_judge(eval_model, digits):
    assert accuracy(eval_model, digits.private_test.x, digits.private_test.y) >= 0.9


def test_train_classifier_is_reproducible_with_a_seed(digits):
    x, y = digits.private_train.x[:64], digits.private_train.y[:64]
    models = []
    for seed in (3, 3, 4):
        torch.manual_seed(0)  # same initial weights; the training seed drives batches and augmentation
        models.append(M.train_classifier(M.make_classifier("cnn-small", 1, NUM_CLASSES, 8), x, y, epochs=2,
                                         batch_size=16, seed=seed))
    a, b, c = (m.state_dict() for m in models)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert not torch.allclose(a["fc.weight"], c["fc.weight"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(epochs=0), "epochs must be an integer in \\[1, inf\\)"),
    (dict(lr=0.0), "lr must be in \\(0, inf\\)"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(augment="rotate"), "augment"),
])
def test_train_classifier_rejects_bad_settings(digits, kwargs, match):
    x, y = digits.private_train.x[:16], digits.private_train.y[:16]
    with pytest.raises(ValueError, match=match):
        M.train_classifier(M.make_classifier("mlp", 1, NUM_CLASSES, 8), x, y, **kwargs)


def test_train_classifier_rejects_labels_out_of_range(digits):
    x = digits.private_train.x[:16]
    y = np.full(16, NUM_CLASSES)  # the model has 5 outputs: label 5 does not exist
    with pytest.raises(ValueError, match="out of range"):
        M.train_classifier(M.make_classifier("mlp", 1, NUM_CLASSES, 8), x, y, epochs=1)


# --------------------------------------------------------------------------- priors


def test_gmi_prior_parts(gmi_prior):
    gen, critic = gmi_prior
    assert isinstance(gen, M.Generator) and isinstance(critic, M.Critic)
    assert not gen.training and not critic.training
    with torch.no_grad():
        images = gen(torch.rand(6, gen.latent_dim) * 2 - 1)
    assert images.shape == (6, 1, 8, 8)


def test_gmi_critic_learns_to_prefer_real_digits_to_noise(gmi_prior, digits):
    """The trained critic's real-minus-noise score gap (measured ~2.0) against an untrained one's (~0)."""
    _, critic = gmi_prior
    torch.manual_seed(0)
    untrained = M.Critic(8, 1, width=16).eval()
    real, noise = torch.from_numpy(digits.public.x[:200]), torch.rand(200, 1, 8, 8)
    with torch.no_grad():
        gap = (critic(real).mean() - critic(noise).mean()).item()
        gap0 = (untrained(real).mean() - untrained(noise).mean()).item()
    assert gap > 1.0 and gap > gap0 + 1.0, (gap, gap0)


def test_kedmi_prior_learns_the_target_labels(kedmi_prior, target, digits):
    gen, disc = kedmi_prior
    assert isinstance(disc, M.KEDMIDiscriminator) and disc.num_classes == NUM_CLASSES
    x = torch.from_numpy(digits.public.x[:256])
    with torch.no_grad():
        t_pred = target(x).argmax(1)
        agree = (disc(x).argmax(1) == t_pred).float().mean().item()
    majority = torch.bincount(t_pred, minlength=NUM_CLASSES).max().item() / len(t_pred)
    assert agree > majority + 0.2, (agree, majority)  # the K logits follow the target, not its most common class


def _public_judge(digits):
    """A classifier of the public digits 5-9 (labels 0-4 here), independent of every prior."""
    torch.manual_seed(5)
    model = M.make_classifier("cnn", 1, NUM_CLASSES, 8)
    return M.train_classifier(model, digits.public.x, digits.public.y, epochs=6, augment="none", seed=5)


def _fid_on(judge, a, b):
    from mi_art.evaluations.metrics import fid_eval_features

    return fid_eval_features(judge, a, b)


def test_kedmi_prior_from_scratch_generates_digits_not_noise(kedmi_prior, digits):
    """On 900 public 8x8 digits, 300 generator steps from scratch give samples that a public-data
    classifier's features place far closer to real digits than noise (measured: FID 16 against 64)."""
    gen, _ = kedmi_prior
    judge = _public_judge(digits)
    torch.manual_seed(0)
    with torch.no_grad():
        samples = gen(torch.randn(400, gen.latent_dim).clamp(-1, 1)).numpy()
    noise = np.random.default_rng(0).random((400, 1, 8, 8), dtype=np.float32)
    fid_samples, fid_noise = _fid_on(judge, samples, digits.public.x), _fid_on(judge, noise, digits.public.x)
    assert fid_samples < 0.4 * fid_noise, (fid_samples, fid_noise)


def test_kedmi_prior_warm_start_copies_the_generator(gmi_prior, target, digits):
    gen, _ = gmi_prior
    with pytest.raises(ValueError, match="init_generator"):
        M.train_kedmi_prior(target, digits.public.x[:64], steps=1, width=8, init_generator=gen)
    warm, _ = M.train_kedmi_prior(target, digits.public.x[:64], steps=1, n_critic=1, width=16, lr=1e-12,
                                  init_generator=gen, seed=0)
    trained = dict(gen.named_parameters())
    for name, p in warm.named_parameters():  # a lr of 1e-12 changes no weight (BatchNorm statistics do move)
        torch.testing.assert_close(p, trained[name], atol=1e-6, rtol=1e-6)


def test_kedmi_generator_is_updated_once_per_n_critic_discriminator_steps(target, digits, monkeypatch):
    calls = {"g": 0, "d": 0}
    real_step = torch.optim.Adam.step

    def counting_step(self, *args, **kwargs):
        first = self.param_groups[0]["params"][0]  # G starts with its latent projection, D with a convolution
        calls["g" if first.dim() == 2 else "d"] += 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    M.train_kedmi_prior(target, digits.public.x[:64], steps=3, n_critic=4, width=8, seed=0)
    assert calls == {"g": 3, "d": 12}


def test_prior_training_rejects_bad_steps(digits, target):
    with pytest.raises(ValueError, match="steps"):
        M.train_gmi_prior(digits.public.x[:8], steps=0)
    with pytest.raises(ValueError, match="steps"):
        M.train_kedmi_prior(target, digits.public.x[:8], steps=0)


# --------------------------------------------------------------------------- surrogates and p_reg


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


def test_p_reg_is_the_mean_of_public_features(p_reg, target, digits):
    feats = fc_inputs(target, digits.public.x)
    assert isinstance(p_reg, torch.Tensor) and p_reg.shape == (target.fc.in_features,)
    torch.testing.assert_close(p_reg, feats.mean(0), rtol=1e-5, atol=1e-6)


def test_p_reg_uses_eval_mode_and_restores_training_mode(target, digits):
    torch.manual_seed(0)
    model = M.make_classifier("cnn", 1, NUM_CLASSES, 8)  # BatchNorm: train and eval outputs differ
    model.load_state_dict(target.state_dict())
    model.train()
    x = digits.public.x[:300]
    p = M.estimate_p_reg(model, x, batch_size=64)
    assert model.training
    torch.testing.assert_close(p, fc_inputs(model, x).mean(0), rtol=1e-5, atol=1e-6)


def test_p_reg_accepts_an_art_estimator_and_subsamples(target, digits):
    x = digits.public.x
    torch.testing.assert_close(M.estimate_p_reg(wrap(target), x), M.estimate_p_reg(target, x))
    sub = M.estimate_p_reg(target, x, n=50, seed=1)
    assert sub.shape == (target.fc.in_features,)
    assert not torch.allclose(sub, M.estimate_p_reg(target, x))
    # The subsample is a set of 50 public images: its mean is one of the 50-image means.
    feats = fc_inputs(target, x)
    idx = np.random.default_rng(1).choice(len(x), 50, replace=False)
    torch.testing.assert_close(sub, feats[idx].mean(0), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path, target):
    path = M.save_checkpoint(target, tmp_path / "sub" / "target.pt", arch="cnn", epochs=8)
    assert path.is_file()
    assert not list(path.parent.glob("*.tmp"))  # the temporary file was renamed away
    fresh = M.make_classifier("cnn", 1, NUM_CLASSES, 8).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(fresh(x), target(x))
    meta = M.load_checkpoint(fresh, path)
    assert meta == {"arch": "cnn", "epochs": 8}
    for key, value in target.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), target(x))


def test_checkpoint_strips_opacus_module_prefix(tmp_path, target):
    path = tmp_path / "dp.pt"
    state = {f"_module.{k}": v.clone() for k, v in target.state_dict().items()}
    torch.save({"state_dict": state, "meta": {"epsilon": 3.0}}, path)
    fresh = M.make_classifier("cnn", 1, NUM_CLASSES, 8)
    assert M.load_checkpoint(fresh, path) == {"epsilon": 3.0}
    torch.testing.assert_close(fresh.fc.weight, target.fc.weight)


def test_checkpoint_accepts_a_bare_state_dict(tmp_path, target):
    path = tmp_path / "bare.pt"
    torch.save(target.state_dict(), path)
    fresh = M.make_classifier("cnn", 1, NUM_CLASSES, 8)
    assert M.load_checkpoint(fresh, path) == {}
    torch.testing.assert_close(fresh.fc.bias, target.fc.bias)


def test_checkpoint_errors(tmp_path, target):
    with pytest.raises(ValueError, match="does not exist"):
        M.load_checkpoint(target, tmp_path / "missing.pt")
    path = M.save_checkpoint(target, tmp_path / "t.pt")
    with pytest.raises(RuntimeError):  # wrong architecture: load_state_dict is strict
        M.load_checkpoint(M.make_classifier("mlp", 1, NUM_CLASSES, 8), path)


def test_checkpoint_refuses_pickled_objects(tmp_path):
    # weights_only=True: an arbitrary pickled object is never executed/loaded.
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "meta": {"obj": _Unsafe()}}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        M.load_checkpoint(nn.Linear(1, 1), path)


class _Unsafe:
    pass


def test_p_reg_through_an_art_estimator_leaves_the_model_in_eval_mode(target, digits):
    assert not target.training
    M.estimate_p_reg(wrap(target), digits.public.x[:50])
    assert not any(m.training for m in target.modules())


def test_a_loss_that_becomes_nan_stops_training_with_a_clear_error(digits):
    from mi_art.validation import NonFiniteError

    x, y = digits.private_train.x[:32], digits.private_train.y[:32]
    with pytest.raises(NonFiniteError, match="training loss of the classifier"):
        M.train_classifier(M.make_classifier("mlp", 1, NUM_CLASSES, 8), x, y, epochs=1,
                           loss_fn=lambda model, xb, yb: model(xb).sum() * float("nan"))


def test_finiteness_is_read_at_the_first_every_check_every_and_the_last_step_only():
    """A loop's loss is read (a host-device synchronisation on an accelerator) at step 0, every CHECK_EVERY
    steps and the last: a NaN at another step passes unread, and is caught at the next read."""
    from mi_art.validation import CHECK_EVERY, NonFiniteError, check_finite_at

    nan = torch.tensor(float("nan"))
    steps = 3 * CHECK_EVERY
    for step in (0, CHECK_EVERY, 2 * CHECK_EVERY, steps - 1):
        with pytest.raises(NonFiniteError, match="the test loss"):
            check_finite_at(nan, "the test loss", step, steps)
    for step in (1, CHECK_EVERY - 1, CHECK_EVERY + 1, steps - 2):
        assert check_finite_at(nan, "the test loss", step, steps) is nan


@pytest.mark.parametrize("which", ["gmi", "kedmi"])
def test_a_prior_whose_loss_becomes_nan_stops_with_a_clear_error(digits, which, monkeypatch):
    """The GAN priors read their losses through check_finite_at: a critic that answers NaN stops the
    training at its first step, with the loss named."""
    from mi_art.priors import Critic, KEDMIDiscriminator
    from mi_art.validation import NonFiniteError

    public = digits.public.x[:64]
    if which == "gmi":
        original = Critic.forward
        monkeypatch.setattr(Critic, "forward", lambda self, x: original(self, x) * float("nan"))
        with pytest.raises(NonFiniteError, match="WGAN-GP critic's loss"):
            M.train_gmi_prior(public, steps=3, batch_size=16)
    else:
        original = KEDMIDiscriminator.forward
        monkeypatch.setattr(KEDMIDiscriminator, "forward", lambda self, x, return_features=False: (
            tuple(t * float("nan") for t in original(self, x, True)) if return_features
            else original(self, x) * float("nan")))
        target = M.make_classifier("mlp", 1, NUM_CLASSES, 8).eval()
        with pytest.raises(NonFiniteError, match="KEDMI discriminator's loss"):
            M.train_kedmi_prior(target, public, steps=3, batch_size=16)


def test_short_training_is_judged_as_its_weights_are_batch_norm_re_estimated(digits):
    """After one epoch a resnet10's BatchNorm running averages still hold the statistics of its first
    weights: in eval mode it scored 0.20 on digits against 0.85 in train mode. Re-estimated after training,
    the eval-mode accuracy is close to the train-mode one."""
    import copy

    x, y, xt, yt = digits.private_train.x, digits.private_train.y, digits.private_test.x, digits.private_test.y

    def accuracy(model: nn.Module, train_mode: bool = False) -> float:
        model = copy.deepcopy(model).train(train_mode)
        with torch.no_grad():
            return float((model(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean())

    scores = {}
    for reestimate in (False, True):
        torch.manual_seed(0)
        model = M.train_classifier(M.make_classifier("resnet10", 1, NUM_CLASSES, 8), x, y, epochs=1,
                                   reestimate_batch_norm=reestimate, seed=0)
        scores[reestimate] = (accuracy(model), accuracy(model, train_mode=True))
    (stale, stale_train), (fresh, _) = scores[False], scores[True]
    assert stale < stale_train - 0.3, scores  # the problem, as measured
    assert fresh > stale_train - 0.05 and fresh > stale + 0.3, scores
    assert not model.training


def test_reestimate_batch_norm_statistics_is_the_plain_average_over_the_images():
    from mi_art.training import reestimate_batch_norm_statistics

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    x = torch.rand(10, 1, 8, 8)
    reestimate_batch_norm_statistics(model, x.numpy(), batch_size=5)
    with torch.no_grad():
        h = model[0](x)
    # two batches of five: the mean of the batch means, the mean of the (unbiased) batch variances
    torch.testing.assert_close(model[1].running_mean, h.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    variances = torch.stack([h[i:i + 5].var((0, 2, 3), unbiased=True) for i in (0, 5)]).mean(0)
    torch.testing.assert_close(model[1].running_var, variances, rtol=1e-4, atol=1e-6)
    assert not model.training and model[1].momentum == 0.1
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    assert reestimate_batch_norm_statistics(plain, x.numpy()) is plain  # nothing to do

    # a frozen BatchNorm (TL-DMI's first layers) keeps its statistics, bit for bit
    frozen = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3))
    frozen[1].running_mean.fill_(0.5)
    frozen[1].requires_grad_(False)
    kept = frozen[1].running_var.clone()
    reestimate_batch_norm_statistics(frozen, x.numpy())
    assert (frozen[1].running_mean == 0.5).all() and torch.equal(frozen[1].running_var, kept)
    with torch.no_grad():  # the trained one is re-estimated behind the frozen one in eval mode
        h = frozen[2](frozen[1](frozen[0](x)))
    torch.testing.assert_close(frozen[3].running_mean, h.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reestimate_batch_norm"):
        M.train_classifier(plain, x.numpy(), np.zeros(10, dtype=np.int64), epochs=1, reestimate_batch_norm="yes")


def test_progress_bars_show_images_per_second_and_a_disabled_bar_nothing():
    import io
    import re
    import time

    from tqdm import tqdm

    from mi_art.training import show_progress

    out = io.StringIO()
    bar = tqdm(range(3), file=out, mininterval=0)
    for _ in bar:
        time.sleep(0.01)
        show_progress(bar, 64, loss=torch.tensor(0.123456), step="first")
    assert "loss=0.1235" in out.getvalue() and "step=first" in out.getvalue()
    rate = float(re.findall(r"img_s=(\d+)", out.getvalue())[-1])
    assert 64 <= rate <= 64 / 0.01  # at most one step per 10 ms, 64 images each

    class Unreadable(torch.Tensor):  # reading it would synchronise a device: a disabled bar must not
        def item(self):
            raise AssertionError("a disabled bar read a tensor")

        __float__ = item

        def detach(self):
            return self

    quiet = tqdm(range(2), disable=True)
    for _ in quiet:
        show_progress(quiet, 64, loss=torch.tensor(1.0).as_subclass(Unreadable))  # no output, no read


def _conv_output_dtypes(model: nn.Module) -> set:
    dtypes: set = set()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, inp, out: dtypes.add(out.dtype) if mod.training else None)
    return dtypes


@pytest.mark.parametrize("mixed", [False, True])
def test_mixed_precision_runs_the_training_forward_passes_in_bfloat16_and_keeps_float32_weights(digits, mixed):
    x, y = digits.private_train.x, digits.private_train.y
    model = M.make_classifier("cnn", 1, NUM_CLASSES, 8)
    dtypes = _conv_output_dtypes(model)
    M.train_classifier(model, x, y, epochs=8, mixed_precision=mixed, device="cpu")
    assert dtypes == ({torch.bfloat16} if mixed else {torch.float32})
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(digits.private_test.x)).argmax(1).numpy() == digits.private_test.y).mean()
    assert accuracy > 0.8  # it learns in bfloat16 too (chance 0.2)


def test_mixed_precision_distils_the_student_in_bfloat16_against_a_float32_teacher(digits, target):
    student = M.make_classifier("cnn-small", 1, NUM_CLASSES, 8)
    student_dtypes, teacher_dtypes = _conv_output_dtypes(student), set()
    for m in target.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda mod, inp, out: teacher_dtypes.add(out.dtype))
    M.distill_surrogate(target, student, digits.public.x, steps=100, eval_every=20, mixed_precision=True,
                        device="cpu", seed=0)
    assert student_dtypes == {torch.bfloat16} and teacher_dtypes == {torch.float32}
    assert M.top1_agreement(target, student, digits.private_test.x) > 0.8  # float32: 0.96 (chance about 0.2)


def test_mixed_precision_is_checked_and_keys_its_models_apart():
    from mi_art.evaluations.experiment import ExperimentConfig, Workbench

    with pytest.raises(ValueError, match="mixed_precision"):
        M.train_classifier(M.make_classifier("mlp", 1, 2, 8), np.zeros((4, 1, 8, 8), np.float32), np.array([0, 1, 0, 1]),
                           mixed_precision="yes")
    with pytest.raises(ValueError, match="mixed_precision"):
        ExperimentConfig(mixed_precision=1).validate()
    plain, mixed = Workbench(ExperimentConfig()), Workbench(ExperimentConfig(mixed_precision=True))
    assert "mixed_precision" not in plain.target_key()  # float32 keys as they were: caches stay valid
    for key in ("target_key", "evaluator_key"):
        assert getattr(mixed, key)() == {**getattr(plain, key)(), "mixed_precision": True}
    assert mixed.surrogate_key(0) != plain.surrogate_key(0)
