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
