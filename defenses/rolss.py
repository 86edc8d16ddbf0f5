"""RoLSS: Removal of Last-Stage Skip-connections (Koh et al., "On the Vulnerability of Skip Connections to
Model Inversion Attacks", ECCV 2024, https://arxiv.org/abs/2409.01696).

Skip connections carry the attack's gradient past the residual modules; those of the last stage matter most
(removing them cost the attacks the most accuracy in the paper's stage-wise study). RoLSS is an architecture:
the last stage's residual blocks compute their residual branch alone, ``out = F(x)`` instead of
``F(x) + shortcut(x)`` (a projection shortcut goes with its skip), and the network is trained so, with
plain cross-entropy, from scratch or from a public pre-training of that same structure.

It applies to the residual architectures of :data:`mi_art.models.ARCHITECTURES` (:data:`ARCHITECTURES`: the
small ResNets of basic blocks and the IR-ResNet face backbones), whose models say how their blocks group
into stages (``blocks_per_stage``). Not to:

* the plain networks (CNN, MLP, VGG16-BN), which have no skip connection;
* EfficientNet, whose last torchvision stage holds one block without a skip in B0 (its inverted-residual skips
  need equal input and output widths): "the last stage" would remove nothing there;
* the deployed face recognisers ``dlib-head`` and ``dlib-finetune``: dlib's network is pre-trained with its
  skip connections and kept frozen (its last unit fine-tuned at most); removing skips from it changes the
  features its weights compute instead of training a network designed without them, which RoLSS is.

``blocks``: how many of the last stage's blocks lose their skip, counted from the output (None: all of
them, the paper's RoLSS).
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from mi_art.models import PRETRAINED_FACE_ARCHS, _BasicBlock, _IRBlock
from mi_art.training import train_classifier
from mi_art.validation import check_optional_count

from .base import Defense, Trained
from .common import check_keys, check_output_classes, model_name

DEFAULTS: Dict[str, Any] = {"blocks": None}
#: The architecture names RoLSS applies to: residual networks whose blocks group into stages.
ARCHITECTURES = ("resnet", "resnet10", "resnet18", "ir18", "ir50", "ir152")
#: The residual blocks of :mod:`mi_art.models`; each adds ``shortcut(x)`` to its residual branch.
RESIDUAL_BLOCKS = (_BasicBlock, _IRBlock)


class NoSkip(nn.Module):
    """What a block's ``shortcut`` becomes: nothing is added to the residual branch (a zero that broadcasts)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())


def _not_applicable(what: str) -> ValueError:
    return ValueError(f"defense 'rolss' removes the skip connections of a residual network's last stage, and "
                      f"{what}; it applies to the architectures {', '.join(ARCHITECTURES)}")


def check_architecture(arch: str) -> None:
    """An architecture name RoLSS applies to (:data:`ARCHITECTURES`); ValueError naming it and those otherwise."""
    if arch in ARCHITECTURES:
        return
    if arch in PRETRAINED_FACE_ARCHS:
        raise _not_applicable(f"target_arch={arch!r} is dlib's pre-trained recogniser, kept frozen with its skip "
                              "connections (removing them would change what its pre-trained weights compute, not "
                              "train a network without them)")
    if arch.startswith("efficientnet"):
        raise _not_applicable(f"target_arch={arch!r} is an EfficientNet, whose inverted-residual blocks are not "
                              "grouped into such stages here (in B0 its last stage has no skip connection at all)")
    raise _not_applicable(f"target_arch={arch!r} has no skip connections")


def stages(model: nn.Module) -> List[List[Tuple[str, nn.Module]]]:
    """The model's residual blocks ``(name, block)`` in module order, grouped into its stages (its
    ``blocks_per_stage``); ValueError naming the model when it has no such stages."""
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, RESIDUAL_BLOCKS)]
    per_stage = getattr(model, "blocks_per_stage", None)
    if not blocks or not isinstance(per_stage, tuple) or sum(per_stage) != len(blocks):
        raise _not_applicable(f"the model {model_name(model)!r} has no stages of residual blocks")
    out, start = [], 0
    for n in per_stage:
        out.append(blocks[start:start + n])
        start += n
    return [s for s in out if s]


def skipless_blocks(model: nn.Module, blocks: Any = None) -> List[str]:
    """Names of the blocks whose skip RoLSS removes: the last ``blocks`` of the last stage (None: all of it)."""
    last = stages(model)[-1]
    count = check_optional_count("blocks", blocks, hint=" (or None: every block of the last stage)")
    if count is not None and count > len(last):
        raise ValueError(f"blocks={count} asks for more blocks than the last stage of {model_name(model)!r} has: "
                         f"it has {len(last)}; use blocks <= {len(last)} or None (all of them)")
    return [n for n, _ in last[len(last) - (count or len(last)):]]


def remove_last_stage_skips(model: nn.Module, blocks: Any = None) -> List[str]:
    """Remove the skip connection (and projection shortcut) of the last ``blocks`` blocks of the last stage of
    ``model`` in place; returns their names. Idempotent."""
    names = skipless_blocks(model, blocks)
    modules = dict(model.named_modules())
    for name in names:
        if not isinstance(modules[name].shortcut, NoSkip):
            modules[name].shortcut = NoSkip()
    return names


def has_skip(block: nn.Module) -> bool:
    """Whether a residual block still adds its shortcut."""
    return not isinstance(block.shortcut, NoSkip)


def check_params(params: Dict[str, Any]) -> Dict[str, Any]:
    check_keys("rolss", params, DEFAULTS)
    out = {**DEFAULTS, **params}
    out["blocks"] = check_optional_count("blocks", out["blocks"],
                                         hint=" (blocks of the last stage, from the output, that lose their skip "
                                              "connection; or None: all of them)")
    return out


class RoLSS(Defense):
    """RoLSS: the last stage of a residual network without its skip connections, trained with cross-entropy."""

    name = "rolss"
    summary = "removal of the last stage's skip connections (https://arxiv.org/abs/2409.01696)"
    defaults = DEFAULTS

    def check_params(self, params: Dict[str, Any], n_train: int) -> Dict[str, Any]:
        return check_params(params)

    def check_architecture(self, arch: str) -> None:
        check_architecture(arch)

    def architecture(self, model: nn.Module, num_classes: int, params: Dict[str, Any]) -> nn.Module:
        check_output_classes(model, num_classes)
        remove_last_stage_skips(model, params["blocks"])
        return model

    def pretraining_tag(self, params: Dict[str, Any]) -> str:
        return f"rolss-last-{params['blocks'] or 'stage'}"

    def pretraining_architecture(self, model: nn.Module, params: Dict[str, Any]) -> nn.Module:
        remove_last_stage_skips(model, params["blocks"])
        return model

    def train(self, model: nn.Module, dataset: Any, params: Dict[str, Any], settings: Dict[str, Any]) -> Trained:
        names = remove_last_stage_skips(model, params["blocks"])
        train = dataset.private_train
        model = train_classifier(model, train.x, train.y, desc="RoLSS", **settings)
        kept = [n for stage in stages(model) for n, b in stage if has_skip(b)]
        return Trained(model, details={"skipless_blocks": names, "blocks_with_skips": kept})
