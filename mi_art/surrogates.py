"""The model set of model augmentation (Nguyen et al., CVPR 2023, https://arxiv.org/abs/2304.01669): the
target and surrogates distilled from it on public data only, how much they agree, and the set as the
attacks see it (:class:`ModelSet`)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ContextManager, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from .access import PredictFailedError, PredictOracle
from .features import penultimate_layer
from .priors.networks import LATENT_DIM
from .quality import warn_weak, weak_surrogate_warning
from .training import augment_batch, infinite_batches, mixed_precision_context, show_progress
from .utils import (DeviceLike, EstimatorModule, as_module, batched_logits, eval_mode, module_device, resolve_device,
                    seed_everything)
from .validation import (check_count, check_finite, check_finite_at, check_images, check_module_finite,
                         check_number, check_optional_count, check_positive)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) at ``temperature``, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def top1_agreement(model_a: Any, model_b: Any, x: Any, *, batch_size: int = 256, output_index: Any = None,
                   device: DeviceLike = None) -> float:
    """Share of images in ``x`` on which two classifiers with the same classes predict the same class.

    Each model is an ART PyTorch estimator or a module (run through its forward pass), another ART
    classifier (a ``BlackBoxClassifier``: asked through ``predict``) or a
    :class:`~mi_art.access.PredictOracle` (asked through ``predict`` too, every image a counted query).
    ``x`` is in ``model_a``'s input space (what its ``predict`` takes) and checked there; ``model_b`` sees
    the same images mapped to its own (a bare module: [0, 1] channels first). ``output_index`` applies to
    a model returning a tuple or dict. Models with different numbers of classes are refused."""
    check_count("batch_size", batch_size)
    a = _Predictor(model_a, "model_a", output_index, device)
    b = _Predictor(model_b, "model_b", output_index, device)
    raw = check_images(x, "x")
    unit = a.unit_images(raw, "x")
    first = torch.from_numpy(unit[:1])
    classes = a.classes(first), b.classes(first)
    if classes[0] != classes[1]:
        raise ValueError(f"model_a has {classes[0]} classes and model_b {classes[1]}: top-1 agreement compares "
                         "models of the same classes (a surrogate built with the target's nb_classes)")
    agree = 0
    for start in range(0, len(unit), batch_size):
        batch = torch.from_numpy(unit[start:start + batch_size])
        as_given = torch.from_numpy(raw[start:start + batch_size])
        agree += int((a.predicted(batch, as_given) == b.predicted(batch)).sum())
    return agree / len(unit)


class _Predictor:
    """A classifier as :func:`top1_agreement` asks it, on unit-space images: through its module view (an ART
    PyTorch estimator, a module) or through ``predict`` (an oracle; any other ART classifier, made one)."""

    def __init__(self, model: Any, what: str, output_index: Any, device: DeviceLike) -> None:
        from art.estimators.pytorch import PyTorchEstimator

        if not isinstance(model, (PredictOracle, PyTorchEstimator, nn.Module)) and hasattr(model, "predict"):
            model = PredictOracle(model)
        self.oracle = model if isinstance(model, PredictOracle) else None
        self.view = None if self.oracle else as_module(model, what, output_index=output_index)
        self.device = None if self.oracle else (resolve_device(device) if device is not None
                                                else module_device(self.view))

    def unit_images(self, x: Any, name: str) -> np.ndarray:
        """``x`` in this model's input space, checked, as unit-space images."""
        return self.oracle.to_unit(x, name) if self.oracle else self.view.unit_images(x, name)

    def classes(self, unit: torch.Tensor) -> int:
        if self.oracle:
            return self.oracle.nb_classes
        with eval_mode(self.view):
            return int(self.view(self.view.from_unit(unit.to(self.device))).shape[1])

    def predicted(self, unit: torch.Tensor, as_given: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The class each unit-space image is given, on the CPU; a module view takes ``as_given`` (the same
        images in its input space, as the user gave them) where there is one."""
        if self.oracle:
            return self.oracle.answers(unit).argmax(1)
        x = as_given if as_given is not None else self.view.from_unit(unit)
        with eval_mode(self.view), torch.no_grad():
            return self.view(x.to(self.device)).argmax(1).cpu()


def distill_surrogate(target: Any, student: nn.Module, public_x: Any, *, generator: Optional[nn.Module] = None,
                      val_x: Any = None, val_fraction: float = 0.1, steps: int = 3000, batch_size: int = 64,
                      lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4,
                      lr_step: Optional[int] = None, temperature: float = 1.0, augment: str = "shift",
                      eval_every: int = 100, patience: Optional[int] = None,
                      output_index: Any = None, mixed_precision: bool = False, device: DeviceLike = None,
                      seed: Optional[int] = 0, verbose: bool = False, desc: Optional[str] = None) -> nn.Module:
    """Model augmentation (https://arxiv.org/abs/2304.01669): distil ``target`` into ``student`` on public
    data only, with KL divergence at ``temperature`` and SGD with momentum (the paper's settings).

    With a few hundred public images (the paper has 30k-70k) the student learns too little, so, as a documented
    deviation (measured in docs/methods.md, "MA: model augmentation"): with ``generator`` (a GAN prior
    trained on the public images) every batch adds as many fresh prior samples as public images; the budget is
    counted in optimiser ``steps``, at a constant learning rate or halved every ``lr_step`` steps; every
    ``eval_every`` steps the KL on held-out public images (``val_x``, or a ``val_fraction`` of ``public_x`` set
    aside) is measured and the best student is kept. Training stops early once that KL has not improved for
    ``patience`` evaluations, if ``patience`` is given; by default it runs every step.

    ``target`` is an ART estimator or a module (``output_index``: where its logits are in a tuple or dict
    output); ``public_x`` (and ``val_x``) are images it takes, in its input space (as for ``predict``).
    The student learns on them mapped to [0, 1] channels first, where the generator's images are and
    where the attacks feed a bare-module surrogate (:class:`mi_art.utils.EstimatorModule`); the target
    sees every batch mapped back to its own input space, through its preprocessing. Returns the student
    in eval mode.

    ``target`` may also be a :class:`mi_art.access.PredictOracle`: the target behind an API, asked through
    ``predict`` alone (black-box: its scores; label-only: its labels), every image a counted query. The
    student then learns the answers with cross-entropy against them (``temperature`` is not used), and
    training stops early, keeping the best student, when the oracle's budget cannot answer another batch, or
    when its ``predict`` still fails after the oracle's retries (a ``RuntimeWarning`` says so, with the step
    and the calls answered and failed).

    Before any work, the images are checked where they meet the target (its ``input_shape`` and
    ``clip_values``; [0, 1] channels first for a bare module: :meth:`mi_art.utils.EstimatorModule.unit_images`,
    :meth:`mi_art.access.PredictOracle.to_unit`) and the student must give one output per class of the target.
    ``mixed_precision`` runs the student's forward passes in bfloat16
    (:func:`mi_art.training.mixed_precision_context`); the target answers in its own precision.
    A student that agrees with the target's top-1 on fewer held-out public images than
    :data:`mi_art.quality.WEAK_SURROGATE_AGREEMENT` is returned with a :class:`mi_art.quality.WeakModelWarning`:
    in the attack it would pull the reconstructions away from the target's identities.
    ``desc`` names the progress bar (default: ``distil <the student's class>``).
    """
    schedule = _Schedule(steps, batch_size, eval_every, patience, lr, temperature, momentum, weight_decay, lr_step)
    seed_everything(seed)
    device = resolve_device(device)
    precision = mixed_precision_context(mixed_precision, device)
    teacher = _Teacher(target, output_index, device)
    x, val = _public_and_held_out(teacher, public_x, val_x, val_fraction, seed)
    _check_same_classes(student.to(device), teacher.first_unit(x), teacher.classes(x))
    x, held_out = teacher.student_space(x, val, temperature)
    batches = _Batches(x, min(batch_size, len(x)), augment, generator, device)
    _train(student, teacher, batches, held_out, schedule, precision,
           trange(steps, desc=desc or f"distil {type(student).__name__}", disable=not verbose))
    check_module_finite(student, f"distilled {type(student).__name__}")
    weak = weak_surrogate_warning(held_out.agreement(student), name=f"the distilled {type(student).__name__}",
                                  hint="Distil it longer (steps), with a GAN prior's samples (generator), or leave "
                                       "it out of the attack's surrogates")
    warn_weak([weak] if weak else [])
    return student.eval()


@dataclass
class _Schedule:
    """Distillation's optimiser settings and budget, checked (in this order) when made."""

    steps: int
    batch_size: int
    eval_every: int
    patience: Optional[int]
    lr: float
    temperature: float
    momentum: float
    weight_decay: float
    lr_step: Optional[int]

    def __post_init__(self) -> None:
        self.steps, self.batch_size = check_count("steps", self.steps), check_count("batch_size", self.batch_size)
        self.eval_every = check_count("eval_every", self.eval_every)
        self.patience = check_optional_count("patience", self.patience)
        self.lr, self.temperature = check_positive("lr", self.lr), check_positive("temperature", self.temperature)
        check_number("momentum", self.momentum, low=0, high=1, high_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        self.lr_step = check_optional_count("lr_step", self.lr_step)

    def optimiser(self, student: nn.Module) -> Tuple[torch.optim.Optimizer, Any]:
        """SGD with momentum over the student, and its learning rate halved every ``lr_step`` steps (if given)."""
        opt = torch.optim.SGD(student.parameters(), lr=self.lr, momentum=self.momentum,
                              weight_decay=self.weight_decay)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=self.lr_step or self.steps + 1, gamma=0.5)

    def evaluates_at(self, step: int) -> bool:
        """Whether the student is evaluated after ``step`` (from 0): every ``eval_every`` steps, and at the end."""
        return (step + 1) % self.eval_every == 0 or step + 1 == self.steps


class _Teacher:
    """The target as distillation asks it: a module (its logits, through its preprocessing) or an oracle (its
    answers, every image a counted query)."""

    def __init__(self, target: Any, output_index: Any, device: torch.device) -> None:
        self.oracle = target if isinstance(target, PredictOracle) else None
        self.module = None if self.oracle else as_module(target, "target", output_index=output_index).to(device).eval()
        self.device = device

    def checked(self, x: np.ndarray, name: str) -> np.ndarray:
        """``x`` checked where it meets the target: as unit-space images for an oracle, as given for a module."""
        return self.oracle.to_unit(x, name) if self.oracle is not None else _checked(self.module, x, name)

    def first_unit(self, x: np.ndarray) -> torch.Tensor:
        """The first of the checked images ``x`` in the student's space."""
        return torch.from_numpy(x[:1] if self.oracle is not None else self.module.to_unit(x[:1])).to(self.device)

    def classes(self, x: np.ndarray) -> int:
        """The target's number of classes (a module's, read off its outputs on the first of ``x``)."""
        if self.oracle is not None:
            return self.oracle.nb_classes
        return int(batched_logits(self.module, torch.from_numpy(x[:1]).to(self.device)).shape[1])

    def student_space(self, x: np.ndarray, val: np.ndarray, temperature: float) -> Tuple[torch.Tensor, "_HeldOut"]:
        """The training images in the student's space ([0, 1], channels first), and the held-out ones with the
        target's answers on them. From now on a module teacher takes the student's images."""
        x, val = torch.from_numpy(x).to(self.device), torch.from_numpy(val).to(self.device)
        if self.oracle is not None:  # log-probabilities: the KL's teacher logits; the answers are taken at T = 1
            return x, _HeldOut(val, self.oracle.answers(val).clamp_min(1e-12).log(), 1.0)
        val_teacher = check_finite(batched_logits(self.module, val), "the target's outputs on public_x")
        x, val = self.module.to_unit(x), self.module.to_unit(val)
        self.module = self.module.unit_view()
        return x, _HeldOut(val, val_teacher, temperature)

    def cannot_answer(self, n: int) -> bool:
        """Whether the oracle's budget is too small for ``n`` more images."""
        return self.oracle is not None and self.oracle.remaining() is not None and self.oracle.remaining() < n

    def answers(self, images: torch.Tensor) -> torch.Tensor:
        """What the student learns on unit-space ``images``: the oracle's answers or the module's logits."""
        return self.oracle.answers(images) if self.oracle is not None else self.module(images)

    def loss(self, logits: torch.Tensor, answer: torch.Tensor, temperature: float) -> torch.Tensor:
        """The KL to a module's logits; the cross-entropy against an oracle's answers (the KL up to a constant)."""
        if self.oracle is not None:
            return -(answer * F.log_softmax(logits, 1)).sum(1).mean()
        return distillation_loss(logits, answer, temperature)


def _public_and_held_out(teacher: _Teacher, public_x: Any, val_x: Any, val_fraction: float,
                         seed: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    """The training and held-out images, checked where they meet the target: ``val_x``, or a ``val_fraction``
    of ``public_x`` set aside at random (by ``seed``)."""
    x = teacher.checked(check_images(public_x, "public_x"), "public_x")
    if val_x is None:
        check_number("val_fraction", val_fraction, low=0, high=1, low_open=True, high_open=True)
        n_val = max(1, int(round(val_fraction * len(x))))
        if len(x) - n_val < 2:
            raise ValueError(f"public_x has {len(x)} images: too few to set {n_val} aside for validation; pass val_x")
        perm = np.random.default_rng(seed).permutation(len(x))
        return x[perm[n_val:]], x[perm[:n_val]]
    if teacher.oracle is None:
        val_x = check_images(val_x, "val_x", shape=x.shape[1:])
    return x, teacher.checked(val_x, "val_x")


@dataclass
class _HeldOut:
    """Held-out images in the student's space, the target's logits on them and the temperature of their KL."""

    images: torch.Tensor
    teacher_logits: torch.Tensor
    temperature: float

    def kl(self, student: nn.Module) -> float:
        with eval_mode(student):
            return distillation_loss(batched_logits(student, self.images), self.teacher_logits, self.temperature).item()

    def agreement(self, student: nn.Module) -> float:
        """The share of held-out images on which the student's top-1 class is the target's."""
        with eval_mode(student):
            return float((batched_logits(student, self.images).argmax(1) == self.teacher_logits.argmax(1))
                         .float().mean())


class _Batches:
    """Training batches in the student's space: shuffled, augmented public images, and as many fresh samples of
    ``generator`` (if given) beside them."""

    def __init__(self, x: torch.Tensor, batch_size: int, augment: str, generator: Optional[nn.Module],
                 device: torch.device) -> None:
        self.data, self.augment, self.device = infinite_batches(x, batch_size), augment, device
        self.generator = None if generator is None else generator.to(device).eval()
        self.latent = None if generator is None else int(getattr(generator, "latent_dim", LATENT_DIM))

    def next(self) -> torch.Tensor:
        xb = augment_batch(next(self.data), self.augment)
        if self.generator is None:
            return xb
        with torch.no_grad():
            fake = self.generator(torch.randn(len(xb), self.latent, device=self.device).clamp(-1, 1))
        return torch.cat([xb, fake])


class _BestStudent:
    """The weights of the student of the lowest held-out KL so far, and the evaluations since it."""

    def __init__(self) -> None:
        self.kl, self.state, self.step, self.stale = float("inf"), None, None, 0

    def update(self, student: nn.Module, kl: float, step: int) -> None:
        if kl < self.kl:
            self.kl, self.step, self.stale = kl, step, 0
            self.state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        else:
            self.stale += 1


def _train(student: nn.Module, teacher: _Teacher, batches: _Batches, held_out: _HeldOut, schedule: _Schedule,
           precision: ContextManager, bar: Any) -> None:
    """Distil ``teacher`` into ``student`` for the steps of ``bar``, and leave the best student in it."""
    student.train()
    opt, sched = schedule.optimiser(student)
    best = _BestStudent()
    for step in bar:
        xb = batches.next()
        if teacher.cannot_answer(len(xb)):
            break  # the budget cannot answer another batch: keep the best student so far
        try:
            with torch.no_grad():
                answer = teacher.answers(xb)
        except PredictFailedError as err:
            _interrupted(student, err, step, schedule.steps, held_out.kl(student), best, teacher.oracle)
            return  # the student kept is already in place
        with precision:
            logits = student(xb).float()
        loss = check_finite_at(teacher.loss(logits, answer, schedule.temperature), "the distillation loss", step,
                               schedule.steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if schedule.evaluates_at(step):
            val_kl = held_out.kl(student)
            show_progress(bar, len(xb), kl=loss, val_kl=val_kl)
            best.update(student, val_kl, step + 1)
            if schedule.patience is not None and best.stale >= schedule.patience:
                break
    if best.state is not None:
        student.load_state_dict(best.state)


def _checked(teacher: EstimatorModule, x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as given (the target's input space), once :meth:`~mi_art.utils.EstimatorModule.unit_images` has
    checked it where it meets the target."""
    teacher.unit_images(x, name)
    return x


def _check_same_classes(student: nn.Module, unit: torch.Tensor, target_classes: int) -> None:
    """The student must score as many classes as the target (its outputs on unit-space images ``unit``)."""
    with eval_mode(student), torch.no_grad():
        out = student(unit)
    if not isinstance(out, torch.Tensor):
        shown = f"a {type(out).__name__}"
    else:
        shown = f"{out.shape[1]} outputs" if out.ndim == 2 else f"outputs of shape {tuple(out.shape)}"
    if not (isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[1] == target_classes):
        raise ValueError(f"the student returns {shown}, but the target has {target_classes} classes: build the "
                         f"student with {target_classes} outputs (e.g. make_classifier(arch, channels, "
                         f"{target_classes}, size))")


def _interrupted(student: nn.Module, err: PredictFailedError, step: int, steps: int, current: float,
                 best: _BestStudent, oracle: PredictOracle) -> None:
    """The API failed beyond its retries at ``step``: the student becomes the best one so far (the current
    one, whose held-out KL is ``current``, when it is better than the best evaluated), and a warning says so."""
    if best.state is not None and best.kl <= current:
        student.load_state_dict(best.state)
        kept = f"the best student so far (held-out KL {best.kl:.4g}, after step {best.step})"
    else:
        kept = f"the student as it stood (held-out KL {current:.4g}, after step {step})"
    warnings.warn(f"distillation interrupted at step {step + 1} of {steps}: {err}. Keeping {kept}; the API answered "
                  f"{oracle.calls} requests ({oracle.queries} images) and failed {oracle.failed_calls} tries. "
                  "Raise the oracle's retries or backoff, or distil again when the API is back",
                  RuntimeWarning, stacklevel=4)  # the user's line: _interrupted < _train < distill_surrogate < user


class ModelSet:
    """The target and its surrogates as an attack sees them: views (:class:`~mi_art.utils.EstimatorModule`)
    taking images in [0, 1] channels first through ``from_unit``, the target first. Surrogates may be ART
    estimators or bare modules (which take [0, 1] NCHW images)."""

    def __init__(self, target: nn.Module, surrogates: Sequence[Any] = ()) -> None:
        self.target = target
        self.surrogates = [as_module(s, f"surrogates[{i}]") for i, s in enumerate(surrogates)]

    @property
    def models(self) -> List[nn.Module]:
        return [self.target, *self.surrogates]

    def feature_size(self, index: int) -> Optional[int]:
        """The penultimate feature size of model ``index`` (0: the target) read at its last ``nn.Linear``
        (None when the feature is read at another layer)."""
        layer = penultimate_layer(self.models[index])
        return layer.in_features if isinstance(layer, nn.Linear) else None

    def check_outputs(self, images: torch.Tensor, nb_classes: int, *, needs_logits: Optional[str] = None) -> None:
        """Every model gives ``nb_classes`` outputs on unit-space ``images``; with ``needs_logits`` (the name of
        a loss on raw logits) none returns probabilities."""
        target = self.target
        out = target(target.from_unit(images))
        if out.shape[1] != nb_classes:
            raise ValueError(f"the estimator returns {out.shape[1]} outputs, nb_classes is {nb_classes}")
        if needs_logits and target.outputs_probabilities:
            raise ValueError(f"identity_loss={needs_logits!r} needs logits, but the estimator returns probabilities "
                             "(outputs in [0, 1] that sum to 1): remove the final softmax from the model "
                             "or use identity_loss='ce'")
        for i, s in enumerate(self.surrogates):
            s_out = s(s.from_unit(images))
            if s_out.shape != out.shape:
                raise ValueError(f"surrogates[{i}] returns outputs of shape {tuple(s_out.shape[1:])}, the "
                                 f"target {tuple(out.shape[1:])}")
            if needs_logits and s.outputs_probabilities:
                raise ValueError(f"identity_loss={needs_logits!r} needs logits, but surrogates[{i}] returns "
                                 "probabilities")
