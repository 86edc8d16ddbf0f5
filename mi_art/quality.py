"""When a model is too weak for attack numbers to mean much: the thresholds and the warnings, in one place.

The Python API and the pipeline give the same warnings from here:

* a weak **surrogate** (one that agrees with the target on too few held-out public images) pulls the
  reconstructions away from the target's identities: :func:`mi_art.distill_surrogate` warns;
* a weak **judge** (evaluation model) mixes its own errors into Acc@k:
  :func:`mi_art.evaluations.metrics.attack_accuracy` warns when given the judge's held-out images;
* a weak **target** has learned little to invert: ``attack_accuracy`` warns when also given the target.

The pipeline (:func:`mi_art.evaluations.experiment.run_attack`, the grid's report) records the same sentences
under ``"warnings"``. Each warning is issued once, as a :class:`WeakModelWarning` (a ``UserWarning``), so that
``warnings.simplefilter("error", WeakModelWarning)`` turns them into errors and ``"ignore"`` silences them.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, List, Optional

from .validation import user_stacklevel

__all__ = ["NEAR_CHANCE_FACTOR", "WEAK_JUDGE_ACCURACY", "WEAK_SURROGATE_AGREEMENT", "WEAK_TARGET_ACCURACY",
           "WeakModelWarning", "warn_weak", "weak_model_warnings", "weak_surrogate_warning"]

#: The evaluation model (the judge) is weak below this test accuracy on held-out private images. It then
#: misclassifies more than one real private image in five, so a failed reconstruction and the judge's
#: own error look alike and Acc@1/Acc@5 measure the judge as much as the attack. The papers' judge scores
#: 0.96 on CelebA (IR-50 "FaceNet", reference section 1); judges trained from scratch on 100 face identities
#: were far below this bar and gave attack numbers that were noise (benchmarks/results/pretraining.md).
WEAK_JUDGE_ACCURACY = 0.8

#: An *undefended* target is weak below this test accuracy: it has learned little about its identities,
#: so an attack on it says little about a real model. The papers' undefended CelebA target scores 0.88
#: and even their strongest defense setting keeps 0.59 (MID, beta 0.02). Defended targets are held to the
#: chance rule only: lost accuracy is the cost a defense is measured by (the frontier's x axis).
WEAK_TARGET_ACCURACY = 0.5

#: A model whose test accuracy is below this multiple of chance (1 / number of classes) is close to
#: chance: a judge there cannot judge at all, a target there has almost nothing to invert. (With very
#: few classes the bar is at most halfway from chance to 1: 0.75 with 2 classes, not 1.0.)
NEAR_CHANCE_FACTOR = 2.0

#: A surrogate that agrees with the target on fewer held-out public images than this is weak: the ensemble
#: then pulls the reconstructions towards what the target does not do. Public images show none of the
#: target's identities, so agreement there is lower than on private images: on LFW surrogates agreeing with
#: the target on little more than half of the public images still lifted GMI (measured in
#: benchmarks/results/attack_variants_lfw.md, "Surrogates distilled for every step").
WEAK_SURROGATE_AGREEMENT = 0.5


class WeakModelWarning(UserWarning):
    """A surrogate, judge or target too weak for the attack's numbers to mean much (:mod:`mi_art.quality`)."""


def _finite(value: Any) -> Optional[float]:
    """``value`` as a float, or None when it is None, not a number, or not finite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def weak_model_warnings(*, target_accuracy: Optional[float] = None, judge_accuracy: Optional[float] = None,
                        n_classes: Optional[int] = None, defended: bool = False) -> List[str]:
    """Warnings for a weak evaluation model or target, from their test accuracies on held-out private
    images (None: not checked) and the number of private classes (None: the chance rule is skipped).

    * judge: below :data:`NEAR_CHANCE_FACTOR` x chance, or below :data:`WEAK_JUDGE_ACCURACY`;
    * target: below :data:`NEAR_CHANCE_FACTOR` x chance, or (undefended only, ``defended=False``) below
      :data:`WEAK_TARGET_ACCURACY`.

    :return: One sentence per problem (empty when both look fine).
    """
    k = n_classes if isinstance(n_classes, int) and not isinstance(n_classes, bool) and n_classes >= 1 else None
    chance = 1.0 / k if k else None
    near = None if chance is None else min(NEAR_CHANCE_FACTOR * chance, (1 + chance) / 2)
    chance_text = "" if chance is None else f"; chance is {chance:.3f} with {k} classes"
    out: List[str] = []
    judge = _finite(judge_accuracy)
    if judge is not None:
        if near is not None and judge < near:
            out.append(f"the evaluation model is close to chance: test accuracy {judge:.3f}, under "
                       f"{NEAR_CHANCE_FACTOR:g}x chance ({near:.3f}){chance_text}. It cannot judge: every Acc@k "
                       "here is noise. Train it longer or pre-train it on the public identities "
                       "(judge_pretrain_epochs, --judge-pretrain-epochs).")
        elif judge < WEAK_JUDGE_ACCURACY:
            out.append(f"weak evaluation model: test accuracy {judge:.3f} < {WEAK_JUDGE_ACCURACY:g}{chance_text}. "
                       "Acc@1/Acc@5 mix the attack's failures with the judge's own errors. Train it longer or "
                       "pre-train it on the public identities (judge_pretrain_epochs, --judge-pretrain-epochs).")
    target = _finite(target_accuracy)
    if target is not None:
        if near is not None and target < near:
            out.append(f"the {'defended ' if defended else ''}target is close to chance: test accuracy "
                       f"{target:.3f}, under {NEAR_CHANCE_FACTOR:g}x chance ({near:.3f}){chance_text}. It has "
                       "learned almost nothing about its identities: an attack on it says little.")
        elif not defended and target < WEAK_TARGET_ACCURACY:
            out.append(f"weak target: test accuracy {target:.3f} < {WEAK_TARGET_ACCURACY:g} (undefended)"
                       f"{chance_text}. An attack on it says little about a real model. Train it longer or "
                       "pre-train it on the public identities (target_pretrain_epochs, --target-pretrain-epochs).")
    return out


def weak_surrogate_warning(agreement: float, *, name: str = "the surrogate",
                           hint: str = "Distil it longer (steps) or leave it out of surrogates=[...]"
                           ) -> Optional[str]:
    """The warning for a surrogate (called ``name``) that agrees with the target on ``agreement`` of held-out
    public images, below :data:`WEAK_SURROGATE_AGREEMENT`; None when it agrees on more. ``hint`` says what to do
    about it, in the caller's own terms."""
    value = _finite(agreement)
    if value is None or value >= WEAK_SURROGATE_AGREEMENT:
        return None
    return (f"weak surrogate: {name} agrees with the target on {value:.2f} of held-out public images "
            f"(< {WEAK_SURROGATE_AGREEMENT:g}); the ensemble may pull the reconstructions away from the target's "
            f"identities. {hint}")


def warn_weak(messages: Iterable[str]) -> None:
    """Issue each message once as a :class:`WeakModelWarning`, attributed to the user's line (the first outside
    mi-art: :func:`mi_art.validation.user_stacklevel`)."""
    for message in dict.fromkeys(messages):
        warnings.warn(message, WeakModelWarning, stacklevel=user_stacklevel())
