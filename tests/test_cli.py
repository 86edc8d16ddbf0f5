"""The `mi-art attack` command end to end on digits, with tiny budgets."""
import json

import pytest
from click.testing import CliRunner

from evaluations.cli import main

TINY = ["--iterations", "20", "--n-reconstructions", "2", "--target-epochs", "3", "--eval-epochs", "3",
        "--prior-steps", "10", "--kedmi-steps", "10", "--surrogate-epochs", "2", "--quiet"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("attack,variant", [("gmi", "lomma"), ("kedmi", "baseline"), ("miface", "baseline")])
def test_attack_writes_results_and_grid(tmp_path, cache_dir, attack, variant):
    out = tmp_path / "run"
    args = ["attack", "--dataset", "digits", "--attack", attack, "--variant", variant, "--out", str(out),
            "--cache-dir", cache_dir, "--miface-iterations", "5", *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["attack"] == attack and record["variant"] == variant
    assert record["n_identities"] == 5
    assert record["n_reconstructions"] == (1 if attack == "miface" else 2)
    for key in ("acc@1", "acc@5", "target_test_accuracy", "evaluator_test_accuracy"):
        assert 0.0 <= record[key] <= 1.0
    assert record["acc@5"] >= record["acc@1"]
    assert record["knn_dist"] >= 0
    assert (out / "reconstructions.png").stat().st_size > 1000
    assert f"Acc@1 {record['acc@1']:.3f}" in result.output


def test_cached_artifacts_are_reused(tmp_path, cache_dir):
    args = ["attack", "--out", str(tmp_path / "a"), "--cache-dir", cache_dir, *TINY]
    first = CliRunner().invoke(main, args)
    files = sorted(p.name for p in __import__("pathlib").Path(cache_dir).iterdir())
    second = CliRunner().invoke(main, args[:2] + [str(tmp_path / "b")] + args[3:])
    assert first.exit_code == 0 and second.exit_code == 0
    assert sorted(p.name for p in __import__("pathlib").Path(cache_dir).iterdir()) == files
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert a["acc@1"] == b["acc@1"] and a["knn_dist"] == pytest.approx(b["knn_dist"])
    assert a["target_test_accuracy"] == b["target_test_accuracy"]


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(main, ["attack", "--dataset", "image-folder", "--data-root", str(missing),
                                       "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code != 0
    assert "does not exist" in result.output and str(missing) in result.output
    assert "Traceback" not in result.output


def test_fewer_identities_than_asked_is_a_clear_error(tmp_path):
    import numpy as np
    from PIL import Image

    for k in range(3):
        (tmp_path / "faces" / f"p{k}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray((np.random.rand(8, 8) * 255).astype("uint8")).save(tmp_path / "faces" / f"p{k}" / f"{i}.png")
    result = CliRunner().invoke(main, ["attack", "--dataset", "image-folder", "--data-root", str(tmp_path / "faces"),
                                       "--data-option", "private=5", "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code != 0
    assert "identit" in result.output and "Traceback" not in result.output


def test_identities_option_selects_and_validates(tmp_path, cache_dir):
    out = tmp_path / "ids"
    result = CliRunner().invoke(main, ["attack", "--identities", "1,3-4", "--out", str(out), "--cache-dir", cache_dir,
                                       *TINY])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["n_identities"] == 3
    bad = CliRunner().invoke(main, ["attack", "--identities", "2,7", "--out", str(out), "--cache-dir", cache_dir,
                                    *TINY])
    assert bad.exit_code != 0 and "out of range" in bad.output and "7" in bad.output
