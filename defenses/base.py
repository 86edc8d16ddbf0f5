"""What a defense is: :class:`Defense`, one object that knows its defaults, checks its parameters, gives
the structure of the model it trains and trains it. :mod:`mi_art.defenses.registry` holds them by name;
:func:`mi_art.defenses.train_defended_target` looks one up and adds what every defense shares (the
training settings, the checks of the returned model, the record).

To add a defense, subclass :class:`Defense` in its own module and register an instance::

    from mi_art.defenses import Defense, Trained, register_defense

    class WeightNoise(Defense):
        name = "weight-noise"
        summary = "Gaussian noise on the weights after training"
        defaults = {"scale": 0.01}

        def check_params(self, params, n_train):
            out = super().check_params(params, n_train)
            out["scale"] = check_number("scale", out["scale"], low=0)
            return out

        def train(self, model, dataset, params, settings):
            model = train_classifier(model, dataset.private_train.x, dataset.private_train.y, **settings)
            ...
            return Trained(model)

    register_defense(WeightNoise())
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

from torch import nn

from mi_art.training import train_classifier

from .common import check_keys, check_output_classes


@dataclass
class Trained:
    """What :meth:`Defense.train` returns: the model and the defense's facts for the record.

    :param model: The trained module (logits out; its last ``nn.Linear`` takes the penultimate feature).
    :param details: Defense-specific facts (JSON-serialisable), e.g. DP's noise and steps.
    :param epsilon: Differential privacy only: the accountant's epsilon.
    :param delta: Differential privacy only.
    :param accountant: Differential privacy only: the accountant's name.
    :param postprocessor: Output postprocessors only: the ART postprocessor ``predict`` applies.
    """

    model: nn.Module
    details: Dict[str, Any] = field(default_factory=dict)
    epsilon: Optional[float] = None
    delta: Optional[float] = None
    accountant: Optional[str] = None
    postprocessor: Any = None


class Defense:
    """One model inversion defense. Subclasses set :attr:`name`, :attr:`summary` and :attr:`defaults`
    and override :meth:`train`, and :meth:`check_params` when a parameter needs more than its name
    checked; :meth:`architecture` when the trained model's structure differs from the plain classifier
    (a saved state dict is loaded into it); :meth:`pretraining_architecture` when public pre-training must
    already use that structure (DP-SGD: GroupNorm, so that fine-tuning starts from every pre-trained weight)."""

    #: The name :func:`mi_art.defenses.train_defended_target` and the grid know it by (lower case, dashes).
    name: str = ""
    #: One line: what it does, with the paper's link.
    summary: str = ""
    #: Parameter names and their defaults (``None``: derived from the data or the training settings).
    defaults: Mapping[str, Any] = {}

    def check_params(self, params: Dict[str, Any], n_train: int) -> Dict[str, Any]:
        """``params`` checked (unknown names refused) with the defaults filled in; ``n_train`` is the number
        of private training images (DP's default delta depends on it)."""
        check_keys(self.name, params, self.defaults)
        return {**self.defaults, **params}

    def check_architecture(self, arch: str) -> None:
        """Refuse, before anything is built or trained, an architecture name (of
        :data:`mi_art.models.ARCHITECTURES`) the defense cannot apply to: a ValueError naming it and those it
        applies to. Every architecture by default."""

    def architecture(self, model: nn.Module, num_classes: int, params: Dict[str, Any]) -> nn.Module:
        """The untrained model with the structure :meth:`train` returns (default: ``model`` itself, whose
        last ``nn.Linear`` must have one output per private class)."""
        check_output_classes(model, num_classes)
        return model

    def pretraining_tag(self, params: Dict[str, Any]) -> str:
        """Non-empty when :meth:`pretraining_architecture` changes the model for these (checked) ``params``:
        it keys pre-trained weights made for this defense apart from the plain ones."""
        return ""

    def pretraining_architecture(self, model: nn.Module, params: Dict[str, Any]) -> nn.Module:
        """The structure public pre-training should use for a target this defense fine-tunes."""
        return model

    def defaults_key(self, params: Dict[str, Any]) -> Dict[str, Any]:
        """What a target's cache key and a grid cell's id add for the defaults these (unchecked, as given)
        ``params`` leave to the defense, when such a default has changed since results were first cached:
        a target made under the earlier default is then never served for this one. Empty by default."""
        return {}

    def train(self, model: nn.Module, dataset: Any, params: Dict[str, Any], settings: Dict[str, Any]) -> Trained:
        """Train ``model`` (from :meth:`architecture`) on ``dataset.private_train`` under the defense.
        ``settings`` are the checked keyword arguments of :func:`mi_art.training.train_classifier` (epochs,
        batch size, learning rate, weight decay, optimizer, augmentation, device, seed, verbose)."""
        raise NotImplementedError(f"defense {self.name!r} does not implement train()")

    def __repr__(self) -> str:
        return f"<defense {self.name!r}: {self.summary}>"


class Undefended(Defense):
    """Plain cross-entropy training: the reference every defense is measured against."""

    name = "none"
    summary = "plain cross-entropy training (no defense)"

    def train(self, model: nn.Module, dataset: Any, params: Dict[str, Any], settings: Dict[str, Any]) -> Trained:
        train = dataset.private_train
        return Trained(train_classifier(model, train.x, train.y, desc=self.name, **settings))


__all__ = ["Defense", "Trained", "Undefended"]
