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
judge_arch = "cnn-small"
judge_epochs = 1
iterations = 4
n_reconstructions = 1
gmi_steps = 2
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


# --------------------------------------------------------------------------- the defenses benchmark


def _run_defenses_benchmark(tmp_path, monkeypatch, *options: str):
    """benchmarks/defenses.py on the quick grid's undefended and MID targets with GMI, on the library's grid runner
    with the data and every model faked: the plain attack scores 0.9 on the undefended target and 0.2 on MID, the
    aligned one 0.9 and 0.7. Returns the configurations the attacks ran with and the results folder."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import defenses
    from conftest import fake_grid_models

    def figures(c):
        aligned = c.variant.endswith("+align")
        return {"acc@1": 0.9 if c.defense == "none" else 0.7 if aligned else 0.2, "knn_dist": 1.0, "seconds": 0.0,
                "chance@1": 0.1}

    attacked = fake_grid_models(monkeypatch, figures, judges=1)
    out = tmp_path / "cells"
    monkeypatch.setattr(sys, "argv", ["defenses.py", "--quick", "--only", "none,mid", "--seeds", "1", "--attacks",
                                      "gmi", "--cache-dir", str(tmp_path / "cache"), "--data-root", str(tmp_path),
                                      "--out", str(out), *options])
    defenses.main()
    return attacked, out


def test_the_defenses_benchmark_attacks_every_cell_with_and_without_alignment(tmp_path, monkeypatch, capsys):
    from mi_art.evaluations.rows import completed_cells

    attacked, out = _run_defenses_benchmark(tmp_path, monkeypatch, "--adaptive", "--align-views", "4")
    import defenses  # benchmarks/defenses.py, on the path the run put it on
    assert sorted((c.defense, c.variant, c.search_views) for c in attacked) == [
        ("mid", "lomma", None), ("mid", "lomma+align", 4), ("none", "lomma", None), ("none", "lomma+align", 4)]
    done = defenses.table_records(list(completed_cells(out).values()), defenses._rows(defenses.QUICK), "cnn")
    assert done["mid(beta=0.02)/gmi+align(K=4)/seed0"]["variant"] == "lomma+align"
    assert done["mid(beta=0.02)/gmi/seed0"]["variant"] == "lomma"
    table = capsys.readouterr().out
    assert "GMI Acc@1 with alignment (K=4) | GMI protection kept |" in table and "K=4 random geometric views" in table
    mid = next(line for line in table.splitlines() if line.startswith("| mid(beta=0.02)"))
    # MID removes 0.7 of the undefended 0.9 against the plain attack, 0.2 against the aligned one: 29% kept
    assert mid.endswith("| 0.700 +- 0.000 | 29% | n/a | - |")
    assert "Acc@1 | queries" not in table  # the aligned column is no access level's
    # run again: every cell is done, nothing is attacked
    assert _run_defenses_benchmark(tmp_path, monkeypatch, "--adaptive", "--align-views", "4")[0] == []


def test_the_defenses_benchmark_refuses_an_alignment_without_views(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        _run_defenses_benchmark(tmp_path, monkeypatch, "--adaptive", "--align-views", "1")
    assert "search_views=1 with variant 'lomma+align'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run_defenses_benchmark(tmp_path, monkeypatch, "--align-views", "4")
    assert "add --adaptive" in capsys.readouterr().err


def test_the_deployed_grid_compares_rolss_with_the_undefended_target_of_its_own_architecture():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import defenses

    grid = defenses._rows(defenses.deployed_grid(10, "att"))
    residual = [(d, o["target_arch"]) for d, _, o in grid if "target_arch" in o]
    assert residual == [("none", "resnet10"), ("rolss", "resnet10")]
    assert not any(d == "rolss" for d, _, _ in defenses._rows(defenses.deployed_grid(10, "lfw-deployed")))
    names = [defenses.label(*g) for g in grid]
    assert len(set(names)) == len(names) and "rolss [pre-trained, resnet10]" in names

    def record(defense: str, acc: float, variant: str) -> dict:
        return {"dataset": "att", "defense": defense, "defense_params": {}, "attack": "gmi", "variant": variant,
                "seed": 0, "acc@1": acc, "natural_accuracy": 0.9}

    # the CNN undefended target gives 0.9 plain / 0.8 aligned; the resnet10 one 0.6 / 0.6; RoLSS 0.3 / 0.45
    accs = {"none [pre-trained]": (0.9, 0.8), "none [pre-trained, resnet10]": (0.6, 0.6),
            "rolss [pre-trained, resnet10]": (0.3, 0.45)}
    done = {}
    for (defense, params, overrides), name in zip(grid, names):
        if name in accs:
            done[f"{name}/gmi/seed0"] = record(defense, accs[name][0], "lomma")
            done[f"{name}/{defenses.align_column('gmi', 4)}/seed0"] = record(defense, accs[name][1], "lomma+align")
    kept = defenses.adaptive_cells(done, grid, 4)[("rolss [pre-trained, resnet10]", "gmi")]["kept"]
    assert kept == pytest.approx((0.6 - 0.45) / (0.6 - 0.3))  # against the CNN target's it would be 0.75
