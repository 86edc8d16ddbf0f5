"""One declaration per setting (evaluations/settings.py): each config field declares its default, rule, help
and grid scope beside itself, and the commands' options, the grid's keys, the checks and the cell ids' scope are
derived from it; a grid value is checked once on its way to the attack."""
import dataclasses
import warnings
from typing import Optional

import pytest

from mi_art.evaluations.grid import Grid
from mi_art.evaluations.presets import preset

# The cell ids of the presets, computed before the settings were declared beside their fields (main at 5facebf):
# the migration guard. A changed id reruns every finished cell of a grid, so these must never change.
QUICK_IDS = [
    "239ba8b1292848ae", "f1617c94ebea25b0", "8b9ce140107d0a80", "57dbde74cdbd7f0a", "5c4796055738b83e",
    "22b1a0030e504520", "5e8ca9469cf3f52e", "1dac3a8cb2523bcf", "d22c439b433f7c05", "b08a79525d537261",
    "97e167a5c5ccc28d", "99660918c99bb2d4", "ca0af4df035ceaea", "37b90eb00da8b9fd", "ea34caa24480ad4f",
    "f4769fea15ef81bf", "6191f37498884edd", "f072961a7b85be35", "4c27beabf9fcc68a", "87b2cb13c7374f01",
    "57875e078309d2a5", "2d6c018b5321a399", "3388cbe3638f2795", "90447732303c43fd",
]
PAPER_IDS = [
    "791df526bad8417e", "bd19290a9ae92df9", "2def7430d5e16910", "2d49563f8daac602", "f76167514240fabd",
    "1bb75be305229953", "2e5f2e9dcdc16d66", "2fe3c7eaee822890", "1d64c57f96b84387", "2e0ff07b1ea8cf91",
    "dd25211930d66ca4", "dce8b62a0bf2edf2", "59a4f38fa9b3ede8", "5b1b1c888b00fb9f", "8787ff13048a3468",
    "a8bbf7e08c5bb12c", "984352663b5af710", "74a10b13cc5aef4e", "bd53593423f272ad", "90b688d91b889e3c",
    "637bbda2dafc05d1", "3e875f248fda6d99", "3be17644a9348832", "005a39ad9720e68e", "88f57c298e59467d",
    "d94053ef0d904e3c", "94bc58fea23d472c", "b02ff5dbec11801d", "335d2eddb1591630", "2d7cebd9b77c6f73",
    "5d710069106a52a7", "6234dc29248453c4", "2ae44f6322a93e07", "27154bb523d09c6e", "99e57c7fb48abb38",
    "e5ba40bfc77c496e", "7f5903c3739a3e67", "44404057448a8607", "21f5662c3be46cdc", "48dfc6c3e7aaab10",
    "52837817b9b563b0", "d8737db1cb9ca4ed", "0d44dd657414faba", "0504f58e5ee745bf", "2a97615c5e010e7e",
    "7b0741fb400c07da", "8bf3e83157e00242", "050f4578292d4ccf", "e45319e3d06881a2", "085c37edfb9ae665",
    "ed13ddb51ef18931", "d7da082acf5366dc", "dddcf45c48a32160", "47a042e222125865", "bbf2d65c48164528",
    "594d8346d96b56e7", "bc87c3f71e4ae7d7", "c4b9d28e9df702eb", "329a0264dd2249ff", "237811d03c7f39df",
    "56902b930f330c7a", "8ea57160454bf248", "018a91611c917f0f", "218cf31cad76a9de", "23f5ae005d9dd30b",
    "6eaeba7e5ab40714", "9439eb8187b140f9", "b64f64cfc4569694", "45d3c08cdd2ae09b", "e269132a8676acef",
    "22cf3fe8dc49d651", "6c430dad1fad7182", "a9156a372dc14ab7", "fda2f196f1a973b4", "2c8079a7c38612b4",
    "0519887ac6e6df3a", "831cf0686c65866f", "c53c96d1fd5f565c", "1ea87472dba31aac", "b1bb23ef31497eda",
]


@pytest.mark.parametrize("name, ids", [("quick", QUICK_IDS), ("paper", PAPER_IDS)])
def test_the_presets_cell_ids_are_unchanged(name, ids):
    assert [c.id for c in Grid.from_dict(preset(name)).cells()] == ids
