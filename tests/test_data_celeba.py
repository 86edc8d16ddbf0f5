"""CelebA identity files: names that would leave the image folder, repeated names and malformed lines are
refused, naming the file and the line."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

import numpy as np
import pytest
from PIL import Image

from mi_art.data import load_celeba

SIDE = 110  # a little more than the 108x108 crop


def write_celeba(root: Path, lines: List[str]) -> Path:
    """Images 000001.png .. 000006.png (identities 1, 1, 1, 2, 2, 3) and an identity file of ``lines``."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    for k in range(1, 7):
        Image.new("RGB", (SIDE, SIDE), (40 * k, 0, 0)).save(images / f"{k:06d}.png")
    (root / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    return root


GOOD = ["000001.png 1", "000002.png 1", "000003.png 1", "000004.png 2", "000005.png 2", "000006.png 3"]


def test_good_identity_file_loads(tmp_path: Path) -> None:
    data = load_celeba(write_celeba(tmp_path, GOOD), num_private=2, image_size=4, test_fraction=0.4)
    assert data.private_identities == ("1", "2") and data.public_identities == ("3",)
    np.testing.assert_allclose(data.public.x[0, :, 0, 0], [240 / 255, 0, 0], atol=1e-6)


@pytest.mark.parametrize(
    "name",
    ["../secret.png", "..", ".", "/etc/passwd", "sub/000001.png", "img_align_celeba/000001.png",
     "..\\secret.png", "C:\\secret.png", "C:secret.png", "\\\\server\\share\\x.png"],
)
def test_file_names_that_leave_the_image_folder_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "secret.png").write_bytes(b"")  # what a traversal would reach
    root = write_celeba(tmp_path / "celeba", GOOD[:3] + [f"{name} 2"] + GOOD[4:])
    id_file = root / "identity_CelebA.txt"
    message = f"{id_file}:4: image file name {name!r} would leave the image folder; only plain file names"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_celeba(root, num_private=2, image_size=4)


def test_a_file_listed_twice_is_refused(tmp_path: Path) -> None:
    root = write_celeba(tmp_path, GOOD + ["000002.png 3"])
    message = f"{root / 'identity_CelebA.txt'}:7: image '000002.png' is listed again (first on line 2)"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_celeba(root, num_private=2, image_size=4)


@pytest.mark.parametrize("line", ["000001.png", "000001.png one", "000001.png 1 2", "000001.png -1",
                                  "000001.png \u00b2"])
def test_malformed_lines_are_refused_with_their_number(tmp_path: Path, line: str) -> None:
    root = write_celeba(tmp_path, GOOD[:1] + [line] + GOOD[1:])
    message = f"{root / 'identity_CelebA.txt'}:2: expected '<image file> <identity>', got {line!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_celeba(root, num_private=2, image_size=4)


def test_identity_file_that_is_not_text_is_refused(tmp_path: Path) -> None:
    root = write_celeba(tmp_path, GOOD)
    (root / "identity_CelebA.txt").write_bytes(b"\xff\xfe\x00\x01 1\n")
    with pytest.raises(ValueError, match="identity_CelebA.txt is not a UTF-8 text file"):
        load_celeba(root, num_private=2, image_size=4)
