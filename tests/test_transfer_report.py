"""The report's transfer section (:func:`mi_art.evaluations.report.transfer_lines`) and the frontier's
independent points: a defense that looks effective by the trained panel and not by a judge we did not train
is named."""
from __future__ import annotations

from pathlib import Path

import pytest

from mi_art.evaluations.report import plot_frontier, transfer_lines


def _agg(defense: str, acc: float, independent: float, natural: float = 0.9) -> dict:
    return {"dataset": "faces", "defense_label": defense, "defense": defense, "defense_params": {}, "attack": "gmi",
            "variant": "lomma", "acc@1": acc, "acc@1_std": 0.01, "independent_acc@1": independent,
            "natural_accuracy": natural, "natural_accuracy_std": 0.0, "epsilon": None, "chance@1": 0.02}


def test_transfer_table_gives_the_ratio_and_flags_unconfirmed_figures():
    lines = transfer_lines([_agg("none", 0.8, 0.2), _agg("mid", 0.7, 0.5)])
    text = "\n".join(lines)
    assert "| panel Acc@1 | independent Acc@1 | ratio |" in text
    assert "| none | gmi/lomma | 0.800 | 0.200 | 0.25 (not confirmed) |" in text
    assert "| mid | gmi/lomma | 0.700 | 0.500 | 0.71 |" in text


def test_a_defense_effective_by_one_judge_only_is_named():
    # the panel loses 75% of its figure, the independent judge none: the two judges disagree
    text = "\n".join(transfer_lines([_agg("none", 0.8, 0.2), _agg("nls", 0.2, 0.2)]))
    assert "**nls** against gmi/lomma" in text and "removes 75%" in text and "0%" in text
    agreeing = "\n".join(transfer_lines([_agg("none", 0.8, 0.2), _agg("dp", 0.4, 0.1)]))
    assert "disagree" not in agreeing


def test_no_transfer_section_without_an_independent_judge():
    assert transfer_lines([{**_agg("none", 0.8, 0.2), "independent_acc@1": None}]) == []


def test_frontier_draws_the_independent_judges_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.plot

    def plot(self, *args, **kwargs):
        drawn.append(kwargs.get("label"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    path = plot_frontier(tmp_path / "frontier.png", "faces", [_agg("none", 0.8, 0.2), _agg("mid", 0.5, 0.1, 0.8)])
    assert path.is_file() and "none (independent judge)" in drawn and "mid (independent judge)" in drawn
