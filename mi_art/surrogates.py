"""The model set of model augmentation (Nguyen et al., CVPR 2023, https://arxiv.org/abs/2304.01669): the
target and surrogates distilled from it on public data only, how much they agree, and the set as the
attacks see it (:class:`ModelSet`)."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from .access import PredictOracle
from .features import penultimate_layer
from .priors.networks import LATENT_DIM
from .training import augment_batch, infinite_batches, mixed_precision_context, show_progress
from .utils import DeviceLike, as_module, batched_logits, eval_mode, module_device, resolve_device, seed_everything
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
    """Share of images in ``x`` on which two classifiers (ART estimators or modules) predict the same class.

    ``x`` is in ``model_a``'s input space (what its ``predict`` takes); ``model_b`` sees the same images
    mapped to its own (a bare module: [0, 1] channels first). ``output_index`` applies to a model
    returning a tuple or dict."""
    x = torch.from_numpy(check_images(x, "x"))
    a = as_module(model_a, "model_a", output_index=output_index)
    b = as_module(model_b, "model_b", output_index=output_index)
    device = resolve_device(device) if device is not None else module_device(a)
    x = x.to(device)
    with eval_mode(a), eval_mode(b):
        pa = batched_logits(a, x, batch_size).argmax(1)
        pb = batched_logits(b, b.from_unit(a.to_unit(x)), batch_size).argmax(1)
    return float((pa == pb).float().mean())


def distill_surrogate(target: Any, student: nn.Module, public_x: Any, *, generator: Optional[nn.Module] = None,
                      val_x: Any = None, val_fraction: float = 0.1, steps: int = 3000, batch_size: int = 64,
                      lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4,
                      lr_step: Optional[int] = None, temperature: float = 1.0, augment: str = "shift",
                      eval_every: int = 100, patience: Optional[int] = None,
                      output_index: Any = None, mixed_precision: bool = False, device: DeviceLike = None,
                      seed: Optional[int] = 0, verbose: bool = False, desc: Optional[str] = None) -> nn.Module:
    """Model augmentation (https://arxiv.org/abs/2304.01669): distil ``target`` into ``student`` on public
    data only, with KL divergence at ``temperature`` and SGD with momentum (the paper's settings).

    The paper distils on 30k-70k public images; with a few hundred the student learns too little of the
    target to help the attack. So, as a documented deviation:

    - with ``generator`` (a GAN prior trained on the public images), every batch adds as many fresh
      prior samples as public images: the student learns the target on the images the attack explores;
    - the budget is counted in optimiser ``steps``, with the learning rate constant as in the paper's
      20-epoch schedule, or halved every ``lr_step`` steps (halving it every third of 300 steps on digits
      cut the student's agreement with the target on private test images from 0.88 to 0.56); every
      ``eval_every`` steps the KL on held-out public images (``val_x``, or a ``val_fraction`` of
      ``public_x`` set aside) is measured and the best student is kept. Training
      stops early once that KL has not improved for ``patience`` evaluations, if ``patience`` is given;
      by default it runs every step: on LFW the held-out KL of 155 public images stalls while the student
      still learns the target on the private faces (``benchmarks/results/attack_variants_lfw.md``).

    ``target`` is an ART estimator or a module (``output_index``: where its logits are in a tuple or dict
    output); ``public_x`` (and ``val_x``) are images it takes, in its input space (as for ``predict``).
    The student learns on them mapped to [0, 1] channels first, where the generator's images are and
    where the attacks feed a bare-module surrogate (:class:`mi_art.utils.EstimatorModule`); the target
    sees every batch mapped back to its own input space, through its preprocessing. Returns the student
    in eval mode.

    ``target`` may also be a :class:`mi_art.access.PredictOracle`: the target behind an API, asked through
    ``predict`` alone (black-box: its scores; label-only: its labels), every image a counted query. The
    student then learns the answers with cross-entropy against them (``temperature`` is not used), and
    training stops early, keeping the best student, when the oracle's budget cannot answer another batch.

    ``mixed_precision`` runs the student's forward passes in bfloat16
    (:func:`mi_art.training.mixed_precision_context`); the target answers in its own precision.
    ``desc`` names the progress bar (default: ``distil <the student's class>``).
    """
    steps, batch_size = check_count("steps", steps), check_count("batch_size", batch_size)
    eval_every, patience = check_count("eval_every", eval_every), check_optional_count("patience", patience)
    lr, temperature = check_positive("lr", lr), check_positive("temperature", temperature)
    check_number("momentum", momentum, low=0, high=1, high_open=True)
    check_number("weight_decay", weight_decay, low=0)
    lr_step = check_optional_count("lr_step", lr_step)
    seed_everything(seed)
    device = resolve_device(device)
    precision = mixed_precision_context(mixed_precision, device)
    oracle = target if isinstance(target, PredictOracle) else None
    teacher = None if oracle else as_module(target, "target", output_index=output_index).to(device).eval()
    x = check_images(public_x, "public_x")
    if val_x is None:
        check_number("val_fraction", val_fraction, low=0, high=1, low_open=True, high_open=True)
        n_val = max(1, int(round(val_fraction * len(x))))
        if len(x) - n_val < 2:
            raise ValueError(f"public_x has {len(x)} images: too few to set {n_val} aside for validation; pass val_x")
        perm = np.random.default_rng(seed).permutation(len(x))
        x, val = x[perm[n_val:]], x[perm[:n_val]]
    else:
        val = check_images(val_x, "val_x", shape=x.shape[1:])
    if oracle is not None:  # the student's space: [0, 1], channels first
        x, val = (torch.from_numpy(oracle.to_unit(a)).to(device) for a in (x, val))
        val_teacher = oracle.answers(val).clamp_min(1e-12).log()  # log-probabilities: the KL's teacher logits

        def teach(images: torch.Tensor) -> torch.Tensor:
            return oracle.answers(images)
    else:
        x, val = torch.from_numpy(x).to(device), torch.from_numpy(val).to(device)
        val_teacher = check_finite(batched_logits(teacher, val), "the target's outputs on public_x")
        x, val = teacher.to_unit(x), teacher.to_unit(val)  # the student's space: [0, 1], channels first
        teacher = teacher.unit_view()  # from now on the teacher takes the student's images

        def teach(images: torch.Tensor) -> torch.Tensor:
            return teacher(images)
    if generator is not None:
        generator = generator.to(device).eval()
        latent = int(getattr(generator, "latent_dim", LATENT_DIM))
    student.to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step or steps + 1, gamma=0.5)
    data = infinite_batches(x, min(batch_size, len(x)))
    best, best_state, stale = float("inf"), None, 0
    bar = trange(steps, desc=desc or f"distil {type(student).__name__}", disable=not verbose)
    for step in bar:
        xb = augment_batch(next(data), augment)
        if generator is not None:
            with torch.no_grad():
                fake = generator(torch.randn(len(xb), latent, device=device).clamp(-1, 1))
            xb = torch.cat([xb, fake])
        if oracle is not None and oracle.remaining() is not None and oracle.remaining() < len(xb):
            break  # the budget cannot answer another batch: keep the best student so far
        with torch.no_grad():
            answer = teach(xb)
        with precision:
            logits = student(xb).float()
        if oracle is not None:  # cross-entropy against the answers: the KL to them up to a constant
            loss = -(answer * F.log_softmax(logits, 1)).sum(1).mean()
        else:
            loss = distillation_loss(logits, answer, temperature)
        loss = check_finite_at(loss, "the distillation loss", step, steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            with eval_mode(student):
                val_kl = distillation_loss(batched_logits(student, val), val_teacher,
                                           1.0 if oracle is not None else temperature).item()
            show_progress(bar, len(xb), kl=loss, val_kl=val_kl)
            if val_kl < best:
                best, stale = val_kl, 0
                best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
            else:
                stale += 1
                if patience is not None and stale >= patience:
                    break
    if best_state is not None:
        student.load_state_dict(best_state)
    check_module_finite(student, f"distilled {type(student).__name__}")
    return student.eval()


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
