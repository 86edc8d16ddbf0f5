"""The evaluation model (the judge) is trained on ``private_train`` only: it never sees a private test
image, which would inflate its test accuracy and every attack accuracy it reports."""
from __future__ import annotations

from typing import Callable, List, Set, Tuple

import numpy as np
import pytest

import mi_art
import mi_art.training
from mi_art.evaluations import workbench
from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.experiment import ExperimentConfig, Workbench
from mi_art.data import MIDataset

Call = Tuple[np.ndarray, np.ndarray]


def _rows(x: np.ndarray) -> Set[bytes]:
    return {np.ascontiguousarray(row, dtype=np.float32).tobytes() for row in np.asarray(x)}


@pytest.fixture()
def recorded(monkeypatch: pytest.MonkeyPatch) -> List[Call]:
    """Replace ``train_classifier`` wherever the workbench may take it from; record what it is given."""
    calls: List[Call] = []

    def fake_train_classifier(model, x, y, *args, **kwargs):
        calls.append((np.asarray(x), np.asarray(y)))
        return model  # untrained: only the data it was given matters here

    for module in (workbench, mi_art, mi_art.training):
        monkeypatch.setattr(module, "train_classifier", fake_train_classifier, raising=False)
    return calls


def _test_only_rows(data: MIDataset) -> Set[bytes]:
    """Private test images that are neither private training nor public images (exact duplicates aside)."""
    return _rows(data.private_test.x) - _rows(data.private_train.x) - _rows(data.public.x)


@pytest.mark.parametrize("artifact", ["judge", "target"])
def test_models_never_train_on_private_test_images(digits: MIDataset, recorded: List[Call], artifact: str) -> None:
    held_out = _test_only_rows(digits)
    assert len(held_out) > 100  # the check below has something to find
    config = ExperimentConfig(judge_epochs=1, target_epochs=1, device="cpu")
    build: Callable[[], object] = getattr(Workbench(config, ArtifactCache(None), data=digits), artifact)
    build()
    assert recorded, f"Workbench.{artifact}() did not train through train_classifier"
    for x, _ in recorded:
        leaked = _rows(x) & held_out
        assert not leaked, f"{artifact} was trained on {len(leaked)} private test images"
    # the judge and the target do learn the private identities, from their training images
    assert any(np.array_equal(x, digits.private_train.x) and np.array_equal(y, digits.private_train.y)
               for x, y in recorded)


def test_private_all_is_what_the_check_would_catch(digits: MIDataset) -> None:
    """The check above can fail: ``private_all`` (the KNN reference set) holds every held-out image."""
    assert _test_only_rows(digits) <= _rows(digits.private_all().x)
    assert len(digits.private_all()) == len(digits.private_train) + len(digits.private_test)
    doc = " ".join((digits.private_all.__doc__ or "").split())
    assert "Never train the evaluation model" in doc and "private_train" in doc
