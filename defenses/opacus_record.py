"""The record of a model you trained with Opacus yourself: its (epsilon, delta), accountant, noise and steps,
read from your ``PrivacyEngine`` or given by hand, as a :class:`~mi_art.defenses.record.DefenseRecord` like the
one :func:`mi_art.defenses.train_defended_target` returns for ``"dp-sgd"``.

Give it to the attack's record (:func:`mi_art.evaluations.experiment.run_attack`'s ``target_record``) so that
the attack's numbers are read beside the privacy the model proves::

    engine = PrivacyEngine()
    model, optimizer, loader = engine.make_private_with_epsilon(module=model, optimizer=optimizer,
        data_loader=loader, target_epsilon=8.0, target_delta=1e-5, epochs=10, max_grad_norm=1.0)
    ...  # your training loop
    record = opacus_record(engine, target_delta=1e-5, max_grad_norm=1.0, model=model, dataset=data)
    result = run_attack(bench, target=model.to_standard_module(), target_record=record)
    print(result["epsilon"], result["delta"], result["defense_record"]["details"]["steps"])
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Optional

from mi_art.validation import check_choice, check_count, check_int, check_number, check_positive, renamed

from .dp import ACCOUNTANTS, accountant_epsilon, delta_warning, nonnegative_epsilon
from .record import DefenseRecord

__all__ = ["opacus_record"]


def _from_engine(engine: Any, target_delta: float) -> Dict[str, Any]:
    """What a ``PrivacyEngine`` knows: its accountant, the (noise, sample rate, steps) it accounted, the epsilon
    spent at ``target_delta``, and the number of training images of the loader it made private."""
    accountant = getattr(engine, "accountant", None)
    if accountant is None or not hasattr(engine, "get_epsilon"):
        raise ValueError(f"privacy_engine must be an opacus.PrivacyEngine, got {type(engine).__name__}")
    history = list(getattr(accountant, "history", []) or [])
    if not history:
        raise ValueError("privacy_engine has accounted no step: train with the optimizer it made private first "
                         "(or give noise_multiplier, sample_rate and steps by hand)")
    noises = sorted({float(h[0]) for h in history})
    rates = sorted({float(h[1]) for h in history})
    dataset = getattr(engine, "dataset", None)
    return {"accountant": accountant.mechanism(), "noise_multiplier": noises[0] if len(noises) == 1 else noises,
            "sample_rate": rates[0] if len(rates) == 1 else rates, "steps": int(sum(int(h[2]) for h in history)),
            "epsilon": nonnegative_epsilon(engine.get_epsilon(target_delta)),
            "n_train": len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None}


def _by_hand(target_delta: float, given: Dict[str, Any]) -> Dict[str, Any]:
    """The facts given by hand, checked; epsilon from the accountant when the noise, sample rate and steps are
    given without it."""
    out = dict(given)
    out["accountant"] = check_choice("accountant", out["accountant"] or "rdp", ACCOUNTANTS)
    if out["noise_multiplier"] is not None:
        out["noise_multiplier"] = check_positive("noise_multiplier", out["noise_multiplier"])
    if out["sample_rate"] is not None:
        out["sample_rate"] = check_number("sample_rate", out["sample_rate"], low=0, high=1, low_open=True)
    if out["steps"] is not None:
        out["steps"] = check_int("steps", out["steps"], low=0)
    recomputable = all(out[k] is not None for k in ("noise_multiplier", "sample_rate", "steps"))
    if out["epsilon"] is None:
        if not recomputable:
            raise ValueError("give privacy_engine, or epsilon, or noise_multiplier, sample_rate and steps (the "
                             "accountant then computes epsilon at target_delta)")
        out["epsilon"] = accountant_epsilon(out["noise_multiplier"], out["sample_rate"], out["steps"], target_delta,
                                            out["accountant"])
    else:
        out["epsilon"] = check_number("epsilon", out["epsilon"], low=0)
    return out


def opacus_record(privacy_engine: Any = None, *, target_delta: Optional[float] = None,
                  epsilon: Optional[float] = None, accountant: Optional[str] = None,
                  noise_multiplier: Optional[float] = None, sample_rate: Optional[float] = None,
                  steps: Optional[int] = None, max_grad_norm: Optional[float] = None,
                  n_train: Optional[int] = None, model: Any = None, dataset: Any = None,
                  delta: Optional[float] = None) -> DefenseRecord:
    """The :class:`~mi_art.defenses.record.DefenseRecord` of a model trained with Opacus outside mi-art.

    :param privacy_engine: The ``opacus.PrivacyEngine`` that trained it: its accountant ("rdp", "prv", "gdp"),
        noise multiplier, sample rate and steps are read from the accountant's history, epsilon is its
        ``get_epsilon(target_delta)``, the number of training images its data loader's. Without it, give the
        facts by hand: ``epsilon``, or ``noise_multiplier``, ``sample_rate`` and ``steps`` (epsilon is then the
        ``accountant``'s, default "rdp"). With it, facts given by hand are refused (the engine knows them).
    :param target_delta: The delta of (epsilon, delta), as Opacus names it (``make_private_with_epsilon``'s
        ``target_delta``, ``get_epsilon(delta)``). Required. ``delta``: its earlier name, deprecated.
    :param max_grad_norm: The per-sample clipping bound (the engine does not keep it); recorded when given.
    :param n_train: The number of private training images; by default the engine's data loader's, or
        ``dataset``'s. A ``target_delta`` at or above 1/(10 N) is warned about, as for mi-art's own DP-SGD.
    :param model: The trained model (an Opacus ``GradSampleModule`` or the plain module): its architecture's
        name, and with ``dataset`` its test accuracy on ``dataset.private_test``.
    :param dataset: The :class:`~mi_art.data.MIDataset` it was trained on (its classes, input shape, N).
    :return: A record with ``defense="dp-sgd"``, ``epsilon``, ``delta``, ``accountant`` and, in ``details``,
        ``noise_multiplier``, ``sample_rate``, ``steps``, ``max_grad_norm``, ``n_train`` and ``source``
        ("privacy-engine" or "by hand").
    """
    if delta is not None:
        given_delta = {"delta": delta} if target_delta is None else {"delta": delta, "target_delta": target_delta}
        target_delta = renamed(given_delta, "delta", "target_delta", "opacus_record",
                               ", as Opacus calls it")["target_delta"]
    if target_delta is None:
        raise ValueError("target_delta is required: the delta of (epsilon, delta) your model was trained for "
                         "(make_private_with_epsilon's target_delta; Opacus's examples use 1e-5)")
    target_delta = check_number("target_delta", target_delta, low=0, high=1, low_open=True, high_open=True)
    given = {"epsilon": epsilon, "accountant": accountant, "noise_multiplier": noise_multiplier,
             "sample_rate": sample_rate, "steps": steps}
    if privacy_engine is not None:
        clash = sorted(k for k, v in given.items() if v is not None)
        if clash:
            raise ValueError(f"{', '.join(clash)} given with privacy_engine, which knows them: give one or the other")
        facts = _from_engine(privacy_engine, target_delta)
    else:
        facts = {**_by_hand(target_delta, given), "n_train": None}
    if n_train is None:
        n_train = facts["n_train"] if facts["n_train"] is not None else (
            len(dataset.private_train) if dataset is not None else None)
    n_train = None if n_train is None else check_count("n_train", n_train)
    details = {k: facts[k] for k in ("noise_multiplier", "sample_rate", "steps")}
    details.update(max_grad_norm=None if max_grad_norm is None else check_positive("max_grad_norm", max_grad_norm),
                   n_train=n_train, source="privacy-engine" if privacy_engine is not None else "by hand")
    warned = delta_warning(target_delta, n_train)
    if warned:
        warnings.warn(warned, UserWarning, stacklevel=2)
    plain = model.to_standard_module() if hasattr(model, "to_standard_module") else model
    test_accuracy = None
    if plain is not None and dataset is not None:
        from mi_art.predictions import natural_accuracy

        test_accuracy = natural_accuracy(plain, dataset.private_test.x, dataset.private_test.y)
    params = {"target_delta": target_delta, "noise_multiplier": details["noise_multiplier"],
              "max_grad_norm": details["max_grad_norm"], "accountant": facts["accountant"]}
    return DefenseRecord(
        defense="dp-sgd", params=params, test_accuracy=test_accuracy, train_time_s=None,
        architecture=type(plain).__name__ if plain is not None else "unknown",
        num_classes=int(dataset.num_classes) if dataset is not None else 0,
        input_shape=tuple(dataset.input_shape) if dataset is not None else (),
        training={"trained_by": "the user, with Opacus"},
        epsilon=float(facts["epsilon"]), delta=target_delta, accountant=facts["accountant"], details=details)
