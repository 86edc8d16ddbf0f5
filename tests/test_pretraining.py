"""Public pre-training then private fine-tuning of targets and evaluation models (mi_art.pretraining,
ExperimentConfig.target_pretrain_epochs / judge_pretrain_epochs, the CLI and grid options). The
warnings for a weak judge or target: test_weak_model_warnings.py. Tiny digits models: seconds on a CPU."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mi_art.evaluations.surrogate_artifacts as surrogate_artifacts
import mi_art.evaluations.workbench as workbench
import mi_art.pretraining as pretraining
from mi_art.evaluations.cache import ArtifactCache, config_key
from mi_art.evaluations.cli import main
from mi_art.evaluations.experiment import SETTINGS, ExperimentConfig, Workbench
from mi_art.evaluations.grid import Cell, Grid, GridError, cell_id, check_grid
from mi_art.data import MIDataset, Split, load_digits_data
from mi_art.models import make_classifier

torch.set_num_threads(1)

FAST = dict(augment="none", batch_size=64)
#: config fields added since the cells' ids were first computed: left out of an id while at their default
NEW_FIELDS = ("target_pretrain_epochs", "judge_pretrain_epochs", "surrogate_pretrain_epochs", "judges",
              "min_surrogate_agreement", "regularise_surrogates", "plgmi_steps", "access", "max_queries",
              "mixed_precision", "independent_judge", "n_candidates", "search_views", "id_weight",
              "feature_layer")


@pytest.fixture(scope="module")
def digits():
    return load_digits_data()


@pytest.fixture(scope="module")
def three_public(digits):
    """Digits with 5 private classes and only 3 public ones: the two heads differ in size."""
    keep = digits.public.y < 3
    return MIDataset(name="digits-3", private_train=digits.private_train, private_test=digits.private_test,
                     public=Split(digits.public.x[keep], digits.public.y[keep]),
                     private_identities=digits.private_identities,
                     public_identities=digits.public_identities[:3], image_size=8, channels=1)


def _first_conv(model: torch.nn.Module) -> torch.Tensor:
    return model.body[0].weight.detach().clone()


def _spy(monkeypatch, owner, name):
    """Record (first conv weight, head object, head outputs) of the model each call starts from."""
    original, seen = getattr(owner, name), []

    def wrapper(model, *args, **kwargs):
        seen.append({"conv": _first_conv(model), "head": model.fc, "out": model.fc.out_features})
        out = original(model, *args, **kwargs)
        seen[-1]["after"] = _first_conv(out)
        return out

    monkeypatch.setattr(owner, name, wrapper)
    return seen


# ------------------------------------------------------------------------------------------ the API


def test_fine_tuning_starts_from_the_pretrained_body_with_a_fresh_private_head(three_public, monkeypatch):
    """Pre-training starts from the initial weights with a 3-class public head; fine-tuning starts from
    exactly the pre-trained first conv (not the initial one) with a new 5-class head."""
    data = three_public
    model = make_classifier("cnn", 1, data.num_classes, 8)
    init = _first_conv(model)
    calls = _spy(monkeypatch, pretraining, "train_classifier")
    out = pretraining.pretrain_and_fine_tune(model, data, pretrain_epochs=2, epochs=1, seed=0, **FAST)
    pre, fine = calls
    assert torch.equal(pre["conv"], init) and pre["out"] == data.num_public_classes == 3
    assert not torch.equal(pre["after"], init)                       # pre-training moved the body
    assert torch.equal(fine["conv"], pre["after"])                   # fine-tuning starts from it
    assert fine["out"] == data.num_classes == 5 and fine["head"] is not pre["head"]
    assert out is model and out.fc.out_features == 5 and not out.training
    assert not torch.equal(_first_conv(out), pre["after"])           # every layer is fine-tuned


def test_same_class_count_still_gets_a_fresh_head_and_seeds_make_it_reproducible(digits):
    """Digits has 5 public and 5 private classes: the pre-trained head is still replaced (a public
    identity is not a private one), and the same seed gives the same model."""
    from mi_art.utils import seed_everything

    a = make_classifier("cnn", 1, 5, 8)
    pretraining.pretrain_classifier(a, digits.public.x, digits.public.y, epochs=1, seed=0, **FAST)
    public_head = a.fc
    pretraining.fine_tune_classifier(a, digits.private_train.x, digits.private_train.y, 5, epochs=1, seed=0, **FAST)
    assert a.fc is not public_head and a.fc.weight.shape == public_head.weight.shape

    def run(seed):
        seed_everything(seed)
        return pretraining.pretrain_and_fine_tune(make_classifier("cnn", 1, 5, 8), digits, pretrain_epochs=1,
                                                  epochs=1, seed=seed, **FAST).state_dict()

    b, c, d = run(3), run(3), run(4)
    assert all(torch.equal(b[k], c[k]) for k in b)
    assert not all(torch.equal(b[k], d[k]) for k in b)


def test_pretraining_refuses_bad_epochs_and_a_public_set_without_identities(digits):
    model = make_classifier("cnn", 1, 5, 8)
    with pytest.raises(ValueError, match="pretrain_epochs must be an integer in"):
        pretraining.pretrain_and_fine_tune(model, digits, pretrain_epochs=0)
    with pytest.raises(ValueError, match="pretrain_epochs must be an integer"):
        pretraining.pretrain_and_fine_tune(model, digits, pretrain_epochs=1.5)
    one = MIDataset(name="ffhq-like", private_train=digits.private_train, private_test=digits.private_test,
                    public=Split(digits.public.x, np.zeros(len(digits.public.x), dtype=np.int64)),
                    private_identities=digits.private_identities, public_identities=("ffhq",), image_size=8,
                    channels=1)
    with pytest.raises(ValueError, match="at least 2 public identities, got 1"):
        pretraining.pretrain_and_fine_tune(model, one, pretrain_epochs=1)


def test_tl_defense_uses_the_shared_pretraining(digits, monkeypatch):
    """TL-DMI's two steps go through mi_art.pretraining (one implementation)."""
    from mi_art.defenses import transfer

    calls = {"pre": 0, "fine": 0}
    pre, fine = pretraining.pretrain_classifier, pretraining.fine_tune_classifier

    def count(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(transfer, "pretrain_classifier", count("pre", pre))
    monkeypatch.setattr(transfer, "fine_tune_classifier", count("fine", fine))
    model = transfer.pretrain_public(make_classifier("cnn", 1, 5, 8), digits, epochs=1, **FAST)
    transfer.fine_tune_private(model, digits, 2, epochs=1, **FAST)
    assert calls == {"pre": 1, "fine": 1}
    assert transfer.replace_head is pretraining.replace_head


# ------------------------------------------------------------------------------------------ the workbench


def test_cache_keys_unchanged_at_zero_and_changed_above(digits):
    bench = Workbench(ExperimentConfig(), data=digits)
    data_key = bench.key("data")
    c = bench.config
    # the keys of the release before the option existed, plus the training code's mark (BatchNorm statistics
    # re-estimated after training): a checkpoint trained before that is not served
    recipe = {"batch_norm": "re-estimated"}
    assert bench.key("target") == {"data": data_key, "arch": "cnn", "epochs": c.target_epochs, "augment": "shift",
                                  "seed": 0, **recipe}
    assert bench.key("evaluator") == {"data": data_key, "arch": "cnn-wide", "epochs": c.judge_epochs,
                                     "augment": "shift", "seed": 1000, **recipe}
    old_cell = config_key({SETTINGS.renamed.old(k): v for k, v in c.to_dict().items()  # ids keep earlier names
                           if k not in ("device", "verbose", *NEW_FIELDS)})
    assert cell_id(c) == old_cell

    pre_t = Workbench(ExperimentConfig(target_pretrain_epochs=3), data=digits)
    pre_e = Workbench(ExperimentConfig(judge_pretrain_epochs=3), data=digits)
    assert pre_t.key("target") == {**bench.key("target"), "pretrain_epochs": 3}
    assert pre_t.key("evaluator") == bench.key("evaluator")
    assert pre_e.key("evaluator") == {**bench.key("evaluator"), "pretrain_epochs": 3}
    assert pre_e.key("target") == bench.key("target")
    # everything built on the target follows it
    assert pre_t.key("surrogate", index=0) != bench.key("surrogate", index=0)
    assert pre_t.key("kedmi-prior") != bench.key("kedmi-prior")
    assert pre_t.key("gmi-prior") == bench.key("gmi-prior")   # the GMI prior does not
    assert len({cell_id(c), cell_id(pre_t.config), cell_id(pre_e.config)}) == 3

    def group(cfg):
        return Cell(cell_id(cfg), cfg, "none").target_group

    assert group(pre_t.config) != group(c) and group(pre_e.config) == group(c)
    # a defended target's key gets it too
    mid = ExperimentConfig(defense="mid", defense_params={"beta": 0.01})
    assert "pretrain_epochs" not in Workbench(mid, data=digits).key("target")
    assert Workbench(dataclasses.replace(mid, target_pretrain_epochs=2), data=digits).key("target")[
        "pretrain_epochs"] == 2


def test_workbench_target_and_judge_start_from_the_cached_pretrained_body(digits, tmp_path, monkeypatch):
    config = ExperimentConfig(target_epochs=1, judge_epochs=1, target_pretrain_epochs=1, judge_pretrain_epochs=2,
                              augment="none")
    bench = Workbench(config, ArtifactCache(tmp_path), data=digits)
    seen = _spy(monkeypatch, workbench, "fine_tune_classifier")
    target, judge = bench.target(), bench.judge()
    assert [s["out"] for s in seen] == [digits.num_public_classes] * 2
    assert sorted(p.name.split("-")[0] for p in tmp_path.glob("*.pt")) == ["evaluator", "pretrained", "pretrained",
                                                                           "target"]
    # the body each fine-tuning started from is the cached pre-trained one, not a fresh initialisation
    pre_t = bench.pretrained("cnn", 1, config.seed, "target")
    pre_e = bench.pretrained("cnn-wide", 2, config.seed + 1000, "evaluator")
    assert torch.equal(seen[0]["conv"], _first_conv(pre_t).to(seen[0]["conv"].device))
    assert torch.equal(seen[1]["conv"], _first_conv(pre_e).to(seen[1]["conv"].device))
    assert not torch.equal(_first_conv(pre_t).cpu(), _first_conv(bench._initialised("cnn", config.seed)))
    assert target.fc.out_features == judge.fc.out_features == digits.num_classes
    # a second workbench loads the same target from the cache
    again = Workbench(config, ArtifactCache(tmp_path), data=digits).target()
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), again.state_dict().values()))


def test_surrogates_start_from_the_cached_pretrained_body(digits, tmp_path, monkeypatch):
    config = ExperimentConfig(target_epochs=1, surrogate_steps=1, surrogate_pretrain_epochs=1,
                              surrogate_data="public", augment="none", surrogate_archs=("cnn-small", "cnn"))
    bench = Workbench(config, ArtifactCache(tmp_path), data=digits)
    target = bench.target()
    seen = []
    original = surrogate_artifacts.distill_surrogate

    def spy(teacher, student, *args, **kwargs):
        seen.append({"conv": _first_conv(student), "out": student.fc.out_features})
        return original(teacher, student, *args, **kwargs)

    monkeypatch.setattr(surrogate_artifacts, "distill_surrogate", spy)
    bench.surrogates(target)
    assert [s["out"] for s in seen] == [digits.num_classes] * 2
    for i, arch in enumerate(config.surrogate_archs):
        pre = bench.pretrained(arch, 1, config.seed + i, "surrogate")
        assert torch.equal(seen[i]["conv"], _first_conv(pre).to(seen[i]["conv"].device))
        assert not torch.equal(seen[i]["conv"].cpu(), _first_conv(bench._initialised(arch, config.seed + i)))
    # off (0) keeps the keys of surrogates distilled from scratch; on, they differ
    scratch = Workbench(dataclasses.replace(config, surrogate_pretrain_epochs=0), data=digits)
    assert "pretrain_epochs" not in scratch.key("surrogate", index=0)
    assert bench.key("surrogate", index=0) == {**scratch.key("surrogate", index=0), "pretrain_epochs": 1}
    with pytest.raises(ValueError, match="surrogate_pretrain_epochs must be an integer"):
        ExperimentConfig(surrogate_pretrain_epochs=-1).validate()


def test_defended_target_fine_tunes_the_pretrained_body(digits, tmp_path, monkeypatch):
    from mi_art import defenses

    config = ExperimentConfig(defense="rounded", defense_params={"decimals": 2}, target_epochs=1,
                              target_pretrain_epochs=1, augment="none")
    bench = Workbench(config, ArtifactCache(tmp_path), data=digits)
    seen = []
    original = defenses.train_defended_target

    def spy(defense, data, *, model, **kwargs):
        seen.append(model)
        return original(defense, data, model=model, **kwargs)

    monkeypatch.setattr(defenses, "train_defended_target", spy)
    target = bench.target()
    pre = bench.pretrained("cnn", 1, config.seed, "target")
    assert isinstance(seen[0], torch.nn.Module) and seen[0].fc.out_features == digits.num_classes
    assert torch.equal(_first_conv(seen[0]).cpu(), _first_conv(pre).cpu())
    assert target.fc.out_features == digits.num_classes and bench.defense_record["defense"] == "rounded"
    # the record names the architecture and its pre-training, not the module's class ("CNN")
    assert bench.defense_record["architecture"] == "cnn"
    assert bench.defense_record["details"]["pretrain_epochs"] == 1


def test_tl_takes_the_targets_pretraining_and_refuses_a_conflict():
    ExperimentConfig(defense="tl", defense_params={"freeze": 2}, target_pretrain_epochs=3).validate()
    ExperimentConfig(defense="tl", defense_params={"pretrain_epochs": 3}, target_pretrain_epochs=3).validate()
    with pytest.raises(ValueError, match="target_pretrain_epochs=3 and defense 'tl' with pretrain_epochs=5"):
        ExperimentConfig(defense="tl", defense_params={"pretrain_epochs": 5}, target_pretrain_epochs=3).validate()
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="judge_pretrain_epochs must be an integer"):
            ExperimentConfig(judge_pretrain_epochs=bad).validate()


# ------------------------------------------------------------------------------------------ grid and CLI


def test_grid_accepts_zero_and_refuses_bad_pretrain_epochs():
    check_grid({"target_pretrain_epochs": 0, "judge_pretrain_epochs": 4})  # 0 is valid here (counts are >= 1)
    with pytest.raises(GridError) as err:
        check_grid({"target_pretrain_epochs": -1, "judge_pretrain_epochs": 1.5,
                    "datasets": [{"name": "digits", "target_pretrain_epochs": "3"}]})
    text = str(err.value)
    assert "target_pretrain_epochs must be an integer in [0, inf), got -1" in text
    assert "judge_pretrain_epochs must be an integer, got 1.5" in text
    assert "target_pretrain_epochs must be an integer, got '3'" in text
    grid = Grid.from_dict({"target_pretrain_epochs": 2, "datasets": [{"name": "digits", "judge_pretrain_epochs": 3}]})
    cells = grid.cells()
    assert {(c.config.target_pretrain_epochs, c.config.judge_pretrain_epochs) for c in cells} == {(2, 3)}
    assert Grid.from_dict(grid.to_dict()).cells()[0].id == cells[0].id
    with pytest.raises(GridError, match="defense tl\\(pretrain_epochs=5\\).*TL-DMI's pre-training is the target's"):
        Grid.from_dict({"target_pretrain_epochs": 2, "defenses": [{"name": "tl", "params": [{"pretrain_epochs": 5}]}]
                        }).validate(load_data=False)


def test_cli_options_are_validated_and_reach_the_grid(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(main, ["attack", "--target-pretrain-epochs", "-1"])
    assert bad.exit_code == 2 and "--target-pretrain-epochs" in bad.output and "-1" in bad.output
    bad = runner.invoke(main, ["evaluate", "--judge-pretrain-epochs", "x", "--dry-run"])
    assert bad.exit_code == 2 and "--judge-pretrain-epochs" in bad.output
    dry = runner.invoke(main, ["evaluate", "--dataset", "digits", "--target-pretrain-epochs", "3",
                               "--judge-pretrain-epochs", "0", "--dry-run", "--out", str(tmp_path / "g")])
    assert dry.exit_code == 0, dry.output
    assert "target_pretrain_epochs=3" in dry.output and "judge_pretrain_epochs=0" in dry.output
    assert "target_pretrain_epochs = 3" in dry.output  # the printed grid file carries it
    help_text = runner.invoke(main, ["attack", "--help"]).output
    assert "--target-pretrain-epochs" in help_text and "--judge-pretrain-epochs" in help_text
    dry = runner.invoke(main, ["evaluate", "--dataset", "digits", "--surrogate-pretrain-epochs", "2", "--dry-run",
                               "--out", str(tmp_path / "s")])
    assert dry.exit_code == 0 and "surrogate_pretrain_epochs = 2" in dry.output, dry.output
    bad = runner.invoke(main, ["attack", "--surrogate-pretrain-epochs", "-1"])
    assert bad.exit_code == 2 and "--surrogate-pretrain-epochs" in bad.output


# ------------------------------------------------------------------------------------------ warnings


