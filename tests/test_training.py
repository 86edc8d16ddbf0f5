"""Training helpers: targets and judges, p_reg, checkpoints, finiteness checks, batch-norm re-estimation, progress
bars and mixed precision. The priors' training: test_priors.py; the surrogates' distillation: test_surrogates.py."""
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


# --------------------------------------------------------------------------- p_reg


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
    assert "mixed_precision" not in plain.key("target")  # float32 keys as they were: caches stay valid
    for kind in ("target", "evaluator"):
        assert mixed.key(kind) == {**plain.key(kind), "mixed_precision": True}
    assert mixed.key("surrogate", index=0) != plain.key("surrogate", index=0)
