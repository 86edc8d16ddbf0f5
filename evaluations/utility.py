"""Defenses compared at equal utility, and what an adaptive attack leaves of their protection.

A defense's *frontier* is its points (the target's natural accuracy, the attack's Acc@1) over its parameter
settings, from :func:`mi_art.evaluations.report.aggregate`'s rows (means over seeds). Two defenses are compared
at the same natural accuracy: each frontier is interpolated linearly between its neighbouring points at a common
level (by default the highest accuracy every defense with several settings reaches), never extrapolated: a level
outside a defense's range is "not reached". The spread over seeds is interpolated between the same neighbours.

The *utility ratio* (Koh et al., ECCV 2024, report it for RoLSS) is the attack accuracy a defense removes per
point of natural accuracy it costs, against the undefended target attacked the same way::

    (attack_acc_undefended - attack_acc_defended) / (natural_acc_undefended - natural_acc_defended)

so a defense that buys privacy only by losing accuracy shows as such (a ratio near or below 1).

An attack variant ending in :data:`ALIGN_SUFFIX` is the adaptive (aligned) form of the variant without it ("align"
alone: of "baseline"; :func:`plain_variant`); the share of a defense's protection that survives it is
:func:`protection_kept`.

Every function here but the two ``*_lines`` renderers is pure arithmetic on rows; the renderers write the
report's sections from them.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .markdown import markdown_text, mean_std_text

__all__ = ["ALIGN_SUFFIX", "FrontierPoint", "adaptive_comparison", "adaptive_lines", "common_level",
           "aligned_variant", "equal_utility_lines", "frontier", "interpolate", "matched_utility", "plain_variant",
           "protection_kept", "utility_ratio"]

#: The suffix of an attack variant that aligns the attack to the defense (``"lomma+align"``: ``"lomma"`` adapted).
ALIGN_SUFFIX = "+align"
#: Natural accuracies closer than this are one point of a frontier.
SAME_ACCURACY = 1e-9

#: (natural accuracy, attack accuracy, its std over seeds or None, number of seeds behind the mean)
FrontierPoint = Tuple[float, float, Optional[float], int]


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def frontier(aggs: Iterable[Dict[str, Any]], key: str = "acc@1") -> List[FrontierPoint]:
    """The points (natural accuracy, ``key``, its std, seeds) of ``aggs`` sorted by natural accuracy; rows without
    either value are left out, and settings with the same natural accuracy are averaged into one point."""
    by_accuracy: "OrderedDict[float, List[Dict[str, Any]]]" = OrderedDict()
    for a in aggs:
        natural, value = _number(a.get("natural_accuracy")), _number(a.get(key))
        if natural is None or value is None:
            continue
        same = next((x for x in by_accuracy if abs(x - natural) <= SAME_ACCURACY), natural)
        by_accuracy.setdefault(same, []).append(a)
    points = []
    for natural, rows in by_accuracy.items():
        stds = [_number(r.get(key + "_std")) for r in rows]
        std = None if any(s is None for s in stds) else sum(stds) / len(stds)
        points.append((natural, sum(float(r[key]) for r in rows) / len(rows), std,
                       min(int(r.get(key + "_n") or r.get("n") or 1) for r in rows)))
    return sorted(points, key=lambda p: p[0])


def interpolate(points: Sequence[FrontierPoint], level: float) -> Optional[FrontierPoint]:
    """The frontier ``points`` (sorted, as :func:`frontier` gives them) at natural accuracy ``level``: linear
    between the two neighbouring points, its std likewise; None ("not reached") outside the points' range."""
    if not points or level < points[0][0] - SAME_ACCURACY or level > points[-1][0] + SAME_ACCURACY:
        return None
    for low, high in zip(points, points[1:]):
        if low[0] - SAME_ACCURACY <= level <= high[0] + SAME_ACCURACY:
            t = 0.0 if high[0] - low[0] <= SAME_ACCURACY else min(1.0, max(0.0, (level - low[0]) / (high[0] - low[0])))
            std = None if low[2] is None or high[2] is None else low[2] + t * (high[2] - low[2])
            return level, low[1] + t * (high[1] - low[1]), std, min(low[3], high[3])
    return level, points[0][1], points[0][2], points[0][3]  # a single point, at its own accuracy


def common_level(frontiers: Iterable[Sequence[FrontierPoint]]) -> Optional[float]:
    """The highest natural accuracy every frontier with several points reaches (the lowest of their highest
    points); None when no frontier has two."""
    tops = [f[-1][0] for f in frontiers if len(f) > 1]
    return min(tops) if tops else None


def utility_ratio(undefended: Tuple[float, float], defended: Tuple[float, float]) -> Optional[float]:
    """Attack accuracy removed per unit of natural accuracy lost, from ``(natural accuracy, attack accuracy)`` of
    the undefended and the defended target; None when the defense loses no natural accuracy."""
    accuracy_drop = undefended[0] - defended[0]
    if accuracy_drop <= SAME_ACCURACY:
        return None
    return (undefended[1] - defended[1]) / accuracy_drop


def _undefended(aggs: Sequence[Dict[str, Any]], attack: str, variant: str) -> Optional[Dict[str, Any]]:
    return next((a for a in aggs if a.get("defense") == "none" and (a["attack"], a["variant"]) == (attack, variant)
                 and _number(a.get("natural_accuracy")) is not None and _number(a.get("acc@1")) is not None), None)


def _pairs(aggs: Sequence[Dict[str, Any]]) -> List[Tuple[str, str]]:
    return list(dict.fromkeys((a["attack"], a["variant"]) for a in aggs))


def matched_utility(aggs: Sequence[Dict[str, Any]], level: Optional[float] = None) -> List[Dict[str, Any]]:
    """Per attack variant of one data set's :func:`~mi_art.evaluations.report.aggregate` rows, each defense's
    attack accuracy at a common natural accuracy and its :func:`utility_ratio`.

    ``level`` is the common natural accuracy (default: :func:`common_level` of the variant's defenses). A defense
    with a single distinct natural accuracy is not interpolated: it is given at its own accuracy
    (``"single": True``). Each entry: ``attack``, ``variant``, ``defense``, ``label`` (the setting's label for a
    defense with one setting, else the defense), ``level`` (None: not reached),
    ``range`` (its lowest and highest natural accuracy), ``single``, ``panel`` and ``independent`` (the
    interpolated :data:`FrontierPoint` of the trained panel's and the independent judge's Acc@1, or None),
    ``ratio`` and ``independent_ratio`` (None without an undefended target or accuracy drop), and ``undefended``
    (the undefended row of the same attack variant, or None)."""
    out: List[Dict[str, Any]] = []
    for attack, variant in _pairs(aggs):
        pa = [a for a in aggs if (a["attack"], a["variant"]) == (attack, variant)]
        base = _undefended(pa, attack, variant)
        defenses = list(dict.fromkeys(a["defense"] for a in pa if a["defense"] != "none"))
        panels = {d: frontier([a for a in pa if a["defense"] == d]) for d in defenses}
        at = common_level(panels.values()) if level is None else level
        for d in defenses:
            points = panels[d]
            if not points:
                continue
            single = len(points) == 1
            where = points[0][0] if single else at
            panel = None if where is None else interpolate(points, where)
            ind_points = frontier([a for a in pa if a["defense"] == d], "independent_acc@1")
            independent = None if where is None or panel is None else interpolate(ind_points, where)
            labels = list(dict.fromkeys(a["defense_label"] for a in pa if a["defense"] == d))
            entry = {"attack": attack, "variant": variant, "defense": d, "level": None if panel is None else where,
                     "label": labels[0] if single and len(labels) == 1 else d,
                     "range": (points[0][0], points[-1][0]), "single": single, "panel": panel,
                     "independent": independent, "ratio": None, "independent_ratio": None, "undefended": base}
            if base is not None and panel is not None:
                entry["ratio"] = utility_ratio((base["natural_accuracy"], base["acc@1"]), panel[:2])
                if independent is not None and _number(base.get("independent_acc@1")) is not None:
                    entry["independent_ratio"] = utility_ratio(
                        (base["natural_accuracy"], base["independent_acc@1"]), independent[:2])
            out.append(entry)
    return out


def protection_kept(undefended: float, plain: float, aligned: float) -> Optional[float]:
    """The share of a defense's protection that survives an adaptive attack: the Acc@1 it removes from the
    undefended target's against the aligned attack over what it removes against the plain one; None when it
    removes nothing against the plain attack (no protection to keep)."""
    protection = undefended - plain
    if protection <= SAME_ACCURACY:
        return None
    return (undefended - aligned) / protection


def plain_variant(variant: str) -> Optional[str]:
    """The variant an aligned ``variant`` adapts (``"lomma+align"`` -> ``"lomma"``, ``"align"`` -> ``"baseline"``);
    None when ``variant`` does not align. A name :mod:`mi_art.variants` does not know (an improvement registered
    elsewhere) is read by its :data:`ALIGN_SUFFIX`."""
    from mi_art.variants import Variant, parse_variant

    try:
        improvements = parse_variant(variant).improvements
    except ValueError:
        return variant[:-len(ALIGN_SUFFIX)] if variant.endswith(ALIGN_SUFFIX) else None
    return Variant(improvements - {"align"}).name if "align" in improvements else None


def aligned_variant(variant: str) -> str:
    """The adaptive form of ``variant`` (a name of :data:`mi_art.variants.VARIANTS`): it with the "align"
    improvement, ``"lomma"`` -> ``"lomma+align"``, ``"baseline"`` -> ``"align"``; an aligned variant is its own."""
    from mi_art.variants import Variant, parse_variant

    return Variant(parse_variant(variant).improvements | {"align"}).name


def adaptive_comparison(aggs: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per defense setting attacked both with an aligned variant and with the variant it adapts
    (:func:`plain_variant`; same attack): ``defense_label``, ``attack``, ``variant`` (the plain one), the rows
    ``undefended`` (plain attack on the undefended target, or None), ``plain`` and ``aligned``, and ``kept``
    (:func:`protection_kept`, None without an undefended row or protection). Empty without aligned rows."""
    out = []
    for aligned in aggs:
        plain_name = plain_variant(str(aligned["variant"]))
        if plain_name is None or aligned["defense"] == "none" or aligned.get("acc@1") is None:
            continue
        plain = next((a for a in aggs if (a["defense_label"], a["attack"], a["variant"])
                      == (aligned["defense_label"], aligned["attack"], plain_name) and a.get("acc@1") is not None),
                     None)
        if plain is None:
            continue
        base = _undefended(aggs, aligned["attack"], plain_name)
        kept = None if base is None else protection_kept(base["acc@1"], plain["acc@1"], aligned["acc@1"])
        out.append({"defense_label": aligned["defense_label"], "attack": aligned["attack"], "variant": plain_name,
                    "undefended": base, "plain": plain, "aligned": aligned, "kept": kept})
    return out


# --------------------------------------------------------------------------------------------------
# The report's sections
# --------------------------------------------------------------------------------------------------


def _point_text(point: Optional[FrontierPoint]) -> str:
    return "-" if point is None else mean_std_text(point[1], point[2] or 0.0, point[3], ".3f")


def _ratio_text(ratio: Optional[float], entry: Dict[str, Any], key: str = "acc@1") -> str:
    """The ratio, or why there is none: no undefended target (or no value of ``key`` on it), no accuracy lost."""
    if ratio is not None:
        return f"{ratio:.2f}"
    base = entry["undefended"]
    if base is None:
        return "- (no undefended target)"
    if _number(base.get(key)) is None:
        return "-"
    return "- (no accuracy lost)"


def equal_utility_lines(aggs: Sequence[Dict[str, Any]]) -> List[str]:
    """The report's "Defenses at equal utility" section for one data set's aggregated rows: per attack variant
    and defense, the Acc@1 at the common natural accuracy (trained panel, and the independent judge where it
    scored the cells) and the utility ratio; nothing without a defended row."""
    entries = matched_utility(aggs)
    if not entries:
        return []
    independent = any(e["independent"] is not None for e in entries)
    lines = ["### Defenses at equal utility", "",
             "Each defense's frontier (natural accuracy -> Acc@1 over its settings, means over seeds) is interpolated "
             "linearly between its neighbouring settings at the highest natural accuracy every defense with several "
             "settings reaches, never extrapolated (\"not reached\": outside its settings' range); a defense with one "
             "setting is given at its own accuracy. The ratio is the Acc@1 removed per unit of natural accuracy lost "
             "against the undefended target under the same attack, (undefended Acc@1 - Acc@1) / (undefended "
             "accuracy - accuracy), as Koh et al. (ECCV 2024) report it: near or below 1 the defense buys its "
             "privacy mostly by losing accuracy; above 1 it removes more leakage than accuracy.", ""]
    header = ["attack/variant", "defense", "natural acc", "Acc@1 (panel)"] + (
        ["Acc@1 (independent)"] if independent else []) + ["ratio (panel)"] + (
        ["ratio (independent)"] if independent else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes: Dict[str, None] = {}
    for e in entries:
        pair = markdown_text(f"{e['attack']}/{e['variant']}")
        low, high = e["range"]
        if e["level"] is None:
            span = f"{low:.3f}" if e["single"] else f"{low:.3f}-{high:.3f}"
            level, panel, ind, ratio, ind_ratio = f"not reached (its settings span {span})", "-", "-", "-", "-"
        else:
            level = f"{e['level']:.3f}" + (" (its only setting)" if e["single"] else "")
            panel, ind = _point_text(e["panel"]), _point_text(e["independent"])
            ratio = _ratio_text(e["ratio"], e)
            ind_ratio = "-" if e["independent"] is None else _ratio_text(e["independent_ratio"], e, "independent_acc@1")
        cells = [pair, markdown_text(e["label"]), level, panel] + ([ind] if independent else []) + [ratio] + (
            [ind_ratio] if independent else [])
        lines.append("| " + " | ".join(cells) + " |")
        base = e["undefended"]
        if base is None:
            notes.setdefault(f"No undefended target (defense none) under {pair} in this grid: the ratio needs it, "
                             "so only the attack accuracy at equal utility is given.")
        else:
            notes.setdefault(f"Undefended under {pair}: natural accuracy {base['natural_accuracy']:.3f}, Acc@1 "
                             f"{base['acc@1']:.3f}.")
    return lines + [""] + [f"- {n}" for n in notes] + [""]


def _kept_sentence(c: Dict[str, Any], name: str, pair: str) -> str:
    base, plain, aligned = c["undefended"], c["plain"]["acc@1"], c["aligned"]["acc@1"]
    if base is None:
        return (f"- **{name}** against {pair}: no undefended target under {pair} in this grid, so the share of its "
                "protection that survives alignment is unknown.")
    if c["kept"] is None:
        return (f"- **{name}** against {pair}: it does not lower the plain attack's Acc@1 ({plain:.3f} against "
                f"{base['acc@1']:.3f} undefended): no protection to keep.")
    said = (f"- **{name}** against {pair}: it lowers Acc@1 from {base['acc@1']:.3f} (undefended) to {plain:.3f}, and "
            f"to {aligned:.3f} when the attack aligns to it: ")
    if c["kept"] >= 1:
        return said + f"all of its protection survives the adaptive attack ({100 * c['kept']:.0f}%)."
    if c["kept"] <= 0:
        return said + f"none of its protection survives the adaptive attack ({100 * c['kept']:.0f}%)."
    return said + f"{100 * c['kept']:.0f}% of its protection survives the adaptive attack."


def adaptive_lines(aggs: Sequence[Dict[str, Any]]) -> List[str]:
    """The report's "Protection against the adaptive attack" section: per defense setting attacked with and
    without alignment, the undefended Acc@1, the defended Acc@1 of both and the share of the protection kept,
    with a sentence each; nothing when no aligned variant was run on a defended target."""
    compared = adaptive_comparison(aggs)
    if not compared:
        return []
    lines = ["### Protection against the adaptive attack", "",
             f"An attack variant ending in \"{ALIGN_SUFFIX}\" (\"align\" alone: the baseline's) aligns the attack "
             "to the defense. Protection kept = "
             "(undefended Acc@1 - defended Acc@1 with alignment) / (undefended Acc@1 - defended Acc@1 without), the "
             "undefended target attacked without alignment: 100% means alignment takes nothing back, 0% that it "
             "undoes the defense.", "",
             "| defense | attack/variant | undefended Acc@1 | defended Acc@1 | defended Acc@1 with alignment | "
             "protection kept |", "|---|---|---|---|---|---|"]
    sentences = []
    for c in compared:
        name, pair = markdown_text(c["defense_label"]), markdown_text(f"{c['attack']}/{c['variant']}")

        def acc(row: Optional[Dict[str, Any]]) -> str:
            return "-" if row is None else mean_std_text(row["acc@1"], row.get("acc@1_std") or 0.0,
                                                         row.get("acc@1_n") or row.get("n") or 1, ".3f")

        kept = "-" if c["kept"] is None else f"{100 * c['kept']:.0f}%"
        lines.append(f"| {name} | {pair} | {acc(c['undefended'])} | {acc(c['plain'])} | {acc(c['aligned'])} | "
                     f"{kept} |")
        sentences.append(_kept_sentence(c, name, pair))
    return lines + [""] + sentences + [""]
