"""Ready-made grids for ``mi-art evaluate --preset NAME`` (same format as a grid file, see
:mod:`mi_art.evaluations.grid`). Command-line options and a ``--config`` file override a preset's keys."""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, List, Optional, Sequence

from mi_art.variants import ALIGN_VIEWS, parse_variant

#: The main job on a laptop: the embedded digits, three defenses, GMI and KEDMI with and without
#: LOMMA, two seeds (each retrains target, judges, priors and surrogates): 24 cells, minutes on 2 CPU cores
#: (measured in benchmarks/results/speed.md).
QUICK: Dict[str, Any] = {
    "name": "quick",
    "datasets": [{"name": "digits"}],
    "defenses": [
        {"name": "none"},
        {"name": "dp-sgd", "params": [{"noise_multiplier": 1.0}]},
        {"name": "mid", "params": [{"beta": 0.01}]},
    ],
    "attacks": ["gmi", "kedmi"],
    "variants": ["baseline", "lomma"],
    "seeds": [0, 1],
    "seed_scope": "all",
    "target_epochs": 20,
    "judge_epochs": 30,
    "iterations": 200,
    "n_reconstructions": 5,
    "gmi_steps": 300,
    "kedmi_steps": 100,
    "gan_width": 32,
    "surrogate_archs": ["cnn-small", "cnn"],
    "surrogate_steps": 300,
}

#: The LOMMA paper's CelebA protocol (reference sections 1, 4, 5), for a GPU. The CelebA folder is
#: required: ``--data-root /path/to/celeba`` (img_align_celeba/ and identity_CelebA.txt).
PAPER: Dict[str, Any] = {
    "name": "paper",
    "datasets": [{"name": "celeba", "data_options": {"num_private": 1000, "image_size": 64, "channels": 3}}],
    "defenses": [
        {"name": "none"},
        # MID: the paper's betas (CelebA VGG16 natural accuracy 77.59 / 73.60 / 67.72 / 59.24)
        {"name": "mid", "params": [{"beta": 0.003}, {"beta": 0.005}, {"beta": 0.01}, {"beta": 0.02}]},
        # BiDO-HSIC, the GMI/KEDMI CelebA setting (lambda_x, lambda_y) = (0.05, 0.5)
        {"name": "bido", "params": [{"lambda_x": 0.05, "lambda_y": 0.5, "measure": "hsic"}]},
        # negative label smoothing, alpha = -0.05
        {"name": "negative-label-smoothing", "params": [{"alpha": -0.05}]},
        # TL-DMI: torchvision's first 27 VGG16-BN feature modules (features.0-26) hold 16 parameterised
        # layers (8 conv + 8 BatchNorm), features.0-features.25 in mi_art's vgg16bn
        {"name": "tl", "params": [{"freeze": 16}]},
        # DP-SGD: no reference strength exists; a strong and a moderate privacy budget
        {"name": "dp-sgd", "params": [{"target_epsilon": 1.0}, {"target_epsilon": 8.0}]},
    ],
    "attacks": ["gmi", "kedmi"],
    "variants": ["baseline", "lom", "ma", "lomma"],
    "seeds": [0],
    "seed_scope": "all",
    "target_arch": "vgg16bn",
    "target_epochs": 50,
    "judge_arch": "ir50",
    "judge_epochs": 50,
    # the papers' target and judge start from ImageNet / MS-Celeb-1M weights, which cannot be downloaded:
    # the offline substitute is pre-training on the public identities, then fine-tuning every layer on
    # the private ones (TL-DMI takes the same pre-training, then freezes its first layers). Not measured here.
    "target_pretrain_epochs": 20,
    "judge_pretrain_epochs": 20,
    # a single judge is a draw (AT&T: three judges of one recipe scored the same images far apart;
    # benchmarks/results/attack_variants.md)
    "judges": 3,
    "iterations": 2400,
    "n_reconstructions": 5,
    "identities": "0-299",
    "batch_size": 60,
    "gmi_steps": 30000,
    "kedmi_steps": 11000,
    "plgmi_steps": 30000,
    "gan_width": 64,
    "surrogate_archs": ["efficientnet-b0", "efficientnet-b1", "efficientnet-b2"],
    "surrogate_steps": 10000,
}

PRESETS: Dict[str, Dict[str, Any]] = {"quick": QUICK, "paper": PAPER}


def preset(name: str) -> Dict[str, Any]:
    """A copy of the preset grid ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def with_adaptive_attack(variants: Sequence[str]) -> List[str]:
    """``variants`` with each one's aligned form (the "align" improvement of :mod:`mi_art.variants`, AlignMI's
    gradient alignment: "lomma" -> "lomma+align", "baseline" -> "align") right after it, unless listed already:
    every attack beside its adaptive form, for the report's "Protection against the adaptive attack". The
    variants given keep their cells (and cell ids)."""
    from .utility import aligned_variant

    out: List[str] = []
    for name in variants:
        out += [v for v in (name, aligned_variant(name)) if v not in out]
    return out


def plain_views_note(configs: Iterable[Any]) -> Optional[str]:
    """What to tell of a grid whose variants without alignment are given ``search_views`` (the configs of its
    cells, :class:`~mi_art.evaluations.experiment_config.ExperimentConfig`): the field is every variant's, so the attack
    the aligned one is compared with averages over random views too (PLG-MI's); None when none is."""
    views = sorted({c.search_views for c in configs
                    if c.search_views and "align" not in parse_variant(c.variant).improvements})
    if not views:
        return None
    return (f"search_views={', '.join(map(str, views))} applies to every variant: the variants without '+align' "
            "average their identity loss over as many random (PLG-MI) views too, so the aligned attack is compared "
            f"with a plain attack that averages over views as well; leave search_views out (None: {ALIGN_VIEWS} "
            "views under '+align', none without) to compare it with the plain attack itself")
