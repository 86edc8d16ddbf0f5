"""Figures: reconstructions beside real private images of the same identities."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np


def save_reconstruction_grid(path: Union[str, Path], reconstructions: np.ndarray, labels: np.ndarray,
                             private_x: np.ndarray, private_y: np.ndarray, *,
                             identity_names: Optional[Sequence[str]] = None, max_identities: int = 10,
                             max_reconstructions: int = 5, title: Optional[str] = None) -> Path:
    """Write a PNG: one row per attacked identity, a real private image first, then its reconstructions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    identities = list(dict.fromkeys(np.asarray(labels).tolist()))[:max_identities]
    if not identities:
        raise ValueError("no reconstructions to plot")
    cols = 1 + min(max_reconstructions, max(int((labels == k).sum()) for k in identities))
    fig, axes = plt.subplots(len(identities), cols, figsize=(1.3 * cols, 1.3 * len(identities) + 0.4),
                             squeeze=False)
    for row, k in enumerate(identities):
        real = private_x[private_y == k]
        recs = reconstructions[labels == k][:cols - 1]
        images = ([real[0]] if len(real) else [np.zeros_like(reconstructions[0])]) + list(recs)
        for col in range(cols):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(images):
                img = np.clip(np.transpose(images[col], (1, 2, 0)), 0, 1)
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        name = identity_names[k] if identity_names is not None else str(k)
        axes[row, 0].set_title(f"real {name}", fontsize=7)
    for col in range(1, cols):
        axes[0, col].set_title(f"{axes[0, col].get_title()} rec {col}".strip(), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
