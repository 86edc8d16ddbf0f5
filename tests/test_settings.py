"""One declaration per setting (evaluations/settings.py): each config field declares its default, rule, help
and grid scope beside itself, and the commands' options, the grid's keys, the checks and the cell ids' scope are
derived from it; a grid value is checked once on its way to the attack."""
import dataclasses
import warnings
from typing import Optional

import pytest

from mi_art.evaluations.grid import Grid
from mi_art.evaluations.presets import preset

# The cell ids of the presets, computed before the settings were declared beside their fields (main at 5facebf):
# the migration guard. A changed id reruns every finished cell of a grid, so these must never change.
QUICK_IDS = [
    "239ba8b1292848ae", "f1617c94ebea25b0", "8b9ce140107d0a80", "57dbde74cdbd7f0a", "5c4796055738b83e",
    "22b1a0030e504520", "5e8ca9469cf3f52e", "1dac3a8cb2523bcf", "d22c439b433f7c05", "b08a79525d537261",
    "97e167a5c5ccc28d", "99660918c99bb2d4", "ca0af4df035ceaea", "37b90eb00da8b9fd", "ea34caa24480ad4f",
    "f4769fea15ef81bf", "6191f37498884edd", "f072961a7b85be35", "4c27beabf9fcc68a", "87b2cb13c7374f01",
    "57875e078309d2a5", "2d6c018b5321a399", "3388cbe3638f2795", "90447732303c43fd",
]
PAPER_IDS = [
    "791df526bad8417e", "bd19290a9ae92df9", "2def7430d5e16910", "2d49563f8daac602", "f76167514240fabd",
    "1bb75be305229953", "2e5f2e9dcdc16d66", "2fe3c7eaee822890", "1d64c57f96b84387", "2e0ff07b1ea8cf91",
    "dd25211930d66ca4", "dce8b62a0bf2edf2", "59a4f38fa9b3ede8", "5b1b1c888b00fb9f", "8787ff13048a3468",
    "a8bbf7e08c5bb12c", "984352663b5af710", "74a10b13cc5aef4e", "bd53593423f272ad", "90b688d91b889e3c",
    "637bbda2dafc05d1", "3e875f248fda6d99", "3be17644a9348832", "005a39ad9720e68e", "88f57c298e59467d",
    "d94053ef0d904e3c", "94bc58fea23d472c", "b02ff5dbec11801d", "335d2eddb1591630", "2d7cebd9b77c6f73",
    "5d710069106a52a7", "6234dc29248453c4", "2ae44f6322a93e07", "27154bb523d09c6e", "99e57c7fb48abb38",
    "e5ba40bfc77c496e", "7f5903c3739a3e67", "44404057448a8607", "21f5662c3be46cdc", "48dfc6c3e7aaab10",
    "52837817b9b563b0", "d8737db1cb9ca4ed", "0d44dd657414faba", "0504f58e5ee745bf", "2a97615c5e010e7e",
    "7b0741fb400c07da", "8bf3e83157e00242", "050f4578292d4ccf", "e45319e3d06881a2", "085c37edfb9ae665",
    "ed13ddb51ef18931", "d7da082acf5366dc", "dddcf45c48a32160", "47a042e222125865", "bbf2d65c48164528",
    "594d8346d96b56e7", "bc87c3f71e4ae7d7", "c4b9d28e9df702eb", "329a0264dd2249ff", "237811d03c7f39df",
    "56902b930f330c7a", "8ea57160454bf248", "018a91611c917f0f", "218cf31cad76a9de", "23f5ae005d9dd30b",
    "6eaeba7e5ab40714", "9439eb8187b140f9", "b64f64cfc4569694", "45d3c08cdd2ae09b", "e269132a8676acef",
    "22cf3fe8dc49d651", "6c430dad1fad7182", "a9156a372dc14ab7", "fda2f196f1a973b4", "2c8079a7c38612b4",
    "0519887ac6e6df3a", "831cf0686c65866f", "c53c96d1fd5f565c", "1ea87472dba31aac", "b1bb23ef31497eda",
]


@pytest.mark.parametrize("name, ids", [("quick", QUICK_IDS), ("paper", PAPER_IDS)])
def test_the_presets_cell_ids_are_unchanged(name, ids):
    assert [c.id for c in Grid.from_dict(preset(name)).cells()] == ids


# ------------------------------------------------------------------------- one declaration, derived tables


def test_a_setting_declared_once_is_a_rule_an_option_a_grid_key_and_an_id_scope():
    """The tables are derived from the declarations: a toy config declares its fields the way ExperimentConfig
    does, and each table has them."""
    from mi_art.evaluations.config_rules import COUNT, FLAG, PRETRAIN_EPOCHS
    from mi_art.evaluations.settings import Settings, setting

    @dataclasses.dataclass
    class Toy:
        steps: int = setting(3, COUNT, "Steps.")
        warmup: int = setting(0, PRETRAIN_EPOCHS, "Warm-up epochs.", in_id="when-set")
        quiet: bool = setting(False, FLAG, budget=False, in_id="never")
        where: Optional[str] = setting(None, checked_by="the machine", budget=False)

    s = Settings(Toy)
    assert set(s.rules) == {"steps", "warmup", "quiet"} and s.rules["steps"] is COUNT
    assert s.checked_elsewhere == {"where": "the machine"}
    assert s.options == ("steps", "warmup")  # a help text makes an option; quiet and where have none
    assert s.budgets == ("steps", "warmup")
    assert s.in_id_when_set == {"warmup": 0} and s.not_in_id == ("quiet",)
    assert s.with_rule(PRETRAIN_EPOCHS) == ("warmup",)
    assert s.defaults == {"steps": 3, "warmup": 0, "quiet": False, "where": None}
    assert s.renamed.table == {}


def test_a_renamed_setting_declares_its_earlier_name_and_keeps_it_in_the_id():
    from mi_art.evaluations.config_rules import COUNT, choice
    from mi_art.evaluations.settings import Settings, accepts_earlier_names, setting
    from mi_art.renames import Renames, RenamedWarning

    shapes = Renames("shape", {"sq": "square"})

    @accepts_earlier_names
    @dataclasses.dataclass
    class Toy:
        gen_steps: int = setting(3, COUNT, "Steps.", was="steps")
        shape: str = setting("round", choice(["round", "square"], shapes), "Shape.")

    s = Settings(Toy)
    assert s.renamed.table == {"steps": "gen_steps"} and s.declared["shape"].values is shapes
    with pytest.warns(RenamedWarning):
        toy = Toy(steps=4, shape="sq")
    assert (toy.gen_steps, toy.shape) == (4, "square")
    assert s.id_form(dataclasses.asdict(toy)) == {"steps": 4, "shape": "sq"}


def test_a_setting_needs_a_rule_or_a_named_checker_and_every_field_one_declaration():
    from mi_art.evaluations.config_rules import COUNT
    from mi_art.evaluations.settings import Settings, setting

    with pytest.raises(ValueError, match="checked_by"):
        setting(1)
    with pytest.raises(ValueError, match="not both"):
        setting(1, COUNT, checked_by="elsewhere")

    @dataclasses.dataclass
    class Undeclared:
        steps: int = 3

    with pytest.raises(TypeError, match="steps"):
        Settings(Undeclared)


def test_the_packages_tables_come_from_the_config_declarations():
    from mi_art.evaluations import config_options, config_rules, grid_schema
    from mi_art.evaluations.experiment import SETTINGS

    assert config_rules.PARAMETER_RULES is SETTINGS.rules or config_rules.PARAMETER_RULES == SETTINGS.rules
    assert [o.field for o in config_options.FIELD_OPTIONS] == list(SETTINGS.options)
    assert all(o.type is SETTINGS.declared[o.field].rule.cli for o in config_options.FIELD_OPTIONS)
    assert all(o.help == SETTINGS.declared[o.field].help for o in config_options.FIELD_OPTIONS)
    assert grid_schema.BUDGET_KEYS == SETTINGS.budgets
    assert grid_schema._IN_ID_WHEN_SET == SETTINGS.in_id_when_set
    assert set(grid_schema._NOT_IN_ID) == {"device", "verbose"}


# ------------------------------------------------------------------------- each value checked once


TINY_GRID = """
name = "once"
attacks = ["gmi"]
variants = ["baseline"]
seeds = [0]
plgmi_steps = 7
[[datasets]]
name = "digits"
[[defenses]]
name = "none"
"""


class _Stop(Exception):
    pass


@pytest.fixture
def plgmi_steps_checks(monkeypatch):
    """The names under which plgmi_steps = 7 is checked by its rule, in order."""
    from mi_art.evaluations.experiment import PARAMETER_RULES

    calls = []
    rule = PARAMETER_RULES["plgmi_steps"]

    def counted(name, value):
        if value == 7:
            calls.append(name)
        return rule(name, value)

    monkeypatch.setitem(PARAMETER_RULES, "plgmi_steps", counted)
    return calls


def test_a_grid_files_value_is_checked_once_on_its_way_to_the_cells(tmp_path, monkeypatch, plgmi_steps_checks):
    """`mi-art evaluate --config` reads the file, lays the options over it, checks the grid and its data; the cell
    runs on a workbench: the value is checked by its rule once in all (before: twice by check_grid, once per
    representative configuration in Grid.validate, once more in each cell's Workbench and run_attack)."""
    from click.testing import CliRunner

    import mi_art.evaluations.executors as executors
    from mi_art.evaluations.cli import main
    from mi_art.evaluations.experiment import Workbench

    (tmp_path / "g.toml").write_text(TINY_GRID)
    seen = {}
    monkeypatch.setattr(executors, "evaluate_grid", lambda grid, *a, **k: seen.setdefault("grid", grid))
    result = CliRunner().invoke(main, ["evaluate", "--config", str(tmp_path / "g.toml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert plgmi_steps_checks == ["plgmi_steps"]

    def stop(self, *args, **kwargs):
        raise _Stop

    monkeypatch.setattr(Workbench, "target", stop)  # the cell stops at its first training step
    with pytest.raises(_Stop):
        executors.run_cell(seen["grid"].cells()[0], tmp_path / "o", tmp_path / "cache")
    assert plgmi_steps_checks == ["plgmi_steps"]


def test_a_loaded_grid_file_is_not_checked_again_unless_it_changed(tmp_path, plgmi_steps_checks):
    from mi_art.evaluations.grid import GridError, load_grid_file

    (tmp_path / "g.toml").write_text(TINY_GRID)
    spec = load_grid_file(tmp_path / "g.toml")
    grid = Grid.from_dict(spec)
    grid.validate()
    assert plgmi_steps_checks == ["plgmi_steps"]
    grid.budgets["plgmi_steps"] = 0  # changed after it was checked: checked again
    with pytest.raises(GridError, match="plgmi_steps"):
        grid.validate()
    spec["plgmi_steps"] = 0
    with pytest.raises(GridError, match="plgmi_steps"):
        Grid.from_dict(spec)


def test_a_config_is_checked_once_by_its_workbench_not_again_by_run_attack(monkeypatch, plgmi_steps_checks):
    from mi_art.evaluations.experiment import ExperimentConfig, Workbench, run_attack

    bench = Workbench(ExperimentConfig(plgmi_steps=7))
    assert plgmi_steps_checks == ["plgmi_steps"]

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(bench, "target", stop)
    with pytest.raises(_Stop):
        run_attack(bench)
    assert plgmi_steps_checks == ["plgmi_steps"]
    with pytest.raises(ValueError, match="has no variants"):  # another attack or variant is checked
        run_attack(bench, attack="miface", variant="lomma")


# ------------------------------------------------------------------------- renamed settings and names

#: Computed with the code before gmi_steps, "negative-label-smoothing" and "efficientnet-b0" were renamed (their
#: earlier names prior_steps, "nls", "efficientnet_b0"): a cell's id and an artifact's cache key must not change.
RENAMED_CONFIG_ID = "d5c0074a0ec4a688"
GMI_STEPS_ID = "1298c46da80bbff7"
RENAMED_KEYS = {"target": "1ea151c49f05f456", "evaluator": "7949ae9303b679f5", "surrogate0": "43469ce073cd6320",
                "pretrained": "8539a968bad9b14f", "answer0": "135fdd0032bcb478"}


def _renamed_config(new: bool, **changes):
    from mi_art.evaluations.experiment import ExperimentConfig

    arch = (lambda v: f"efficientnet-{v}") if new else (lambda v: f"efficientnet_{v}")
    return ExperimentConfig(defense="negative-label-smoothing" if new else "nls", defense_params={"alpha": -0.1},
                            target_arch=arch("b1"), judge_arch=arch("b2"), surrogate_archs=(arch("b0"), "cnn"),
                            **{("gmi_steps" if new else "prior_steps"): 7}, **changes)


def test_a_renamed_setting_is_taken_under_its_earlier_name_and_reported_once_at_the_users_line():
    from mi_art.evaluations.experiment import ExperimentConfig
    from mi_art.renames import RenamedWarning

    with pytest.warns(RenamedWarning, match="'prior_steps' is now called 'gmi_steps'") as said:
        config = ExperimentConfig(prior_steps=7)
    assert config.gmi_steps == 7 and len(said) == 1 and said[0].filename == __file__
    assert config.to_dict()["gmi_steps"] == 7 and "prior_steps" not in config.to_dict()
    with pytest.warns(RenamedWarning, match="prior_steps"):
        assert config.prior_steps == 7  # a plug-in reading the earlier name
    with pytest.warns(RenamedWarning):
        assert ExperimentConfig(prior_steps=7, gmi_steps=7).gmi_steps == 7  # one value under both names


def test_both_names_of_a_setting_with_two_values_are_refused_naming_both():
    from mi_art.evaluations.experiment import ExperimentConfig
    from mi_art.evaluations.grid_schema import GridError

    with pytest.raises(ValueError, match="'prior_steps' \\(7\\) and 'gmi_steps' \\(8\\) are both given.*give "
                                         "'gmi_steps' only"):
        ExperimentConfig(prior_steps=7, gmi_steps=8)
    with pytest.raises(GridError, match="'prior_steps' \\(7\\) and 'gmi_steps' \\(8\\)"):
        Grid.from_dict({"prior_steps": 7, "gmi_steps": 8})
    with pytest.raises(GridError, match="dataset 'digits'.*'prior_steps' \\(7\\) and 'gmi_steps' \\(8\\)"):
        Grid.from_dict({"datasets": [{"name": "digits", "prior_steps": 7, "gmi_steps": 8}]})


def test_renamed_architectures_and_defenses_are_taken_by_the_config_under_their_names_now():
    from mi_art.renames import RenamedWarning

    with pytest.warns(RenamedWarning) as said:
        config = _renamed_config(new=False)
    assert (config.defense, config.target_arch, config.judge_arch, config.surrogate_archs, config.gmi_steps) == \
        ("negative-label-smoothing", "efficientnet-b1", "efficientnet-b2", ("efficientnet-b0", "cnn"), 7)
    notes = {str(w.message) for w in said}
    assert any("the defense 'nls' is now called 'negative-label-smoothing'" in n for n in notes), notes
    assert any("the architecture 'efficientnet_b0' is now called 'efficientnet-b0'" in n for n in notes), notes
    config.judge_arch = "efficientnet_b1"  # set after the config was made: resolved by validate
    with pytest.warns(RenamedWarning, match="efficientnet_b1"):
        config.validate()
    assert config.judge_arch == "efficientnet-b1"


def test_a_rename_changes_no_cell_id_and_no_cache_key():
    """The id and the keys hash the earlier names (cell_id: Settings.id_form; the Workbench's keys: the earlier
    spelling of an architecture and a defense), so no finished cell is rerun and no cached model retrained."""
    from mi_art.data import load_dataset
    from mi_art.evaluations.cache import config_key
    from mi_art.evaluations.experiment import ExperimentConfig, Workbench
    from mi_art.evaluations.grid import cell_id

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old, new = _renamed_config(new=False), _renamed_config(new=True)
        assert cell_id(old) == cell_id(new) == RENAMED_CONFIG_ID
        assert cell_id(ExperimentConfig(prior_steps=7)) == cell_id(ExperimentConfig(gmi_steps=7)) == GMI_STEPS_ID
    data = load_dataset("digits")
    bench = Workbench(new, data=data, checked=True)
    below = Workbench(dataclasses.replace(new, access="black-box"), data=data, checked=True)
    keys = {"target": bench.key("target"), "evaluator": bench.key("evaluator"),
            "surrogate0": bench.key("surrogate", index=0),
            "pretrained": bench.key("pretrained", arch="efficientnet-b2", epochs=3, seed=0),
            "answer0": below.key("answer-surrogate", index=0)}
    assert {k: config_key(v) for k, v in keys.items()} == RENAMED_KEYS


def _with_earlier_names(grid):
    """A grid dictionary written as before the renames."""
    out = dict(grid)
    out["prior_steps"] = out.pop("gmi_steps")
    out["surrogate_archs"] = [a.replace("-b", "_b") for a in out["surrogate_archs"]]
    out["defenses"] = [{**d, "name": "nls"} if d["name"] == "negative-label-smoothing" else d for d in out["defenses"]]
    return out


def test_a_grid_with_the_earlier_names_has_the_cells_and_ids_of_the_grid_with_the_names_now(tmp_path):
    """The paper preset under its earlier names (prior_steps, "nls", "efficientnet_b0"...) keeps its pinned ids;
    a grid file under the earlier names makes the cells of the same file under the names now, each name reported
    once."""
    from mi_art.evaluations.grid_files import load_grid_file
    from mi_art.renames import RenamedWarning

    paper = preset("paper")
    with pytest.warns(RenamedWarning):
        assert [c.id for c in Grid.from_dict(_with_earlier_names(paper)).cells()] == PAPER_IDS
    new = 'gmi_steps = 5\nsurrogate_archs = ["efficientnet-b0"]\n[[datasets]]\nname = "digits"\ngmi_steps = 6\n' \
          '[[defenses]]\nname = "negative-label-smoothing"\nparams = [{ alpha = -0.1 }]\n'
    old = new.replace("gmi_steps", "prior_steps").replace("efficientnet-b0", "efficientnet_b0") \
        .replace("negative-label-smoothing", "nls")
    (tmp_path / "new.toml").write_text(new)
    (tmp_path / "old.toml").write_text(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the names now are not reported
        cells = Grid.from_dict(load_grid_file(tmp_path / "new.toml")).cells()
    with pytest.warns(RenamedWarning) as said:
        legacy = Grid.from_dict(load_grid_file(tmp_path / "old.toml")).cells()
    assert [(c.id, c.config, c.defense_label) for c in legacy] == [(c.id, c.config, c.defense_label) for c in cells]
    assert legacy[0].config.gmi_steps == 6 and legacy[0].defense_label == "negative-label-smoothing(alpha=-0.1)"
    notes = [str(w.message) for w in said]
    assert len(notes) == len(set(notes)) == 4, notes  # top-level and dataset prior_steps, the architecture, nls
    assert all(str(tmp_path / "old.toml") in n for n in notes), notes


#: The judges' settings were eval_arch, eval_epochs and eval_pretrain_epochs: computed with the code before they
#: were renamed (a config, its judges' cache key, the default judges' key, a grid setting them at the top, in a
#: dataset's table and in forms).
JUDGE_NAMES = {"eval_arch": "judge_arch", "eval_epochs": "judge_epochs", "eval_pretrain_epochs": "judge_pretrain_epochs"}
JUDGE_CONFIG_ID, JUDGE_KEY, DEFAULT_JUDGE_KEY = "5fadd3c378d98d6d", "5d3727005b6ea4c9", "a8551bfa8ee8e85b"
JUDGE_GRID_IDS = ["cea26aa129001217", "d35a8d9fdf6ab58d"]


def _judge_grid(name):
    """A grid setting the judges' settings everywhere a grid can, under ``name(setting_now)``."""
    return {"attacks": ["gmi"], "variants": ["baseline"], name("judge_epochs"): 4,
            "datasets": [{"name": "digits", name("judge_arch"): "cnn", name("judge_pretrain_epochs"): 2}],
            "forms": [{"name": "a", name("judge_epochs"): 5}, {"name": "b", name("judge_arch"): "resnet10"}]}


def test_the_judges_settings_take_their_earlier_eval_names_with_one_note_each():
    from mi_art.evaluations.experiment import SETTINGS, ExperimentConfig
    from mi_art.renames import RenamedWarning

    assert {old: SETTINGS.renamed.table[old] for old in JUDGE_NAMES} == JUDGE_NAMES
    with pytest.warns(RenamedWarning) as said:
        config = ExperimentConfig(eval_arch="resnet10", eval_epochs=7, eval_pretrain_epochs=3)
    assert (config.judge_arch, config.judge_epochs, config.judge_pretrain_epochs) == ("resnet10", 7, 3)
    assert sorted(str(w.message) for w in said) == sorted(
        f"ExperimentConfig: the setting {old!r} is now called {new!r}; the earlier name still works"
        for old, new in JUDGE_NAMES.items())
    assert not set(JUDGE_NAMES) & set(config.to_dict())
    with pytest.warns(RenamedWarning, match="'eval_epochs' is now called 'judge_epochs'"):
        assert config.eval_epochs == 7  # a plug-in reading the earlier name
    for old, new in JUDGE_NAMES.items():
        value, other = ("cnn", "resnet10") if old == "eval_arch" else (2, 3)
        with pytest.raises(ValueError, match=f"'{old}' \\({value!r}\\) and '{new}' \\({other!r}\\) are both given"):
            ExperimentConfig(**{old: value, new: other})


def test_the_judges_renamed_settings_change_no_cell_id_and_no_cache_key():
    """Pinned before the rename: the id hashes the earlier names (Settings.id_form), the judges' key holds the
    values only ("arch", "epochs", "pretrain_epochs"), so no finished cell is rerun and no judge retrained."""
    from mi_art.data import load_dataset
    from mi_art.evaluations.cache import config_key
    from mi_art.evaluations.experiment import ExperimentConfig, Workbench
    from mi_art.evaluations.grid import cell_id
    from mi_art.renames import RenamedWarning

    config = ExperimentConfig(judge_arch="resnet10", judge_epochs=7, judge_pretrain_epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        earlier = ExperimentConfig(eval_arch="resnet10", eval_epochs=7, eval_pretrain_epochs=3)
        assert cell_id(config) == cell_id(earlier) == JUDGE_CONFIG_ID
    with pytest.warns(RenamedWarning) as said:
        earlier_grid = Grid.from_dict(_judge_grid(lambda k: k.replace("judge_", "eval_")))
    assert [c.id for c in earlier_grid.cells()] == JUDGE_GRID_IDS
    notes = [str(w.message) for w in said]  # at the top, two in the dataset's table, one in each form
    assert len(notes) == len(set(notes)) == 5, notes
    assert any("dataset 'digits': the setting 'eval_pretrain_epochs'" in n for n in notes), notes
    assert any("form 'b': the setting 'eval_arch'" in n for n in notes), notes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the names now are not reported
        assert [c.id for c in Grid.from_dict(_judge_grid(lambda k: k)).cells()] == JUDGE_GRID_IDS
    data = load_dataset("digits")
    assert config_key(Workbench(config, data=data, checked=True).key("evaluator")) == JUDGE_KEY
    assert config_key(Workbench(ExperimentConfig(), data=data, checked=True).key("evaluator")) == DEFAULT_JUDGE_KEY


def test_renames_resolve_report_and_keep_the_earlier_spelling():
    """The one mechanism behind every rename (mi_art.renames.Renames)."""
    from mi_art.renames import Renames, RenamedWarning, renames_reported_by

    sizes = Renames("setting", {"width": "channels"})
    with pytest.warns(RenamedWarning, match="here: the setting 'width' is now called 'channels'"):
        assert sizes.new("width", "here") == "channels"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sizes.new("depth") == "depth" and sizes.old("channels") == "width" and sizes.old("depth") == "depth"
        assert sizes.keys({"width": 3}, quiet=True) == {"channels": 3}
    notes = []
    with renames_reported_by(notes.append):  # the command line's notes: each line once, no warning
        sizes.new("width")
        sizes.keys({"width": 3, "channels": 3})
    assert notes == ["the setting 'width' is now called 'channels'; the earlier name still works"]
    with pytest.raises(ValueError, match="a name is either"):
        Renames("setting", {"a": "b", "b": "c"})
