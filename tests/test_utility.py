"""Defenses at equal utility (:mod:`mi_art.evaluations.utility`): each defense's frontier interpolated at a common
natural accuracy, never extrapolated; the ratio of attack drop to accuracy drop against the undefended target; the
share of a defense's protection an aligned attack leaves; and the report's sections built from them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from mi_art.evaluations.report import aggregate, plot_frontier, render_report
from mi_art.evaluations.utility import (adaptive_comparison, adaptive_lines, common_level, equal_utility_lines,
                                        frontier, interpolate, matched_utility, protection_kept, utility_ratio)


def _agg(defense: str, natural: float, acc: float, *, label: Optional[str] = None, variant: str = "lomma",
         independent: Optional[float] = None, std: float = 0.0, n: int = 1) -> Dict[str, Any]:
    """One row of :func:`aggregate` (a mean over ``n`` seeds)."""
    return {"dataset": "faces", "defense": defense, "defense_label": label or defense, "defense_params": {},
            "attack": "gmi", "variant": variant, "natural_accuracy": natural, "natural_accuracy_std": 0.0,
            "acc@1": acc, "acc@1_std": std, "acc@1_n": n, "n": n, "independent_acc@1": independent,
            "independent_acc@1_std": 0.0 if independent is not None else None, "independent_acc@1_n": n,
            "epsilon": None, "chance@1": 0.02}


#: Undefended 0.90 -> 0.80; MID over three settings, DP over two, label smoothing at one setting.
GRID = [_agg("none", 0.90, 0.80, independent=0.40),
        _agg("mid", 0.88, 0.60, label="mid(w=0.01)", independent=0.32),
        _agg("mid", 0.80, 0.40, label="mid(w=0.1)", independent=0.20),
        _agg("mid", 0.70, 0.10, label="mid(w=1)", independent=0.10),
        _agg("dp-sgd", 0.85, 0.70, label="dp-sgd(eps=8)"),
        _agg("dp-sgd", 0.60, 0.20, label="dp-sgd(eps=1)"),
        _agg("ls", 0.86, 0.50, label="ls(alpha=-0.05)")]


def test_interpolation_between_neighbouring_points_and_not_reached_outside():
    points = frontier([a for a in GRID if a["defense"] == "mid"])
    assert [p[:2] for p in points] == [(0.70, 0.10), (0.80, 0.40), (0.88, 0.60)]
    assert interpolate(points, 0.75)[1] == pytest.approx(0.25)  # halfway between 0.10 and 0.40
    assert interpolate(points, 0.85)[1] == pytest.approx(0.40 + 0.2 * 5 / 8)
    assert interpolate(points, 0.80)[1] == pytest.approx(0.40)  # on a point: the point
    assert interpolate(points, 0.89) is None and interpolate(points, 0.65) is None  # no extrapolation


def test_the_spread_over_seeds_is_interpolated_with_the_mean():
    points = frontier([_agg("mid", 0.7, 0.1, std=0.02, n=3), _agg("mid", 0.9, 0.5, std=0.06, n=3)])
    _, mean, std, n = interpolate(points, 0.8)
    assert (mean, std, n) == (pytest.approx(0.3), pytest.approx(0.04), 3)


def test_settings_at_the_same_accuracy_are_one_point():
    points = frontier([_agg("rounded", 0.9, 0.2, label="a"), _agg("rounded", 0.9, 0.4, label="b")])
    assert [p[:2] for p in points] == [(0.9, pytest.approx(0.3))]


def test_the_common_level_is_the_highest_accuracy_every_defense_with_several_settings_reaches():
    frontiers = [frontier([a for a in GRID if a["defense"] == d]) for d in ("mid", "dp-sgd", "ls")]
    assert common_level(frontiers) == pytest.approx(0.85)  # dp-sgd tops out there; ls (one setting) does not count
    assert common_level([frontiers[2]]) is None


def test_the_utility_ratio_is_attack_drop_over_accuracy_drop():
    assert utility_ratio((0.9, 0.8), (0.8, 0.4)) == pytest.approx(4.0)
    assert utility_ratio((0.9, 0.8), (0.6, 0.7)) == pytest.approx(1 / 3)
    assert utility_ratio((0.9, 0.8), (0.9, 0.5)) is None  # no accuracy lost: no ratio
    assert utility_ratio((0.9, 0.8), (0.92, 0.5)) is None


def test_matched_utility_compares_defenses_at_one_accuracy_per_attack_variant():
    rows = GRID + [_agg("none", 0.90, 0.50, variant="baseline"), _agg("mid", 0.80, 0.45, variant="baseline")]
    entries = {(e["variant"], e["defense"]): e for e in matched_utility(rows)}
    mid, dp, ls = entries["lomma", "mid"], entries["lomma", "dp-sgd"], entries["lomma", "ls"]
    assert mid["level"] == dp["level"] == pytest.approx(0.85)
    assert mid["panel"][1] == pytest.approx(0.525) and dp["panel"][1] == pytest.approx(0.70)
    assert mid["ratio"] == pytest.approx((0.80 - 0.525) / 0.05) and dp["ratio"] == pytest.approx(2.0)
    assert mid["independent"][1] == pytest.approx(0.275)
    assert mid["independent_ratio"] == pytest.approx((0.40 - 0.275) / 0.05)
    assert dp["independent"] is None and dp["independent_ratio"] is None
    # a single setting: no interpolation, its own accuracy and ratio
    assert ls["single"] and ls["level"] == 0.86 and ls["ratio"] == pytest.approx((0.80 - 0.50) / 0.04)
    # the other variant is compared against its own undefended row
    assert entries["baseline", "mid"]["ratio"] == pytest.approx((0.50 - 0.45) / 0.10)


def test_a_level_outside_a_defenses_range_is_not_reached():
    entries = {e["defense"]: e for e in matched_utility(GRID, level=0.65)}
    assert entries["mid"]["level"] is None and entries["mid"]["panel"] is None and entries["mid"]["ratio"] is None
    assert entries["dp-sgd"]["panel"][1] == pytest.approx(0.30)
    text = "\n".join(equal_utility_lines([a for a in GRID if a["defense"] != "dp-sgd"]))
    assert "| gmi/lomma | mid | 0.880 |" in text  # mid alone: its own top
    narrow = [_agg("none", 0.90, 0.80), _agg("mid", 0.88, 0.6), _agg("mid", 0.86, 0.5),
              _agg("dp-sgd", 0.70, 0.3), _agg("dp-sgd", 0.60, 0.2)]
    text = "\n".join(equal_utility_lines(narrow))
    assert "| gmi/lomma | mid | not reached (its settings span 0.860-0.880) | - |" in text


def test_the_equal_utility_table_renders_levels_ratios_and_the_independent_judge():
    text = "\n".join(equal_utility_lines(GRID))
    assert "### Defenses at equal utility" in text
    assert "| attack/variant | defense | natural acc | Acc@1 (panel) | Acc@1 (independent) | ratio (panel) | " \
           "ratio (independent) |" in text
    assert "| gmi/lomma | mid | 0.850 | 0.525 | 0.275 | 5.50 | 2.50 |" in text
    assert "| gmi/lomma | dp-sgd | 0.850 | 0.700 | - | 2.00 | - |" in text
    assert "| gmi/lomma | ls(alpha=-0.05) | 0.860 (its only setting) | 0.500 | - | 7.50 | - |" in text
    assert "Undefended under gmi/lomma: natural accuracy 0.900, Acc@1 0.800." in text


def test_without_an_undefended_target_the_table_says_why_there_is_no_ratio():
    text = "\n".join(equal_utility_lines([a for a in GRID if a["defense"] != "none"]))
    assert "| gmi/lomma | mid | 0.850 | 0.525 | 0.275 | - (no undefended target) | - (no undefended target) |" in text
    assert "No undefended target (defense none) under gmi/lomma" in text
    assert "no accuracy lost" in "\n".join(equal_utility_lines([_agg("none", 0.9, 0.8),
                                                               _agg("rounded", 0.9, 0.7, label="rounded(d=1)")]))


def test_several_seeds_give_mean_and_spread():
    text = "\n".join(equal_utility_lines([_agg("none", 0.9, 0.8, std=0.1, n=2), _agg("mid", 0.7, 0.1, std=0.02, n=2),
                                          _agg("mid", 0.9, 0.5, std=0.06, n=2)]))
    assert "| gmi/lomma | mid | 0.900 | 0.500 ± 0.060 |" in text


def test_no_equal_utility_section_without_a_defense():
    assert equal_utility_lines([_agg("none", 0.9, 0.8)]) == []


# --------------------------------------------------------------------------- the adaptive (aligned) attack

ALIGNED = "lomma+align"
# the undefended target attacked with alignment comes first: the share is against the plain attack on it
ADAPTIVE = [_agg("none", 0.9, 0.82, variant=ALIGNED), _agg("none", 0.9, 0.80),
            _agg("mid", 0.8, 0.40, label="mid(w=0.1)"), _agg("mid", 0.8, 0.70, label="mid(w=0.1)", variant=ALIGNED),
            _agg("bido", 0.85, 0.60, label="bido(a=1)"), _agg("bido", 0.85, 0.60, label="bido(a=1)", variant=ALIGNED),
            _agg("ls", 0.86, 0.85, label="ls(a=-0.05)"), _agg("ls", 0.86, 0.50, label="ls(a=-0.05)", variant=ALIGNED)]


def test_protection_kept_is_the_share_of_the_undefended_drop_alignment_leaves():
    assert protection_kept(0.8, 0.4, 0.7) == pytest.approx(0.25)
    assert protection_kept(0.8, 0.4, 0.4) == pytest.approx(1.0)
    assert protection_kept(0.8, 0.85, 0.5) is None  # nothing to keep


def test_adaptive_comparison_pairs_each_aligned_variant_with_its_plain_one():
    found = {c["defense_label"]: c for c in adaptive_comparison(ADAPTIVE)}
    assert set(found) == {"mid(w=0.1)", "bido(a=1)", "ls(a=-0.05)"}  # the undefended aligned row is no defense
    assert found["mid(w=0.1)"]["variant"] == "lomma" and found["mid(w=0.1)"]["kept"] == pytest.approx(0.25)
    assert found["bido(a=1)"]["kept"] == pytest.approx(1.0)
    assert found["ls(a=-0.05)"]["kept"] is None
    assert adaptive_comparison([a for a in ADAPTIVE if not a["variant"].endswith("+align")]) == []
    # another variant of the same attack is not its aligned form
    other = [{**a, "variant": "lomma+views"} if a["variant"] == ALIGNED else a for a in ADAPTIVE]
    assert adaptive_comparison(other) == []
    # an aligned row without its plain twin is not compared
    assert adaptive_comparison([ADAPTIVE[1], ADAPTIVE[3]]) == []


def test_the_adaptive_section_gives_the_share_and_a_sentence_per_defense():
    text = "\n".join(adaptive_lines(ADAPTIVE))
    assert "### Protection against the adaptive attack" in text
    assert "| mid(w=0.1) | gmi/lomma | 0.800 | 0.400 | 0.700 | 25% |" in text
    assert "25% of its protection survives the adaptive attack" in text
    assert "all of its protection survives" in text  # bido
    assert "**ls(a=-0.05)** against gmi/lomma: it does not lower the plain attack" in text
    no_base = "\n".join(adaptive_lines(ADAPTIVE[2:4]))
    assert "| mid(w=0.1) | gmi/lomma | - | 0.400 | 0.700 | - |" in no_base and "no undefended target" in no_base
    assert adaptive_lines([a for a in ADAPTIVE if not a["variant"].endswith("+align")]) == []


# --------------------------------------------------------------------------- in the report and the frontier


def _cell(cid: str, index: int, defense: str, natural: float, acc: float, *, label: Optional[str] = None,
          variant: str = "lomma", seed: int = 0) -> Dict[str, Any]:
    return {"cell_id": cid, "index": index, "dataset": "faces", "defense": defense, "defense_params": {},
            "defense_label": label or defense, "natural_accuracy": natural, "epsilon": None, "delta": None,
            "attack": "gmi", "variant": variant, "seed": seed, "artifact_seed": seed, "acc@1": acc, "acc@1_std": 0.0,
            "acc@5": None, "acc@5_std": None, "knn_dist": 1.0, "fid_eval_features": None, "seconds": 1.0,
            "cell_seconds": 1.0, "judge_test_accuracy": 0.95, "n_identities": 2, "n_reconstructions": 2,
            "iterations": 1, "n_classes": 50}


def _report(tmp_path: Path, cells) -> str:
    out = tmp_path / "out"
    (out / "cells").mkdir(parents=True)
    for c in cells:
        (out / "cells" / f"{c['cell_id']}.json").write_text(json.dumps(c))
    render_report(out)
    return (out / "report.md").read_text()


def test_the_report_renders_both_sections_from_the_cells(tmp_path):
    cells = [_cell("n", 0, "none", 0.9, 0.8), _cell("m1", 1, "mid", 0.8, 0.4, label="mid(w=0.1)"),
             _cell("m2", 2, "mid", 0.7, 0.1, label="mid(w=1)"), _cell("d1", 3, "dp-sgd", 0.85, 0.7, label="dp(8)"),
             _cell("d2", 4, "dp-sgd", 0.6, 0.2, label="dp(1)"),
             _cell("ma", 5, "mid", 0.8, 0.7, label="mid(w=0.1)", variant="lomma+align")]
    md = _report(tmp_path, cells)
    assert "### Defenses at equal utility" in md and "| gmi/lomma | mid | 0.800 | 0.400 |" in md
    assert "| gmi/lomma | dp-sgd | 0.800 | 0.600 |" in md
    assert "### Protection against the adaptive attack" in md and "| mid(w=0.1) | gmi/lomma | 0.800 | 0.400 | " \
                                                                   "0.700 | 25% |" in md


def test_the_report_averages_seeds_before_comparing(tmp_path):
    cells = [_cell("n0", 0, "none", 0.9, 0.8), _cell("n1", 1, "none", 0.9, 0.8, seed=1),
             _cell("a0", 2, "mid", 0.8, 0.3, label="mid(w=0.1)"), _cell("a1", 3, "mid", 0.8, 0.5, label="mid(w=0.1)",
                                                                     seed=1),
             _cell("b0", 4, "mid", 0.6, 0.1, label="mid(w=1)"), _cell("b1", 5, "mid", 0.6, 0.1, label="mid(w=1)",
                                                                 seed=1)]
    md = _report(tmp_path, cells)
    assert "| gmi/lomma | mid | 0.800 | 0.400 ± 0.141 | 4.00 |" in md
    entry = matched_utility(aggregate(cells))[0]
    assert entry["panel"][3] == 2


def test_the_report_leaves_both_sections_out_where_they_do_not_apply(tmp_path):
    md = _report(tmp_path, [_cell("n", 0, "none", 0.9, 0.8), _cell("n2", 1, "none", 0.9, 0.6, variant="baseline")])
    assert "Defenses at equal utility" not in md and "adaptive attack" not in md
    md = _report(tmp_path / "b", [_cell("n", 0, "none", 0.9, 0.8), _cell("m", 1, "mid", 0.8, 0.4)])
    assert "Defenses at equal utility" in md and "Protection against the adaptive attack" not in md


def test_the_frontier_marks_the_matched_accuracy(tmp_path, monkeypatch):
    import matplotlib.axes

    lines, crosses = [], []
    original_axvline, original_plot = matplotlib.axes.Axes.axvline, matplotlib.axes.Axes.plot

    def axvline(self, x=0, *args, **kwargs):
        lines.append(x)
        return original_axvline(self, x, *args, **kwargs)

    def plot(self, *args, **kwargs):
        if kwargs.get("marker") == "X":
            crosses.append((args[0][0], args[1][0]))
        return original_plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axvline", axvline)
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    plot_frontier(tmp_path / "frontier.png", "faces", [a for a in GRID if a["defense"] != "ls"])
    assert lines == [pytest.approx(0.85)]
    assert sorted(y for _, y in crosses) == [pytest.approx(0.525), pytest.approx(0.70)]
    lines.clear()
    plot_frontier(tmp_path / "single.png", "faces", [GRID[0], GRID[-1]])  # one setting each: nothing to match
    assert lines == []
