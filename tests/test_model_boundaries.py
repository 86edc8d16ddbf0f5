"""Where images meet a model, and models behind an API as they fail in practice: the range, layout and class
checks of distillation, the oracle, classifier training and agreement; agreement through predict; BREP-MI's
sphere inside the prior's code box; malformed answers, transient errors retried and counted, and a
distillation that outlives its API. Tiny models and synthetic images: each test runs in about a second."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from art.estimators.classification import BlackBoxClassifier
from torch import nn

import mi_art as M
from conftest import wrap
from mi_art.access import MalformedAnswerError, PredictFailedError

K, S = 3, 8
SHAPE = (1, S, S)


def _images(n: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n,) + SHAPE, dtype=np.float32)


def _model(classes: int = K, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return M.make_classifier("mlp", 1, classes, S).eval()


def _softmax_of(model: nn.Module, scale: float = 1.0):
    """What an API around ``model`` answers (its probabilities), for images ``scale`` times the model's."""
    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(np.asarray(x, np.float32) / scale)), 1).numpy()
    return predict


def _api(predict, clip=(0.0, 1.0), shape=SHAPE) -> BlackBoxClassifier:
    return BlackBoxClassifier(predict, shape, K, clip_values=clip)


def _constant(x: np.ndarray) -> np.ndarray:
    return np.tile(np.array([[0.7, 0.2, 0.1]], np.float32), (len(x), 1))


FAST = dict(steps=4, eval_every=2, batch_size=8, seed=0)


# --------------------------------------------------------------------------- range, layout and class checks


@pytest.mark.parametrize("case, match", [
    ("0..255 for a bare module", r"public_x has values from .* to .*, but the target, a bare module, works on "
                                 r"images in \[0, 1\]"),
    ("0..255 for an estimator of clip_values (0, 1)", r"public_x has values in .* outside the target's clip_values"),
    ("0..255 for an oracle of clip_values (0, 1)", r"public_x has values in .* outside the target's clip_values"),
    ("channels-last for a bare module", "public_x looks channels-last"),
    ("val_x in 0..255", r"val_x has values from"),
])
def test_distillation_refuses_images_the_target_cannot_take(case, match):
    x = _images()
    target, public, kwargs = _model(), x * 255, {}
    if "estimator" in case:
        target = wrap(_model(), nb_classes=K)
    elif "oracle" in case:
        target = M.PredictOracle(_api(_constant))
    elif "channels-last" in case:
        public = x.transpose(0, 2, 3, 1)
    elif "val_x" in case:
        public, kwargs = x, dict(val_x=x * 255)
    with pytest.raises(ValueError, match=match):
        M.distill_surrogate(target, _model(), public, **kwargs, **FAST)
    if isinstance(target, M.PredictOracle):
        assert target.queries == 0


@pytest.mark.parametrize("through", ["module", "oracle"])
def test_distillation_refuses_a_student_of_other_classes(through):
    oracle = M.PredictOracle(_api(_constant))
    target = _model() if through == "module" else oracle
    with pytest.raises(ValueError, match="the student returns 5 outputs, but the target has 3 classes"):
        M.distill_surrogate(target, _model(classes=5), _images(), **FAST)
    assert oracle.queries == 0  # refused before asking


def test_the_oracle_checks_images_in_both_spaces():
    oracle = M.PredictOracle(_api(_constant))
    x = _images(4)
    with pytest.raises(ValueError, match=r"images has values from .* but PredictOracle.answers"):
        oracle.answers(torch.from_numpy(x * 255))
    with pytest.raises(ValueError, match="images looks channels-last"):
        oracle.answers(x.transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match=r"images has images of shape \(3, 8, 8\), expected \(1, 8, 8\)"):
        oracle.answers(np.repeat(x, 3, axis=1))
    with pytest.raises(ValueError, match=r"x has values in .* outside the target's clip_values \(0, 1\)"):
        oracle.to_unit(x * 255)
    assert oracle.queries == 0
    last = M.PredictOracle(_api(_constant, clip=(0.0, 255.0), shape=(S, S, 1)))  # channels last, 0..255
    with pytest.raises(ValueError, match=r"x has images of shape \(1, 8, 8\), expected \(8, 8, 1\)"):
        last.to_unit(x * 255)
    with pytest.raises(ValueError, match=r"look like images in \[0, 1\]"):
        last.to_unit(x.transpose(0, 2, 3, 1) / 10)
    assert np.allclose(last.to_unit(x.transpose(0, 2, 3, 1) * 255), x, atol=1e-6)


def test_train_classifier_refuses_0_255_images_and_labels_past_the_models_outputs():
    headless = nn.Sequential(nn.Flatten(), nn.Linear(S * S, K))  # no fc: the outputs are counted by a forward pass
    x, y = _images(12), np.arange(12) % K
    with pytest.raises(ValueError, match=r"x has values from .* but train_classifier works on images in \[0, 1\]"):
        M.train_classifier(headless, x * 255, y, epochs=1, augment="none")
    with pytest.raises(ValueError, match=r"y has labels out of range \[0, 2\] \(the model has 3 outputs\): \[3, 4\]"):
        M.train_classifier(headless, x, np.arange(12) % 5, epochs=1, augment="none")


def test_agreement_refuses_models_of_other_classes():
    with pytest.raises(ValueError, match="model_a has 3 classes and model_b 5"):
        M.top1_agreement(_model(), _model(classes=5), _images())
    oracle = M.PredictOracle(_api(_constant))
    with pytest.raises(ValueError, match="model_a has 5 classes and model_b 3"):
        M.top1_agreement(_model(classes=5), oracle, _images())
    assert oracle.queries == 0


def test_agreement_through_predict_counts_the_oracles_queries():
    """A BlackBoxClassifier and an oracle are asked through predict (the recipe's check of a surrogate against
    the API); ``x`` is in model_a's input space, mapped to model_b's (here an API taking 0..255)."""
    model, x = _model(), _images()
    assert M.top1_agreement(_api(_softmax_of(model)), model, x) == 1.0
    assert M.top1_agreement(model, _api(_softmax_of(model, 255.0), clip=(0.0, 255.0)), x) == 1.0
    oracle = M.PredictOracle(_api(_softmax_of(model)))
    assert M.top1_agreement(oracle, model, x, batch_size=16) == 1.0
    assert oracle.queries == len(x) and oracle.calls == 3


class _Recorder(nn.Module):
    """A tiny generator that records the largest code coordinate it is given."""

    latent_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(self.latent_dim, S * S)
        self.largest = 0.0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, float(z.abs().max()))
        return torch.sigmoid(self.net(z)).view(-1, *SHAPE)


def test_brepmi_sphere_points_stay_in_the_code_box():
    """A target that labels everything as the identity: the sphere grows every step (1.3**40 times over), but
    its points are clamped into the box and the radius stops at the box's diagonal."""
    gen = _Recorder()
    attack = M.BREPMI(_api(_constant), gen, max_iterations=40, patience=100, init_batch=8, seed=0, verbose=False)
    attack.infer(None, np.array([0]))
    assert gen.largest <= 1.5 + 1e-6, gen.largest
    assert attack.radius_.max() == pytest.approx(2 * 1.5 * gen.latent_dim ** 0.5)


# --------------------------------------------------------------------------- models behind an API


class _Answers:
    """An API's predict that answers ``bad`` (a function of the images) and counts its calls."""

    def __init__(self, bad) -> None:
        self.bad, self.calls = bad, 0

    def __call__(self, x):
        self.calls += 1
        return self.bad(x)


@pytest.mark.parametrize("answer, match", [
    (lambda x: np.zeros((len(x), 5)), r"returned an answer of shape \(4, 5\) for 4 images: it must return 4 rows of 3"),
    (lambda x: np.full((len(x), K), "0.5"), r"returned a ndarray of <U3 values \(e.g. np.str_\('0.5'\)\), not numbers"),
    (lambda x: [["cat", 1, 2]] * len(x), r"returned a list of <U\d+ values .*not numbers"),
    (lambda x: np.full((len(x), K), np.nan), r"returned NaN or infinite scores for 4 of 4 images"),
    (lambda x: None, r"returned a NoneType of object values"),
])
def test_a_malformed_answer_gets_one_clear_error_naming_the_apis_predict(answer, match):
    api = _Answers(answer)
    oracle = M.PredictOracle(_api(api), backoff=0)
    with pytest.raises(MalformedAnswerError, match=r"the target's predict \(BlackBoxClassifier around _Answers\) "
                                                   + match) as err:
        oracle.answers(_images(4))
    assert "shape" not in str(err.value) or "shape (4, 5)" in str(err.value)  # NaN is not called a shape problem
    assert api.calls == 1 and oracle.failed_calls == 0 and oracle.queries == 0  # never retried, nothing answered


def test_a_malformed_answer_of_any_art_classifier_is_named_too():
    class Remote:  # an ART-like classifier whose predict is the API itself
        input_shape, nb_classes, clip_values = SHAPE, K, (0.0, 1.0)

        def predict(self, x):
            return np.array([["cat"] * K] * len(x))

    with pytest.raises(MalformedAnswerError, match=r"the target's predict \(Remote\) returned .* not numbers"):
        M.PredictOracle(Remote()).answers(_images(2))


class _Flaky:
    """An API that raises ``error`` on the calls numbered in ``failing`` (from 1) and answers the others."""

    def __init__(self, failing, error=ConnectionError("503 Service Unavailable")) -> None:
        self.failing, self.error, self.calls = failing, error, 0

    def __call__(self, x):
        self.calls += 1
        if self.calls in self.failing:
            raise self.error
        return _constant(x)


def test_transient_errors_are_retried_with_backoff_and_counted(monkeypatch):
    waits = []
    monkeypatch.setattr("mi_art.access.time.sleep", waits.append)
    api = _Flaky({1, 2})
    oracle = M.PredictOracle(_api(api), retries=2, backoff=0.5)
    oracle.answers(_images(4))
    assert waits == [0.5, 1.0] and api.calls == 3
    assert (oracle.calls, oracle.queries, oracle.failed_calls) == (1, 4, 2)

    down = M.PredictOracle(_api(_Flaky(set(range(1, 100)))), retries=2, backoff=0)
    with pytest.raises(PredictFailedError, match=r"failed 3 times in a row for 4 images \(retries=2.*ConnectionError: "
                                                 r"503") as err:
        down.answers(_images(4))
    assert isinstance(err.value.__cause__, ConnectionError)
    assert (down.calls, down.queries, down.failed_calls) == (0, 0, 3)

    broken = M.PredictOracle(_api(_Flaky({1}, KeyError("a bug, not an outage"))), backoff=0)
    with pytest.raises(KeyError):  # not an OSError: not taken as transient, not retried
        broken.answers(_images(4))
    assert broken.failed_calls == 0
    with pytest.raises(ValueError, match="retries"):
        M.PredictOracle(_api(_constant), retries=-1)
    with pytest.raises(ValueError, match="retry_on"):
        M.PredictOracle(_api(_constant), retry_on=ConnectionError)


class _BiasOnly(nn.Module):
    """A student that scores every image alike (its bias): its held-out KL is a function of the bias alone, and
    every evaluation (eval mode) is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([-4.0, 0.0, 4.0]))
        self.evaluated = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.evaluated.append(self.bias.detach().clone())
        return self.bias.expand(len(x), K)


def test_a_distillation_outliving_its_api_keeps_its_best_student_and_warns():
    """The API answers 12 requests and then fails for good: distillation stops there, warns, and returns the
    student of the lowest held-out KL among those evaluated (the large learning rate makes later ones worse)."""
    api = _Flaky(set(range(13, 1000)))
    oracle = M.PredictOracle(_api(api), retries=1, backoff=0)
    student = _BiasOnly()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = M.distill_surrogate(oracle, student, _images(), steps=50, eval_every=1, batch_size=8, lr=20.0,
                                  momentum=0.9, augment="none", seed=0)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "distillation interrupted at step 12 of 50" in messages[0], messages
    assert "the API answered 12 requests (92 images) and failed 2 tries" in messages[0]  # 4 held out + 11 batches of 8
    assert (oracle.calls, oracle.queries, oracle.failed_calls, api.calls) == (12, 92, 2, 14)
    p = torch.tensor(_constant(np.zeros((1,) + SHAPE)))[0]
    # [0]: the class check; [-1]: the kept student's agreement, measured for the weak-surrogate warning
    kl = [float((p * (p.log() - torch.log_softmax(b, 0))).sum()) for b in student.evaluated[1:-1]]
    assert torch.equal(student.evaluated[-1], out.bias)
    assert out is student and not out.training
    assert torch.allclose(out.bias, student.evaluated[1 + int(np.argmin(kl))])
    assert kl[-1] > min(kl)  # the student at the interruption was not the best one


def test_brepmi_chains_at_the_box_diagonal_stop_after_patience():
    """At the diagonal the sphere cannot grow: those steps count towards patience, and the chain stops
    (here: 5 steps to reach it, 5 more, instead of all 40 steps)."""
    attack = M.BREPMI(_api(_constant), _Recorder(), max_iterations=40, patience=5, init_batch=8, seed=0, verbose=False)
    attack.infer(None, np.array([0]))
    assert attack.queries_ == 8 + 10 * (32 + 1)  # the initial batch, then 10 steps of 32 sphere points and the code


def test_images_in_the_wrong_range_for_the_estimator_are_refused_by_name(target, digits):
    """A (0, 255) estimator given [0, 1] images (the issue's calls: natural_accuracy, estimate_p_reg,
    train_kedmi_prior) or images above 255: a ValueError naming the argument and the range, not a wrong number
    (natural accuracy 0.20 instead of 0.97). In its own range the same calls work."""
    import torch
    from art.estimators.classification import PyTorchClassifier

    from mi_art.evaluations.metrics import natural_accuracy

    class Scaled(torch.nn.Module):  # the digits target, taking 0..255 images
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x / 255.0)

    est = PyTorchClassifier(Scaled(target), loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=5,
                            clip_values=(0, 255))
    x, y = digits.private_test.x, digits.private_test.y
    assert natural_accuracy(est, x * 255, y) == pytest.approx(natural_accuracy(target, x, y))
    with pytest.raises(ValueError, match=r"x lies in \[0, 1\] but the \w+'s clip_values are \(0, 255\): .* x \* 255\)"):
        natural_accuracy(est, x, y)
    with pytest.raises(ValueError, match=r"x has values in \[0, 510\], outside the \w+'s clip_values"):
        natural_accuracy(est, x * 510, y)
    M.estimate_p_reg(est, digits.public.x * 255)
    with pytest.raises(ValueError, match="public_x lies in .* clip_values are \\(0, 255\\)"):
        M.estimate_p_reg(est, digits.public.x)
    generator, _ = M.train_gmi_prior(digits.public.x, steps=1, width=8, device="cpu")
    with pytest.raises(ValueError, match="public_x lies in .* clip_values are \\(0, 255\\)"):
        M.train_kedmi_prior(est, digits.public.x, steps=1, width=8, init_generator=generator, device="cpu")
