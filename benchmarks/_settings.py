"""The AT&T-faces setting both benchmarks share (so that they share cached artifacts too)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mi_art.evaluations.experiment import ExperimentConfig  # noqa: E402

DEFAULT_ROOT = REPO.parent / "shared" / "data" / "att_faces"


def att_faces_config(data_root: str, **overrides: Any) -> ExperimentConfig:
    """Private s1-s20 (8 train / 2 test images each), public s21-s40, 32x32 grayscale; a 3-block CNN
    target, a wider 4-block CNN judge, WGAN priors trained with flips, two surrogates (cnn-small and cnn) distilled on public images and GMI-prior samples."""
    settings: dict = dict(
        dataset="image-folder", data_root=data_root,
        data_options={"private": 20, "image_size": 32, "channels": 1, "test_fraction": 0.2},
        target_arch="cnn", target_epochs=60, eval_arch="cnn-wide", eval_epochs=80, augment="flip-shift",
        batch_size=100, gan_augment="flip", surrogate_archs=("cnn-small", "cnn"), seed=0)
    settings.update(overrides)
    return ExperimentConfig(**settings)
