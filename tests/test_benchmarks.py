"""The benchmark scripts' own logic (their runs are benchmarks, not tests)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from mi_art.evaluations.rows import completed_cells  # noqa: E402


def test_speed_charges_each_artifact_its_own_seconds(tmp_path, monkeypatch):
    """A stage that needs another (a target that needs its pre-training) is charged its own time only."""
    import speed

    clock = iter([0.0, 1.0, 3.0, 10.0])  # target starts, pre-training starts, ends, target ends
    monkeypatch.setattr(speed.time, "perf_counter", lambda: next(clock))
    cache = speed.TimingCache(tmp_path)
    assert cache._made("target", lambda: cache._made("pretrained", lambda: "body") + "+head") == "body+head"
    assert cache.seconds == {"pre-training (public)": 2.0, "target": 8.0}


def test_speed_table_gives_shares_and_speed_ups():
    import speed

    before = {"stages": {"target": 30.0, "GMI prior": 70.0}, "total": 100.0}
    after = {"stages": {"target": 10.0, "GMI prior": 70.0}, "total": 80.0, "peak_gflops": {"conv": 100.0},
             "rates": {"target": {"images_per_s": 500.0, "gflops": 50.0}}}
    table = speed.table(after, before)
    assert "| target | 10.0 | 12% | 500 | 50.0 | 50% | 30.0 | 3.0x |" in table
    assert "| GMI prior | 70.0 | 88% | - | - | - | 70.0 | 1.0x |" in table
    assert "| **total** | 80.0 | 100% | | | | 100.0 | 1.2x |" in table


def test_plgmi_prior_measures_accuracy_on_the_condition_and_feature_norm():
    """A sampler that draws each identity's own image scores 1.0 on the condition with both models and the
    public images' feature norm; one that draws the next identity's image scores 0."""
    import torch
    from torch import nn

    import plgmi_prior

    k = 4
    eye = torch.eye(k).view(k, 1, 1, k)  # identity y's image: a one-hot row

    def model() -> nn.Module:
        first, last = nn.Linear(k, k), nn.Linear(k, k)
        for layer in (first, last):
            nn.init.eye_(layer.weight), nn.init.zeros_(layer.bias)
        return nn.Sequential(nn.Flatten(), first, last)

    right = lambda z, y: eye[y]  # noqa: E731
    wrong = lambda z, y: eye[(y + 1) % k]  # noqa: E731
    metrics, samples = plgmi_prior.measure(right, 3, model(), model(), eye, k)
    assert len(samples) == k * plgmi_prior.SAMPLES_PER_IDENTITY
    assert metrics["target_acc"] == metrics["judge_acc"] == 1.0
    assert metrics["feature_norm"] == pytest.approx(1.0)
    metrics, _ = plgmi_prior.measure(wrong, 3, model(), model(), eye, k)
    assert metrics["target_acc"] == metrics["judge_acc"] == 0.0


def test_defenses_grid_scores_each_cell_with_every_judge_and_draws_its_frontier(tmp_path, monkeypatch):
    """``--judges 3``: each attack is scored by the panel of three judges (not the first alone); the records
    give the frontier one point per defense strength, the mean over attack seeds, DP points with epsilon."""
    import defenses
    from conftest import fake_grid_models

    def figures(c):
        acc = 0.9 - 0.1 * c.attack_seed if c.defense == "none" else 0.2
        return {"acc@1": acc, "knn_dist": 1.0, "seconds": 0.0, "chance@1": 0.1}

    attacked = fake_grid_models(monkeypatch, figures, n_private=5, judges=3)
    out = tmp_path / "cells"
    monkeypatch.setattr(sys, "argv", ["defenses.py", "--deployed", "--only", "none,dp-sgd", "--seeds", "2",
                                      "--judges", "3", "--attacks", "gmi", "--cache-dir", str(tmp_path / "cache"),
                                      "--data-root", str(tmp_path), "--out", str(out)])
    defenses.main()
    # the CNN target undefended and under DP at three epsilons, and the residual one undefended (RoLSS's reference)
    assert len(attacked) == 10 and all(c.judges == 3 and c.target_pretrain_epochs == 60 for c in attacked)
    assert sorted(c.target_arch for c in attacked) == ["cnn"] * 8 + ["resnet10"] * 2
    targets = defenses._grid(defenses._parser().parse_args(["--deployed"]), 10)
    done = defenses.table_records(list(completed_cells(out).values()), targets, "cnn")
    assert sorted({k.split("/")[0] for k in done if k.startswith("none")}) == [
        "none [pre-trained, resnet10]", "none [pre-trained]"]
    assert len(done) == 10
    assert all(r["n_judges"] == 3 and r["judge_test_accuracies"] == [0.9] * 3 for r in done.values())
    points = defenses.frontier_rows(done, targets)
    undefended = next(p for p in points if p["defense"] == "none")
    assert undefended["acc@1"] == pytest.approx(0.85) and undefended["n"] == 2
    assert sorted(p["epsilon"] for p in points if p["defense"] == "dp-sgd") == [1.0, 3.0, 8.0]


def _run_attack_variants(tmp_path, monkeypatch, *options: str):
    """benchmarks/attack_variants.py on the library's grid runner, with the data, the models and the attack faked:
    each attack scores 0.5 + 0.1 * seed. Returns the (access, regularise_surrogates, attack, variant, seed) it
    attacked and the results folder."""
    import attack_variants
    from conftest import fake_grid_models

    def figures(c):
        acc = 0.5 + 0.1 * c.attack_seed
        return {"acc@1": acc, "acc@1_judges": [acc - 0.05, acc + 0.05], "acc@5": 0.9, "knn_dist": 10.0,
                "seconds_per_reconstruction": 0.5, "chance@1": 0.25, "chance@5": 1.0,
                "judge_test_accuracies": [0.9, 0.85], "queries": 100 if c.access != "white-box" else None}

    attacked = fake_grid_models(monkeypatch, figures)
    out = tmp_path / "variants"
    monkeypatch.setattr(sys, "argv", ["attack_variants.py", "--quick", "--out", str(out), "--data-root",
                                      str(tmp_path), "--cache-dir", str(tmp_path / "cache"), *options])
    attack_variants.main()
    return [(c.access, c.regularise_surrogates, c.attack, c.variant, c.attack_seed) for c in attacked], out


def test_attack_variants_runs_each_method_and_seed_once_and_tables_them(tmp_path, monkeypatch, capsys):
    """Each row is a form of the script's grid, run by the library's grid runner: every row at every seed (MIFace
    at the first alone), each with its configuration; its reconstructions kept in its cell's file for a later judge;
    the table from the cells; another folder's cells merged with --also; a second run attacks nothing."""
    from mi_art.evaluations.rows import cell_paths, completed_cells

    methods = "GMI,GMI+LOMMA,GMI+LOMMA (paper),GMI+LOMMA [label-only],ART MIFace,KEDMI+ALIGN"
    attacked, out = _run_attack_variants(tmp_path, monkeypatch, "--methods", methods, "--seeds", "2")
    assert attacked == [
        ("white-box", True, "miface", "baseline", 0), ("white-box", True, "gmi", "baseline", 0),
        ("white-box", True, "gmi", "lomma", 0), ("white-box", False, "gmi", "lomma", 0),
        ("label-only", True, "gmi", "lomma", 0), ("white-box", True, "kedmi", "align", 0),
        ("white-box", True, "gmi", "baseline", 1), ("white-box", True, "gmi", "lomma", 1),
        ("white-box", False, "gmi", "lomma", 1), ("label-only", True, "gmi", "lomma", 1),
        ("white-box", True, "kedmi", "align", 1)]
    rows = completed_cells(out)
    assert sorted(f"{r['form']}/seed{r['seed']}" for r in rows.values()) == sorted(
        ["ART MIFace/seed0", "GMI/seed0", "GMI/seed1", "GMI+LOMMA/seed0", "GMI+LOMMA/seed1",
         "GMI+LOMMA (paper)/seed0", "GMI+LOMMA (paper)/seed1", "GMI+LOMMA [label-only]/seed0",
         "GMI+LOMMA [label-only]/seed1", "KEDMI+ALIGN/seed0", "KEDMI+ALIGN/seed1"])
    gmi_seed1 = next(cid for cid, r in rows.items() if r["form"] == "GMI" and r["seed"] == 1)
    with np.load(cell_paths(out, gmi_seed1)[1]) as kept:  # the very images the table scored, for a later judge
        assert kept["reconstructions"].shape == (2, 1, 4, 4) and (kept["reconstructions"] == 1).all()
        assert kept["labels"].tolist() == [0, 1]
    table = capsys.readouterr().out
    line = next(row for row in table.splitlines() if row.startswith("| GMI+LOMMA [label-only]"))
    assert line.startswith("| GMI+LOMMA [label-only]   |     2 |  0.550 +- 0.050 [0.050] |          0.900 +- 0.000 "
                           "|              10.0 +- 0.0 |   0.500 |")
    assert "|       100 |" in line
    assert next(row for row in table.splitlines() if row.startswith("| ART MIFace")).startswith(
        "| ART MIFace               |     1 |")
    import transfer_table  # the transfer table reads the results folder too

    assert transfer_table.row("GMI", [v for k, v in transfer_table.variant_records(out).items()
                                      if k.split("/")[0] == "GMI"]) == "| GMI | 2 | 0.550 ± 0.050 | - | - | 0.50 |"
    # a second process's seed 2 in a folder of its own, merged with --also; nothing of the first is run again
    attacked, _ = _run_attack_variants(tmp_path, monkeypatch, "--methods", "GMI", "--first-seed", "2", "--seeds",
                                       "1", "--out", str(tmp_path / "more"), "--also", str(out))
    assert attacked == [("white-box", True, "gmi", "baseline", 2)]
    table = capsys.readouterr().out
    assert next(row for row in table.splitlines() if row.startswith("| GMI ")).startswith(
        "| GMI                      |     3 |  0.600 +- 0.082 [0.050] |")
    assert _run_attack_variants(tmp_path, monkeypatch, "--methods", methods, "--seeds", "2")[0] == []
    # cells saved when the judges' accuracies were "evaluator_test_accuracies" resume, and their table names them
    for cell in (out / "cells").glob("*.json"):
        cell.write_text(cell.read_text().replace('"judge_test_accuracies"', '"evaluator_test_accuracies"'))
    capsys.readouterr()
    assert _run_attack_variants(tmp_path, monkeypatch, "--methods", methods, "--seeds", "2")[0] == []
    assert re.search(r"2 evaluation model\(s\) \S+ \(test acc 0.900 / 0.850\)", capsys.readouterr().out)


def test_a_benchmark_grid_tables_its_finished_cells_when_some_failed(tmp_path, monkeypatch, capsys):
    """A failed cell does not lose the table of the finished ones: it is printed, then the run exits naming the
    failure (a rerun retries the failed cell alone)."""
    import attack_variants
    from conftest import fake_grid_models

    def figures(c):
        if c.attack_seed == 1:
            raise RuntimeError("out of memory at seed 1")
        return {"acc@1": 0.5, "knn_dist": 1.0, "chance@1": 0.25}

    fake_grid_models(monkeypatch, figures)
    monkeypatch.setattr(sys, "argv", ["attack_variants.py", "--quick", "--methods", "GMI", "--out",
                                      str(tmp_path / "out"), "--data-root", str(tmp_path), "--cache-dir",
                                      str(tmp_path / "cache")])
    with pytest.raises(SystemExit, match="(?s)1 of 2 cells failed.*out of memory at seed 1"):
        attack_variants.main()
    assert "| GMI                      |     1 |" in capsys.readouterr().out


def test_attack_variants_refuses_an_earlier_results_file_and_rows_it_does_not_have(tmp_path, monkeypatch):
    (tmp_path / "variants.json").write_text("{}")
    with pytest.raises(SystemExit, match="is a file .the results file of an earlier version"):
        _run_attack_variants(tmp_path, monkeypatch, "--out", str(tmp_path / "variants.json"))
    with pytest.raises(SystemExit, match="--methods='GMI,GMl' names no row: GMl"):
        _run_attack_variants(tmp_path, monkeypatch, "--methods", "GMI,GMl")


def test_defense_cells_are_keyed_as_the_results_files_were():
    """Each defended target's cells: every attack at every access level (BREP-MI label-only alone, its baseline), the
    aligned form beside it with its views; each row keyed for the tables as the results files always were."""
    import types

    import defenses

    align = types.SimpleNamespace(variant="lomma+align", search_views=4)
    base = defenses._config(defenses._parser().parse_args([]))
    targets = [("mid", {"beta": 0.02}, {})]
    cells = defenses.defenses_grid(base, targets, ["gmi", "brepmi"], ["white-box", "label-only"], align, range(1),
                                   "g").cells()
    assert [(c.form, c.config.attack, c.config.variant, c.config.access, c.config.search_views) for c in cells] == [
        ("white-box", "gmi", "lomma", "white-box", None),
        ("white-box+align(K=4)", "gmi", "lomma+align", "white-box", 4),
        ("label-only", "gmi", "lomma", "label-only", None), ("label-only", "brepmi", "baseline", "label-only", None),
        ("label-only+align(K=4)", "gmi", "lomma+align", "label-only", 4)]
    rows = [{"config": c.config.to_dict(), "access": c.config.access, "defense": c.config.defense,
             "defense_params": dict(c.config.defense_params), "seed": c.config.attack_seed} for c in cells]
    assert list(defenses.table_records(rows, targets, "cnn")) == [
        "mid(beta=0.02)/gmi/seed0", "mid(beta=0.02)/gmi+align(K=4)/seed0", "mid(beta=0.02)/gmi[label-only]/seed0",
        "mid(beta=0.02)/brepmi[label-only]/seed0", "mid(beta=0.02)/gmi+align(K=4)[label-only]/seed0"]


def test_a_results_file_as_the_scripts_write_it_resumes_through_results(tmp_path):
    """A results file in the format every script has written (one JSON object, key -> record, indent 1) loads
    with the same cells; a new cell is added beside them in the same format; transfer_table reads the same file
    (attack_variants.py's earlier versions wrote it)."""
    import json

    import transfer_table
    from _results import Results

    written = {"GMI+LOMMA/seed0": {"acc@1": 0.5, "independent_acc@1": 0.2, "seconds_per_reconstruction": 1.0,
                                   "reconstructions_file": "x.npz"},
               "mid(beta=0.02)/gmi+align(K=4)[label-only]/seed1": {"acc@1": 0.3, "defense_params": {"beta": 0.02},
                                                                   "target_config": {}, "epsilon": None}}
    path = tmp_path / "transfer-lfw-first.json"
    path.write_text(json.dumps(written, indent=1))
    results = Results(path)
    assert results.records == written and "GMI+LOMMA/seed0" in results and "GMI+LOMMA/seed1" not in results
    results.store("GMI+LOMMA/seed1", {"acc@1": 0.7, "independent_acc@1": 0.4, "seconds_per_reconstruction": 3.0})
    again = {**written, "GMI+LOMMA/seed1": {"acc@1": 0.7, "independent_acc@1": 0.4, "seconds_per_reconstruction": 3.0}}
    assert path.read_text() == json.dumps(again, indent=1) and Results(path).records == again
    records = [v for k, v in transfer_table.variant_records(path).items() if k.split("/")[0] == "GMI+LOMMA"]
    assert transfer_table.row("GMI+LOMMA", records) == (
        "| GMI+LOMMA | 2 | 0.600 ± 0.100 | 0.300 ± 0.100 (seeds) | 0.50 | 2.00 |")
    assert Results(tmp_path / "new.json", empty={"models": {}}).records == {"models": {}}


def test_target_draws_runs_each_targets_cells_once_with_the_other_judges(tmp_path, monkeypatch, capsys):
    """benchmarks/target_draws.py with every model faked: each redrawn target's methods and seeds run once
    (keys ``target<t>/<method>/seed<s>``), on that target, judged again by the --judge-seeds models."""
    import json
    import types

    import _cells
    import target_draws

    attacked = []

    class FakeWorkbench:
        def __init__(self, config, cache, data=None):
            self.config, self.cache = config, cache
            self.data = types.SimpleNamespace(private_test=types.SimpleNamespace(x=0, y=0))

        def judge(self):
            return "judge"

        def redraw(self, kind, seed):
            return f"{kind}{seed}"

        def prior(self, *args):
            return None

        def surrogates(self, target):
            return []

    def fake_run_attack(bench, *, attack, variant, attack_seed, target, judges):
        attacked.append((target, attack, variant, attack_seed))
        return {"attack": attack, "variant": variant, "acc@1": 0.5 if target == "target0" else 0.3, "knn_dist": 1.0,
                "target_test_accuracy": 0.9, "reconstructions": np.zeros((2, 1, 4, 4)), "labels": np.array([0, 1])}

    monkeypatch.setattr(target_draws, "Workbench", FakeWorkbench)
    monkeypatch.setattr(target_draws, "ArtifactCache", lambda path: "cache")
    monkeypatch.setattr(target_draws, "natural_accuracy", lambda *a: 0.8)
    monkeypatch.setattr(target_draws, "attack_accuracy", lambda judge, *a, **k: {"acc@1": 0.25})
    monkeypatch.setattr(_cells, "run_attack", fake_run_attack)
    out = tmp_path / "draws.json"
    argv = ["target_draws.py", "--target-seeds", "0,1", "--judge-seeds", "1001", "--methods", "GMI,KEDMI+LOM",
            "--out", str(out), "--cache-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    target_draws.main()
    assert attacked == [("target0", "gmi", "baseline", 0), ("target0", "kedmi", "lom", 0),
                        ("target1", "gmi", "baseline", 0), ("target1", "kedmi", "lom", 0)]
    done = json.loads(out.read_text())
    assert list(done) == ["target0/GMI/seed0", "target0/KEDMI+LOM/seed0", "target1/GMI/seed0",
                          "target1/KEDMI+LOM/seed0"]
    assert done["target1/GMI/seed0"]["target_seed"] == 1
    assert done["target1/GMI/seed0"]["judges"] == {"1001": {"test_accuracy": 0.8, "acc@1": 0.25}}
    assert "| GMI | 0.500 +- 0.000 (1) | 0.300 +- 0.000 (1) | 0.400 +- 0.100 |" in capsys.readouterr().out
    attacked.clear()
    target_draws.main()
    assert attacked == []


def test_attack_variants_splits_the_identities_into_validation_and_held_out():
    import attack_variants

    def identities(*argv):
        return attack_variants.attacked_identities(attack_variants._parser().parse_args(list(argv)), 50)

    validation = identities("--identity-set", "validation", "--validation-identities", "10")
    held_out = identities("--identity-set", "held-out", "--validation-identities", "10")
    assert len(validation) == 10 and len(held_out) == 40
    assert sorted(validation + held_out) == list(range(50))  # the two sides are disjoint and cover them all
    assert identities() is None and identities("--identities", "5") == [0, 12, 24, 37, 49]
    with pytest.raises(SystemExit, match="--identities=5 with --identity-set"):
        identities("--identities", "5", "--identity-set", "held-out")
    with pytest.raises(SystemExit, match="none left"):
        identities("--identity-set", "held-out", "--validation-identities", "50")


def test_the_benchmarks_take_the_earlier_prior_steps_option_with_a_note(capsys):
    """--prior-steps (hidden) is --gmi-steps, noted once on stderr; both with two values are refused."""
    import attack_variants
    import surrogates
    from _settings import parse_args

    args = parse_args(attack_variants._parser(), ["--prior-steps", "9"])
    assert args.gmi_steps == 9
    assert "note: the setting --prior-steps is now called --gmi-steps" in capsys.readouterr().err
    assert parse_args(attack_variants._parser(), ["--gmi-steps", "9", "--prior-steps", "9"]).gmi_steps == 9
    with pytest.raises(SystemExit):
        parse_args(attack_variants._parser(), ["--gmi-steps", "8", "--prior-steps", "9"])
    assert "--prior-steps (9) and --gmi-steps (8) are both given" in capsys.readouterr().err
    assert "--prior-steps" not in attack_variants._parser().format_help()
    from mi_art.renames import RenamedWarning

    with pytest.warns(RenamedWarning, match="efficientnet_b0"):  # an earlier architecture name
        assert surrogates._settings("efficientnet_b0:10:0")[0][0] == "efficientnet-b0"


def test_the_benchmarks_take_the_judges_earlier_options_with_a_note(capsys):
    """precision.py's --eval-epochs and pretraining.py's --eval-pretrain-epochs (hidden) are --judge-epochs and
    --judge-pretrain-epochs, noted on stderr; both with two values are refused."""
    import precision
    import pretraining
    from _settings import parse_args

    assert parse_args(precision._parser(), ["--eval-epochs", "40"]).judge_epochs == 40
    assert parse_args(pretraining._parser(), ["--eval-pretrain-epochs", "3"]).judge_pretrain_epochs == 3
    err = capsys.readouterr().err
    assert "note: the setting --eval-epochs is now called --judge-epochs" in err
    assert "note: the setting --eval-pretrain-epochs is now called --judge-pretrain-epochs" in err
    with pytest.raises(SystemExit):
        parse_args(pretraining._parser(), ["--judge-pretrain-epochs", "8", "--eval-pretrain-epochs", "9"])
    assert "--eval-pretrain-epochs (9) and --judge-pretrain-epochs (8) are both given" in capsys.readouterr().err
    assert "--eval-" not in precision._parser().format_help() + pretraining._parser().format_help()


def test_a_renamed_defense_keeps_its_results_files_key():
    """The defense benchmark's rows are keyed by their label: negative label smoothing's stays "nls(...)", so the
    rows already in a results file are not run again."""
    import defenses

    assert defenses.label(defenses.NLS, {"alpha": -0.05}) == "nls(alpha=-0.05)"
    assert defenses.label("mid", {"beta": 0.01}) == "mid(beta=0.01)"


def test_the_attack_variants_grid_file_is_the_scripts_rows_with_their_configurations():
    """benchmarks/grids/attack_variants_lfw.toml: each form's attack/variant pairs are the rows of
    attack_variants.py --benchmark lfw (METHODS, each with its CONFIG_FORM changes), and every cell's configuration
    is the one the script runs that row with (the seeds, where the data is and the device aside)."""
    import dataclasses

    import attack_variants
    from mi_art.data.registry import expand_preset
    from mi_art.evaluations.grid import Grid, load_grid_file

    grid = Grid.from_dict(load_grid_file(Path(attack_variants.REPO) / "benchmarks/grids/attack_variants_lfw.toml"))
    config = attack_variants._config(attack_variants._parser().parse_args(["--benchmark", "lfw"]))
    rows = {(attack, variant, tuple(sorted(attack_variants.CONFIG_FORM.get(name, {}).items())))
            for attack, variant, name in attack_variants.METHODS}
    cells = [c for c in grid.cells() if c.config.attack_seed == 0]
    form_settings = {f.name: tuple(sorted(f.settings.items())) for f in grid.forms}
    assert sorted((c.config.attack, c.config.variant, form_settings[c.form]) for c in cells) == sorted(rows)
    assert len(cells) == len(attack_variants.METHODS)
    aside = ("seed", "attack_seed", "data_root", "data_options", "device", "verbose")
    for c in cells:
        expected = dataclasses.replace(config, attack=c.config.attack, variant=c.config.variant,
                                       **dict(form_settings[c.form])).to_dict()
        got = c.config.to_dict()
        assert {k: v for k, v in got.items() if k not in aside} == {k: v for k, v in expected.items()
                                                                    if k not in aside}, c.tag
        assert expand_preset(got["dataset"], got["data_options"]) == expected["data_options"]
    assert grid.seeds == [0, 1, 2] and grid.seed_scope == "attack" and grid.artifact_seed == config.seed
    # MIFace, deterministic, at the first seed alone, as the script runs it; every other row at every seed
    assert len(grid.cells()) == 3 * len(attack_variants.METHODS) - 2
    assert [c.config.attack_seed for c in grid.cells() if c.config.attack == "miface"] == [0]
