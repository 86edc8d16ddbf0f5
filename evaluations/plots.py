"""Figures of one run: reconstructions beside real private images of the same identities (and samples of the
prior they were searched in), and a titled grid of the prior's samples. Each says what it shows: which of the
attacked identities, and what the prior made at the run's budget."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

#: Where a run's figures go, relative to its folder (``mi-art attack``).
RECONSTRUCTIONS_PNG = "reconstructions.png"
PRIOR_SAMPLES_PNG = "prior-samples.png"
#: Characters of a title line at 9 pt per inch of figure width (a little under what fits: titles wrap early).
CHARS_PER_INCH = 12


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _show(ax: Any, image: np.ndarray) -> None:
    img = np.clip(np.transpose(image, (1, 2, 0)), 0, 1)
    ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)


def _ids_text(ids: Sequence[int]) -> str:
    ids = list(ids)
    if ids and ids == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else str(ids[0])
    return ", ".join(map(str, ids[:6])) + (", ..." if len(ids) > 6 else "")


def shown_identities_note(shown: Sequence[int], attacked: Sequence[int]) -> str:
    """``rows: identities 0-9, the first 10 of the 20 attacked (Acc@1 is over all 20)`` or ``rows: all 20
    identities attacked``."""
    if len(shown) == len(attacked):
        return f"rows: all {len(attacked)} identities attacked"
    return (f"rows: identities {_ids_text(shown)}, the first {len(shown)} of the {len(attacked)} attacked "
            f"(Acc@1 is over all {len(attacked)})")


def wrap_title(text: str, width_in: float) -> str:
    """``text`` wrapped to lines that fit a figure ``width_in`` inches wide at 9 pt, each of its lines apart."""
    width = max(20, int(CHARS_PER_INCH * width_in))
    return "\n".join(textwrap.fill(line, width=width) for line in text.split("\n"))


def save_reconstruction_grid(path: Union[str, Path], reconstructions: np.ndarray, labels: np.ndarray,
                             private_x: np.ndarray, private_y: np.ndarray, *,
                             identity_names: Optional[Sequence[str]] = None, max_identities: int = 10,
                             max_reconstructions: int = 5, title: Optional[str] = None,
                             prior_samples: Optional[np.ndarray] = None, caveat: Optional[str] = None) -> Path:
    """Write a PNG: one row per attacked identity (the first ``max_identities``; the title says which of how
    many), a real private image first, then its reconstructions, then, with ``prior_samples``, one sample of
    the prior the codes were searched in (no identity: what the prior makes without the attack). ``caveat``
    is printed under the title (e.g. that the prior makes no faces yet at this budget)."""
    plt = _pyplot()
    labels = np.asarray(labels)
    attacked = list(dict.fromkeys(labels.tolist()))
    identities = attacked[:max_identities]
    if not identities:
        raise ValueError("no reconstructions to plot")
    n_recs = min(max_reconstructions, max(int((labels == k).sum()) for k in identities))
    samples = [] if prior_samples is None else list(np.asarray(prior_samples))
    cols = 1 + n_recs + (1 if samples else 0)
    width_in = max(1.3 * cols, 4.0)
    head = "\n".join(t for t in (title, shown_identities_note(identities, attacked), caveat) if t)
    head = wrap_title(head, width_in)
    head_in = 0.17 * (head.count("\n") + 1) + 0.15
    fig, axes = plt.subplots(len(identities), cols, figsize=(width_in, 1.3 * len(identities) + head_in),
                             squeeze=False, layout="constrained")  # room for every line of the suptitle
    for row, k in enumerate(identities):
        real = private_x[private_y == k]
        recs = list(reconstructions[labels == k][:n_recs])
        images = [real[0] if len(real) else np.zeros_like(reconstructions[0])] + recs
        for col in range(cols):
            axes[row, col].axis("off")
        for col, image in enumerate(images):
            _show(axes[row, col], image)
        if samples:
            _show(axes[row, cols - 1], samples[row % len(samples)])
        name = identity_names[k] if identity_names is not None else str(k)
        axes[row, 0].set_title(f"real {name}", fontsize=7)
    for col in range(1, 1 + n_recs):
        axes[0, col].set_title(f"rec {col}", fontsize=7)
    if samples:
        axes[0, cols - 1].set_title("prior sample", fontsize=7)
    return _save_titled(fig, head, path)


def _save_titled(fig: Any, head: str, path: Union[str, Path]) -> Path:
    """Title ``fig`` with ``head``, write it to ``path`` (its folder made) and close it."""
    fig.suptitle(head, fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def save_prior_samples(path: Union[str, Path], samples: np.ndarray, *, title: str, per_row: int = 8) -> Path:
    """A titled PNG grid of a prior's samples (``samples``: NCHW in [0, 1]), ``per_row`` to a row."""
    plt = _pyplot()
    samples = np.asarray(samples)
    rows = -(-len(samples) // per_row)
    width_in = max(0.9 * per_row, 5.0)
    head = wrap_title(title, width_in)
    head_in = 0.17 * (head.count("\n") + 1) + 0.15
    fig, axes = plt.subplots(rows, per_row, figsize=(width_in, 0.9 * rows + head_in), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < len(samples):
            _show(ax, samples[i])
    return _save_titled(fig, head, path)


def prior_title(prior: Dict[str, Any]) -> str:
    """The title of a prior's sample grid from a run's ``prior`` record (name, steps, FID)."""
    fid = prior.get("fid_public")
    return (f"{str(prior.get('name', '')).upper()} prior: {prior.get('samples', '')} samples after "
            f"{prior.get('steps')} training steps"
            + ("" if fid is None else f"; FID {fid:.1f} to the public images (the judge's features)")
            + ". The attack searches among images like these.")


def write_run_figures(out: Path, result: Dict[str, Any], private_x: np.ndarray, private_y: np.ndarray, *,
                      identity_names: Optional[Sequence[str]] = None, title: str) -> Dict[str, str]:
    """A run's figures in ``out``: :data:`RECONSTRUCTIONS_PNG` and, for an attack that searched a GAN prior,
    :data:`PRIOR_SAMPLES_PNG`. Returns their file names relative to ``out`` by what they show (the record
    links them)."""
    prior = result.get("prior") or {}
    samples = result.get("prior_samples")
    acc = f"Acc@1 {result['acc@1']:.2f}" + (f" (chance {result['chance@1']:.2f})"
                                           if result.get("chance@1") is not None else "")
    figures = {"reconstructions": RECONSTRUCTIONS_PNG}
    save_reconstruction_grid(out / RECONSTRUCTIONS_PNG, result["reconstructions"], result["labels"], private_x,
                             private_y, identity_names=identity_names, title=f"{title}: {acc} by the judges",
                             prior_samples=None if samples is None else samples[:10],
                             caveat=prior.get("caveat"))
    if samples is not None:
        save_prior_samples(out / PRIOR_SAMPLES_PNG, samples, title=prior_title(prior))
        figures["prior_samples"] = PRIOR_SAMPLES_PNG
    return figures


__all__: List[str] = ["PRIOR_SAMPLES_PNG", "RECONSTRUCTIONS_PNG", "prior_title", "save_prior_samples",
                      "save_reconstruction_grid", "shown_identities_note", "wrap_title", "write_run_figures"]
