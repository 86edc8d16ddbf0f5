"""The lines a run says while it works (:mod:`mi_art.evaluations.stages`)."""
from __future__ import annotations

import time

import pytest

from mi_art.evaluations.stages import StageLog, describe_artifact, format_seconds


def test_a_step_is_named_with_its_budget_before_it_runs_and_timed_after():
    lines = []
    log = StageLog(lines.append, prefix="cell: ", heartbeat_s=0)
    with log.stage("training the target", "cnn, 20 epochs"):
        lines.append("(work)")
        with log.stage("inner"):
            pass
    assert lines[0] == "cell: training the target (cnn, 20 epochs) ..."
    assert lines[1] == "(work)" and lines[2] == "cell:   inner ..." and lines[3].startswith("cell:   inner: done in")
    assert lines[-1].startswith("cell: training the target: done in ")
    assert set(log.seconds) == {"training the target", "inner"}


def test_a_step_run_before_says_how_long_it_took_then():
    lines = []
    log = StageLog(lines.append, heartbeat_s=0)
    for _ in range(2):
        with log.stage("attacking", "GMI lomma, 7 iterations (a budget no other test uses)"):
            pass
    assert lines[0] == "attacking (GMI lomma, 7 iterations (a budget no other test uses)) ..."
    assert lines[2].startswith("attacking (GMI lomma, 7 iterations (a budget no other test uses)); about ")
    assert lines[2].endswith(" s, as the last time ...")


def test_a_failed_step_is_not_said_done():
    lines = []
    log = StageLog(lines.append, heartbeat_s=0)
    with pytest.raises(RuntimeError):
        with log.stage("attacking"):
            raise RuntimeError("boom")
    assert lines == ["attacking ..."]


def test_a_long_step_says_it_still_runs_from_the_innermost_step_only():
    lines = []
    log = StageLog(lines.append, heartbeat_s=0.05)
    with log.stage("outer"):
        with log.stage("inner"):
            time.sleep(0.3)
    beats = [line for line in lines if "so far" in line]
    assert beats and all(line.startswith("    inner: ") for line in beats)  # the outer step keeps quiet meanwhile
    count = len(lines)
    time.sleep(0.15)
    assert len(lines) == count  # stopped with its step


def test_artifacts_are_described_from_their_keys():
    assert describe_artifact("gmi-prior", {"steps": 300}) == ("training the GMI prior", "300 steps of WGAN-GP")
    assert describe_artifact("surrogate", {"arch": "cnn-small", "steps": 2}) == (
        "distilling the surrogate cnn-small", "2 steps")
    what, budget = describe_artifact("target", {"arch": "cnn", "epochs": 20, "pretrain_epochs": 5, "defense": "mid",
                                                "defense_params": {"beta": 0.01}})
    assert what == "training the target" and budget == ("cnn, 20 epochs after 5 epochs of pre-training on the public "
                                                        "identities, defense mid {'beta': 0.01}")
    assert describe_artifact("defense-record", {}) is None  # made in no time: not announced
    assert [format_seconds(s) for s in (8.34, 392, 3900)] == ["8.3 s", "6 min 32 s", "1 h 05 min"]
