"""Data sets keep their names: two image folders in one grid are two data sets, in their rows, cell ids, report
sections and plots, named after their folders (or the ``name`` the user gives); rows written when every folder
was "image-folder" still load, named by the folder their configuration holds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mi_art.data import dataset_label, load_image_folder
from mi_art.evaluations.cli import main
from mi_art.evaluations.grid import Grid, GridError
from mi_art.evaluations.rows import normalise_row

# one gmi/baseline cell per folder, as little training as a cell can do
TINY = """
name = "two-folders"
attacks = ["gmi"]
variants = ["baseline"]
seeds = [0]
target_epochs = 1
judge_arch = "cnn-small"
judge_epochs = 1
iterations = 2
n_reconstructions = 1
gmi_steps = 2
gan_width = 8
surrogate_archs = []
independent_judge = "none"
"""


def _folder(root: Path, persons: int = 4, images: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(len(str(root)))
    for k in range(persons):
        (root / f"p{k}").mkdir(parents=True)
        for i in range(images):
            Image.fromarray((rng.random((8, 8)) * 255).astype("uint8")).save(root / f"p{k}" / f"{i}.png")
    return root


def _grid_file(tmp_path: Path, datasets: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(TINY + datasets + '\n[[defenses]]\nname = "none"\n')
    return path


def _two_folders(tmp_path: Path, second_options: str = "") -> str:
    a, b = _folder(tmp_path / "data" / "att"), _folder(tmp_path / "elsewhere" / "lfw")
    return (f'\n[[datasets]]\nname = "image-folder"\ndata_root = "{a}"\ndata_options = {{ image_size = 8 }}\n'
            f'\n[[datasets]]\nname = "folder"\ndata_root = "{b}"\n'
            f'data_options = {{ image_size = 8{second_options} }}\n')


def test_dataset_label_is_the_loaded_name(tmp_path):
    faces = _folder(tmp_path / "att_faces")
    assert dataset_label("image-folder", faces, {"image_size": 8}) == "att_faces" \
        == load_image_folder(faces, image_size=8).name
    assert dataset_label("folder", faces, {"name": "orl"}) == "orl" == load_image_folder(faces, name="orl").name
    assert dataset_label("digits") == "digits" and dataset_label("Fashion_MNIST", "/x") == "fashion-mnist"


def test_two_folders_in_one_grid_are_two_data_sets(tmp_path):
    grid_file = _grid_file(tmp_path, _two_folders(tmp_path))
    out = tmp_path / "out"
    dry = CliRunner().invoke(main, ["evaluate", "--config", str(grid_file), "--out", str(out), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    listed = [line.split() for line in dry.output.splitlines() if line.strip().endswith("seed 0")]
    assert [words[2] for words in listed] == ["att", "lfw"]  # the cells can be told apart
    assert len({words[0] for words in listed}) == 2

    result = CliRunner().invoke(main, ["evaluate", "--config", str(grid_file), "--out", str(out), "--threads", "1",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = json.loads((out / "results.json").read_text())
    assert [(r["dataset"], r["dataset_kind"]) for r in rows] == [("att", "image-folder"), ("lfw", "folder")]
    assert len({r["cell_id"] for r in rows}) == 2
    cells = json.loads((out / "grid.json").read_text())["cells"]
    assert [c["dataset"] for c in cells] == ["att", "lfw"]
    report = (out / "report.md").read_text()
    assert "## att\n" in report and "## lfw\n" in report and "## image-folder" not in report
    for name in ("att", "lfw"):
        assert (out / "plots" / f"frontier-{name}.png").is_file() and (out / "plots" / f"bars-{name}.png").is_file()


def test_folders_of_one_name_must_be_named_apart(tmp_path):
    a, b = _folder(tmp_path / "x" / "faces"), _folder(tmp_path / "y" / "faces")
    spec = {"attacks": ["gmi"], "variants": ["baseline"],
            "datasets": [{"name": "image-folder", "data_root": str(a)}, {"name": "image-folder", "data_root": str(b)}]}
    with pytest.raises(GridError, match=r"both be reported as 'faces'.*data_options = \{ name"):
        Grid.from_dict(spec).validate(load_data=False)
    spec["datasets"][1]["data_options"] = {"name": "faces-y"}
    Grid.from_dict(spec).validate(load_data=False)
    assert [c.dataset_label for c in Grid.from_dict(spec).cells()] == ["faces", "faces-y"]


def test_a_data_set_listed_twice_is_refused(tmp_path):
    a = _folder(tmp_path / "faces")
    twice = {"datasets": [{"name": "image-folder", "data_root": str(a)}, {"name": "folder", "data_root": str(a)}]}
    with pytest.raises(GridError, match="the same data set.*list it once"):
        Grid.from_dict(twice).validate(load_data=False)
    renamed = {"datasets": [{"name": "image-folder", "data_root": str(a)},
                            {"name": "image-folder", "data_root": str(a), "data_options": {"name": "again"}}]}
    with pytest.raises(GridError, match="the same data under two names"):
        Grid.from_dict(renamed).validate(load_data=False)
    with pytest.raises(GridError, match="same work"):  # cells() refuses what validate() was not asked about
        Grid.from_dict({"datasets": ["digits", "digits"]}).cells()


def test_old_rows_named_image_folder_still_load_named_by_their_folder():
    old = {"cell_id": "c", "dataset": "image-folder", "config": {"dataset": "image-folder",
                                                                "data_root": "/data/att_faces", "data_options": {}}}
    assert normalise_row(old)["dataset"] == "att_faces" and normalise_row(old)["dataset_kind"] == "image-folder"
    named = {**old, "config": {**old["config"], "data_options": {"name": "orl"}}}
    assert normalise_row(named)["dataset"] == "orl"
    bare = {"cell_id": "d", "dataset": "image-folder"}  # no configuration: kept as it was
    assert normalise_row(bare)["dataset"] == "image-folder"
    assert normalise_row({"cell_id": "e", "dataset": "digits"})["dataset"] == "digits"


def test_an_old_results_folder_reports_its_folders_apart(tmp_path):
    """Cells saved when every folder was "image-folder", re-rendered by `mi-art report`: two sections."""
    out = tmp_path / "old"
    (out / "cells").mkdir(parents=True)
    for i, (root, acc) in enumerate((("/data/att_faces", 0.8), ("/data/lfw", 0.2))):
        row = {"cell_id": f"c{i}", "index": i, "dataset": "image-folder", "defense": "none", "defense_params": {},
               "defense_label": "none", "natural_accuracy": 0.9, "attack": "gmi", "variant": "baseline", "seed": 0,
               "artifact_seed": 0, "acc@1": acc, "acc@1_std": 0.0, "acc@5": None, "acc@5_std": None,
               "knn_dist": 1.0, "fid_eval_features": None, "seconds": 1.0, "cell_seconds": 1.0,
               "judge_test_accuracy": 0.9, "n_identities": 2, "n_reconstructions": 1, "iterations": 2,
               "n_classes": 10, "config": {"dataset": "image-folder", "data_root": root, "data_options": {}}}
        (out / "cells" / f"c{i}.json").write_text(json.dumps(row))
    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert "## att_faces\n" in report and "## lfw\n" in report and "## image-folder" not in report
    assert [r["dataset"] for r in json.loads((out / "results.json").read_text())] == ["att_faces", "lfw"]


def test_one_normaliser_of_dataset_names():
    """A dataset name is normalised in one place (mi_art.data.normalise_dataset_name): the grid, its checks, the
    CLI and gan_augment's "auto" agree on what a name stands for."""
    from mi_art.data import normalise_dataset_name
    from mi_art.evaluations.config_rules import gan_augment_for

    assert normalise_dataset_name(" Fashion_MNIST ") == "fashion-mnist"
    assert normalise_dataset_name(3) == 3
    assert Grid.from_dict({"datasets": [" Digits "], "attacks": ["gmi"], "variants": ["baseline"]}).cells()[0] \
        .config.dataset == "digits"
    assert gan_augment_for("Image_Folder", "auto") == "flip"
    root = Path(__file__).resolve().parents[1]
    by_hand = [str(p.relative_to(root)) for folder in ("mi_art", "evaluations") for p in (root / folder).rglob("*.py")
               if '.strip().lower().replace("_", "-")' in p.read_text()
               and p != root / "mi_art" / "data" / "registry.py"]
    assert not by_hand, f"dataset names normalised by hand in {by_hand}: use mi_art.data.normalise_dataset_name"
