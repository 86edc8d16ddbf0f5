"""Settings that used to give a silent wrong number or a traceback from deep inside torch or Opacus now
give a clear error or the right number."""
from __future__ import annotations

import numpy as np
import pytest

import mi_art as M
from mi_art.defenses import dp


def test_a_seed_beyond_torchs_range_is_refused_by_name(target_clf, gmi_prior):
    from mi_art.evaluations.experiment import ExperimentConfig

    with pytest.raises(ValueError, match=r"seed must be an integer .*2\*\*63 - 1"):
        ExperimentConfig(seed=2 ** 70).validate()
    with pytest.raises(ValueError, match="seed"):
        M.GMI(target_clf, *gmi_prior, seed=2 ** 70)
    M.GMI(target_clf, *gmi_prior, seed=2 ** 63 - 1, iterations=1, n_reconstructions=1,
          verbose=False).infer(None, np.array([0]))  # the largest accepted seed works


def test_dp_refuses_a_delta_above_one_over_n():
    with pytest.raises(ValueError, match=r"delta=0.5 is above 1/N"):
        dp.check_params({"noise_multiplier": 1.0, "target_delta": 0.5}, n_train=30)
    assert dp.check_params({"noise_multiplier": 1.0, "target_delta": 0.5, "allow_large_delta": True},
                           30)["target_delta"] == 0.5
    assert dp.check_params({"noise_multiplier": 1.0, "target_delta": 1 / 30}, 30)["target_delta"] == 1 / 30  # kept


@pytest.mark.parametrize("n_train, expected", [(30, 1e-5), (160, 1e-5), (1000, 1e-5), (5000, 2e-6),
                                               (100_000, 1e-7)])
def test_dp_default_delta_is_far_below_one_over_n(n_train, expected):
    """min(1e-5, 1/(100 N)), not 1/N (the earlier default, at which a training image may be released)."""
    assert dp.check_params({"noise_multiplier": 1.0}, n_train=n_train)["target_delta"] == pytest.approx(expected)
    assert dp.default_delta(n_train) == pytest.approx(expected) and expected <= 1 / (100 * n_train)
    assert dp.delta_warning(expected, n_train) is None


def test_dp_delta_warning_names_delta_and_n_at_one_over_ten_n():
    warned = dp.delta_warning(1 / 160, 160)  # the earlier default on AT&T
    assert "delta=0.00625" in warned and "N=160" in warned
    assert dp.delta_warning(1 / 1600, 160) is not None  # at 1/(10 N)
    assert dp.delta_warning(0.99 / 1600, 160) is None and dp.delta_warning(1e-5, 160) is None
    assert dp.delta_warning(None, 160) is None and dp.delta_warning(1e-3, None) is None


def test_a_dp_target_left_at_the_default_delta_is_keyed_apart_from_the_earlier_default():
    """A target cached under delta=1/N (the earlier default) is not served when delta is left out."""
    from mi_art.evaluations.experiment import ExperimentConfig, Workbench
    from mi_art.evaluations.grid import cell_id

    def config(**params):
        return ExperimentConfig(defense="dp-sgd", defense_params={"noise_multiplier": 1.0, **params})

    assert "default_delta" in Workbench(config()).target_key()
    assert "default_delta" not in Workbench(config(target_delta=1e-5)).target_key()
    assert cell_id(config()) != cell_id(config(target_delta=1e-5))
    none = ExperimentConfig()
    assert "default_delta" not in Workbench(none).target_key()


@pytest.mark.parametrize("noise, delta", [(1e6, 0.5), (1e6, 1 / 30), (50.0, 1 / 30)])
def test_epsilon_is_never_negative(noise, delta):
    """Opacus's RDP conversion returns -0.69, -0.03 and -0.02 here (privacy loss nil): reported as 0."""
    assert dp.accountant_epsilon(noise, 0.1, 100, delta) == 0.0
    assert dp.accountant_epsilon(1.0, 0.1, 100, 1 / 30) > 0  # and a real epsilon stays as it is


def test_gan_prior_refuses_images_outside_zero_one_and_channels_last(digits):
    x = digits.public.x[:64]
    with pytest.raises(ValueError, match=r"values from 0 to 255.*clip_values=\(0, 255\)"):
        M.train_gmi_prior(x * 255, steps=1, width=8)
    with pytest.raises(ValueError, match=r"channels-last.*transpose\(0, 3, 1, 2\)"):
        M.train_gmi_prior(x.transpose(0, 2, 3, 1), steps=1, width=8)
    # the range said: the same prior as from [0, 1] images
    a, _ = M.train_gmi_prior(x * 255, clip_values=(0, 255), steps=2, width=8, batch_size=16, seed=0)
    b, _ = M.train_gmi_prior(x, steps=2, width=8, batch_size=16, seed=0)
    assert all(np.allclose(p.detach(), q.detach(), atol=1e-5) for p, q in zip(a.parameters(), b.parameters()))


def test_report_file_names_from_cell_files_stay_in_their_folders(tmp_path):
    """A dataset name or cell id read from a cell file cannot put a plot or an image outside the output folder."""
    import json

    from mi_art.evaluations.report import render_report, safe_file_name

    out = tmp_path / "a" / "out"
    cells = out / "cells"
    cells.mkdir(parents=True)
    row = {"cell_id": "c0", "index": 0, "dataset": "../../escape", "defense": "none", "defense_params": {},
           "defense_label": "none", "natural_accuracy": 0.9, "epsilon": None, "delta": None, "attack": "gmi",
           "variant": "baseline", "seed": 0, "artifact_seed": 0, "acc@1": 0.5, "acc@1_std": 0.1, "acc@5": 1.0,
           "acc@5_std": 0.0, "knn_dist": 1.0, "fid_eval_features": None, "seconds": 1.0, "cell_seconds": 1.0,
           "evaluator_test_accuracy": 0.9, "n_identities": 2, "n_reconstructions": 2, "iterations": 1, "n_classes": 5}
    (cells / "c0.json").write_text(json.dumps(row))
    render_report(out)
    written = list(tmp_path.rglob("*escape*.png"))
    assert written and all(p.parent == out / "plots" for p in written), written
    assert (out / "plots" / f"frontier-{safe_file_name('../../escape')}.png").is_file()
    assert safe_file_name("../x/y") == "_x_y" and safe_file_name("digits-32px_v1.0") == "digits-32px_v1.0"


def test_mnist_labels_out_of_range_are_a_clear_error(tmp_path):
    """A damaged labels file (values 10-19) used to load as an empty data set."""
    from test_data import write_idx

    from mi_art.data import load_mnist

    for prefix in ("train", "t10k"):
        labels = np.tile(np.arange(10, 20), 3)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", np.zeros((len(labels), 28, 28)), 0x803)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels, 0x801)
    with pytest.raises(ValueError, match=r"labels \[10, 11, 12, 13, 14\] outside MNIST's classes 0-9"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("command", ["attack", "evaluate"])
def test_an_output_path_that_cannot_hold_results_is_refused_before_training(command, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import mi_art.evaluations.experiment as experiment
    from mi_art.evaluations.cli import main

    def no_training(*args, **kwargs):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(experiment.Workbench, "target", no_training)
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    args = {"attack": ["attack", "--dataset", "digits", "--quiet"],
            "evaluate": ["evaluate", "--dataset", "digits", "--defense", "none", "--attack", "gmi", "--no-progress"]}
    result = CliRunner().invoke(main, args[command] + ["--out", str(a_file)])
    assert result.exit_code == 2 and "is a file" in result.output, result.output
    # a folder that cannot be made (under a file): refused with the reason, before any work
    result = CliRunner().invoke(main, args[command] + ["--out", str(a_file / "run")])
    assert result.exit_code == 2 and "cannot write results" in result.output, result.output


def test_kedmi_generator_entropy_term_is_used(target, digits):
    """KEDMI's generator loss has the entropy of the discriminator's classes on its images: a weight large
    enough to see (0.1; the authors' 1e-4 is too small to show in 40 steps) makes the generated images'
    class entropy lower (measured 0.136 against 0.192 without the term)."""
    import torch

    from mi_art.priors.kedmi import entropy

    def class_entropy(weight):
        g, d = M.train_kedmi_prior(target, digits.public.x, steps=40, width=16, batch_size=32, lr=1e-3,
                                   entropy_weight=weight, seed=0)
        torch.manual_seed(1)
        with torch.no_grad():
            return float(entropy(d(g(torch.randn(500, g.latent_dim)))))

    assert class_entropy(0.1) < 0.85 * class_entropy(0.0)


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


def test_fid_called_model_first_says_which_function_takes_the_model(target):
    from mi_art.evaluations.metrics import fid

    x = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"fid_eval_features\(model, fake_x, real_x\)"):
        fid(target, x, x)


def test_a_grid_file_in_json_reads_like_toml(tmp_path):
    import json

    from mi_art.evaluations.grid import GridError, load_grid_file

    spec = {"name": "g", "attacks": ["gmi"], "variants": ["baseline"], "seeds": [0], "iterations": 5,
            "datasets": [{"name": "digits"}], "defenses": [{"name": "none"}]}
    (tmp_path / "grid.json").write_text(json.dumps(spec))
    toml = tmp_path / "grid.toml"
    toml.write_text('name = "g"\nattacks = ["gmi"]\nvariants = ["baseline"]\nseeds = [0]\niterations = 5\n'
                    '[[datasets]]\nname = "digits"\n[[defenses]]\nname = "none"\n')
    assert load_grid_file(tmp_path / "grid.json") == load_grid_file(toml)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(GridError, match="invalid JSON"):
        load_grid_file(tmp_path / "bad.json")


def test_default_output_folders_differ_with_the_images_size_and_channels():
    from mi_art.evaluations.cli import _options_suffix

    assert _options_suffix({}) == ""  # mi_art_runs/digits-gmi-lomma, as the README says
    a, b = _options_suffix({"image_size": 32, "channels": 1}), _options_suffix({"image_size": 64, "channels": 3})
    assert a == "-32px-1ch" and b == "-64px-3ch"
    assert _options_suffix({"private": 20}) != _options_suffix({"private": 30})


def test_images_in_the_wrong_range_for_the_estimator_are_refused_by_name(target, digits):
    """A (0, 255) estimator given [0, 1] images (the issue's calls: natural_accuracy, estimate_p_reg,
    train_kedmi_prior) or images above 255: a ValueError naming the argument and the range, not a wrong number
    (natural accuracy 0.20 instead of 0.97). In its own range the same calls work."""
    import torch
    from art.estimators.classification import PyTorchClassifier

    from mi_art.evaluations.metrics import natural_accuracy

    class Scaled(torch.nn.Module):  # the digits target, taking 0..255 images
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x / 255.0)

    est = PyTorchClassifier(Scaled(target), loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=5,
                            clip_values=(0, 255))
    x, y = digits.private_test.x, digits.private_test.y
    assert natural_accuracy(est, x * 255, y) == pytest.approx(natural_accuracy(target, x, y))
    with pytest.raises(ValueError, match=r"x lies in \[0, 1\] but the \w+'s clip_values are \(0, 255\): .* x \* 255\)"):
        natural_accuracy(est, x, y)
    with pytest.raises(ValueError, match=r"x has values in \[0, 510\], outside the \w+'s clip_values"):
        natural_accuracy(est, x * 510, y)
    M.estimate_p_reg(est, digits.public.x * 255)
    with pytest.raises(ValueError, match="public_x lies in .* clip_values are \\(0, 255\\)"):
        M.estimate_p_reg(est, digits.public.x)
    generator, _ = M.train_gmi_prior(digits.public.x, steps=1, width=8, device="cpu")
    with pytest.raises(ValueError, match="public_x lies in .* clip_values are \\(0, 255\\)"):
        M.train_kedmi_prior(est, digits.public.x, steps=1, width=8, init_generator=generator, device="cpu")
