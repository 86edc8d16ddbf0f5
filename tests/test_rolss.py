"""RoLSS (:mod:`mi_art.defenses.rolss`): exactly the last stage's skip connections are removed, the other
stages keep theirs; it trains through :func:`mi_art.defenses.train_defended_target` into a record; and an
architecture without such stages is refused, naming it and those RoLSS applies to, before any training."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import mi_art
from mi_art.defenses import (DefenseRecord, check_defense_architecture, check_defense_params, defended_architecture,
                             get_defense, train_defended_target)
from mi_art.defenses import rolss
from mi_art.evaluations.experiment import ExperimentConfig
from mi_art.models import ARCHITECTURES, PRETRAINED_FACE_ARCHS

FAST = dict(epochs=1, batch_size=32, lr=2e-3, device="cpu", seed=0)


def _blocks(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, rolss.RESIDUAL_BLOCKS)]


def _residual_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What a block computes without its skip connection, by hand."""
    if isinstance(block, mi_art.models._BasicBlock):
        return block.act(block.bn2(block.conv2(block.act(block.bn1(block.conv1(x))))))
    return block.res(x)


@pytest.mark.parametrize("arch, blocks, removed", [("resnet18", None, 2), ("resnet18", 1, 1), ("resnet10", None, 1),
                                                   ("ir18", None, 2)])
def test_only_the_last_stage_loses_its_skips(arch, blocks, removed):
    torch.manual_seed(0)
    with_skips = mi_art.make_classifier(arch, 3, 5, 32).eval()
    model = copy.deepcopy(with_skips)
    names = rolss.remove_last_stage_skips(model, blocks)
    model.eval()
    stages = rolss.stages(with_skips)
    last = [n for n, _ in stages[-1]]
    assert names == last[len(last) - removed:]
    plain = dict(_blocks(with_skips))
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32)
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0])) for n, m in _blocks(with_skips)]
    with torch.no_grad():
        reference = with_skips(x)
        for h in hooks:
            h.remove()
        for name, block in _blocks(model):
            z = inputs[name]
            if name in names:  # the residual branch alone: differs from the block with its skip, same weights
                assert not rolss.has_skip(block)
                torch.testing.assert_close(block(z), _residual_branch(block, z))
                assert not torch.allclose(block(z), plain[name](z))
            else:  # every other block, earlier stages included, adds its shortcut as before
                assert rolss.has_skip(block)
                torch.testing.assert_close(block(z), plain[name](z))
                assert not torch.allclose(block(z), _residual_branch(block, z))
        assert not torch.allclose(model(x), reference)
    assert sum(not rolss.has_skip(b) for _, b in _blocks(model)) == removed
    # idempotent: applying it again removes nothing more
    assert rolss.remove_last_stage_skips(model, blocks) == names
    assert sum(not rolss.has_skip(b) for _, b in _blocks(model)) == removed


def test_the_architectures_it_names_are_those_with_residual_stages():
    for arch in ARCHITECTURES:
        if arch in PRETRAINED_FACE_ARCHS:
            continue
        with torch.device("meta"):
            model = mi_art.make_classifier(arch, 1, 5, 32)
        if arch in rolss.ARCHITECTURES:
            check_defense_architecture("rolss", arch)
            assert len(rolss.stages(model)) >= 3
        else:
            with pytest.raises(ValueError, match=f"target_arch='{arch}'"):
                check_defense_architecture("rolss", arch)
            with pytest.raises(ValueError, match="it applies to the architectures resnet, resnet10"):
                rolss.stages(model)


def test_trains_through_the_defense_path_into_a_record(small_digits):
    model, record = train_defended_target("rolss", small_digits, model="resnet", **FAST)
    assert isinstance(record, DefenseRecord) and record.defense == "rolss" and record.params == {"blocks": None}
    assert record.details == {"skipless_blocks": ["stages.2"], "blocks_with_skips": ["stages.0", "stages.1"]}
    assert record.test_accuracy is not None and record.architecture == "resnet"
    assert [rolss.has_skip(b) for _, b in _blocks(model)] == [True, True, False]
    # the saved weights load into the structure the cache rebuilds (no projection shortcut left in the last stage)
    empty = defended_architecture("rolss", small_digits, model="resnet")
    empty.load_state_dict(model.state_dict(), strict=True)
    assert not any(k.startswith("stages.2.shortcut") for k in model.state_dict())


def test_pretraining_uses_the_skipless_structure():
    spec = get_defense("rolss")
    params = check_defense_params("rolss", {"blocks": 1})
    assert spec.pretraining_tag(params) == "rolss-last-1"
    model = spec.pretraining_architecture(mi_art.make_classifier("resnet18", 1, 5, 16), params)
    assert [rolss.has_skip(b) for _, b in _blocks(model)] == [True] * 7 + [False]


def test_an_architecture_without_skips_is_refused_before_training(small_digits, monkeypatch):
    def trained(*args, **kwargs):
        raise AssertionError("RoLSS trained a model it should have refused")

    monkeypatch.setattr(rolss, "train_classifier", trained)
    valid = "it applies to the architectures resnet, resnet10, resnet18, ir18, ir50, ir152"
    expected = f"defense 'rolss' .* {valid}"
    with pytest.raises(ValueError, match=expected):
        train_defended_target("rolss", small_digits, model="cnn", **FAST)
    with pytest.raises(ValueError, match=f"target_arch='cnn' has no skip connections; {valid}"):
        ExperimentConfig(defense="rolss", target_arch="cnn").validate()
    with pytest.raises(ValueError, match="target_arch='dlib-head' is dlib's pre-trained recogniser, kept frozen"):
        ExperimentConfig(defense="rolss", target_arch="dlib-head").validate()
    ExperimentConfig(defense="rolss", target_arch="resnet10").validate()
    ExperimentConfig(defense="mid", target_arch="cnn").validate()  # the other defenses take any architecture


def test_parameters():
    assert check_defense_params("rolss") == {"blocks": None}
    for bad in (0, -1, 1.5, "all"):
        with pytest.raises(ValueError, match="blocks"):
            check_defense_params("rolss", {"blocks": bad})
    with pytest.raises(ValueError, match="unknown parameter.*'stage'.*valid parameters: blocks"):
        check_defense_params("rolss", {"stage": 4})
    with pytest.raises(ValueError, match="blocks=3 asks for more blocks than the last stage of 'resnet18' has: it "
                                         "has 2"):
        rolss.remove_last_stage_skips(mi_art.make_classifier("resnet18", 1, 5, 16), 3)
