"""The GAN priors (:mod:`mi_art.priors`): their training's input checks, the terms of their losses (KEDMI's entropy,
PLG-MI's pseudo-labels and max-margin term) and the notes they leave in the records."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mi_art as M
from conftest import NUM_CLASSES
from mi_art.priors import plgmi as plgmi_prior_module


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


def _generator_accuracy(generator, model, per_class=40):
    """How often ``model`` puts G(z, y) in class y."""
    torch.manual_seed(5)
    y = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    with torch.no_grad():
        return float((model(generator(torch.randn(len(y), generator.latent_dim), y)).argmax(1) == y).float().mean())


def test_plgmi_pseudo_labels_pick_each_class_most_confident_public_images():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    indices, labels = plgmi_prior_module.select_pseudo_labels(probs, top_n=2)
    assert indices.tolist() == [0, 2, 1, 3] and labels.tolist() == [0, 0, 1, 1]
    # default: the authors' 30, at most the public images per class
    _, labels = plgmi_prior_module.select_pseudo_labels(torch.rand(10, 2).softmax(1))
    assert len(labels) == 10


def test_plgmi_prior_warns_when_the_public_set_leaves_its_pseudo_labels_little_to_choose_from(target, digits):
    """Under the authors' 30 public images per class (AT&T's 10 gave no faces) the prior says so, naming the
    count; with 30 per class it is silent."""
    k = NUM_CLASSES
    few = digits.public.x[:10 * k]
    with pytest.warns(UserWarning, match=rf"{10 * k} public images for {k} classes \(10.0 per class"):
        M.train_plgmi_prior(target, few, steps=1, n_critic=1, width=8, batch_size=8, seed=0)
    assert plgmi_prior_module.few_public_images_note(30 * k, k) is None
    assert "29.0 per class" in plgmi_prior_module.few_public_images_note(29 * k, k)


def test_plgmi_discriminator_learns_the_pseudo_labels(plgmi_priors, target, digits):
    """The projection discriminator, trained on pseudo-labelled public images, scores such an image highest
    under its own pseudo-label: measured 0.61 of them after 300 steps (0.19 with the pseudo-labels shuffled;
    chance 0.2)."""
    _, disc = plgmi_priors[0.0]
    x = torch.from_numpy(digits.public.x)
    with torch.no_grad():
        probs = F.softmax(target(x), 1)
    indices, labels = plgmi_prior_module.select_pseudo_labels(probs)
    with torch.no_grad():
        scores = torch.stack([disc(x[indices], torch.full((len(indices),), k)) for k in range(NUM_CLASSES)], 1)
    assert (scores.argmax(1) == labels).float().mean() >= 0.4


def test_plgmi_margin_term_makes_each_class_generate_its_identity(plgmi_priors, target, eval_model):
    """The generator's max-margin loss against the target makes G(z, y) look like y to the target and to an
    independent judge: measured 0.41 / 0.34 with it, 0.25 / 0.23 without (chance 0.2) after 300 steps."""
    with_margin, without = (_generator_accuracy(plgmi_priors[a][0], target) for a in (0.2, 0.0))
    assert with_margin >= without + 0.08 and with_margin >= 0.33, (with_margin, without)
    assert _generator_accuracy(plgmi_priors[0.2][0], eval_model) > _generator_accuracy(plgmi_priors[0.0][0],
                                                                                       eval_model)


def test_plgmi_records_say_when_the_public_set_is_small(digits, tmp_path):
    """The prior's data note reaches every PLG-MI result record (through mi_art.priors.PRIORS), not only
    the training log; GMI's prior has none."""
    import dataclasses

    from mi_art.data.dataset import Split
    from mi_art.evaluations.cache import ArtifactCache
    from mi_art.evaluations.experiment import ExperimentConfig, Workbench, run_attack

    k = digits.num_classes
    small = dataclasses.replace(digits, public=Split(digits.public.x[:10 * k], digits.public.y[:10 * k]))
    config = ExperimentConfig(attack="plgmi", target_epochs=2, judge_epochs=2, gmi_steps=2, plgmi_steps=1,
                              iterations=2, n_reconstructions=1, gan_width=8, verbose=False)
    bench = Workbench(config, ArtifactCache(tmp_path), data=small)
    with pytest.warns(UserWarning, match="per class"):
        plgmi = run_attack(bench)
    gmi = run_attack(bench, attack="gmi")
    assert any(f"{10 * k} public images for {k} classes" in w for w in plgmi["warnings"]), plgmi["warnings"]
    assert not any("public images for" in w for w in gmi["warnings"]), gmi["warnings"]


def test_gmi_prior_parts(gmi_prior):
    gen, critic = gmi_prior
    assert isinstance(gen, M.Generator) and isinstance(critic, M.Critic)
    assert not gen.training and not critic.training
    with torch.no_grad():
        images = gen(torch.rand(6, gen.latent_dim) * 2 - 1)
    assert images.shape == (6, 1, 8, 8)


def test_gmi_critic_learns_to_prefer_real_digits_to_noise(gmi_prior, digits):
    """The trained critic's real-minus-noise score gap (measured ~2.0) against an untrained one's (~0)."""
    _, critic = gmi_prior
    torch.manual_seed(0)
    untrained = M.Critic(8, 1, width=16).eval()
    real, noise = torch.from_numpy(digits.public.x[:200]), torch.rand(200, 1, 8, 8)
    with torch.no_grad():
        gap = (critic(real).mean() - critic(noise).mean()).item()
        gap0 = (untrained(real).mean() - untrained(noise).mean()).item()
    assert gap > 1.0 and gap > gap0 + 1.0, (gap, gap0)


def test_kedmi_prior_learns_the_target_labels(kedmi_prior, target, digits):
    gen, disc = kedmi_prior
    assert isinstance(disc, M.KEDMIDiscriminator) and disc.num_classes == NUM_CLASSES
    x = torch.from_numpy(digits.public.x[:256])
    with torch.no_grad():
        t_pred = target(x).argmax(1)
        agree = (disc(x).argmax(1) == t_pred).float().mean().item()
    majority = torch.bincount(t_pred, minlength=NUM_CLASSES).max().item() / len(t_pred)
    assert agree > majority + 0.2, (agree, majority)  # the K logits follow the target, not its most common class


def _public_judge(digits):
    """A classifier of the public digits 5-9 (labels 0-4 here), independent of every prior."""
    torch.manual_seed(5)
    model = M.make_classifier("cnn", 1, NUM_CLASSES, 8)
    return M.train_classifier(model, digits.public.x, digits.public.y, epochs=6, augment="none", seed=5)


def _fid_on(judge, a, b):
    from mi_art.evaluations.metrics import fid_eval_features

    return fid_eval_features(judge, a, b)


def test_kedmi_prior_from_scratch_generates_digits_not_noise(kedmi_prior, digits):
    """On 900 public 8x8 digits, 300 generator steps from scratch give samples that a public-data
    classifier's features place far closer to real digits than noise (measured: FID 16 against 64)."""
    gen, _ = kedmi_prior
    judge = _public_judge(digits)
    torch.manual_seed(0)
    with torch.no_grad():
        samples = gen(torch.randn(400, gen.latent_dim).clamp(-1, 1)).numpy()
    noise = np.random.default_rng(0).random((400, 1, 8, 8), dtype=np.float32)
    fid_samples, fid_noise = _fid_on(judge, samples, digits.public.x), _fid_on(judge, noise, digits.public.x)
    assert fid_samples < 0.4 * fid_noise, (fid_samples, fid_noise)


def test_kedmi_prior_warm_start_copies_the_generator(gmi_prior, target, digits):
    gen, _ = gmi_prior
    with pytest.raises(ValueError, match="init_generator"):
        M.train_kedmi_prior(target, digits.public.x[:64], steps=1, width=8, init_generator=gen)
    warm, _ = M.train_kedmi_prior(target, digits.public.x[:64], steps=1, n_critic=1, width=16, lr=1e-12,
                                  init_generator=gen, seed=0)
    trained = dict(gen.named_parameters())
    for name, p in warm.named_parameters():  # a lr of 1e-12 changes no weight (BatchNorm statistics do move)
        torch.testing.assert_close(p, trained[name], atol=1e-6, rtol=1e-6)


def test_kedmi_generator_is_updated_once_per_n_critic_discriminator_steps(target, digits, monkeypatch):
    calls = {"g": 0, "d": 0}
    real_step = torch.optim.Adam.step

    def counting_step(self, *args, **kwargs):
        first = self.param_groups[0]["params"][0]  # G starts with its latent projection, D with a convolution
        calls["g" if first.dim() == 2 else "d"] += 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    M.train_kedmi_prior(target, digits.public.x[:64], steps=3, n_critic=4, width=8, seed=0)
    assert calls == {"g": 3, "d": 12}


def test_prior_training_rejects_bad_steps(digits, target):
    with pytest.raises(ValueError, match="steps"):
        M.train_gmi_prior(digits.public.x[:8], steps=0)
    with pytest.raises(ValueError, match="steps"):
        M.train_kedmi_prior(target, digits.public.x[:8], steps=0)


@pytest.mark.parametrize("which", ["gmi", "kedmi"])
def test_a_prior_whose_loss_becomes_nan_stops_with_a_clear_error(digits, which, monkeypatch):
    """The GAN priors read their losses through check_finite_at: a critic that answers NaN stops the
    training at its first step, with the loss named."""
    from mi_art.priors import Critic, KEDMIDiscriminator
    from mi_art.validation import NonFiniteError

    public = digits.public.x[:64]
    if which == "gmi":
        original = Critic.forward
        monkeypatch.setattr(Critic, "forward", lambda self, x: original(self, x) * float("nan"))
        with pytest.raises(NonFiniteError, match="WGAN-GP critic's loss"):
            M.train_gmi_prior(public, steps=3, batch_size=16)
    else:
        original = KEDMIDiscriminator.forward
        monkeypatch.setattr(KEDMIDiscriminator, "forward", lambda self, x, return_features=False: (
            tuple(t * float("nan") for t in original(self, x, True)) if return_features
            else original(self, x) * float("nan")))
        target = M.make_classifier("mlp", 1, NUM_CLASSES, 8).eval()
        with pytest.raises(NonFiniteError, match="KEDMI discriminator's loss"):
            M.train_kedmi_prior(target, public, steps=3, batch_size=16)


def _pinned_priors():
    """KEDMI's and PLG-MI's GANs trained a few steps from fixed seeds on random images (warm-started or not, with
    augmentation, entropy and adversarial terms, top_n pseudo-labels), each summarised by its weights' sums, its
    warnings, whether the target's parameters are left as they were and whether a gradient reached them."""
    import warnings

    from torch import nn

    def target():
        torch.manual_seed(0)
        return nn.Sequential(M.make_classifier("cnn", 1, 4, 8), nn.Identity()).eval()

    rng = np.random.default_rng(0)
    public = rng.random((24, 1, 8, 8), dtype=np.float32)

    def weights(*modules):
        return [{k: [float(v.float().sum()), float(v.float().abs().sum())] for k, v in m.state_dict().items()}
                for m in modules]

    torch.manual_seed(5)
    warm = M.priors.networks.Generator(8, 1, 16, 8)
    tiny = dict(steps=3, n_critic=2, batch_size=6, width=8, latent_dim=16, seed=0)
    out = {}
    runs = {
        "kedmi": lambda t: M.train_kedmi_prior(t, public, augment="shift", **tiny),
        "kedmi, warm, weights": lambda t: M.train_kedmi_prior(t, public, init_generator=warm, entropy_weight=0.5,
                                                             adversarial_weight=0.0, **tiny),
        "plgmi": lambda t: M.train_plgmi_prior(t, public, alpha=0.5, **tiny),
        "plgmi, warm, top_n": lambda t: M.train_plgmi_prior(t, public, init_generator=warm, top_n=3, **tiny),
    }
    for name, train in runs.items():
        t = target()
        before = [p.requires_grad for p in t.parameters()]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gen, disc = train(t)
        out[name] = {"weights": weights(gen, disc), "eval": [gen.training, disc.training],
                     "warnings": [str(w.message) for w in caught],
                     "target unchanged": before == [p.requires_grad for p in t.parameters()],
                     "no gradient reached the target": all(p.grad is None for p in t.parameters())}
    return out


def test_the_kedmi_and_plgmi_priors_are_pinned():
    """train_kedmi_prior's and train_plgmi_prior's GANs on fixed seeds stay what they were before they were split
    (tests/golden/priors.json)."""
    from conftest import assert_matches_golden

    assert_matches_golden(_pinned_priors(), "priors.json")


def test_two_writers_of_one_sample_grid_do_not_trip_over_each_other(tmp_path, monkeypatch):
    """Processes sharing a cache write a prior's grid at once (the second loads the prior the first trained): each
    writes through a temporary file of its own. Run as two interleaved writers: the second starts and ends while
    the first is writing; a temporary name shared by both made the first's rename fail (FileNotFoundError)."""
    import torchvision.utils

    from mi_art.priors.sampling import save_sample_grid

    generator = torch.nn.Sequential(torch.nn.Linear(M.priors.LATENT_DIM, 3 * 4 * 4), torch.nn.Sigmoid(),
                                    torch.nn.Unflatten(1, (3, 4, 4)))
    path = tmp_path / "prior.png"
    real_save = torchvision.utils.save_image
    interleaved = []

    def save_while_another_writer_runs(tensor, fp, **kwargs):
        real_save(tensor, fp, **kwargs)
        if not interleaved:
            interleaved.append(True)
            save_sample_grid(generator, path, n=4)  # the other process, start to end, within the first's write

    monkeypatch.setattr(torchvision.utils, "save_image", save_while_another_writer_runs)
    assert save_sample_grid(generator, path, n=4) == path
    assert interleaved and path.is_file() and path.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prior.png"]
