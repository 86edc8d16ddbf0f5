"""What a run says while it works: every long step (training the target, the judges, a prior, a surrogate,
attacking, judging, rendering) named with its budget on a line of its own before it starts, and its seconds
when it ends, whether the progress bars inside the steps are shown (``--verbose``) or not (``--quiet``).

The artifact cache names the artifacts it trains (:func:`describe_artifact`, from the key each one is made
under); the run names the rest (:meth:`StageLog.stage`). A step found in the cache is loaded, not announced."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from .artifact_keys import JUDGE_KIND

Echo = Callable[[str], None]


def format_seconds(seconds: float) -> str:
    """``8.3 s``, ``6 min 32 s``, ``1 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


#: Seconds between two "still running" lines of a step that runs long.
HEARTBEAT_SECONDS = 60.0
#: (what, budget) -> the seconds the same step last took in this process: how long it will take is known then.
_LAST_SECONDS: Dict[Tuple[str, str], float] = {}


class StageLog:
    """Lines naming each long step before it starts (``what (budget) ...``), every ``heartbeat_s`` while it
    runs (``what: 2 min 00 s so far``, from the innermost step only) and its time when it ends (``what: done in
    6 min 32 s``); a step inside another is indented under it. Without ``echo`` nothing is said and only the
    seconds are kept (:attr:`seconds`, per step name, summed over repeats).

    :param echo: Where the lines go (e.g. ``click.echo``).
    :param prefix: Put before every line (e.g. which cell of a grid runs).
    :param heartbeat_s: Seconds between the lines of a running step (0: none)."""

    def __init__(self, echo: Optional[Echo] = None, prefix: str = "",
                 heartbeat_s: float = HEARTBEAT_SECONDS) -> None:
        self.echo = echo
        self.prefix = prefix
        self.heartbeat_s = heartbeat_s
        self.seconds: Dict[str, float] = {}
        self._depth = 0

    def say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(f"{self.prefix}{'  ' * self._depth}{line}")

    @contextmanager
    def stage(self, what: str, budget: str = "", left: str = "") -> Iterator[None]:
        """Say ``what`` with its ``budget`` now, and how long it will take where known (``left``, or the time the
        same step with the same budget last took in this process), and its seconds when the block ends without
        an error."""
        last = _LAST_SECONDS.get((what, budget))
        left = left or ("" if last is None else f"about {format_seconds(last)}, as the last time")
        self.say(what + (f" ({budget})" if budget else "") + (f"; {left}" if left else "") + " ...")
        start = time.perf_counter()
        self._depth += 1
        stop = self._heartbeat(what, start, self._depth)
        try:
            yield
        finally:
            stop.set()
            self._depth -= 1
        seconds = time.perf_counter() - start
        self.seconds[what] = self.seconds.get(what, 0.0) + seconds
        _LAST_SECONDS[(what, budget)] = seconds
        self.say(f"{what}: done in {format_seconds(seconds)}")


    def _heartbeat(self, what: str, start: float, depth: int) -> threading.Event:
        """A daemon thread saying how long step ``what`` has run every :attr:`heartbeat_s`, while no step inside
        it runs, until the returned event is set."""
        stop = threading.Event()
        if self.echo is None or not self.heartbeat_s:
            return stop

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                if self._depth == depth:
                    self.say(f"{what}: {format_seconds(time.perf_counter() - start)} so far")

        threading.Thread(target=beat, name=f"mi-art stage {what}", daemon=True).start()
        return stop


def _epochs(key: Dict[str, Any]) -> str:
    pre = key.get("pretrain_epochs")
    text = f"{key.get('arch')}, {key.get('epochs')} epochs"
    return text + (f" after {pre} epochs of pre-training on the public identities" if pre else "")


def _defense(key: Dict[str, Any]) -> str:
    if key.get("defense") in (None, "none"):
        return ""
    params = key.get("defense_params") or {}
    return f", defense {key['defense']}" + (f" {params}" if params else "")


def _queries(key: Dict[str, Any]) -> str:
    limit = key.get("max_queries")
    return f", {key.get('access')} answers" + ("" if limit is None else f", at most {limit} queries in all")


#: kind -> (what, budget) of an artifact made under ``key``; kinds not here (records written beside a
#: module, made in no time) are not announced.
_DESCRIPTIONS: Dict[str, Callable[[Dict[str, Any]], Tuple[str, str]]] = {
    "target": lambda k: ("training the target", _epochs(k) + _defense(k)),
    JUDGE_KIND: lambda k: ("training a judge", _epochs(k)),
    "pretrained": lambda k: (f"pre-training {k.get('arch')} on the public identities", f"{k.get('epochs')} epochs"),
    "gmi-prior": lambda k: ("training the GMI prior", f"{k.get('steps')} steps of WGAN-GP"),
    "kedmi-prior": lambda k: ("training the KEDMI prior", f"{k.get('steps')} steps"
                              + (", from the GMI prior's generator" if k.get("init") else "")),
    "plgmi-prior": lambda k: ("training the PLG-MI prior", f"{k.get('steps')} steps, from the GMI prior's generator"),
    "surrogate": lambda k: (f"distilling the surrogate {k.get('arch')}", f"{k.get('steps')} steps"),
    "answer-surrogate": lambda k: (f"distilling the surrogate {k.get('arch')} from the target's answers",
                                   f"{k.get('steps')} steps{_queries(k)}"),
    "p-reg": lambda k: ("estimating p_reg" + (f" of the surrogate {k['surrogate'].get('arch')}"
                                              if isinstance(k.get("surrogate"), dict) else " of the target"),
                        "the mean feature of the public images"),
    "independent-descriptors": lambda k: ("describing the private training images with dlib's face recogniser",
                                          "one pass"),
    "gmi-prior-quality": lambda k: ("measuring the GMI prior's quality", "FID of its samples to the public images"),
    "kedmi-prior-quality": lambda k: ("measuring the KEDMI prior's quality", "FID of its samples to the public images"),
    "plgmi-prior-quality": lambda k: ("measuring the PLG-MI prior's quality",
                                      "FID of its samples to the public images"),
}


def describe_artifact(kind: str, key: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """``(what, budget)`` of making the artifact ``kind`` under ``key`` (:class:`ArtifactCache`'s key), or None
    for a record made in no time."""
    describe = _DESCRIPTIONS.get(kind)
    return None if describe is None else describe(key if isinstance(key, dict) else {})
