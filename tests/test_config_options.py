"""The commands' options for config fields come from one table (evaluations/config_options.py)."""
import dataclasses

import pytest
from click.testing import CliRunner

from mi_art.evaluations.cli import attack, evaluate, main
from mi_art.evaluations.config_options import FIELD_OPTIONS
from mi_art.evaluations.experiment import ExperimentConfig
from mi_art.evaluations.grid_schema import BUDGET_KEYS


def _options(command):
    return {p.name: p for p in command.params}


def test_every_grid_budget_is_an_option_of_both_commands():
    # identities has its own parser ("0-4,7") in attack
    for key in BUDGET_KEYS:
        if key != "identities":
            assert key in _options(attack), f"mi-art attack has no option for the config field {key!r}"
            assert key in _options(evaluate), f"mi-art evaluate has no option for the config field {key!r}"


def test_attack_defaults_are_the_configs_and_evaluate_defers_to_the_grid():
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(ExperimentConfig)}
    attack_options, evaluate_options = _options(attack), _options(evaluate)
    for spec in FIELD_OPTIONS:
        option = attack_options[spec.field]
        assert option.default == defaults[spec.field], spec.field
        if spec.field in evaluate_options:
            assert evaluate_options[spec.field].default in (None, ()), spec.field
            assert "the grid's" in evaluate_options[spec.field].help, spec.field


def test_a_field_option_reaches_the_config(tmp_path, monkeypatch):
    config, _ = _configured(monkeypatch, ["--kedmi-init", "none", "--surrogate", "mlp", "--surrogate", "cnn",
                                          "--no-regularise-surrogates", "--gan-width", "16", "--out",
                                          str(tmp_path / "o")])
    assert (config.kedmi_init, config.surrogate_archs, config.regularise_surrogates, config.gan_width) == \
        ("none", ("mlp", "cnn"), False, 16)
    assert config.gan_augment == "none"  # auto on digits


@pytest.mark.parametrize("args, key, value", [
    (["--kedmi-init", "none"], "kedmi_init", '"none"'),
    (["--surrogate-data", "public"], "surrogate_data", '"public"'),
    (["--surrogate", "mlp"], "surrogate_archs", '["mlp"]'),
    (["--full-precision"], "mixed_precision", "false"),
])
def test_a_field_option_reaches_the_grid(tmp_path, args, key, value):
    result = CliRunner().invoke(main, ["evaluate", "--preset", "quick", "--dry-run", "--out", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    toml = result.output.split("grid file (TOML")[1]
    assert f"{key} = {value}" in toml, toml


# ------------------------------------------------------------------------- one rule per field


def _bad_value(key, default):
    """A value the field's rule must refuse."""
    if key == "surrogate_archs":
        return ("no-such-arch",)
    if key in ("seed", "attack_seed", "search_views") or key.endswith("pretrain_epochs"):
        return -1
    if key == "min_surrogate_agreement":
        return 1.5
    if isinstance(default, bool):
        return "yes"
    if isinstance(default, str):
        return "no-such-choice"
    return 0  # counts (and max_queries, whose default None means no limit)


def test_every_config_field_has_a_rule_or_a_named_checker():
    from mi_art.evaluations.config_rules import CHECKED_ELSEWHERE, PARAMETER_RULES

    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    assert fields == set(PARAMETER_RULES) | set(CHECKED_ELSEWHERE)
    assert not set(PARAMETER_RULES) & set(CHECKED_ELSEWHERE)


@pytest.mark.parametrize("key", sorted(__import__("mi_art.evaluations.config_rules",
                                                  fromlist=["PARAMETER_RULES"]).PARAMETER_RULES))
def test_config_and_grid_refuse_a_bad_value_with_the_same_message(key):
    from mi_art.evaluations.grid_schema import GridError, check_grid

    bad = _bad_value(key, getattr(ExperimentConfig(), key))
    with pytest.raises(ValueError, match=key) as from_config:
        ExperimentConfig(**{key: bad}).validate()
    if key in BUDGET_KEYS:
        with pytest.raises(GridError) as from_grid:
            check_grid({key: list(bad) if isinstance(bad, tuple) else bad})
        if key == "surrogate_archs":  # a grid file's list reports every unknown name, repeats too
            return
        message = str(from_config.value).split(" must ", 1)[1]
        assert any(message in p for p in from_grid.value.problems), \
            (str(from_config.value), from_grid.value.problems)


# ------------------------------------------------------------------------- earlier names


def _configured(monkeypatch, args):
    """The config `mi-art attack ARGS` would run, and its output."""
    import mi_art.evaluations.experiment as experiment

    seen = {}

    class Stop(Exception):
        pass

    def fake_workbench(config, cache):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(experiment, "Workbench", fake_workbench)
    result = CliRunner().invoke(main, ["attack", *args, "--quiet"])
    assert "unexpected Stop" in result.output, result.output
    return seen["config"], result.output


def test_attack_takes_an_earlier_option_and_architecture_with_a_one_line_note(tmp_path, monkeypatch):
    config, output = _configured(monkeypatch, ["--prior-steps", "7", "--surrogate", "efficientnet_b0", "--surrogate",
                                               "cnn", "--out", str(tmp_path / "o")])
    assert config.gmi_steps == 7 and config.surrogate_archs == ("efficientnet-b0", "cnn")
    notes = [line for line in output.splitlines() if line.startswith("note: ")]
    assert sorted(notes) == ["note: --surrogate: the architecture 'efficientnet_b0' is now called 'efficientnet-b0'; "
                             "the earlier name still works",
                             "note: the setting --prior-steps is now called --gmi-steps; the earlier name still works"]
    config, output = _configured(monkeypatch, ["--gmi-steps", "7", "--out", str(tmp_path / "o")])
    assert config.gmi_steps == 7 and "note:" not in output
    assert "--prior-steps" not in CliRunner().invoke(main, ["attack", "--help"]).output  # hidden: the name now is shown


@pytest.mark.parametrize("command", ["attack", "evaluate"])
def test_an_option_under_both_names_with_two_values_is_refused_naming_both(tmp_path, command):
    extra = ["--dry-run"] if command == "evaluate" else []
    result = CliRunner().invoke(main, [command, "--prior-steps", "5", "--gmi-steps", "6", *extra,
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "--prior-steps (5) and --gmi-steps (6) are both given" in result.output and "give --gmi-steps only" in \
        result.output, result.output


def test_the_judges_earlier_options_are_taken_hidden_with_one_note_each(tmp_path, monkeypatch):
    config, output = _configured(monkeypatch, ["--eval-arch", "resnet10", "--eval-epochs", "7",
                                               "--eval-pretrain-epochs", "3", "--out", str(tmp_path / "o")])
    assert (config.judge_arch, config.judge_epochs, config.judge_pretrain_epochs) == ("resnet10", 7, 3)
    notes = [line for line in output.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: the setting --eval-{k} is now called --judge-{k}; the earlier name still works"
                     for k in ("arch", "epochs", "pretrain-epochs")], notes
    help_text = CliRunner().invoke(main, ["attack", "--help"]).output
    assert "--judge-pretrain-epochs" in help_text and "--eval-" not in help_text
    result = CliRunner().invoke(main, ["evaluate", "--eval-epochs", "5", "--judge-epochs", "6", "--dry-run",
                                       "--out", str(tmp_path / "g")])
    assert result.exit_code == 2 and "--eval-epochs (5) and --judge-epochs (6) are both given" in result.output, \
        result.output


def test_evaluate_takes_a_grid_file_with_the_judges_earlier_names_with_the_same_cells(tmp_path):
    new = 'judge_epochs = 4\n[[datasets]]\nname = "digits"\njudge_arch = "cnn"\njudge_pretrain_epochs = 2\n' \
          '[[forms]]\nname = "a"\njudge_epochs = 5\n'
    (tmp_path / "new.toml").write_text(new)
    (tmp_path / "old.toml").write_text(new.replace("judge_", "eval_"))
    ids, notes, toml = _plan(tmp_path, "--config", str(tmp_path / "old.toml"))
    new_ids, new_notes, new_toml = _plan(tmp_path, "--config", str(tmp_path / "new.toml"))
    assert ids == new_ids and toml == new_toml and not new_notes and "judge_epochs = 4" in toml
    assert len(notes) == len(set(notes)) == 4, notes  # the top, two in the dataset's table, the form
    assert any("old.toml, form 'a': the setting 'eval_epochs'" in n for n in notes), notes


def _plan(tmp_path, *args):
    result = CliRunner().invoke(main, ["evaluate", "--dry-run", "--attack", "gmi", "--variant", "baseline", "--out",
                                       str(tmp_path / "o"), *args])
    assert result.exit_code == 0, result.output
    ids = [line.split()[0] for line in result.output.split("cells (")[1].split("grid file")[0].splitlines()[1:]]
    notes = [line for line in result.output.splitlines() if line.startswith("note: ")]
    return ids, notes, result.output.split("grid file (TOML")[1]


def test_evaluate_takes_the_earlier_names_of_a_grid_file_and_options_with_the_same_cells(tmp_path):
    (tmp_path / "old.toml").write_text('prior_steps = 5\n[[datasets]]\nname = "digits"\nprior_steps = 6\n'
                                       'surrogate_archs = ["efficientnet_b0"]\n')
    (tmp_path / "new.toml").write_text('gmi_steps = 5\n[[datasets]]\nname = "digits"\ngmi_steps = 6\n'
                                       'surrogate_archs = ["efficientnet-b0"]\n')
    ids, notes, toml = _plan(tmp_path, "--config", str(tmp_path / "old.toml"), "--defense", "nls:alpha=-0.1",
                             "--defense", "none")
    new_ids, new_notes, new_toml = _plan(tmp_path, "--config", str(tmp_path / "new.toml"), "--defense",
                                         "negative-label-smoothing:alpha=-0.1", "--defense", "none")
    assert ids == new_ids and len(ids) == 2 and toml == new_toml and not new_notes
    assert "gmi_steps = 5" in toml and 'name = "negative-label-smoothing"' in toml and "efficientnet-b0" in toml
    assert len(notes) == len(set(notes)) == 4, notes  # each earlier name once: two prior_steps, the arch, nls
    assert any("the defense 'nls' is now called 'negative-label-smoothing'" in n for n in notes), notes
    assert any("old.toml, dataset 'digits': the setting 'prior_steps'" in n for n in notes), notes
    ids, notes, _ = _plan(tmp_path, "--config", str(tmp_path / "new.toml"), "--prior-steps", "5", "--defense",
                          "negative-label-smoothing:alpha=-0.1", "--defense", "none")
    assert ids == new_ids and notes == ["note: the setting --prior-steps is now called --gmi-steps; the earlier name "
                                        "still works"]
    _, _, toml = _plan(tmp_path, "--config", str(tmp_path / "old.toml"), "--gmi-steps", "7")  # options override
    assert "\ngmi_steps = 7\n" in toml.split("[[datasets]]")[0], toml
