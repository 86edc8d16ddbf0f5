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
