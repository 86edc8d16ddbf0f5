"""Named data options of the image-folder loader: the benchmarks' choices of split, crop and excluded images,
for a user who loads the same data (``load_dataset("image-folder", root, preset="lfw")``, ``--data-option
preset=lfw``, a grid's ``data_options = { preset = "lfw" }``). Options given beside a preset override its own;
``load_image_folder(root, **preset_options("lfw"))`` is the same for a direct call.

* ``"lfw"``: LFW deep-funneled, every person with at least 10 images (158 persons): the 50 persons with the
  most images private (as the papers choose CelebA's private identities), at most 30 images each so that
  George_W_Bush (530) does not dominate, 80/20 train/test per person; the other 108 persons public. The
  centre 120 px of the 250 px frame (the face fills about the central 110 px; the whole frame is mostly
  background), resized to 32x32, colour. LFW's label errata and the second image of each near-duplicate pair
  are left out (:data:`LFW_EXCLUDE`), so no pair is split between train and test. Chance Acc@1 is 0.02.
* ``"att"``: AT&T (ORL) faces, 40 persons of 10 images: s1-s20 private (8 train / 2 test each), s21-s40
  public, 32x32 grey, the largest centred square.

Without a preset, an LFW folder loads with the loader's defaults: half the persons private in name order
(79, with 8 to 424 training images each), near-duplicate photos on both sides of the split and the whole frame
centre-cropped.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

from ..validation import check_choice

__all__ = ["IMAGE_FOLDER_PRESETS", "LFW_EXCLUDE", "preset_options"]

#: LFW images left out by the ``"lfw"`` preset (see the data folder's NOTICE.md): LFW's own label errata (the
#: image shows another person), then the second image of each near-duplicate pair (the same photo
#: re-encoded), so that no pair can be split between the target's training and test images.
LFW_EXCLUDE: Tuple[str, ...] = (
    "Recep_Tayyip_Erdogan/Recep_Tayyip_Erdogan_0004.jpg", "Michael_Schumacher/Michael_Schumacher_0008.jpg",
    "Mahmoud_Abbas/Mahmoud_Abbas_0012.jpg",
    "Ari_Fleischer/Ari_Fleischer_0011.jpg", "George_W_Bush/George_W_Bush_0039.jpg",
    "George_W_Bush/George_W_Bush_0194.jpg", "George_W_Bush/George_W_Bush_0206.jpg",
    "George_W_Bush/George_W_Bush_0409.jpg", "George_W_Bush/George_W_Bush_0261.jpg",
    "Renee_Zellweger/Renee_Zellweger_0013.jpg", "Julie_Gerberding/Julie_Gerberding_0006.jpg",
    "Serena_Williams/Serena_Williams_0016.jpg", "Serena_Williams/Serena_Williams_0031.jpg",
)

#: Each preset's options of :func:`mi_art.data.load_image_folder` (see the module's docstring).
IMAGE_FOLDER_PRESETS: Mapping[str, Mapping[str, Any]] = {
    "lfw": {"private": 50, "order": "images", "max_per_identity": 30, "exclude": list(LFW_EXCLUDE),
            "crop": 120, "image_size": 32, "channels": 3, "test_fraction": 0.2},
    "att": {"private": 20, "image_size": 32, "channels": 1, "test_fraction": 0.2},
}


def preset_options(name: str) -> Dict[str, Any]:
    """A fresh copy of preset ``name``'s loader options; ValueError naming the presets for an unknown one."""
    name = check_choice("preset", name, tuple(IMAGE_FOLDER_PRESETS))
    return {k: list(v) if isinstance(v, list) else v for k, v in IMAGE_FOLDER_PRESETS[name].items()}
