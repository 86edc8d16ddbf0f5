"""The adaptive (aligned) attack against the defenses: "+align" variants need views to average over, grids
run a variant beside its aligned form and report what survives it, and the defenses benchmark adds the aligned
attack to every defense cell."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from mi_art.evaluations.cli import main
from mi_art.evaluations.experiment import ExperimentConfig


@pytest.mark.parametrize("variant, views, plain", [("lomma+align", 0, "lomma"), ("align", 1, "baseline")])
def test_an_aligned_variant_without_views_to_average_is_refused(variant, views, plain):
    """0 views silently turned the alignment off: the config now refuses it, naming the field, the value, the
    variant and both ways out."""
    with pytest.raises(ValueError) as err:
        ExperimentConfig(variant=variant, search_views=views).validate()
    message = str(err.value)
    assert f"search_views={views}" in message and repr(variant) in message
    assert "search_views >= 2" in message and f"variant {plain!r}" in message


def test_views_stay_free_without_alignment_and_from_two_with_it():
    ExperimentConfig(variant="lomma", search_views=0).validate()
    ExperimentConfig(variant="lomma+align", search_views=2).validate()
    ExperimentConfig(variant="lomma+align", search_views=None).validate()


def test_a_grid_with_an_aligned_variant_and_no_views_is_refused_before_it_runs(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--dataset", "digits", "--variant", "lomma", "--variant",
                                       "lomma+align", "--search-views", "0", "--dry-run", "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "invalid grid" in result.output and "search_views=0 with variant 'lomma+align'" in result.output


def _agg(defense: str, acc: float, variant: str) -> dict:
    """One :func:`~mi_art.evaluations.report.aggregate` row of GMI on one target."""
    return {"dataset": "digits", "defense": defense, "defense_label": defense, "attack": "gmi", "variant": variant,
            "natural_accuracy": 0.9 if defense == "none" else 0.8, "acc@1": acc, "acc@1_std": 0.0, "n": 1}


def test_the_aligned_baseline_is_compared_with_the_baseline():
    """"align" alone is the baseline aligned (the "+align" of "baseline"): its protection kept is reported too."""
    from mi_art.evaluations.utility import adaptive_comparison, plain_variant

    assert [plain_variant(v) for v in ("align", "lomma+align", "ma+align", "lomma", "baseline")] == [
        "baseline", "lomma", "ma", None, None]
    rows = [_agg("none", 0.8, "baseline"), _agg("mid", 0.4, "baseline"), _agg("mid", 0.7, "align")]
    (compared,) = adaptive_comparison(rows)
    assert compared["variant"] == "baseline" and compared["kept"] == pytest.approx(0.25)


# --------------------------------------------------------------------------- grids

ADAPTIVE_GRID = """
name = "adaptive"
attacks = ["gmi"]
variants = ["lomma", "lomma+align"]
seeds = [0]
target_epochs = 2
eval_arch = "cnn-small"
eval_epochs = 1
iterations = 4
n_reconstructions = 1
prior_steps = 2
gan_width = 8
surrogate_archs = ["mlp"]
surrogate_steps = 2

[[datasets]]
name = "digits"

[[defenses]]
name = "none"

[[defenses]]
name = "mid"
params = [{ beta = 0.01 }]
"""


def test_a_grid_of_a_variant_and_its_aligned_form_reports_the_protection_kept(tmp_path):
    """`variants = ["lomma", "lomma+align"]` runs through the CLI (the aligned cells with ALIGN_VIEWS views, the
    plain ones with none) and the report compares the MID target under both."""
    import json

    from mi_art.variants import ALIGN_VIEWS

    grid = tmp_path / "adaptive.toml"
    grid.write_text(ADAPTIVE_GRID)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", "--config", str(grid), "--out", str(out), "--threads", "1",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = json.loads((out / "results.json").read_text())
    assert {(r["defense"], r["variant"], r["search_views"]) for r in rows} == {
        ("none", "lomma", 0), ("none", "lomma+align", ALIGN_VIEWS), ("mid", "lomma", 0),
        ("mid", "lomma+align", ALIGN_VIEWS)}
    md = (out / "report.md").read_text()
    assert "### Protection against the adaptive attack" in md
    assert "| mid(beta=0.01) | gmi/lomma |" in md and "**mid(beta=0.01)** against gmi/lomma" in md


def test_adaptive_adds_each_variants_aligned_form_and_keeps_the_grids_cells(tmp_path):
    """`--adaptive` on the quick preset: every variant beside its aligned form, the preset's cells unchanged."""
    def cells(*extra: str) -> dict:
        result = CliRunner().invoke(main, ["evaluate", "--preset", "quick", "--dry-run", "--out",
                                           str(tmp_path / "out"), *extra])
        assert result.exit_code == 0, result.output
        lines = [line.split() for line in result.output.splitlines() if line.endswith(("seed 0", "seed 1"))]
        return {line[0]: line[-3] for line in lines}  # cell id -> attack/variant

    plain, adaptive = cells(), cells("--adaptive")
    assert len(plain) == 24 and len(adaptive) == 48
    assert {k: v for k, v in adaptive.items() if k in plain} == plain
    assert sorted(set(adaptive.values())) == ["gmi/align", "gmi/baseline", "gmi/lomma", "gmi/lomma+align",
                                              "kedmi/align", "kedmi/baseline", "kedmi/lomma", "kedmi/lomma+align"]
    from mi_art.evaluations.presets import with_adaptive_attack

    assert with_adaptive_attack(["lomma", "lomma+align", "lom"]) == ["lomma", "lomma+align", "lom", "lom+align"]


def test_adaptive_says_when_the_plain_variants_average_over_views_too(tmp_path):
    command = ["evaluate", "--preset", "quick", "--adaptive", "--dry-run", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(main, [*command, "--search-views", "4"])
    assert result.exit_code == 0 and "note: search_views=4 applies to every variant" in result.output
    assert "note:" not in CliRunner().invoke(main, command).output
