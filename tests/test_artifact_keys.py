"""Every artifact the Workbench stores is found under the cache key it had when tests/golden/artifact_keys.json
was written: a cache of targets, judges, priors and surrogates that took hours to train keeps being hit.

The Workbench is given a cache that records what it is asked for (each artifact's kind and key) and trains
nothing, for configurations like the benchmarks' (AT&T, LFW, LFW against a deployed recogniser, on small
stand-in images: the key holds the data's content hash, not its folder), defended targets, the access levels
below white-box and a target and judge the workbench did not train. Write the golden file again (only for a
deliberate change of keys, which retrains every cached artifact of that kind) with
``MI_ART_WRITE_GOLDEN=1 pytest tests/test_artifact_keys.py``."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import pytest
import torch
from torch import nn

from mi_art.data import MIDataset, Split, load_dataset
from mi_art.evaluations.cache import ArtifactCache, canonical, config_key
from mi_art.evaluations.experiment import ExperimentConfig, Workbench
from mi_art.priors import PRIORS

GOLDEN = Path(__file__).resolve().parent / "golden" / "artifact_keys.json"


class KeyRecorder(ArtifactCache):
    """A cache that notes the kind and key of every artifact asked of it and makes none: a module is a stand-in,
    a tensor zeros, a record its fields as None."""

    def __init__(self) -> None:
        super().__init__(None)
        self.asked: List[Dict[str, Any]] = []

    def _note(self, kind: str, key: Dict[str, Any]) -> None:
        self.asked.append({"kind": kind, "file": f"{kind}-{config_key(key)}", "key": json.loads(canonical(key))})

    def module(self, kind, config, build, train, records=()):
        self._note(kind, config)
        if kind.endswith("-prior"):
            return nn.ModuleDict({"g": nn.Linear(1, 1), "d": nn.Linear(1, 1)})
        return nn.Linear(1, 1)

    def tensor(self, kind, config, compute):
        self._note(kind, config)
        return torch.zeros(1)

    def json(self, kind, config, compute, fields=()):
        self._note(kind, config)
        return {field: None for field in fields}

    def store_json(self, kind, config, value):
        self._note(kind, config)


def _stand_in_faces(channels: int, n_private: int = 4, n_public: int = 4) -> MIDataset:
    """32x32 images whose pixels are a fixed sequence: the same content hash on every machine."""
    def split(identities: int, per_identity: int, offset: int) -> Split:
        n = identities * per_identity
        x = ((np.arange(n * channels * 32 * 32) + offset) % 251 / 250).astype(np.float32)
        return Split(x.reshape(n, channels, 32, 32), np.repeat(np.arange(identities), per_identity))

    return MIDataset("stand-in", split(n_private, 3, 0), split(n_private, 1, 7), split(n_public, 4, 13),
                     tuple(f"p{i}" for i in range(n_private)), tuple(f"q{i}" for i in range(n_public)), 32, channels)


def _given_model() -> nn.Module:
    """A model the workbench did not train, with fixed weights: artifacts made for it are keyed by its weights."""
    model = nn.Linear(2, 2)
    for tensor in model.state_dict().values():
        tensor.fill_(0.5)
    return model


def _benchmark_config(name: str, **overrides: Any) -> ExperimentConfig:
    """Benchmark ``name``'s configuration (benchmarks/_settings.py) on a folder that need not exist."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from _settings import benchmark_config

    return benchmark_config(name, "/stand-in", **overrides)


#: name -> (the configuration, the data it runs on)
SCENARIOS: Dict[str, Callable[[], tuple]] = {
    "digits": lambda: (ExperimentConfig(), load_dataset("digits")),
    "digits-sized": lambda: (ExperimentConfig(gmi_steps=7, kedmi_steps=5, plgmi_steps=9, gan_width=16, seed=3,
                                              gan_augment="flip", kedmi_init="none", judges=2, mixed_precision=True,
                                              surrogate_pretrain_epochs=1, surrogate_data="public",
                                              target_pretrain_epochs=2, judge_pretrain_epochs=1),
                             load_dataset("digits")),
    "digits-black-box": lambda: (ExperimentConfig(access="black-box", max_queries=100000, defense="reverse-sigmoid",
                                                  defense_params={"beta": 0.5}), load_dataset("digits")),
    "digits-label-only": lambda: (ExperimentConfig(access="label-only", surrogate_archs=("cnn",)),
                                  load_dataset("digits")),
    "digits-nls": lambda: (ExperimentConfig(defense="nls", defense_params={"alpha": -0.05}), load_dataset("digits")),
    "digits-dp": lambda: (ExperimentConfig(defense="dp-sgd", defense_params={"noise_multiplier": 1.0},
                                           target_pretrain_epochs=2), load_dataset("digits")),
    "digits-tl": lambda: (ExperimentConfig(defense="tl", defense_params={"pretrain_epochs": 2}),
                          load_dataset("digits")),
    "att": lambda: (_benchmark_config("att"), _stand_in_faces(1)),
    "lfw": lambda: (_benchmark_config("lfw", judges=2), _stand_in_faces(3)),
    "lfw-deployed": lambda: (_benchmark_config("lfw-deployed"), _stand_in_faces(3)),
}


def _asks(bench: Workbench) -> Dict[str, Callable[[], Any]]:
    """What a run asks of the workbench, by name."""
    c = bench.config
    given = _given_model()
    asks: Dict[str, Callable[[], Any]] = {
        "target": bench.target,
        "judges": bench.judges,
        "redrawn judge": lambda: bench.redraw("judge", c.seed + 2000),
        "pretrained": lambda: bench.pretrained(c.target_arch, c.target_pretrain_epochs or 3, c.seed, "target"),
        "independent judge": bench.independent_judge,
    }
    if c.defense == "none":
        asks["redrawn target"] = lambda: bench.redraw("target", c.seed + 1)
    else:
        from mi_art.defenses import get_defense

        asks["pretrained for the defense"] = lambda: bench.pretrained(
            c.target_arch, c.target_pretrain_epochs or 3, c.seed, "target", get_defense(c.defense),
            dict(c.defense_params))
    for name in PRIORS:
        asks[f"{name} prior"] = lambda name=name: bench.prior(name)
        asks[f"{name} prior of a given target"] = lambda name=name: bench.prior(name, given)
        asks[f"{name} prior's report"] = lambda name=name: bench.prior_report(f"{name}-prior")
        asks[f"{name} prior's report by a given judge"] = lambda name=name: bench.prior_report(
            f"{name}-prior", given, given)
    if c.access == "white-box":
        asks["surrogates"] = lambda: bench.surrogates(bench.target())
        asks["surrogates of a given target"] = lambda: bench.surrogates(given)
        asks["p_reg"] = lambda: bench.p_reg(bench.target())
        asks["p_reg of a given target"] = lambda: bench.p_reg(given)
    else:
        asks["answer surrogates"] = lambda: bench.answer_surrogates(bench.target())
        asks["answer surrogates of a given target"] = lambda: bench.answer_surrogates(given)
    asks["surrogates' p_reg"] = lambda: [bench.surrogate_p_reg(bench.target(), i, given)
                                         for i in range(len(c.surrogate_archs))]
    return asks


def _keys_of(name: str, monkeypatch: pytest.MonkeyPatch) -> Dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an earlier name ("nls") is reported as renamed
        config, data = SCENARIOS[name]()
    cache = KeyRecorder()
    bench = Workbench(config, cache, data=data)
    # dlib's recogniser as if installed, neither loaded nor run: only its descriptors' key is looked at
    module = bench.independent_judge.__globals__
    monkeypatch.setitem(module, "resolve_independent_judge", lambda setting, dataset: "dlib")
    monkeypatch.setitem(module, "load_dlib_face_recognizer", lambda device: None)
    monkeypatch.setitem(module, "EmbeddingJudge", lambda *args, **kwargs: None)
    out: Dict[str, Any] = {}
    for ask, call in _asks(bench).items():
        start = len(cache.asked)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
        out[ask] = sorted({entry["file"] for entry in cache.asked[start:]})
    keys = {entry["file"]: entry["key"] for entry in cache.asked}
    return {"asked": out, "keys": dict(sorted(keys.items()))}


def _golden_text(golden: Dict[str, Any]) -> str:
    """The golden file: each scenario's asks and keys, one to a line (a changed key is one changed line)."""
    def block(entries: Dict[str, Any]) -> str:
        return ",\n".join(f"   {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(entries.items()))

    scenarios = [f' {json.dumps(name)}: {{\n  "asked": {{\n{block(found["asked"])}\n  }},\n'
                 f'  "keys": {{\n{block(found["keys"])}\n  }}\n }}' for name, found in sorted(golden.items())]
    return "{\n" + ",\n".join(scenarios) + "\n}\n"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_artifact_keeps_its_cache_key(name, monkeypatch):
    found = _keys_of(name, monkeypatch)
    if os.environ.get("MI_ART_WRITE_GOLDEN"):
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
        golden[name] = found
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(_golden_text(golden))
    expected = json.loads(GOLDEN.read_text())[name]
    assert found["asked"] == expected["asked"]
    assert found["keys"] == expected["keys"]


def test_a_kind_without_a_key_is_refused_naming_the_kinds():
    bench = Workbench(ExperimentConfig(), data=load_dataset("digits"))
    with pytest.raises(ValueError, match=r"no cache key for artifacts of kind 'nope'; valid kinds: data, target, "
                                         r"evaluator, pretrained, .*<name>-prior"):
        bench.key("nope")
