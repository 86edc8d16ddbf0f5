"""Errors before the work: what the configuration can tell (a query budget, identities, folders that cannot be
written, sizes) is refused before anything is trained, in the dry run too, in the user's own values; work too large
to finish or fit is refused by the size guard, stated in seconds and bytes, unless asked for; option parsing and grid
expansion take no quadratic step."""
from __future__ import annotations

import signal
import time
from contextlib import contextmanager

import click
import pytest
from click.testing import CliRunner

from mi_art.access import PredictOracle
from mi_art.data import load_dataset
from mi_art.evaluations import surrogate_artifacts, workbench
from mi_art.evaluations.cli import _check_int_list, _parse_int_list, main
from mi_art.evaluations.experiment import ExperimentConfig, Workbench, query_budget_problem
from mi_art.priors import PRIORS
from mi_art.evaluations.grid import Grid, GridError
from mi_art.evaluations.size_guard import MAX_CELLS, MAX_LIST_VALUES
from mi_art.models import make_classifier
from mi_art.surrogates import distill_surrogate
from mi_art.validation import repeated

from conftest import wrap

BLACK_BOX = ["--attack", "gmi", "--variant", "baseline", "--access", "black-box"]


@contextmanager
def within(seconds: int):
    """Fail (not hang) when the block takes longer than ``seconds``."""
    def expired(signum, frame):
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def no_training(monkeypatch):
    """Any training makes the command fail with 'TRAINED': a refusal must come before it."""
    def trained(*args, **kwargs):
        raise AssertionError("TRAINED")

    for module, name in ((workbench, "train_classifier"), (surrogate_artifacts, "distill_surrogate")):
        monkeypatch.setattr(module, name, trained)
    for prior in PRIORS.values():  # each prior trains through its registry entry
        monkeypatch.setattr(prior, "train", trained)


# ------------------------------------------------------------------------------------------ query budget


def test_a_too_small_query_budget_is_refused_in_the_dry_run_in_the_users_value(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--dry-run", *BLACK_BOX, "--max-queries", "50",
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert "max_queries=50 is too small" in result.output and "25 queries each" in result.output
    assert "give max_queries >= 436" in result.output  # digits: 2 surrogates x (90 held out + a batch of 128)
    ok = CliRunner().invoke(main, ["evaluate", "--dry-run", *BLACK_BOX, "--max-queries", "436",
                                   "--out", str(tmp_path / "o")])
    assert ok.exit_code == 0, ok.output


def test_a_too_small_query_budget_is_refused_before_training(tmp_path, no_training):
    result = CliRunner().invoke(main, ["attack", *BLACK_BOX, "--max-queries", "50", "--out", str(tmp_path / "o"),
                                       "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert result.exit_code == 1 and "max_queries=50 is too small" in result.output, result.output
    assert "TRAINED" not in result.output
    brepmi = ExperimentConfig(attack="brepmi", variant="baseline", max_queries=100)
    with pytest.raises(ValueError, match="max_queries=100 cannot pay BREP-MI's first search .* >= 256"):
        Workbench(brepmi)


@pytest.mark.parametrize("surrogate_data", ["public", "public+prior"])
def test_the_least_budget_is_what_one_distillation_step_asks(surrogate_data):
    """The minimum the check asks for is exactly the queries of distillation's first step: one fewer and the
    student is never trained."""
    from mi_art.priors import Generator

    config = ExperimentConfig(access="black-box", surrogate_archs=("mlp",), surrogate_data=surrogate_data,
                              max_queries=1)
    bench = Workbench.__new__(Workbench)  # the data and its split, nothing checked or trained
    bench.config, bench.data = config, load_dataset("digits", None)
    train_x, val_x = bench.public_split()
    message = query_budget_problem(config, len(bench.data.public.x))
    need = int(message.split("give max_queries >= ")[1])
    teacher = wrap(make_classifier("mlp", 1, 5, 8))
    generator = Generator(8, 1, width=8) if surrogate_data == "public+prior" else None
    for budget, steps_taken in ((need, True), (need - 1, False)):
        oracle = PredictOracle(teacher, access="black-box", max_queries=budget)
        distill_surrogate(oracle, make_classifier("mlp", 1, 5, 8), train_x, val_x=val_x, generator=generator,
                          steps=1, device="cpu")
        assert (oracle.queries == need) is steps_taken, (budget, oracle.queries)
    assert query_budget_problem(ExperimentConfig(access="black-box", surrogate_archs=("mlp",),
                                                 surrogate_data=surrogate_data, max_queries=need),
                                len(bench.data.public.x)) is None


# ------------------------------------------------------------------------------------------ identities, folders


def test_identities_out_of_range_are_refused_before_training(tmp_path, no_training):
    result = CliRunner().invoke(main, ["attack", "--identities", "0-99", "--out", str(tmp_path / "o"),
                                       "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert result.exit_code == 1 and "out of range [0, 4]: [5, 6" in result.output, result.output
    assert "TRAINED" not in result.output


def test_an_unwritable_cache_folder_is_refused_before_training(tmp_path, no_training):
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"
    attack = CliRunner().invoke(main, ["attack", "--out", str(tmp_path / "o"), "--cache-dir", str(cache), "--quiet"])
    assert attack.exit_code == 2 and "--cache-dir" in attack.output and str(cache) in attack.output, attack.output
    run = CliRunner().invoke(main, ["evaluate", "--seeds", "0", "--out", str(tmp_path / "o"), "--cache-dir",
                                    str(cache), "--no-progress"])
    assert run.exit_code == 2 and "--cache-dir" in run.output and "TRAINED" not in run.output, run.output


@pytest.mark.parametrize("option", ["--out", "--cache-dir"])
def test_the_dry_run_refuses_folders_that_cannot_be_written_and_writes_nothing(tmp_path, option):
    (tmp_path / "a-file").write_text("")
    folder = tmp_path / "a-file" / "results"
    args = ["evaluate", "--dry-run", "--seeds", "0", "--out", str(tmp_path / "o"), option, str(folder)]
    result = CliRunner().invoke(main, args[:-4] + args[-2:] if option == "--out" else args)
    assert result.exit_code == 2, result.output
    assert f"'{option}'" in result.output and "a-file is a file" in result.output
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ the size guard


def test_a_grid_too_large_to_finish_is_refused_unless_allowed():
    spec = {"seeds": list(range(MAX_CELLS // 4 + 1)), "attacks": ["gmi", "kedmi"], "variants": ["baseline", "lomma"]}
    grid = Grid.from_dict(spec)
    assert grid.n_cells() == 4 * (MAX_CELLS // 4 + 1)
    with pytest.raises(GridError, match=r"10,004 cells .* 10,004 s of work, .* MB of memory.*--allow-large"):
        grid.validate(load_data=False)
    grid.validate(load_data=False, allow_large=True)


def test_reconstructions_that_cannot_fit_are_refused_unless_allowed(tmp_path):
    grid = Grid.from_dict({"n_reconstructions": 3_000_000_000, "attacks": ["gmi"], "variants": ["baseline"]})
    with pytest.raises(GridError, match=r"n_reconstructions=3000000000 for 1 identity .* TB of memory .* s "):
        grid.validate(load_data=False)  # the dry run without the data: the least it can be
    with pytest.raises(GridError, match=r"for 5 identities is 15,000,000,000 reconstructions"):
        grid.validate()  # with the data: its identities and image size
    grid.validate(allow_large=True)
    result = CliRunner().invoke(main, ["attack", "--n-reconstructions", "3000000000", "--out", str(tmp_path / "o"),
                                       "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert result.exit_code == 1 and "15,000,000,000 reconstructions" in result.output, result.output
    assert "--allow-large" in result.output and "Traceback" not in result.output


def test_a_huge_seed_range_is_refused_at_once_unless_allowed(tmp_path):
    with within(5):
        result = CliRunner().invoke(main, ["evaluate", "--dry-run", "--seeds", "0-99999999", "--out",
                                           str(tmp_path / "o")])
    assert result.exit_code == 2 and "100,000,000 values" in result.output and "GB of memory" in result.output
    with pytest.raises(click.BadParameter, match="--allow-large"):
        _parse_int_list(f"0-{MAX_LIST_VALUES}", "--seeds")
    assert len(_parse_int_list(f"0-{MAX_LIST_VALUES}", "--seeds", allow_large=True)) == MAX_LIST_VALUES + 1


def test_grid_identity_ranges_are_bounded_before_they_are_made():
    with within(5), pytest.raises(GridError, match="100,000,000 identities"):
        Grid.from_dict({"identities": "0-99999999"})


def test_seed_parsing_is_linear():
    """A million seeds parse and are checked for repeats in about a second: a ``values.count(v)`` per value
    would take hours."""
    start = time.perf_counter()
    with within(20):
        seeds = _parse_int_list(f"0-{MAX_LIST_VALUES - 1}", "--seeds")
        assert _check_int_list(seeds, "--seeds") is seeds
        with pytest.raises(click.BadParameter, match="5 given twice"):
            _check_int_list(_parse_int_list(f"0-{MAX_LIST_VALUES - 2},5", "--seeds"), "--seeds")
    assert time.perf_counter() - start < 20


def test_repeated_finds_repeats_in_one_pass():
    assert repeated([3, 1, 3, 2, 1, 3]) == [3, 1] and repeated([]) == []
    with within(5):
        assert repeated(list(range(2_000_000)) + [7]) == [7]


@pytest.mark.parametrize("command", ["attack", "evaluate"])
def test_an_output_path_that_cannot_hold_results_is_refused_before_training(command, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import mi_art.evaluations.experiment as experiment
    from mi_art.evaluations.cli import main

    def no_training(*args, **kwargs):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(experiment.Workbench, "target", no_training)
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    args = {"attack": ["attack", "--dataset", "digits", "--quiet"],
            "evaluate": ["evaluate", "--dataset", "digits", "--defense", "none", "--attack", "gmi", "--no-progress"]}
    result = CliRunner().invoke(main, args[command] + ["--out", str(a_file)])
    assert result.exit_code == 2 and "is a file" in result.output, result.output
    # a folder that cannot be made (under a file): refused with the reason, before any work
    result = CliRunner().invoke(main, args[command] + ["--out", str(a_file / "run")])
    assert result.exit_code == 2 and "cannot write results" in result.output, result.output
