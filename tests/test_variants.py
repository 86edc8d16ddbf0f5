"""Attack variants by name (:mod:`mi_art.variants`): the names, their one error, the translation into an attack's
keyword arguments (pinned against what ``run_attack`` passed before the translation moved into the library), and
the "align" improvement (AlignMI's gradient alignment: the identity loss averaged over random geometric views)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import mi_art as M
import mi_art.attacks.base as base
import mi_art.variants as variants
from mi_art.quality import WeakModelWarning
from mi_art.views import alignment_views

PAPER_VARIANTS = ["baseline", "lom", "ma", "lomma"]
ALL_VARIANTS = PAPER_VARIANTS + ["align", "lom+align", "ma+align", "lomma+align"]
VALID = r"valid variants: baseline, lom, ma, lomma, align, lom\+align, ma\+align, lomma\+align"


# --------------------------------------------------------------------------- names


def test_variant_names_are_the_compositions_of_the_improvements():
    assert list(M.VARIANTS) == ALL_VARIANTS
    assert list(variants.IMPROVEMENTS) == ["lom", "ma", "align"]
    assert [sorted(M.parse_variant(v).improvements) for v in ALL_VARIANTS] == [
        [], ["lom"], ["ma"], ["lom", "ma"], ["align"], ["align", "lom"], ["align", "ma"], ["align", "lom", "ma"]]
    assert all(M.parse_variant(v).name == v for v in ALL_VARIANTS)
    assert "lomma+align" in M.VARIANTS and "align+lomma" not in M.VARIANTS


@pytest.mark.parametrize("bad, why", [
    ("lomma+align+align", "names 'align' twice"),
    ("lomma+lom", "names 'lom' twice"),
    ("foo", "'foo' is not an improvement"),
    ("lomma+foo", "'foo' is not an improvement"),
    ("LOMMA", "'LOMMA' is not an improvement"),
    ("", "'' is not an improvement"),
    ("align+lomma", "is spelt 'lomma\\+align'"),
    ("lom+ma", "is spelt 'lomma'"),
    ("baseline+align", "'baseline' is the variant without improvements"),
    (None, "variant must be a name"),
])
def test_a_bad_variant_name_gets_one_error_listing_the_valid_names(bad, why):
    with pytest.raises(ValueError, match=f"{why}.*{VALID}$"):
        M.parse_variant(bad)
    with pytest.raises(ValueError, match=VALID):
        M.attack_kwargs(bad, p_reg=torch.zeros(3), surrogates=[])


def test_the_config_grid_and_cli_take_every_variant_and_refuse_others():
    from click.testing import CliRunner

    from mi_art.evaluations.cli import main
    from mi_art.evaluations.config_rules import needs_gmi_prior
    from mi_art.evaluations.experiment import ExperimentConfig
    from mi_art.evaluations.grid import Grid, GridError

    for v in ALL_VARIANTS:
        ExperimentConfig(variant=v).validate()
    with pytest.raises(ValueError, match="variant must be one of .*'lomma\\+align', got 'lomma\\+align\\+align'"):
        ExperimentConfig(variant="lomma+align+align").validate()
    with pytest.raises(ValueError, match="has no variants .*got variant='align'"):
        ExperimentConfig(attack="miface", variant="align").validate()
    with pytest.raises(ValueError, match="'ma\\+align' needs at least one surrogate"):
        ExperimentConfig(variant="ma+align", surrogate_archs=()).validate()
    assert needs_gmi_prior(ExperimentConfig(attack="kedmi", kedmi_init="none", variant="ma+align"))
    assert not needs_gmi_prior(ExperimentConfig(attack="kedmi", kedmi_init="none", variant="lom+align"))
    Grid.from_dict({"attacks": ["gmi"], "variants": ["lomma+align", "align"], "seeds": [0]}).validate()
    with pytest.raises(GridError, match="unknown variant 'lomma\\+align\\+align'"):
        Grid.from_dict({"attacks": ["gmi"], "variants": ["lomma+align+align"], "seeds": [0]}).validate()
    refused = CliRunner().invoke(main, ["attack", "--variant", "align+lomma"])
    assert refused.exit_code == 2 and "'lomma+align'" in refused.output


def test_the_benchmark_names_its_align_rows_by_the_variant(monkeypatch):
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.modules.pop("attack_variants", None)
    import attack_variants

    rows = {name: (attack, variant) for attack, variant, name in attack_variants.OPT_IN_METHODS}
    assert rows["GMI+LOMMA+ALIGN"] == ("gmi", "lomma+align") and rows["GMI+ALIGN"] == ("gmi", "align")
    assert "GMI+LOMMA+ALIGN" not in {name for *_, name in attack_variants.METHODS}  # opt-in: 30x the cost


# --------------------------------------------------------------------------- the translation


def _before(variant: str, access: str, regularise: bool, surrogates: list, made_p_reg, made_surrogate_p_reg,
            search_views=None) -> dict:
    """What ``run_attack`` passed to the attack classes before the translation moved into mi_art.variants (its
    variant branch as it was, on models already made; ``surrogates``: the checked ones at white-box, the learnt
    ones below)."""
    use_lom, use_ma = variant in ("lom", "lomma"), variant in ("ma", "lomma")
    surrogate_p_reg = None
    if access != "white-box":
        surrogates = surrogates if use_ma else surrogates[:1]
        p_reg = made_p_reg if use_lom else None
        if use_lom and use_ma and regularise and len(surrogates) > 1:
            surrogate_p_reg = made_surrogate_p_reg[1:len(surrogates)]
    else:
        surrogates = surrogates if use_ma else []
        if use_ma and use_lom and regularise:
            surrogate_p_reg = made_surrogate_p_reg[:len(surrogates)]
        p_reg = made_p_reg if use_lom else None
    kwargs = dict(p_reg=p_reg, surrogates=surrogates, surrogate_p_reg=surrogate_p_reg, access=access)
    if search_views is not None:
        kwargs["views"] = search_views
    if use_lom:
        kwargs["identity_loss"] = "logit"
    return kwargs


def _now(variant: str, access: str, regularise: bool, surrogates: list, made_p_reg, made_surrogate_p_reg,
         search_views=None) -> dict:
    """What ``run_attack`` passes now: it makes what the variant needs, mi_art.attack_kwargs translates."""
    parsed = M.parse_variant(variant)
    use_lom, use_ma = "lom" in parsed, "ma" in parsed
    surrogate_p_reg = None
    if access != "white-box":
        surrogates = surrogates if use_ma else surrogates[:1]
        p_reg = made_p_reg if use_lom else None
        if use_lom and use_ma and regularise and len(surrogates) > 1:
            surrogate_p_reg = made_surrogate_p_reg[1:len(surrogates)]
    else:
        surrogates = surrogates if use_ma else []
        if use_ma and use_lom and regularise:
            surrogate_p_reg = made_surrogate_p_reg[:len(surrogates)]
        p_reg = made_p_reg if use_lom else None
    return M.attack_kwargs(parsed, access=access, p_reg=p_reg, surrogates=surrogates, surrogate_p_reg=surrogate_p_reg,
                           views=search_views)


@pytest.mark.parametrize("variant", PAPER_VARIANTS)
def test_the_paper_variants_translate_as_run_attack_did(variant):
    cases = [(access, n, regularise, views) for access in ("white-box", "black-box", "label-only")
             for n in (0, 1, 3) if n or access == "white-box"  # below white-box the config asks for a surrogate
             for regularise in (True, False) for views in (None, 4)]
    for access, n, regularise, views in cases:
        surrogates = [f"surrogate {i}" for i in range(n)]
        made = ("p_reg", [f"p_reg of surrogate {i}" for i in range(n)])
        assert _now(variant, access, regularise, surrogates, *made, views) == _before(
            variant, access, regularise, surrogates, *made, views), (access, n, regularise, views)


def _same(a, b) -> bool:
    from mi_art.evaluations.experiment import model_fingerprint

    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, torch.nn.Module):
        return isinstance(b, torch.nn.Module) and model_fingerprint(a) == model_fingerprint(b)
    return a == b


class _Recorded(Exception):
    pass


@pytest.fixture(scope="module")
def pipeline(digits, tmp_path_factory):
    """run_attack on tiny digits artifacts, stopped where it builds the attack: returns ``run(variant, **config)``
    -> (the keyword arguments given to the attack, the workbench)."""
    import mi_art.evaluations.experiment as experiment
    from mi_art.evaluations.cache import ArtifactCache

    cache = ArtifactCache(tmp_path_factory.mktemp("variants-cache"))
    seen = []

    class Spy:
        prior = "gmi"

        def __init__(self, estimator, generator, discriminator, **kwargs):
            seen.append(kwargs)
            raise _Recorded

    def run(variant: str, **changes):
        config = experiment.ExperimentConfig(variant=variant, target_epochs=1, judge_epochs=1, gmi_steps=2,
                                             surrogate_steps=2, iterations=2, n_reconstructions=1, gan_width=16,
                                             **changes)
        bench = experiment.Workbench(config, cache, data=digits)
        real = M.ATTACKS["gmi"]
        M.ATTACKS["gmi"] = Spy
        try:
            with pytest.raises(_Recorded), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # weak tiny models: said, and beside the point here
                experiment.run_attack(bench)
        finally:
            M.ATTACKS["gmi"] = real
        return seen.pop(), bench

    return run


@pytest.mark.parametrize("access", ["white-box", "black-box"])
def test_run_attack_gives_the_attack_what_it_gave_before_the_translation(pipeline, access):
    """End to end: each paper variant's arguments from run_attack are those its former branch made from the
    same cached artifacts."""
    for variant in PAPER_VARIANTS:
        got, bench = pipeline(variant, access=access)
        target = bench.target()
        if access == "white-box":
            made = bench.checked_surrogates(target)[0]
            references = [bench.surrogate_p_reg(target, i, s) for i, s in enumerate(made)]
            p_reg = bench.p_reg(target)
        else:
            made = bench.answer_surrogates(target)[0]
            references = [bench.surrogate_p_reg(target, i, s) for i, s in enumerate(made)]
            p_reg = references[0]
        expected = _before(variant, access, True, made, p_reg, references)
        rest = {k: got.pop(k) for k in ("iterations", "n_reconstructions", "n_candidates", "batch_size", "seed",
                                        "verbose")}
        assert rest == dict(iterations=2, n_reconstructions=1, n_candidates=None, batch_size=60, seed=0,
                            verbose=False)
        assert sorted(got) == sorted(expected), variant
        assert all(_same(got[k], expected[k]) for k in expected), variant


def test_run_attack_turns_align_into_views(pipeline):
    got, _ = pipeline("lomma+align")
    assert got["views"] == M.ALIGN_VIEWS == 30 and got["view_transform"] == "alignmi"
    assert got["identity_loss"] == "logit" and len(got["surrogates"]) == 2 and len(got["surrogate_p_reg"]) == 2
    got, _ = pipeline("align", search_views=3)  # the config's search_views sets K
    assert got["views"] == 3 and got["view_transform"] == "alignmi" and got["surrogates"] == []
    got, _ = pipeline("lomma", search_views=3)  # without align: PLG-MI's views, as before
    assert got["views"] == 3 and "view_transform" not in got


def test_align_sets_the_views_and_their_transform():
    kwargs = M.attack_kwargs("align")
    assert kwargs == dict(p_reg=None, surrogates=[], surrogate_p_reg=None, access="white-box", views=30,
                          view_transform="alignmi")
    assert M.attack_kwargs("ma+align", surrogates=["s"], views=7)["views"] == 7
    assert M.attack_kwargs("lomma", p_reg="p", surrogates=["s"], views=7)["views"] == 7


def test_the_translation_names_what_a_variant_lacks():
    with pytest.raises(ValueError, match="variant 'lom\\+align' needs p_reg \\(for 'lom'\\).*estimate_p_reg"):
        M.attack_kwargs("lom+align")
    with pytest.raises(ValueError, match="variant 'ma' needs surrogates \\(for 'ma'\\)"):
        M.attack_kwargs("ma", p_reg="p")
    with pytest.raises(ValueError, match="variant 'align' at access='black-box' needs surrogates"):
        M.attack_kwargs("align", access="black-box", surrogates=[])
    with pytest.raises(ValueError, match="access must be one of"):
        M.attack_kwargs("align", access="grey-box")
    with pytest.raises(ValueError, match="views must be an integer"):
        M.attack_kwargs("align", views=-1)
    with pytest.raises(ValueError, match="surrogates must be a list of models"):
        M.attack_kwargs("ma", surrogates=torch.nn.Linear(2, 2))


def test_a_registered_improvement_joins_every_variant_name():
    def louder(kwargs, inputs):
        kwargs["id_weight"] = 200.0

    improvement = variants.Improvement("mad", "identity loss", "a doubled identity weight", louder)
    variants.register_improvement(improvement)
    try:
        assert len(M.VARIANTS) == 16 and "lomma+align+mad" in M.VARIANTS
        assert M.parse_variant("lom+mad").improvements == {"lom", "mad"}  # "lom+ma" inside it is not "lomma"
        assert M.attack_kwargs("mad")["id_weight"] == 200.0
        with pytest.raises(ValueError, match="already registered"):
            variants.register_improvement(variants.Improvement("mad", "search", "", louder))
    finally:
        variants.unregister_improvement("mad")
    assert list(M.VARIANTS) == ALL_VARIANTS
    with pytest.raises(ValueError, match="unknown improvement 'mad'; valid improvements: lom, ma, align"):
        variants.get_improvement("mad")
    with pytest.raises(ValueError, match="improvement.part must be one of"):
        variants.register_improvement(variants.Improvement("odd", "prior", "", louder))
    with pytest.raises(ValueError, match="other than 'baseline' and 'lomma'"):
        variants.register_improvement(variants.Improvement("lomma", "search", "", louder))


# --------------------------------------------------------------------------- gradient alignment


def _latent_gradient(attack, generator, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of the attack's search objective (no prior term) with respect to the latent codes ``z``."""
    if attack._identity is None:
        attack._identity = attack._new_identity(attack._target_view())
    z = z.clone().requires_grad_(True)
    loss = attack._objective(generator(z), y, torch.zeros(len(z)))
    return torch.autograd.grad(loss, z)[0]


def test_alignment_averages_the_latent_gradient_over_its_views(target_clf, gmi_prior):
    """The gradient under "align" is the mean of the gradients under each of its 30 views (the same random draws,
    one view at a time), and not the gradient under one view."""
    generator, critic = gmi_prior
    generator.eval(), target_clf.model.eval()  # no dropout: the only random draws are the views'
    torch.manual_seed(0)
    z, y = torch.empty(4, 100).uniform_(-1, 1), torch.tensor([0, 1, 2, 3])
    aligned = M.GMI(target_clf, generator, critic, verbose=False, **M.attack_kwargs("align"))
    assert aligned.views == 30
    torch.manual_seed(1)
    averaged = _latent_gradient(aligned, generator, z, y)

    one_view = M.GMI(target_clf, generator, critic, verbose=False, **{**M.attack_kwargs("align"), "views": 1})
    torch.manual_seed(1)  # the 30 views one after the other: the same draws as the averaged objective's
    per_view = torch.stack([_latent_gradient(one_view, generator, z, y) for _ in range(30)])
    mean = per_view.mean(0)
    assert torch.allclose(averaged, mean, atol=1e-5 * float(mean.abs().max()))
    assert not torch.allclose(averaged, per_view[0], rtol=0.05)  # one view is not the alignment
    assert per_view.std(0).norm() > 0.1 * mean.norm()  # the views disagree: the alignment follows their mean


def test_alignment_views_are_geometric_and_the_attack_uses_them(target_clf, gmi_prior, monkeypatch):
    torch.manual_seed(0)
    flat = torch.full((16, 1, 8, 8), 0.4)
    assert torch.allclose(alignment_views(flat), flat, atol=1e-6)  # no colour change
    assert not all(torch.allclose(M.priors.random_views(flat), flat) for _ in range(5))  # PLG-MI's jitter
    ramp = torch.linspace(0, 1, 8).repeat(16, 1, 8, 1)
    views = alignment_views(ramp.requires_grad_(True))
    assert views.shape == ramp.shape and not torch.allclose(views, ramp)
    views.sum().backward()
    assert ramp.grad is not None  # differentiable, as the search needs

    calls = {"alignmi": 0, "plgmi": 0}
    real_align, real_plgmi = base.alignment_views, base.random_views
    monkeypatch.setattr(base, "alignment_views", lambda x: calls.__setitem__("alignmi", calls["alignmi"] + 1)
                        or real_align(x))
    monkeypatch.setattr(base, "random_views", lambda x: calls.__setitem__("plgmi", calls["plgmi"] + 1)
                        or real_plgmi(x))
    generator, critic = gmi_prior
    M.GMI(target_clf, generator, critic, iterations=2, n_reconstructions=1, verbose=False, seed=0,
          **{**M.attack_kwargs("align"), "views": 3}).infer(None, np.array([0]))
    assert calls == {"alignmi": 6, "plgmi": 0}
    with pytest.raises(ValueError, match="view_transform must be one of 'plgmi', 'alignmi', got 'taa'"):
        M.GMI(target_clf, generator, critic, view_transform="taa")


class _Bench:
    """A workbench that hands out labels for the models variant_models asks it for, and records each request."""

    def __init__(self, access: str):
        from types import SimpleNamespace

        self.config = SimpleNamespace(access=access, max_queries=500, regularise_surrogates=True, feature_layer=None)
        self.asked = []

    def _ask(self, what, value):
        self.asked.append(what)
        return value

    def api(self, target):
        return self._ask("api", "the target's API")

    def answer_surrogates(self, target):
        return self._ask("answer_surrogates", (["learnt 0", "learnt 1"], [10, 20]))

    def surrogate_report(self, target, surrogates):
        return self._ask("surrogate_report", [{"arch": "cnn", "agreement_public_heldout": a} for a in (0.9, 0.3)])

    def surrogate_p_reg(self, target, index, surrogate, layer=None):
        return self._ask("surrogate_p_reg", f"p_reg of {surrogate} ({index})")

    def checked_surrogates(self, target):
        report = [{"used": True}, {"used": False}, {"used": True}]
        return self._ask("checked_surrogates", (["distilled 0", "distilled 2"], report, ["surrogate 1 left out"]))

    def p_reg(self, target):
        return self._ask("p_reg", "p_reg of the target")


def test_variant_models_makes_only_what_the_variant_needs_at_white_box():
    from mi_art.evaluations.experiment import variant_models

    bench = _Bench("white-box")
    models = variant_models(bench, "estimator", "target", M.parse_variant("baseline"))
    assert bench.asked == [] and models.estimator == "estimator" and models.surrogates == []
    assert models.p_reg is None and models.surrogate_p_reg is None and models.record == {} and models.notes == []
    models = variant_models(bench, "estimator", "target", M.parse_variant("lomma"))
    assert models.estimator == "estimator" and models.surrogates == ["distilled 0", "distilled 2"]
    assert models.p_reg == "p_reg of the target"
    # each used surrogate's own p_reg, by its index among all the surrogates
    assert models.surrogate_p_reg == ["p_reg of distilled 0 (0)", "p_reg of distilled 2 (2)"]
    assert [row["used"] for row in models.record["surrogates"]] == [True, False, True]
    assert models.notes == ["surrogate 1 left out"]


def test_variant_models_inverts_the_learnt_surrogates_below_white_box():
    from mi_art.evaluations.experiment import variant_models

    bench = _Bench("black-box")
    models = variant_models(bench, "estimator", "target", M.parse_variant("lom"))
    assert models.estimator == "the target's API" and models.surrogates == ["learnt 0"]
    assert models.p_reg == "p_reg of learnt 0 (0)" and models.surrogate_p_reg is None
    assert models.record["access"] == "black-box" and models.record["query_budget"] == 500
    assert [(row["queries"], row["used"]) for row in models.record["surrogates"]] == [(10, True), (20, False)]
    assert models.notes == []  # the weak surrogate is not used
    with pytest.warns(WeakModelWarning):
        models = variant_models(bench, "estimator", "target", M.parse_variant("lomma"))
    assert models.surrogates == ["learnt 0", "learnt 1"] and models.surrogate_p_reg == ["p_reg of learnt 1 (1)"]
    assert len(models.notes) == 1 and "surrogate 1 (cnn)" in models.notes[0]


# --------------------------------------------------------------------------- p_reg's feature layer


@pytest.mark.parametrize("access", ["white-box", "black-box"])
def test_the_feature_layer_reaches_p_reg_and_the_attack(pipeline, access):
    """``feature_layer`` names where LOM's regulariser reads the inverted model (the target; below white-box the
    first surrogate): p_reg is that module's input, keyed apart from the penultimate one, and the attack is told."""
    got, bench = pipeline("lom", access=access, feature_layer="embed.1")
    default, _ = pipeline("lom", access=access)
    assert got["feature_layer"] == "embed.1" and "feature_layer" not in default
    width = 32 if access == "white-box" else 16  # cnn's or cnn-small's one block at 8 px, pooled to 4 x 4
    assert got["p_reg"].numel() == width * 4 * 4 != default["p_reg"].numel()
    target = bench.target()
    keys = ([bench.key("p-reg", target=target, layer="embed.1"), bench.key("p-reg", target=target)]
            if access == "white-box" else
            [bench.key("p-reg", target=target, index=0, layer="embed.1"), bench.key("p-reg", target=target, index=0)])
    assert keys[0] == {**keys[1], "feature_layer": "embed.1"}


def test_a_feature_layer_the_inverted_model_lacks_is_refused_before_training(digits):
    from mi_art.evaluations import experiment as E

    with pytest.raises(ValueError, match=r"feature_layer='fc9'.*sub-modules are .*embed\.1.*'cnn', the model "
                                         r"inverted, is the configuration's target_arch"):
        E.Workbench(E.ExperimentConfig(feature_layer="fc9"), data=digits)
    with pytest.raises(ValueError, match=r"'cnn-small', the model inverted, is the configuration's "
                                         r"surrogate_archs\[0\]"):
        E.Workbench(E.ExperimentConfig(feature_layer="fc9", access="black-box", max_queries=None), data=digits)
    with pytest.raises(ValueError, match=r"feature_layer must be None \(the model's last nn.Linear\) or the name of a sub-module"):
        E.ExperimentConfig(feature_layer="").validate()


def test_a_feature_layer_without_p_reg_is_said_unused(pipeline, digits, tmp_path):
    from mi_art.evaluations import experiment as E
    from mi_art.evaluations.cache import ArtifactCache

    got, _ = pipeline("ma", feature_layer="embed.1")
    assert "feature_layer" not in got and got["p_reg"] is None
    config = E.ExperimentConfig(variant="baseline", feature_layer="embed.1", target_epochs=1, judge_epochs=1,
                                gmi_steps=2, iterations=2, n_reconstructions=1, gan_width=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = E.run_attack(E.Workbench(config, ArtifactCache(tmp_path), data=digits))
    assert record["feature_layer"] == "embed.1"
    assert "feature_layer='embed.1' was not used: the variant 'baseline' has no p_reg" in " ".join(record["warnings"])
