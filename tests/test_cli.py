"""The `mi-art attack` command end to end on digits, with tiny budgets."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mi_art.evaluations.experiment as experiment
import mi_art.evaluations.panel as panel
import mi_art.evaluations.surrogate_artifacts as surrogate_artifacts
import mi_art.evaluations.workbench as workbench
from mi_art.evaluations.cli import main
from mi_art.data import load_digits_data
from mi_art.features import last_linear

TINY = ["--iterations", "20", "--n-reconstructions", "2", "--target-epochs", "3", "--judge-epochs", "3",
        "--gmi-steps", "10", "--kedmi-steps", "10", "--surrogate-steps", "2", "--quiet"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def _recording(monkeypatch, owner, name, calls):
    """Replace ``owner.name`` by a wrapper that appends ``(args, kwargs, result)`` to ``calls``."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((args, kwargs, out))
        return out

    monkeypatch.setattr(owner, name, wrapper)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def _penultimate(model, x: np.ndarray) -> np.ndarray:
    """The input of the model's last nn.Linear, by a forward hook (not through mi_art.features)."""
    seen = []
    handle = last_linear(model).register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    try:
        with torch.no_grad():
            model.eval()(torch.as_tensor(x))
    finally:
        handle.remove()
    return seen[0].double().numpy()


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model.eval()(torch.as_tensor(x)).argmax(1).numpy() == y).mean())


@pytest.mark.parametrize("attack,variant", [("gmi", "lomma"), ("kedmi", "baseline"), ("miface", "baseline")])
def test_attack_writes_results_and_grid(tmp_path, cache_dir, attack, variant, monkeypatch):
    """results.json holds the metrics of the reconstructions, recomputed here by hand: Acc@1 from the
    evaluation model's arg-max (mean and std over rounds), KNN from its penultimate features, natural
    accuracies from the target and the judge on the private test images."""
    targets, judges, judged = [], [], []
    _recording(monkeypatch, experiment.Workbench, "target", targets)
    _recording(monkeypatch, experiment.Workbench, "judge", judges)
    _recording(monkeypatch, panel, "attack_accuracy", judged)  # the panel judges
    out = tmp_path / "run"
    args = ["attack", "--dataset", "digits", "--attack", attack, "--variant", variant, "--out", str(out),
            "--cache-dir", cache_dir, "--miface-iterations", "5", *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["attack"] == attack and record["variant"] == variant
    assert record["n_identities"] == 5
    n_rec = 1 if attack == "miface" else 2
    assert record["n_reconstructions"] == n_rec

    target, own_judge = targets[-1][2], judges[-1][2]
    assert not _same_weights(target, own_judge)
    (judge, recs, labels), kwargs, _ = judged[0]
    assert _same_weights(judge, own_judge)  # judged by the evaluation model, never by the target
    recs, labels = np.asarray(recs, np.float32), np.asarray(labels)
    assert recs.shape == (5 * n_rec, 1, 8, 8) and sorted(np.unique(labels)) == [0, 1, 2, 3, 4]
    rounds = np.asarray(kwargs["rec_index"])
    with torch.no_grad():
        hits = own_judge.eval()(torch.as_tensor(recs)).argmax(1).numpy() == labels
    per_round = [hits[rounds == r].mean() for r in np.unique(rounds)]
    assert len(per_round) == n_rec
    assert record["acc@1"] == pytest.approx(np.mean(per_round), abs=1e-12)
    assert record["acc@1_std"] == pytest.approx(np.std(per_round), abs=1e-12)

    digits = load_digits_data()
    private = digits.private_all()
    f_rec, f_priv = _penultimate(own_judge, recs), _penultimate(own_judge, private.x)
    nearest = [((f_priv[private.y == k] - f) ** 2).sum(1).min() for f, k in zip(f_rec, labels)]
    assert record["knn_dist"] == pytest.approx(np.mean(nearest), rel=1e-4)
    test_x, test_y = digits.private_test.x, digits.private_test.y
    assert record["target_test_accuracy"] == pytest.approx(_accuracy(target, test_x, test_y), abs=1e-12)
    assert record["judge_test_accuracy"] == pytest.approx(_accuracy(own_judge, test_x, test_y), abs=1e-12)
    assert (out / "reconstructions.png").stat().st_size > 1000
    assert f"Acc@1 {record['acc@1']:.3f}" in result.output


def test_attack_names_each_step_before_it_runs_and_shows_its_prior(tmp_path, monkeypatch):
    """Under --quiet there is no bar, yet each long step is named with its budget on a line of its own before it
    runs; both surrogates are named apart; the record links the reconstructions and a titled grid of the prior's
    samples written in the run's folder, and says how long the whole command took beside the attack alone."""
    distilled = []
    _recording(monkeypatch, surrogate_artifacts, "distill_surrogate", distilled)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["attack", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *TINY])
    assert result.exit_code == 0, result.output
    order = ["loading the data (digits)", "training the target (cnn, 3 epochs)",
             "training a judge (cnn-wide, 3 epochs)",
             "distilling the surrogate cnn-small (2 steps)", "training the GMI prior (10 steps of WGAN-GP)",
             "distilling the surrogate cnn (2 steps)", "estimating p_reg of the target",
             "measuring the GMI prior's quality", "attacking (GMI lomma, 20 iterations, 5 identities x 2 "
             "reconstructions)", "attacking: done in", "judging (10 reconstructions by 1 trained judge(s))",
             "rendering (the figures in"]
    at = [result.output.find(line) for line in order]
    assert all(i >= 0 for i in at), [line for line, i in zip(order, at) if i < 0]
    assert at == sorted(at)
    descs = [kwargs["desc"] for _, kwargs, _ in distilled]
    assert descs == ["distil surrogate 0 (cnn-small)", "distil surrogate 1 (cnn)"]  # were both "distil CNN"
    record = json.loads((out / "results.json").read_text())
    assert record["figures"] == {"reconstructions": "reconstructions.png", "prior_samples": "prior-samples.png"}
    assert (out / "prior-samples.png").stat().st_size > 1000
    assert record["prior"]["name"] == "gmi" and record["prior"]["steps"] == 10
    assert record["command_seconds"] > record["seconds"] > 0
    assert {"training the target", "training the GMI prior", "attacking", "rendering"} <= set(record["stage_seconds"])


def test_a_failed_attack_leaves_no_empty_output_folder(tmp_path):
    out = tmp_path / "runs" / "new"
    result = CliRunner().invoke(main, ["attack", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                                       "--identities", "0-9", *TINY])
    assert result.exit_code != 0 and "identities" in result.output
    assert not (tmp_path / "runs").exists()  # both folders the command made are gone again
    kept = tmp_path / "kept"
    kept.mkdir()
    CliRunner().invoke(main, ["attack", "--out", str(kept), "--identities", "0-9", *TINY])
    assert kept.is_dir()  # a folder the user made stays


def test_ctrl_c_in_attack_says_the_trained_artifacts_are_kept(tmp_path, monkeypatch):
    def interrupted(bench, **kwargs):
        bench.target()  # trained and cached before the interrupt
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run_attack", interrupted)
    cache = tmp_path / "cache"
    result = CliRunner().invoke(main, ["attack", "--out", str(tmp_path / "run"), "--cache-dir", str(cache), *TINY])
    assert result.exit_code == 130 and "Aborted!" not in result.output
    assert f"interrupted: what was trained is kept in the cache ({cache}); the same command loads it" in result.output
    assert any(p.name.startswith("target-") for p in cache.iterdir())
    assert not (tmp_path / "run").exists()  # nothing was written in it


def test_attack_seed_has_help_text():
    result = CliRunner().invoke(main, ["attack", "--help"])
    line = result.output[result.output.index("--attack-seed"):].split("--device")[0]
    assert "Seed of the attack alone" in " ".join(line.split())


TRAININGS = ("train_classifier", "train_gmi_prior", "train_kedmi_prior", "distill_surrogate", "estimate_p_reg")


def _count_trainings(monkeypatch) -> dict:
    """Count every call of the training functions, wherever the Workbench looks them up."""
    import mi_art
    import mi_art.training

    counts = dict.fromkeys(TRAININGS, 0)
    for name in TRAININGS:
        original = getattr(mi_art, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        for owner in (workbench, surrogate_artifacts, mi_art, mi_art.training):
            if getattr(owner, name, None) is original:
                monkeypatch.setattr(owner, name, counted)
        for prior in mi_art.PRIORS.values():  # each prior trains through its registry entry
            if prior.train is original:
                monkeypatch.setattr(prior, "train", counted)
    return counts


def test_cached_artifacts_are_reused(tmp_path, monkeypatch):
    """A second run with the same settings trains nothing: every artifact comes from the cache."""
    cache = tmp_path / "cache"  # its own cache: the first run trains everything
    counts = _count_trainings(monkeypatch)
    args = ["attack", "--out", str(tmp_path / "a"), "--cache-dir", str(cache), *TINY]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    # gmi/lomma: target and judge, the GMI prior, the two default surrogates, p_reg of the target and of
    # each surrogate (every model's logit loss is regularised)
    assert counts == {"train_classifier": 2, "train_gmi_prior": 1, "train_kedmi_prior": 0, "distill_surrogate": 2,
                      "estimate_p_reg": 3}
    files = sorted(p.name for p in cache.iterdir())
    counts.update(dict.fromkeys(counts, 0))
    second = CliRunner().invoke(main, args[:2] + [str(tmp_path / "b")] + args[3:])
    assert second.exit_code == 0, second.output
    assert counts == dict.fromkeys(TRAININGS, 0)
    assert sorted(p.name for p in cache.iterdir()) == files
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert a["acc@1"] == b["acc@1"] and a["knn_dist"] == pytest.approx(b["knn_dist"])
    assert a["target_test_accuracy"] == b["target_test_accuracy"]


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(main, ["attack", "--dataset", "image-folder", "--data-root", str(missing),
                                       "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code != 0
    assert "does not exist" in result.output and str(missing) in result.output
    assert "Traceback" not in result.output


def test_fewer_identities_than_asked_is_a_clear_error(tmp_path):
    import numpy as np
    from PIL import Image

    for k in range(3):
        (tmp_path / "faces" / f"p{k}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray((np.random.rand(8, 8) * 255).astype("uint8")).save(tmp_path / "faces" / f"p{k}" / f"{i}.png")
    result = CliRunner().invoke(main, ["attack", "--dataset", "image-folder", "--data-root", str(tmp_path / "faces"),
                                       "--data-option", "private=5", "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code != 0
    assert "identit" in result.output and "Traceback" not in result.output


def test_identities_option_selects_and_validates(tmp_path, cache_dir):
    out = tmp_path / "ids"
    result = CliRunner().invoke(main, ["attack", "--identities", "1,3-4", "--out", str(out), "--cache-dir", cache_dir,
                                       *TINY])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["n_identities"] == 3
    bad = CliRunner().invoke(main, ["attack", "--identities", "2,7", "--out", str(out), "--cache-dir", cache_dir,
                                    *TINY])
    assert bad.exit_code != 0 and "out of range" in bad.output and "7" in bad.output


@pytest.mark.parametrize("dataset, given, expected", [("digits", "auto", "none"), ("mnist", "auto", "none"),
                                                      ("image-folder", "auto", "flip"), ("celeba", "auto", "flip"),
                                                      ("image-folder", "none", "none"), ("digits", "flip", "flip")])
def test_attack_flips_the_gan_priors_public_images_for_faces_only(tmp_path, monkeypatch, dataset, given, expected):
    """--gan-augment auto: a mirrored face is a face (flip: without it KEDMI's prior on a few hundred public
    faces is noise), a mirrored digit is not (none); an explicit value is kept."""
    seen = []

    class Stop(experiment.Workbench):
        def __init__(self, config, *args, **kwargs):
            seen.append(config)
            raise ValueError("stopped before any work")

    monkeypatch.setattr(experiment, "Workbench", Stop)
    args = ["attack", "--dataset", dataset, "--gan-augment", given, "--out", str(tmp_path / "out"), "--quiet"]
    if dataset != "digits":
        args += ["--data-root", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert "stopped before any work" in result.output
    assert seen[0].gan_augment == expected


@pytest.mark.parametrize("dataset, expected", [("digits", "none"), ("image-folder", "flip")])
def test_attack_evaluate_grids_and_the_config_resolve_one_gan_augmentation(tmp_path, monkeypatch, dataset, expected):
    """Left to its default, gan_augment is the same for `mi-art attack`, `mi-art evaluate`, a grid file and the
    Python ExperimentConfig: flip for a face folder, none for digits (an AT&T audit once scored 0.660 through
    attack and 0.600 through evaluate, whose cells did not flip)."""
    import mi_art.evaluations.executors as executors
    from mi_art.evaluations.grid import Grid, cell_id

    seen = {}

    class Stop(experiment.Workbench):
        def __init__(self, config, *args, **kwargs):
            seen["attack"] = config.gan_augment
            raise ValueError("stopped before any work")

    def fake_evaluate_grid(grid, *args, **kwargs):
        seen["evaluate"] = {c.config.gan_augment for c in grid.cells()}

    monkeypatch.setattr(experiment, "Workbench", Stop)
    monkeypatch.setattr(executors, "evaluate_grid", fake_evaluate_grid)
    monkeypatch.setattr(Grid, "validate", lambda self, **kwargs: [])  # the empty folder holds no faces
    root = [] if dataset == "digits" else ["--data-root", str(tmp_path)]
    result = CliRunner().invoke(main, ["attack", "--dataset", dataset, *root, "--out", str(tmp_path / "a"), "--quiet"])
    assert "stopped before any work" in result.output, result.output
    result = CliRunner().invoke(main, ["evaluate", "--dataset", dataset, *root, "--out", str(tmp_path / "e"),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    grid = Grid.from_dict({"datasets": [{"name": dataset, "data_root": str(tmp_path) if root else None}]})
    assert seen == {"attack": expected, "evaluate": {expected}}
    assert {c.config.gan_augment for c in grid.cells()} == {expected}
    assert experiment.ExperimentConfig(dataset=dataset).gan_augment == expected
    # "auto" is resolved before any key is made: a cell's id is that of the value written out
    assert cell_id(experiment.ExperimentConfig(dataset=dataset)) == \
        cell_id(experiment.ExperimentConfig(dataset=dataset, gan_augment=expected))
    # and evaluate takes the option as attack does, for every dataset of the grid
    result = CliRunner().invoke(main, ["evaluate", "--dataset", dataset, *root, "--gan-augment", "flip-shift",
                                       "--out", str(tmp_path / "e2"), "--no-progress"])
    assert result.exit_code == 0 and seen["evaluate"] == {"flip-shift"}, result.output


def test_default_output_folders_differ_with_the_images_size_and_channels():
    from mi_art.evaluations.cli import _options_suffix

    assert _options_suffix({}) == ""  # mi_art_runs/digits-gmi-lomma, as the README says
    a, b = _options_suffix({"image_size": 32, "channels": 1}), _options_suffix({"image_size": 64, "channels": 3})
    assert a == "-32px-1ch" and b == "-64px-3ch"
    assert _options_suffix({"private": 20}) != _options_suffix({"private": 30})


# --------------------------------------------------------------------------------------------------
# What mi-art attack says and writes, pinned
# --------------------------------------------------------------------------------------------------


class _PinnedData:
    name, num_classes, input_shape, private_identities = "digits", 5, (1, 8, 8), ["a", "b", "c", "d", "e"]

    def private_all(self):
        return type("Split", (), {"x": np.zeros((5, 1, 8, 8), np.float32), "y": np.arange(5)})()


def _pinned_result(judges: int, independent: bool) -> dict:
    result = {"attack": "gmi", "variant": "lomma", "acc@1": 0.6, "acc@1_std": 0.05, "chance@1": 0.2, "acc@5": None,
              "chance@5": 1.0, "knn_dist": 12.5, "fid_eval_features": None if independent else 40.25,
              "target_test_accuracy": 0.9, "judge_test_accuracy": 0.95, "seconds_per_reconstruction": 0.125,
              "seconds": 2.5, "precision": 0.5, "recall": None, "density": 1.25, "coverage": 0.75,
              "per_identity": [{"identity": i, "name": f"id{i}", "acc@1": 0.2 * i, "n_private_train": 3 + i}
                               for i in range(5)],
              "warnings": ["the judge is weak", "the prior is small"], "reconstructions": np.zeros((2, 1, 8, 8)),
              "labels": np.zeros(2), "acc@1_judges": [0.5, 0.7][:judges] if judges > 1 else [0.6]}
    if independent:
        result.update({"independent_acc@1": 0.4, "independent_acc@1_se": 0.02, "independent_acc@5": None,
                       "independent_dist": 0.55, "independent_ratio": 0.67, "independent_test_accuracy": 0.8,
                       "independent_judge": "dlib", "independent": False, "independent_shares": ["faces"]})
    return result


def _pinned_attack(tmp_path, monkeypatch, name: str, args: list, result: dict) -> dict:
    """``mi-art attack`` on a stand-in workbench and attack: its output (paths and times masked), exit code,
    results.json's keys and the config it ran."""
    import re

    import mi_art.evaluations.plots as plots

    seen = {}

    class Bench:
        def __init__(self, config, cache):
            seen["config"] = config
            self.data = _PinnedData()

    monkeypatch.setattr(experiment, "Workbench", Bench)
    def run_attack(bench):
        if isinstance(result, Exception):
            raise result
        return dict(result)

    monkeypatch.setattr(experiment, "run_attack", run_attack)
    monkeypatch.setattr(plots, "write_run_figures", lambda out, *a, **k: {"reconstructions": "reconstructions.png"})
    out = tmp_path / name
    run = CliRunner().invoke(main, ["attack", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *args])
    text = run.output.replace(str(tmp_path), "<tmp>")
    text = re.sub(r"\d+(\.\d+)? (ms|s)\b", "<t>", text)
    record = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else None
    return {"exit": run.exit_code, "output": text.splitlines(), "record keys": record and sorted(record),
            "config": seen["config"].to_dict() if "config" in seen else None}


def test_what_mi_art_attack_says_and_writes_is_pinned(tmp_path, monkeypatch):
    """mi-art attack's lines (its result, PRDC and exposure, the independent judge, warnings, what it wrote) and
    results.json, for one judge and for a panel with an independent judge that shares data; and refusals before
    any work (tests/golden/cli_attack.json)."""
    from conftest import assert_matches_golden

    got = {
        "one judge": _pinned_attack(tmp_path, monkeypatch, "a", ["--quiet"], _pinned_result(1, False)),
        "panel, independent": _pinned_attack(tmp_path, monkeypatch, "b", ["--judges", "2", "--attack", "miface",
                                                                          "--identities", "0-3"],
                                             _pinned_result(2, True)),
        "bad identities": _pinned_attack(tmp_path, monkeypatch, "c", ["--identities", "x"], {}),
        "bad device": _pinned_attack(tmp_path, monkeypatch, "d", ["--device", "tpu"], {}),
        "refused by the run": _pinned_attack(tmp_path, monkeypatch, "e", [], ValueError("a bad\n   setting")),
    }
    for case in got.values():
        if case["config"] is not None:
            case["config"] = {k: v for k, v in case["config"].items() if k in ("attack", "variant", "identities",
                                                                             "judges", "device", "verbose")}
    assert_matches_golden(got, "cli_attack.json")


def _pinned_evaluate(tmp_path, monkeypatch, name: str, args: list, outcome=None) -> dict:
    """``mi-art evaluate`` with evaluate_grid stood in for (``outcome``: an error it raises): the output (paths
    masked), the exit code and what evaluate_grid was given."""
    import mi_art.evaluations.executors as executors

    seen = {}

    def evaluate_grid(grid, out, **kwargs):
        seen.update(cells=[c.tag for c in grid.cells()], out=str(out), **{k: v for k, v in kwargs.items()
                                                                           if k != "echo"})
        if outcome is not None:
            raise outcome
        return []

    monkeypatch.setattr(executors, "evaluate_grid", evaluate_grid)
    out = tmp_path / name
    run = CliRunner().invoke(main, ["evaluate", "--out", str(out), *args])
    mask = lambda text: str(text).replace(str(tmp_path), "<tmp>")  # noqa: E731
    # the summary's line of budgets names every setting: a setting added later would change it, not this command
    lines = ["  budgets <every setting>" if line.startswith("  budgets ") else line
             for line in mask(run.output).splitlines()]
    return {"exit": run.exit_code, "output": lines,
            "evaluate_grid": {k: mask(v) if k == "out" else v for k, v in seen.items()} or None}


def test_what_mi_art_evaluate_says_and_runs_is_pinned(tmp_path, monkeypatch):
    """mi-art evaluate's dry run (the summary, each cell, the grid file), the adaptive grid, what it hands
    evaluate_grid, and its refusals and errors (tests/golden/cli_evaluate.json)."""
    from conftest import assert_matches_golden

    from mi_art.evaluations.executors import GridInterrupted, GridRunError

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nattacks = ["gmi"]\nvariants = ["baseline"]\nseeds = [0]\niterations = 0\n'
                   '[[datasets]]\nname = "digits"\n[[defenses]]\nname = "none"\n')
    grid = ["--dataset", "digits", "--defense", "none", "--defense", "mid:beta=0.01", "--attack", "gmi",
            "--variant", "baseline", "--seeds", "0,1", "--iterations", "5", "--threads", "1"]
    got = {
        "dry run": _pinned_evaluate(tmp_path, monkeypatch, "a", [*grid, "--dry-run", "--name", "pinned"]),
        "adaptive dry run": _pinned_evaluate(tmp_path, monkeypatch, "b", [*grid, "--adaptive", "--dry-run"]),
        "run": _pinned_evaluate(tmp_path, monkeypatch, "c", [*grid, "--no-progress", "--device", "cpu"]),
        "failed cells": _pinned_evaluate(tmp_path, monkeypatch, "d", grid, GridRunError("2 of 4 cells failed")),
        "interrupted": _pinned_evaluate(tmp_path, monkeypatch, "e", grid, GridInterrupted()),
        "bad grid": _pinned_evaluate(tmp_path, monkeypatch, "f", [*grid, "--seeds", "x"]),
        "bad threads": _pinned_evaluate(tmp_path, monkeypatch, "g", [*grid, "--threads", "0"]),
        "bad device": _pinned_evaluate(tmp_path, monkeypatch, "h", [*grid, "--device", "tpu"]),
        "bad defense": _pinned_evaluate(tmp_path, monkeypatch, "i", [*grid, "--defense", "nope"]),
        "invalid grid file": _pinned_evaluate(tmp_path, monkeypatch, "j", ["--config", str(bad)]),
        "dry run, a device it cannot use": _pinned_evaluate(tmp_path, monkeypatch, "k",
                                                            [*grid, "--dry-run", "--device", "cuda:7"]),
    }
    assert_matches_golden(got, "cli_evaluate.json")
