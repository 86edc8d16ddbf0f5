"""One call to train a model inversion target under any defense: :func:`train_defended_target`."""
from __future__ import annotations

import time
from typing import Any, Dict, Tuple

from torch import nn

from mi_art.predictions import natural_accuracy
from mi_art.data import MIDataset
from mi_art.models import ARCHITECTURES, RENAMED_ARCHITECTURES
from mi_art.training import AUGMENTATIONS, OPTIMIZERS
from mi_art.utils import DeviceLike, resolve_device, seed_everything
from mi_art.validation import (check_bool, check_choice, check_count, check_device, check_module_finite, check_number,
                               check_positive, check_seed)

from .common import ModelSpec, build_model, hooks_left, model_name
from .record import DefenseRecord
from .registry import DEFENSES, check_defense_params, defense_defaults, get_defense  # noqa: F401 (re-exported)

def defended_architecture(defense: str, dataset: MIDataset, *, model: ModelSpec = "cnn", **params: Any) -> nn.Module:
    """An untrained module with the structure :func:`train_defended_target` returns for the same
    arguments (MID's VIB head, DP's GroupNorm), to load a saved state dict into."""
    spec = get_defense(defense)
    _check_dataset(dataset)
    _check_model(model)
    params = spec.check_params(dict(params), len(dataset.private_train))
    net = build_model(model, dataset.channels, dataset.num_classes, dataset.image_size)
    return spec.architecture(net, dataset.num_classes, params).eval()


def _check_dataset(dataset: Any) -> None:
    if not isinstance(dataset, MIDataset):
        raise ValueError(f"dataset must be an mi_art.data.MIDataset (e.g. from mi_art.data.load_dataset), got "
                         f"{type(dataset).__name__}")


def _check_model(model: Any) -> None:
    if isinstance(model, nn.Module):
        return
    if not isinstance(model, str) or (model not in ARCHITECTURES and model not in RENAMED_ARCHITECTURES):
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


def train_defended_target(defense: str, dataset: MIDataset, *, model: ModelSpec = "cnn", epochs: int = 30,
                          batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 5e-4,
                          optimizer: str = "adam", augment: str = "shift", device: DeviceLike = None,
                          seed: int = 0, verbose: bool = False, **params: Any) -> Tuple[nn.Module, DefenseRecord]:
    """Train a target classifier on ``dataset.private_train`` under ``defense``.

    Defenses and their parameters (``**params``; unknown names raise ``ValueError``); more can be added with
    :func:`mi_art.defenses.register_defense`:

    * ``"none"``: plain cross-entropy training.
    * ``"dp-sgd"``: DP-SGD with Opacus (https://arxiv.org/abs/1607.00133): exactly one of
      ``target_epsilon`` or ``noise_multiplier``; ``max_grad_norm=1.0``; ``target_delta=None`` (Opacus's name;
      ``delta``, the earlier one, is still accepted with a ``DeprecationWarning``): ``min(1e-5, 1/(100 N))``
      for ``N`` training images (Opacus's examples' 1e-5, kept far below 1/N: (epsilon, delta)-DP may release
      a training image outright with probability about delta each; a delta at or above 1/(10 N) is warned
      about, one above 1/N refused unless ``allow_large_delta=True``); ``accountant="rdp"`` ("prv", "gdp");
      ``max_physical_batch_size=None`` (= ``batch_size``). Poisson sampling; BatchNorm becomes GroupNorm
      (``ModuleValidator.fix``). DP fine-tuning: pass a module pre-trained
      in :func:`mi_art.defenses.dp.private_architecture` as ``model`` and ``trainable="all"`` (every layer),
      ``"head"`` or a count of last layers; or pass a BatchNorm-pre-trained module with ``batch_norm="freeze"``
      (each BatchNorm becomes its fixed eval-mode map); the DP run's own ``dp_epochs``, ``dp_lr``,
      ``dp_optimizer``, ``dp_batch_size``, ``dp_augment``. See :mod:`mi_art.defenses.dp`.
    * ``"mid"``: variational information bottleneck (https://arxiv.org/abs/2009.05241): ``beta=0.003``,
      ``bottleneck_dim=None`` (half the feature size). See :mod:`mi_art.defenses.mid`.
    * ``"bido"``: bilateral dependency optimisation (https://arxiv.org/abs/2206.05483): ``lambda_x=0.05``,
      ``lambda_y=0.5``, ``measure="hsic"`` ("coco"), ``sigma=5.0``, ``layers=None``. See :mod:`mi_art.defenses.bido`.
    * ``"negative-label-smoothing"`` (earlier ``"nls"``, still accepted): negative label smoothing
      (https://arxiv.org/abs/2310.06549): ``alpha=-0.05`` in [-1, 1), ``warmup=0.5``, ``ramp=0.25``. See
      :mod:`mi_art.defenses.label_smoothing`.
    * ``"tl"``: TL-DMI (https://arxiv.org/abs/2405.05588): pre-train on ``dataset.public``, freeze the first
      layers (``freeze=0.5``: fraction, or int count), fine-tune the rest on private data;
      ``pretrain_epochs=None``/``pretrain_lr=None`` default to ``epochs``/``lr``. See :mod:`mi_art.defenses.transfer`.
    * ``"trap-mid"``: Trap-MID (https://arxiv.org/abs/2411.08460): per-class trapdoor triggers, ``alpha=0.02``
      (the blend), ``beta=0.2`` (the trapdoor loss weight), ``trigger_step=0.01``, ``discriminator=True``. See
      :mod:`mi_art.defenses.trap`.
    * ``"rolss"``: RoLSS (https://arxiv.org/abs/2409.01696): the last stage of a residual network (resnet,
      resnet10, resnet18, ir18, ir50, ir152) without its skip connections, ``blocks=None`` (all of the last
      stage's blocks, or a count from the output); other architectures are refused. See :mod:`mi_art.defenses.rolss`.
    * ``"reverse-sigmoid"`` (``beta=1.0, gamma=0.1``), ``"high-confidence"`` (``cutoff=0.25``), ``"rounded"``
      (``decimals=3``), ``"gaussian-noise"`` (``scale=0.2``), ``"class-labels"``: ART output postprocessors.
      The model is trained as for "none"; the postprocessor is ``record.postprocessor`` and
      :func:`mi_art.defenses.wrap_with_defense` builds the ART classifier. **They change ``predict`` only: white-box
      gradient attacks (GMI, KEDMI through class gradients / the differentiable forward) are unaffected.**

    :param defense: One of :data:`DEFENSES` (or a registered :class:`mi_art.defenses.Defense`); an earlier name
        (:data:`~mi_art.defenses.registry.RENAMED_DEFENSES`) is taken as its name now, reported as renamed.
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
    spec = get_defense(defense)
    name = spec.name
    _check_dataset(dataset)
    _check_model(model)
    checked = _check_training(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                              optimizer=optimizer, augment=augment, device=device, seed=seed, verbose=verbose)
    train = dataset.private_train
    params = spec.check_params(dict(params), len(train))
    settings = dict(checked, device=resolve_device(checked["device"]))
    K = dataset.num_classes
    seed_everything(settings["seed"])
    net = spec.architecture(build_model(model, dataset.channels, K, dataset.image_size), K, params)
    start = time.perf_counter()
    trained = spec.train(net, dataset, params, settings)
    train_time = time.perf_counter() - start
    net = trained.model

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
        epsilon=trained.epsilon, delta=trained.delta, accountant=trained.accountant, details=trained.details,
        postprocessor=trained.postprocessor)
    return net, record


__all__ = ["defended_architecture", "train_defended_target"]
