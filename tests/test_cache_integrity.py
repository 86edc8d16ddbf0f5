"""The artifact cache checks content, not only keys: every checkpoint, tensor and JSON record is written
with its key and a sha256 checksum and verified on load; a damaged, truncated, foreign or unreadable file is
named in one warning, moved aside (``<name>.bad-<time>``) and rebuilt, records that only training makes are
rebuilt with their model, and temporary files of killed writes are deleted."""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings

import pytest
import torch
from torch import nn

from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.executors import LockingArtifactCache
from mi_art.utils import save_checkpoint

CACHES = [ArtifactCache, LockingArtifactCache]


def flip(path, payload: bytes, n: int = 64) -> None:
    """Invert ``n`` bytes of ``path`` inside ``payload`` (the raw bytes of a stored tensor)."""
    data = bytearray(path.read_bytes())
    at = data.find(payload)
    assert at >= 0, "the tensor's bytes are not stored as they are"
    start = at + 16
    data[start:start + n] = bytes(b ^ 0xFF for b in data[start:start + n])
    path.write_bytes(bytes(data))


def set_aside(path) -> list:
    return list(path.parent.glob(path.name + ".bad-*"))


def make_linear(seed: int, calls: list):
    def train() -> nn.Module:
        calls.append(seed)
        torch.manual_seed(seed)
        return nn.Linear(64, 64)
    return train


@pytest.mark.parametrize("cache_class", CACHES)
def test_flipped_bytes_in_a_checkpoint_are_detected_named_moved_aside_and_rebuilt(tmp_path, cache_class):
    """Without the checksum the checkpoint loads, with 16 of its weights silently wrong."""
    cache, calls = cache_class(tmp_path), []
    first = cache.module("target", {"seed": 0}, lambda: nn.Linear(64, 64), make_linear(0, calls))
    path = cache.path("target", {"seed": 0})
    flip(path, first.weight.detach().numpy().tobytes())
    with pytest.warns(UserWarning, match=rf"cache file {path} is damaged \(its tensors do not match its sha256.*"
                                         r"moved to .*\.bad-.*rebuilding it"):
        again = cache.module("target", {"seed": 0}, lambda: nn.Linear(64, 64), make_linear(0, calls))
    assert calls == [0, 0] and torch.equal(again.weight, first.weight) and len(set_aside(path)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt file is sound
        loaded = cache.module("target", {"seed": 0}, lambda: nn.Linear(64, 64), make_linear(0, calls))
    assert calls == [0, 0] and torch.equal(loaded.weight, first.weight)


@pytest.mark.parametrize("cache_class", CACHES)
def test_flipped_bytes_in_a_tensor_are_detected_named_moved_aside_and_rebuilt(tmp_path, cache_class):
    cache, calls = cache_class(tmp_path), []
    value = torch.linspace(0, 1, 256)

    def compute() -> torch.Tensor:
        calls.append(1)
        return value.clone()

    cache.tensor("p-reg", {"a": 1}, compute)
    path = cache.path("p-reg", {"a": 1})
    flip(path, value.numpy().tobytes())
    with pytest.warns(UserWarning, match=rf"cache file {path} is damaged \(the tensor does not match its sha256"):
        assert torch.equal(cache.tensor("p-reg", {"a": 1}, compute), value)
    assert len(calls) == 2 and len(set_aside(path)) == 1
    assert torch.equal(cache.tensor("p-reg", {"a": 1}, compute), value) and len(calls) == 2


@pytest.mark.parametrize("cache_class", CACHES)
@pytest.mark.parametrize("damage", ["edited value", "flipped bytes", "truncated", "foreign"])
def test_a_damaged_or_foreign_json_record_is_detected_named_moved_aside_and_rebuilt(tmp_path, cache_class, damage):
    """An edited number still parses: only the checksum tells. Another key's record is whole and checks
    out on its own: only the key it carries tells."""
    cache, calls = cache_class(tmp_path), []

    def compute(config=None) -> dict:
        calls.append(1)
        return {"epsilon": 3.5, "delta": 1e-5, "steps": 120}

    cache.json("defense-record", {"a": 1}, compute)
    path = cache.json_path("defense-record", {"a": 1})
    text = path.read_text()
    if damage == "edited value":
        assert '"epsilon": 3.5' in text
        path.write_text(text.replace('"epsilon": 3.5', '"epsilon": 9.5'))
        expected = "is damaged \\(its value does not match its sha256"
    elif damage == "flipped bytes":
        data = bytearray(path.read_bytes())
        data[10:74] = bytes(b ^ 0xFF for b in data[10:74])
        path.write_bytes(bytes(data))
        expected = "is damaged: unreadable"
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
        expected = "is damaged: unreadable or truncated"
    else:
        cache.json("defense-record", {"a": 2}, lambda: {"epsilon": 8.0, "delta": 1e-5, "steps": 10})
        shutil.copy(cache.json_path("defense-record", {"a": 2}), path)
        expected = "was written for another artifact \\(it holds a 'defense-record' record of another"
    with pytest.warns(UserWarning, match=rf"cache file {path} {expected}.*moved to .*\.bad-.*rebuilding it"):
        assert cache.json("defense-record", {"a": 1}, compute) == compute()
    assert len(calls) == 3 and len(set_aside(path)) == 1
    assert cache.json("defense-record", {"a": 1}, compute)["epsilon"] == 3.5 and len(calls) == 3


def test_a_record_without_the_fields_asked_for_is_set_aside(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.json("gmi-prior-record", {"a": 1}, lambda: {"fid_public": 30.0})  # e.g. written by an older bug
    with pytest.warns(UserWarning, match="another artifact \\(it lacks 'train_seconds'\\)"):
        record = cache.json("gmi-prior-record", {"a": 1}, lambda: {"train_seconds": None}, fields=("train_seconds",))
    assert record == {"train_seconds": None}


# --------------------------------------------------------------------------------------------------
# Records made as a side effect of training
# --------------------------------------------------------------------------------------------------


def _dp_config(**params):
    from mi_art.evaluations.experiment import ExperimentConfig

    return ExperimentConfig(dataset="digits", target_arch="mlp", target_epochs=1, defense="dp-sgd",
                            defense_params={"noise_multiplier": 1.0, **params}, judge_epochs=1, gmi_steps=2,
                            gan_width=8, augment="none", device="cpu")


#: What a defense record reports, training time aside.
_REPORTED = ("defense", "test_accuracy", "epsilon", "delta", "details")


@pytest.mark.parametrize("damage", ["missing", "truncated", "foreign", "flipped target"])
def test_a_bad_defense_record_or_target_is_rebuilt_with_the_same_metrics(tmp_path, small_digits, damage):
    """The defense record is written while the target trains. Missing, truncated or another target's beside
    a sound target, it used to fail every cell with ``KeyError: 'record'`` (or report the other target's
    epsilon); now the target is trained again with its record, and the same numbers come out."""
    from mi_art.evaluations.experiment import Workbench

    cache = LockingArtifactCache(tmp_path)
    bench = Workbench(_dp_config(), cache, data=small_digits)
    target = bench.target()
    record = bench.defense_record
    key = bench.key("target")
    path = cache.json_path("defense-record", key)
    if damage == "missing":
        path.unlink()
        expected = [r"its defense-record record .* is missing or was set aside.*training the target again"]
    elif damage == "truncated":
        path.write_text(path.read_text()[:40])
        expected = [rf"cache file {path} is damaged: unreadable or truncated", "training the target again"]
    elif damage == "foreign":
        other = Workbench(_dp_config(noise_multiplier=3.0), cache, data=small_digits)
        other.target()
        assert other.defense_record["epsilon"] != record["epsilon"]
        shutil.copy(cache.json_path("defense-record", other.key("target")), path)
        expected = [rf"cache file {path} was written for another artifact", "training the target again"]
    else:
        target_path = cache.path("target", key)
        first = next(p for p in target.parameters() if p.numel() >= 64)
        flip(target_path, first.detach().cpu().numpy().tobytes())
        expected = [rf"cache file {target_path} is damaged \(its tensors do not match"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = Workbench(_dp_config(), LockingArtifactCache(tmp_path), data=small_digits)
        rebuilt = again.target()
    messages = [str(w.message) for w in caught if "cache" in str(w.message)]
    assert len(messages) == len(expected), messages
    for pattern, message in zip(expected, messages):
        assert __import__("re").search(pattern, message), (pattern, message)
    assert {k: again.defense_record[k] for k in _REPORTED} == {k: record[k] for k in _REPORTED}
    for a, b in zip(rebuilt.state_dict().values(), target.state_dict().values()):
        torch.testing.assert_close(a, b)  # seeded training: the same target again
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and now everything checks out
        third = Workbench(_dp_config(), LockingArtifactCache(tmp_path), data=small_digits)
        third.target()
    assert third.defense_record == again.defense_record


def test_swapped_prior_record_and_quality_are_set_aside_and_rebuilt(tmp_path, small_digits):
    """The prior's training-seconds record and its quality record, each in the other's file: every cell
    failed with ``KeyError: 'train_seconds'`` and neither file was named. Now both are named and set aside;
    the quality is computed again (the same FID) and the training seconds, which only the training
    measured, are reported unknown (None) rather than training the prior again for a timing."""
    from mi_art.evaluations.experiment import Workbench

    bench = Workbench(_dp_config(), ArtifactCache(tmp_path), data=small_digits)
    report = bench.prior_report("gmi-prior")
    assert report["train_seconds"] > 0
    record = next(tmp_path.glob("gmi-prior-record-*.json"))
    quality = next(tmp_path.glob("gmi-prior-quality-*.json"))
    swap = tmp_path / "swap"
    os.replace(record, swap)
    os.replace(quality, record)
    os.replace(swap, quality)
    again = Workbench(_dp_config(), ArtifactCache(tmp_path), data=small_digits)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt = again.prior_report("gmi-prior")
    messages = [str(w.message) for w in caught if "cache file" in str(w.message)]
    assert len(messages) == 2 and f"cache file {record} was written for another artifact" in messages[0]
    assert f"cache file {quality} was written for another artifact" in messages[1]
    assert rebuilt == {"train_seconds": None, "fid_public": pytest.approx(report["fid_public"])}


# --------------------------------------------------------------------------------------------------
# Temporary files and files written before checksums
# --------------------------------------------------------------------------------------------------


def test_orphan_temporary_files_are_removed_but_a_recent_one_is_kept(tmp_path):
    """A writer killed between writing and renaming leaves ``<name>.<random>.tmp``; one younger than
    15 minutes may be a concurrent writer's and stays."""
    old = tmp_path / "target-0123456789abcdef.pt.k2j3h4.tmp"
    recent = tmp_path / "p-reg-0123456789abcdef.pt.a8b7c6.tmp"
    for f in (old, recent):
        f.write_bytes(b"half a checkpoint")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    with pytest.warns(UserWarning, match=rf"cache {tmp_path}: deleted 1 temporary file.*{old.name}"):
        ArtifactCache(tmp_path).json("record", {"a": 1}, lambda: {"x": 1})
    assert not old.exists() and recent.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") and p != recent]


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    cache = ArtifactCache(tmp_path)

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="(?i)no space"):
        cache.tensor("p-reg", {"a": 1}, lambda: torch.ones(3))
    with pytest.raises(OSError, match="(?i)no space"):
        cache.json("record", {"a": 1}, lambda: {"x": 1})
    assert not list(tmp_path.glob("*.tmp"))


def test_files_written_before_checksums_are_accepted_once_then_verified(tmp_path):
    """The policy for an existing cache: a checkpoint, tensor or record without a checksum (and with the right
    key, where it has one) is used, one warning per directory says so, and it is re-written with its key and
    checksum, so that damage from then on is caught."""
    cache, calls = ArtifactCache(tmp_path), []
    torch.manual_seed(0)
    model = nn.Linear(64, 64)
    config = {"seed": 0}
    path = cache.path("target", config)
    save_checkpoint(model, path, kind="target", config=json.dumps(config, sort_keys=True, default=str))
    value = torch.linspace(0, 1, 256)
    tensor_path = cache.path("p-reg", config)
    torch.save({"key": json.dumps({"kind": "p-reg", "config": config}, sort_keys=True), "tensor": value}, tensor_path)
    json_path = cache.json_path("defense-record", config)
    json_path.write_text(json.dumps({"epsilon": 3.5}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = cache.module("target", config, lambda: nn.Linear(64, 64), make_linear(1, calls))
        assert torch.equal(cache.tensor("p-reg", config, lambda: torch.zeros(1)), value)
        assert cache.json("defense-record", config, lambda: {"epsilon": 0.0}) == {"epsilon": 3.5}
    assert [str(w.message)[:len(f"cache {tmp_path} holds files written before cache checksums")] for w in caught] == [
        f"cache {tmp_path} holds files written before cache checksums"]
    assert calls == [] and torch.equal(loaded.weight, model.weight)
    assert "sha256" in torch.load(path, weights_only=True)["meta"]
    assert "sha256" in torch.load(tensor_path, weights_only=True)
    assert json.loads(json_path.read_text())["value"] == {"epsilon": 3.5}
    flip(path, model.weight.detach().numpy().tobytes())
    with pytest.warns(UserWarning, match="is damaged"):
        cache.module("target", config, lambda: nn.Linear(64, 64), make_linear(0, calls))
    assert calls == [0]


def test_a_damaged_or_foreign_cache_file_is_set_aside_and_rebuilt(tmp_path):
    """Truncated, empty and foreign checkpoints, a truncated JSON record and a foreign tensor: each is
    reported in one warning naming the file, moved aside and rebuilt; the run goes on."""
    import torch

    from mi_art.evaluations.cache import ArtifactCache

    cache = ArtifactCache(tmp_path)
    trained = []

    def train(seed):
        def run():
            trained.append(seed)
            torch.manual_seed(seed)
            return torch.nn.Linear(3, 2)
        return run

    first = cache.module("target", {"seed": 0}, lambda: torch.nn.Linear(3, 2), train(0))
    path = cache.path("target", {"seed": 0})
    good = path.read_bytes()
    for damage in (good[: len(good) // 2], b""):  # an interrupted copy, a full disk
        path.write_bytes(damage)
        with pytest.warns(UserWarning, match=rf"cache file {path}.*damaged.*rebuilding"):
            again = cache.module("target", {"seed": 0}, lambda: torch.nn.Linear(3, 2), train(0))
        assert torch.equal(again.weight, first.weight) and list(path.parent.glob(path.name + ".bad-*"))
    # another artifact's bytes under this key
    cache.module("target", {"seed": 1}, lambda: torch.nn.Linear(3, 2), train(1))
    path.write_bytes(cache.path("target", {"seed": 1}).read_bytes())
    with pytest.warns(UserWarning, match="another"):
        again = cache.module("target", {"seed": 0}, lambda: torch.nn.Linear(3, 2), train(0))
    assert torch.equal(again.weight, first.weight) and trained == [0, 0, 0, 1, 0]
    # a truncated JSON record and a tensor of another key
    cache.json("record", {"a": 1}, lambda: {"x": 1})
    jpath = cache.path("record", {"a": 1}).with_suffix(".json")
    jpath.write_text('{"x": ')
    with pytest.warns(UserWarning, match="damaged"):
        assert cache.json("record", {"a": 1}, lambda: {"x": 2}) == {"x": 2}
    cache.tensor("p-reg", {"a": 1}, lambda: torch.ones(2))
    cache.tensor("p-reg", {"a": 2}, lambda: torch.zeros(2))
    cache.path("p-reg", {"a": 1}).write_bytes(cache.path("p-reg", {"a": 2}).read_bytes())
    with pytest.warns(UserWarning, match="another configuration"):
        assert torch.equal(cache.tensor("p-reg", {"a": 1}, lambda: torch.ones(2)), torch.ones(2))
