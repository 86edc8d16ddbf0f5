"""One call to train a model inversion target under any defense: :func:`train_defended_target`."""
from __future__ import annotations

import time
from typing import Any, Dict, Tuple

from torch import nn

from mi_art.evaluations.metrics import natural_accuracy
from mi_art.data import MIDataset
from mi_art.models import ARCHITECTURES
from mi_art.training import AUGMENTATIONS, train_classifier
from mi_art.utils import DeviceLike, resolve_device, seed_everything
from mi_art.validation import (check_bool, check_choice, check_count, check_device, check_module_finite, check_number,
                               check_positive, check_seed)

from . import bido, dp, label_smoothing, mid, postprocessing, transfer
from .common import ModelSpec, build_model, check_output_classes, hooks_left, model_name
from .record import DefenseRecord

#: Every defense name :func:`train_defended_target` accepts.
DEFENSES: Tuple[str, ...] = ("none", "dp-sgd", "mid", "bido", "nls", "tl", *postprocessing.POSTPROCESSORS)
#: Optimizers of :func:`mi_art.training.make_optimizer`.
OPTIMIZERS: Tuple[str, ...] = ("adam", "sgd")


def defense_defaults(defense: str) -> Dict[str, Any]:
    """The parameters of ``defense`` and their defaults (``None``: derived, see the defense's module)."""
    name = _check_name(defense)
    table = {"none": {}, "dp-sgd": dp.DEFAULTS, "mid": mid.DEFAULTS, "bido": bido.DEFAULTS,
             "nls": label_smoothing.DEFAULTS, "tl": transfer.DEFAULTS}
    return dict(table[name]) if name in table else dict(postprocessing.POSTPROCESSORS[name][1])


def defended_architecture(defense: str, dataset: MIDataset, *, model: ModelSpec = "cnn", **params: Any) -> nn.Module:
    """An untrained module with the structure :func:`train_defended_target` returns for the same
    arguments (MID's VIB head, DP's GroupNorm), to load a saved state dict into."""
    name = _check_name(defense)
    _check_dataset(dataset)
    _check_model(model)
    params = _check_params(name, dict(params), len(dataset.private_train))
    net = build_model(model, dataset.channels, dataset.num_classes, dataset.image_size)
    if name == "mid":
        mid.add_vib_head(net, dataset.num_classes, params["bottleneck_dim"])
    elif name == "dp-sgd":
        net, _ = dp.make_private_compatible(net)
    return net.eval()


def _check_name(defense: Any) -> str:
    name = str(defense).strip().lower().replace("_", "-") if isinstance(defense, str) else None
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {defense!r}; valid names: {', '.join(DEFENSES)}")
    return name


def _check_dataset(dataset: Any) -> None:
    if not isinstance(dataset, MIDataset):
        raise ValueError(f"dataset must be an mi_art.data.MIDataset (e.g. from mi_art.data.load_dataset), got "
                         f"{type(dataset).__name__}")


def _check_model(model: Any) -> None:
    if isinstance(model, nn.Module):
        return
    if not isinstance(model, str) or model not in ARCHITECTURES:
        raise ValueError(f"model must be a torch.nn.Module or one of the architecture names "
                         f"{', '.join(sorted(ARCHITECTURES))}, got {model!r}")


def _check_training(*, epochs: Any, batch_size: Any, lr: Any, weight_decay: Any, optimizer: Any, augment: Any,
                    device: Any, seed: Any, verbose: Any) -> Dict[str, Any]:
    """The generic training settings of :func:`train_defended_target`, checked and normalised."""
    return dict(
        epochs=check_count("epochs", epochs), batch_size=check_count("batch_size", batch_size),
        lr=check_positive("lr", lr, hint=" (the learning rate)"),
        weight_decay=check_number("weight_decay", weight_decay, low=0),
        optimizer=check_choice("optimizer", optimizer, OPTIMIZERS),
        augment=check_choice("augment", augment, AUGMENTATIONS),
        device=check_device("device", device),
        seed=check_seed("seed", seed), verbose=check_bool("verbose", verbose))


def _check_params(name: str, params: Dict[str, Any], n_train: int) -> Dict[str, Any]:
    if name == "none":
        if params:
            raise ValueError(f"unknown parameter(s) {', '.join(map(repr, sorted(params)))} for defense 'none'; "
                             "valid parameters: (none)")
        return {}
    if name == "dp-sgd":
        return dp.check_params(params, n_train)
    if name == "mid":
        return mid.check_params(params)
    if name == "bido":
        return bido.check_params(params)
    if name == "nls":
        return label_smoothing.check_params(params)
    if name == "tl":
        return transfer.check_params(params)
    return postprocessing.check_params(name, params)


def train_defended_target(defense: str, dataset: MIDataset, *, model: ModelSpec = "cnn", epochs: int = 30,
                          batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 5e-4,
                          optimizer: str = "adam", augment: str = "shift", device: DeviceLike = None,
                          seed: int = 0, verbose: bool = False, **params: Any) -> Tuple[nn.Module, DefenseRecord]:
    """Train a target classifier on ``dataset.private_train`` under ``defense``.

    Defenses and their parameters (``**params``; unknown names raise ``ValueError``):

    * ``"none"``: plain cross-entropy training.
    * ``"dp-sgd"``: DP-SGD with Opacus (https://arxiv.org/abs/1607.00133): exactly one of
      ``target_epsilon`` or ``noise_multiplier``; ``max_grad_norm=1.0``; ``delta=1/N``;
      ``accountant="rdp"`` ("prv", "gdp"); ``max_physical_batch_size=None`` (= ``batch_size``). Poisson
      sampling; BatchNorm becomes GroupNorm (``ModuleValidator.fix``). See :mod:`mi_art.defenses.dp`.
    * ``"mid"``: variational information bottleneck (https://arxiv.org/abs/2009.05241): ``beta=0.003``,
      ``bottleneck_dim=None`` (half the feature size). See :mod:`mi_art.defenses.mid`.
    * ``"bido"``: bilateral dependency optimisation (https://arxiv.org/abs/2206.05483): ``lambda_x=0.05``,
      ``lambda_y=0.5``, ``measure="hsic"`` ("coco"), ``sigma=5.0``, ``layers=None``. See :mod:`mi_art.defenses.bido`.
    * ``"nls"``: negative label smoothing (https://arxiv.org/abs/2310.06549): ``alpha=-0.05`` in [-1, 1),
      ``warmup=0.5``, ``ramp=0.25``. See :mod:`mi_art.defenses.label_smoothing`.
    * ``"tl"``: TL-DMI (https://arxiv.org/abs/2405.05588): pre-train on ``dataset.public``, freeze the first
      layers (``freeze=0.5``: fraction, or int count), fine-tune the rest on private data;
      ``pretrain_epochs=None``/``pretrain_lr=None`` default to ``epochs``/``lr``. See :mod:`mi_art.defenses.transfer`.
    * ``"reverse-sigmoid"`` (``beta=1.0, gamma=0.1``), ``"high-confidence"`` (``cutoff=0.25``), ``"rounded"``
      (``decimals=3``), ``"gaussian-noise"`` (``scale=0.2``), ``"class-labels"``: ART output postprocessors.
      The model is trained as for "none"; the postprocessor is ``record.postprocessor`` and
      :func:`mi_art.defenses.wrap_with_defense` builds the ART classifier. **They change ``predict`` only: white-box
      gradient attacks (GMI, KEDMI through class gradients / the differentiable forward) are unaffected.**

    :param defense: One of :data:`DEFENSES`.
    :param dataset: The :class:`mi_art.data.MIDataset`; trains on ``private_train`` (TL also on ``public``),
        reports accuracy on ``private_test``.
    :param model: Architecture name (:data:`mi_art.models.ARCHITECTURES`) or a module (deep-copied, never
        modified) whose last ``nn.Linear`` is the classification layer.
    :param epochs: Training epochs, as in :func:`mi_art.training.train_classifier`.
    :param batch_size: Batch size (DP-SGD: the expected logical batch of Poisson sampling).
    :param lr: Learning rate.
    :param weight_decay: Weight decay.
    :param optimizer: "adam" or "sgd".
    :param augment: Training augmentation (see :func:`mi_art.training.augment_batch`).
    :param device: Training device (default CUDA when available).
    :param seed: Seed of initialisation, batching, noise.
    :param verbose: Progress bars.
    :return: ``(model, record)``: a plain torch module in eval mode returning logits, whose last
        ``nn.Linear`` takes the penultimate feature, with no training hooks left; and a
        :class:`mi_art.defenses.DefenseRecord` (``.to_dict()`` is JSON-serialisable).
    :raises ValueError: Unknown defense or parameter names; a parameter or training setting of the wrong
        type, non-finite or out of range (the message names it and what would be valid); a model whose
        weights became NaN or infinite in training (:class:`mi_art.validation.NonFiniteError`).
    """
    name = _check_name(defense)
    _check_dataset(dataset)
    _check_model(model)
    checked = _check_training(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                              optimizer=optimizer, augment=augment, device=device, seed=seed, verbose=verbose)
    epochs, batch_size, lr, seed = checked["epochs"], checked["batch_size"], checked["lr"], checked["seed"]
    train = dataset.private_train
    params = _check_params(name, dict(params), len(train))
    device = resolve_device(checked["device"])
    K, M = dataset.num_classes, dataset.num_public_classes
    seed_everything(seed)
    net = build_model(model, dataset.channels, K if name != "tl" else M, dataset.image_size)
    settings = dict(checked, device=device)
    details: Dict[str, Any] = {}
    epsilon = delta = accountant = None
    post = None
    start = time.perf_counter()

    if name in ("none", *postprocessing.POSTPROCESSORS):
        check_output_classes(net, K)
        net = train_classifier(net, train.x, train.y, desc=name, **settings)
        if name != "none":
            post = postprocessing.make_postprocessor(name, params)
    elif name == "dp-sgd":
        check_output_classes(net, K)
        net, facts = dp.train_dp(net, train.x, train.y, K, params=params, **settings)
        epsilon, delta, accountant = facts.pop("epsilon"), params["delta"], params["accountant"]
        details.update(facts)
    elif name == "mid":
        head = mid.add_vib_head(net, K, params["bottleneck_dim"])
        details["bottleneck_dim"] = head.k
        net = train_classifier(net, train.x, train.y, loss_fn=mid.mid_loss(head, params["beta"]), desc="MID",
                               **settings)
        mid.clear(head)
    elif name == "bido":
        check_output_classes(net, K)
        names = bido.hidden_modules(net, params["layers"])
        details["hidden_layers"] = [n or "<penultimate>" for n in names]
        with bido.capture_hidden(net, names) as store:
            loss_fn = bido.bido_loss(store, K, lambda_x=params["lambda_x"], lambda_y=params["lambda_y"],
                                     measure=params["measure"], sigma=params["sigma"])
            net = train_classifier(net, train.x, train.y, loss_fn=loss_fn, desc="BiDO", **settings)
    elif name == "nls":
        loss_fn = label_smoothing.NegativeLabelSmoothingLoss(
            K, params["alpha"], epochs, label_smoothing.steps_per_epoch(len(train), batch_size),
            warmup=params["warmup"], ramp=params["ramp"])
        check_output_classes(net, K)
        net = train_classifier(net, train.x, train.y, loss_fn=loss_fn, desc="NLS", **settings)
        details["alpha_per_epoch"] = list(loss_fn.history)
    elif name == "tl":
        count = transfer.resolve_freeze(net, params["freeze"])
        pre = dict(settings, epochs=params["pretrain_epochs"] or epochs, lr=params["pretrain_lr"] or lr)
        net = transfer.pretrain_public(net, dataset, **pre)
        details["public_train_accuracy"] = natural_accuracy(net, dataset.public.x, dataset.public.y)
        net, frozen = transfer.fine_tune_private(net, dataset, count, **settings)
        details["frozen_layers"] = frozen
        details["frozen_count"] = count
        details["trainable_layers"] = [n for n, _ in transfer.freezable_layers(net)][count:]
    train_time = time.perf_counter() - start

    net.eval()
    check_module_finite(net, f"defense {name!r}")
    left = hooks_left(net)
    if left:  # pragma: no cover - guards against a defense leaking its training hooks
        raise RuntimeError(f"defense {name!r} left hooks on the model: {left}")
    record = DefenseRecord(
        defense=name, params=params,
        test_accuracy=natural_accuracy(net, dataset.private_test.x, dataset.private_test.y),
        train_time_s=train_time, architecture=model_name(model), num_classes=K, input_shape=dataset.input_shape,
        training={k: (str(v) if k == "device" else v) for k, v in settings.items() if k != "verbose"},
        epsilon=epsilon, delta=delta, accountant=accountant, details=details, postprocessor=post)
    return net, record
