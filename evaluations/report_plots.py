"""The report's figures: the privacy-utility frontier and the bars of each data set, and each cell's reconstructions
and prior samples (:mod:`mi_art.evaluations.report`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from .markdown import safe_file_name
from .plots import wrap_title
from .report_text import _labels, _pairs
from .rows import cell_paths, form_attack
from .utility import matched_utility



def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _chance_line(ax: Any, aggs: Sequence[Dict[str, Any]]) -> None:
    """A dotted line at the Acc@1 chance level of these cells (one per distinct level)."""
    levels = sorted({round(a["chance@1"], 6) for a in aggs if a.get("chance@1") is not None})
    for i, level in enumerate(levels):
        ax.axhline(level, color="grey", linestyle=":", linewidth=1, label="chance" if i == 0 else None)


def _spread_words(aggs: Sequence[Dict[str, Any]]) -> str:
    """How a figure's points were made: a mean ± std over seeds, or one seed each (no error bars)."""
    return "mean ± std over seeds" if _several_seeds(aggs) else "one seed each: no error bars"


def _several_seeds(aggs: Sequence[Dict[str, Any]]) -> bool:
    """Whether any point of :func:`aggregate`'s rows is a mean over seeds (one seed has no spread to draw)."""
    return any((a.get("acc@1_n", a.get("n")) or 1) > 1 for a in aggs)


def _mark_matched_level(ax: Any, aggs: Sequence[Dict[str, Any]], colors: Dict[str, Any]) -> None:
    """The natural accuracy the report compares defenses at (:func:`mi_art.evaluations.utility.matched_utility`)
    as a dashed line, and each defense's interpolated Acc@1 there as a cross; nothing without a defense of
    several settings."""
    matched = [e for e in matched_utility(aggs) if not e["single"] and e["panel"] is not None]
    if not matched:
        return
    level = matched[0]["level"]
    ax.axvline(level, color="black", linestyle="--", linewidth=0.8, alpha=0.6, label=f"equal utility ({level:.3f})")
    ax.annotate(f"equal utility {level:.3f}", (level, 1.0), xytext=(-3, -3), textcoords="offset points",
                rotation=90, fontsize=7, ha="right", va="top")
    for e in matched:
        ax.plot([level], [e["panel"][1]], marker="X", markersize=8, color=colors[e["defense"]],
                markeredgecolor="black", linestyle="none")


def plot_frontier(path: Path, dataset: str, aggs: List[Dict[str, Any]]) -> Path:
    """The privacy-utility frontier of :func:`aggregate`'s rows: Acc@1 against natural accuracy per defense
    strength, with their spread over seeds, one panel per (attack, variant); DP points labelled by epsilon. Where
    an independent judge scored the cells, its Acc@1 of the same reconstructions is drawn too (hollow markers,
    dotted), so a defense that looks effective by one judge and not the other shows. The natural accuracy the
    report's "Defenses at equal utility" table compares defenses at is a dashed line, each defense's Acc@1 there a
    cross."""
    plt = _pyplot()
    pairs = _pairs(aggs)
    defenses = list(dict.fromkeys(a["defense"] for a in aggs))
    colors = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(defenses)}
    markers = "osD^v<>px*h"
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.8), squeeze=False)
    for ax, (attack, variant) in zip(axes[0], pairs):
        pa = [a for a in aggs if (a["attack"], a["variant"]) == (attack, variant)]
        for i, d in enumerate(defenses):
            pts = sorted([a for a in pa if a["defense"] == d and a["natural_accuracy"] is not None
                          and a["acc@1"] is not None], key=lambda a: a["natural_accuracy"])
            if not pts:
                continue
            x = [a["natural_accuracy"] for a in pts]
            y = [a["acc@1"] for a in pts]
            spread = _several_seeds(pts)
            ax.errorbar(x, y, xerr=[a["natural_accuracy_std"] or 0 for a in pts] if spread else None,
                        yerr=[a["acc@1_std"] or 0 for a in pts] if spread else None, color=colors[d],
                        marker=markers[i % len(markers)], linestyle="-" if len(pts) > 1 else "none", capsize=2,
                        label=d)
            independent = [a for a in pts if a.get("independent_acc@1") is not None]
            if independent:  # the same targets judged by a model we did not train: hollow, dotted
                ax.plot([a["natural_accuracy"] for a in independent], [a["independent_acc@1"] for a in independent],
                        color=colors[d], marker=markers[i % len(markers)], markerfacecolor="none",
                        linestyle=":" if len(independent) > 1 else "none", label=f"{d} (independent judge)")
            if len(pts) > 1 or pts[0]["defense_params"]:
                for a in pts:
                    tag = a["defense_label"][len(d):].strip("()") or d
                    if a.get("epsilon") is not None:  # a DP point is read by its privacy budget
                        tag = f"ε={a['epsilon']:.3g}"
                    ax.annotate(tag, (a["natural_accuracy"], a["acc@1"]), fontsize=8, xytext=(3, 3),
                                textcoords="offset points")
        _chance_line(ax, pa)
        _mark_matched_level(ax, pa, colors)
        ax.set_title(f"{attack.upper()} {variant}", fontsize=9)
        ax.set_xlabel("natural accuracy of the target")
        ax.set_ylabel("attack accuracy Acc@1")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="best")
    title = f"Privacy-utility frontier on {dataset} (up and right: useful but leaky; {_spread_words(aggs)})"
    fig.suptitle(wrap_title(title, 4.2 * len(pairs)), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(path: Path, dataset: str, aggs: List[Dict[str, Any]]) -> Path:
    plt = _pyplot()
    pairs, labels = _pairs(aggs), _labels(aggs)
    width = 0.8 / max(1, len(pairs))
    width_in = max(5.0, 1.0 + 0.9 * len(labels) * max(1, len(pairs)) * 0.5)
    fig, ax = plt.subplots(figsize=(width_in, 3.8))
    x = np.arange(len(labels))
    several = _several_seeds(aggs)
    for j, (attack, variant) in enumerate(pairs):
        means, stds = [], []
        for label in labels:
            m = [a for a in aggs if a["defense_label"] == label and (a["attack"], a["variant"]) == (attack, variant)]
            means.append(m[0]["acc@1"] if m and m[0]["acc@1"] is not None else np.nan)
            stds.append(m[0]["acc@1_std"] if m and m[0]["acc@1_std"] is not None else 0.0)
        ax.bar(x + (j - (len(pairs) - 1) / 2) * width, means, width, yerr=stds if several else None, capsize=2,
               label=f"{attack}/{variant}")
    _chance_line(ax, aggs)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("attack accuracy Acc@1")
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(fontsize=7, ncol=min(4, len(pairs)), loc="upper center")
    ax.set_title(wrap_title(f"Attack accuracy per defense and attack variant on {dataset} ({_spread_words(aggs)})",
                            width_in - 1.0), fontsize=9)  # the axes: the figure less its margins
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell_images(out: Path, row: Dict[str, Any], redraw: bool) -> Dict[str, Path]:
    """A cell's figures under ``images/``: its reconstructions (with a prior sample beside each row) and, when
    the cell saved them, its prior's samples under a title; ``{}`` for a cell without saved images."""
    from .plots import prior_title, save_prior_samples, save_reconstruction_grid

    _, npz = cell_paths(out, row["cell_id"])
    if not npz.is_file():
        return {}
    stem = safe_file_name(str(row["cell_id"]))
    paths = {"reconstructions": out / "images" / f"{stem}.png", "prior_samples": out / "images" / f"{stem}-prior.png"}
    with np.load(npz) as z:
        if "prior_samples" not in z.files:
            del paths["prior_samples"]
        if not redraw and all(p.is_file() and p.stat().st_mtime >= npz.stat().st_mtime for p in paths.values()):
            return paths
        recs, labels, real_x, real_y = z["reconstructions"], z["labels"], z["real_x"], z["real_y"]
        names = [str(n) for n in z["identity_names"]] if "identity_names" in z.files else None
        samples = z["prior_samples"] if "prior_samples" in z.files else None
    acc = "n/a" if row.get("acc@1") is None else f"{row['acc@1']:.2f}"
    if row.get("chance@1") is not None:
        acc += f" (chance {row['chance@1']:.2f})"
    prior = row.get("prior") or {}
    save_reconstruction_grid(paths["reconstructions"], recs, labels, real_x, real_y, identity_names=names,
                             title=f"{row['dataset']} {row['defense_label']}\n{form_attack(row).upper()} "
                                   f"{row['variant']} seed {row['seed']}: Acc@1 {acc} by the judges",
                             prior_samples=None if samples is None else samples[:10], caveat=prior.get("caveat"))
    if samples is not None:
        save_prior_samples(paths["prior_samples"], samples, title=f"{row['dataset']} seed {row.get('artifact_seed')}: "
                           + prior_title({"samples": len(samples), **prior}))
    return paths

