"""The attack and prior registries (:mod:`mi_art.attacks.registry`, :mod:`mi_art.priors.registry`): the cache keys
of the built-in priors are those of the artifacts trained before the registry, the pipeline asks the entries
instead of naming attacks, and an attack searching a new kind of prior is added through the registries alone."""
from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import mi_art as M
from mi_art.attacks import AttackOutcome, AttackSpec, get_attack, register_attack, unregister_attack
from mi_art.attacks.search import point_search
from mi_art.data import load_dataset
from mi_art.evaluations import experiment
from mi_art.evaluations.cache import ArtifactCache, config_key
from mi_art.evaluations.cli import main  # before the plug-in is registered: its choices are read at each use
from mi_art.priors import PriorSpec, get_prior, register_prior, unregister_prior

#: config_key of each prior's cache key for three configs on digits, computed with the Workbench before the
#: priors were registry entries (Workbench._prior_key, now Workbench.key): a cached prior must still be found.
PINNED_KEYS = {
    ("default", "gmi-prior"): "e3b04115ffc691f9",
    ("default", "kedmi-prior"): "ecfd2f9d04e9482d",
    ("default", "plgmi-prior"): "2c4cf366017da2c5",
    ("default", "surrogate0"): "434bbd2c4cb7bfc1",
    ("kedmi-none", "gmi-prior"): "e3b04115ffc691f9",
    ("kedmi-none", "kedmi-prior"): "ddbb76c048d5300a",
    ("kedmi-none", "plgmi-prior"): "2c4cf366017da2c5",
    ("kedmi-none", "surrogate0"): "434bbd2c4cb7bfc1",
    ("sized", "gmi-prior"): "b8aec6443b451412",
    ("sized", "kedmi-prior"): "7b246822f1fbaf45",
    ("sized", "plgmi-prior"): "4198a02f722875f9",
    ("sized", "surrogate0"): "b452c3c6c8fbeb40",
}
CONFIGS = {"default": {}, "kedmi-none": {"kedmi_init": "none"},
           "sized": {"gmi_steps": 7, "kedmi_steps": 5, "plgmi_steps": 9, "gan_width": 16, "seed": 3,
                     "gan_augment": "flip"}}


@pytest.fixture(scope="module")
def digits_data():
    return load_dataset("digits")


def test_every_prior_keeps_the_cache_key_of_its_artifacts_made_before_the_registry(digits_data):
    found = {}
    for name, changes in CONFIGS.items():
        bench = experiment.Workbench(experiment.ExperimentConfig(**changes), data=digits_data)
        for kind in ("gmi-prior", "kedmi-prior", "plgmi-prior"):
            found[(name, kind)] = config_key(bench.key(kind))
        found[(name, "surrogate0")] = config_key(bench.key("surrogate", index=0))
    assert found == PINNED_KEYS


def test_the_registries_name_the_valid_keys_and_refuse_a_taken_name():
    with pytest.raises(ValueError, match="unknown attack 'nope'; valid attacks: gmi, kedmi, vmi, plgmi, miface, "
                                         "brepmi"):
        get_attack("nope")
    with pytest.raises(ValueError, match="unknown prior 'nope'; valid priors: gmi, kedmi, plgmi"):
        get_prior("nope")
    with pytest.raises(ValueError, match="'gmi' is already registered"):
        register_attack(AttackSpec.of("gmi", M.VMI))
    with pytest.raises(ValueError, match="needs a run or a GAN attack class"):
        register_attack(AttackSpec("lonely", "Lonely"))
    # what the pipeline asks of the entries instead of their names
    assert not get_attack("miface").variants and get_attack("miface").access_levels == ("white-box",)
    assert not get_attack("brepmi").variants and get_attack("brepmi").prior == "gmi"
    assert get_attack("kedmi").prior == "kedmi" and get_attack("kedmi").needs_discriminator
    assert list(M.ATTACKS) == ["gmi", "kedmi", "vmi", "plgmi"]  # the GAN attacks' classes, as before


def test_the_workbench_trains_a_prior_with_its_entrys_train(digits_data, tmp_path, monkeypatch):
    """Workbench.prior calls the entry's own train with its arguments, and caches under its key."""
    config = experiment.ExperimentConfig(gmi_steps=1, gan_width=8)
    bench = experiment.Workbench(config, ArtifactCache(tmp_path), data=digits_data)
    spec, calls = get_prior("gmi"), []
    real = spec.train
    monkeypatch.setattr(spec, "train", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    generator, critic = bench.prior("gmi")
    assert calls and calls[0]["steps"] == 1 and calls[0]["width"] == 8
    assert isinstance(critic, M.Critic) and bench.cache.path("gmi-prior", bench.key("gmi-prior")).is_file()
    bench.prior("gmi")
    assert len(calls) == 1  # the second time from the cache


# --------------------------------------------------------------------------- a plug-in attack and prior


class NoiseGenerator(nn.Module):
    """A generator whose images are a fixed random linear map of the code, squashed into [0, 1]."""

    def __init__(self, size: int, channels: int, latent_dim: int = 16) -> None:
        super().__init__()
        self.latent_dim, self.shape = latent_dim, (channels, size, size)
        self.map = nn.Linear(latent_dim, channels * size * size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.map(z)).view(len(z), *self.shape)


def train_noise_prior(public_x, *, seed: int = 0, **unused):
    """Nothing to learn: the map is drawn from ``seed``."""
    torch.manual_seed(seed)
    channels, size = public_x.shape[1], public_x.shape[2]
    return NoiseGenerator(size, channels), None


class NoiseSearch(M.GANInversionAttack):
    """GMI's point search on the noise prior, with the identity loss alone."""

    needs_discriminator = False
    prior = "noise"

    def _run(self, labels):
        labels = labels.repeat_interleave(self.n_reconstructions)
        bar = self._progress(len(labels))
        try:
            return point_search(self.generator, labels,
                                lambda x, y, it: self._objective(x, y, x.new_zeros(len(x)), it),
                                latent_dim=self._latent_dim, iterations=self.iterations,
                                learning_rate=self.learning_rate, momentum=0.9, batch_size=self.batch_size, bar=bar)
        finally:
            bar.close()


NOISE_PRIOR = PriorSpec(
    "noise", per_target=False, train=train_noise_prior,
    arguments=lambda bench, target: ((bench.data.public.x,), {"seed": bench.config.seed}),
    build=lambda bench: {"g": NoiseGenerator(bench.data.input_shape[1], bench.data.input_shape[0])},
    key=lambda bench, target: {"data": bench.key("data"), "seed": bench.config.seed, "noise": 1},
    steps_field="gmi_steps")


@pytest.fixture
def noise_attack():
    register_prior(NOISE_PRIOR)
    register_attack(AttackSpec.of("noise-search", NoiseSearch))
    yield
    unregister_attack("noise-search")
    unregister_prior("noise")


def test_an_attack_on_a_new_kind_of_prior_runs_through_the_registries_alone(noise_attack, digits_data, tmp_path):
    config = experiment.ExperimentConfig(attack="noise-search", variant="baseline", target_epochs=1, judge_epochs=1,
                                         iterations=3, n_reconstructions=1, identities=[0, 1])
    bench = experiment.Workbench(config, ArtifactCache(tmp_path), data=digits_data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # weak one-epoch models: said, and beside the point here
        result = experiment.run_attack(bench)
    assert result["attack"] == "noise-search" and result["reconstructions"].shape == (2, 1, 8, 8)
    assert result["prior"]["name"] == "noise" and result["prior"]["steps"] == config.gmi_steps
    assert bench.cache.path("noise-prior", bench.key("noise-prior")).is_file()
    assert np.isfinite(result["acc@1"])


def test_the_new_attack_runs_from_the_command_line_and_a_grid_file(noise_attack, tmp_path):
    tiny = ["--iterations", "2", "--n-reconstructions", "1", "--target-epochs", "1", "--judge-epochs", "1",
            "--identities", "0,1", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    result = CliRunner().invoke(main, ["attack", "--attack", "noise-search", "--variant", "baseline",
                                       "--out", str(tmp_path / "run"), *tiny])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["attack"] == "noise-search"
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"datasets": ["digits"], "defenses": [{"name": "none"}], "attacks": ["noise-search"],
                                "variants": ["baseline"], "seeds": [0], "target_epochs": 1, "judge_epochs": 1,
                                "iterations": 2, "n_reconstructions": 1, "identities": [0, 1]}))
    done = CliRunner().invoke(main, ["evaluate", "--config", str(grid), "--out", str(tmp_path / "grid"),
                                     "--cache-dir", str(tmp_path / "cache"), "--threads", "1", "--no-progress"])
    assert done.exit_code == 0, done.output + repr(done.exception)
    rows = json.loads((tmp_path / "grid" / "results.json").read_text())
    assert [(r["attack"], r["variant"]) for r in rows] == [("noise-search", "baseline")]


def _grey_run(job):
    """An attack of its own shape: one mid-grey image per identity."""
    n = len(job.identities)
    grey = np.full((n, *job.bench.data.input_shape), 0.5, dtype=np.float32)
    return AttackOutcome(grey, job.identities.copy(), np.zeros(n, dtype=np.int64), {"grey": True})


@pytest.fixture
def grey_attack():
    register_attack(AttackSpec("grey", "Grey", variants=False, access_levels=("white-box",),
                               access_note="looks at nothing", run=_grey_run, iterations_field="miface_iterations"))
    yield
    unregister_attack("grey")


def test_the_pipeline_asks_an_attacks_entry_for_its_variants_access_and_run(grey_attack, digits_data, tmp_path):
    """What was special-cased for MIFace and BREP-MI by name is each entry's: a baseline-only attack refuses a
    variant and an access level it lacks in its own words, and runs by its own ``run``."""
    with pytest.raises(ValueError, match="Grey has no variants .*got variant='lomma'"):
        experiment.ExperimentConfig(attack="grey").validate()
    with pytest.raises(ValueError, match="Grey looks at nothing: it has no access='black-box' form"):
        experiment.ExperimentConfig(attack="grey", variant="baseline", access="black-box").validate()
    config = experiment.ExperimentConfig(attack="grey", variant="baseline", target_epochs=1, judge_epochs=1,
                                         miface_iterations=7, identities=[0, 1])
    assert experiment.query_budget_problem(dataclasses.replace(config, max_queries=1), 100) is None
    bench = experiment.Workbench(config, ArtifactCache(tmp_path), data=digits_data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = experiment.run_attack(bench)
    assert result["grey"] and result["iterations"] == 7 and "feature_norms" not in result
    np.testing.assert_allclose(result["reconstructions"], 0.5)
