"""Attacks through predict alone: the target behind an API (black-box scores, label-only), with a counted
query budget."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from art.estimators.classification import BlackBoxClassifier

import mi_art as M
from conftest import IMAGE_SHAPE, NUM_CLASSES
from mi_art.evaluations import attack_accuracy


class API:
    """The target behind an API: ``predict`` is all there is. Every image it answers is counted, and the
    model refuses to run anywhere else (a forward hook) or with gradients."""

    def __init__(self, model: torch.nn.Module, temperature: float = 1.0) -> None:
        self.model, self.temperature, self.images, self._inside = model, temperature, 0, False
        self._hook = model.register_forward_hook(self._guard)

    def close(self) -> None:
        """Remove the guard: the test itself may now look at the model."""
        self._hook.remove()

    def _guard(self, module, inputs, output):
        assert self._inside, "the target was run outside predict"
        assert not torch.is_grad_enabled(), "the target was run with gradients"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._inside = True
        try:
            with torch.no_grad():
                scores = torch.softmax(self.model(torch.from_numpy(x.astype(np.float32))) / self.temperature, 1)
        finally:
            self._inside = False
        self.images += len(x)
        return scores.numpy()

    def classifier(self) -> BlackBoxClassifier:
        return BlackBoxClassifier(self, IMAGE_SHAPE, NUM_CLASSES, clip_values=(0.0, 1.0))


@pytest.fixture(scope="module")
def api_target(digits):
    """A target of its own (the forward hook stays on it), trained as conftest's."""
    torch.manual_seed(0)
    model = M.make_classifier("cnn", 1, NUM_CLASSES, 8)
    return M.train_classifier(model, digits.private_train.x, digits.private_train.y, epochs=8, augment="none", seed=0)


def _distil(oracle, digits, gmi_prior, arch="cnn", steps=200):
    torch.manual_seed(3)
    return M.distill_surrogate(oracle, M.make_classifier(arch, 1, NUM_CLASSES, 8), digits.public.x,
                               generator=gmi_prior[0], steps=steps, seed=0)


@pytest.mark.parametrize("access", ["black-box", "label-only"])
def test_attack_through_predict_alone_beats_chance(access, api_target, digits, gmi_prior, eval_model, attack_labels):
    """No gradient and no forward pass but predict reaches the target (the API's hook fails the test
    otherwise); surrogates learnt from its answers carry the attack (measured: Acc@1 1.00 for both levels
    with the logit loss, chance 0.20)."""
    api = API(api_target)
    classifier = api.classifier()
    oracle = M.PredictOracle(classifier, access=access)
    try:
        surrogate = _distil(oracle, digits, gmi_prior)
        p_reg = M.estimate_p_reg(surrogate, digits.public.x)
        attack = M.GMI(classifier, *gmi_prior, surrogates=[surrogate], access=access, identity_loss="logit",
                       p_reg=p_reg, iterations=150, n_reconstructions=4, verbose=False, seed=0)
        before = api.images
        rec = attack.infer(None, attack_labels)
    finally:
        api.close()
    assert M.top1_agreement(api_target, surrogate, digits.private_test.x) >= 0.85  # measured 0.95-0.97
    assert rec.shape == (len(attack_labels) * 4,) + IMAGE_SHAPE
    assert attack.queries_ == len(rec) == api.images - before  # one query per reconstruction, counted
    acc = attack_accuracy(eval_model, rec, attack.labels_, rec_index=attack.reconstruction_index_, top_k=(1,))
    assert acc["acc@1"] >= 0.8, acc
    if access == "label-only":
        assert set(np.unique(attack.target_confidence_)) <= {0.0, 1.0}


def test_label_only_sees_labels_and_nothing_of_the_scores(api_target, digits, gmi_prior):
    """Two APIs with the same labels and different scores (a temperature) teach the same surrogate when only
    labels are seen, and different ones when scores are."""
    def weights(access, temperature):
        api = API(api_target, temperature)
        try:
            oracle = M.PredictOracle(api.classifier(), access=access)
            return torch.cat([p.flatten() for p in _distil(oracle, digits, gmi_prior, steps=30).parameters()])
        finally:
            api.close()

    assert torch.equal(weights("label-only", 1.0), weights("label-only", 5.0))
    assert not torch.allclose(weights("black-box", 1.0), weights("black-box", 5.0))


def test_the_query_budget_is_respected(api_target, digits, gmi_prior):
    api = API(api_target)
    oracle = M.PredictOracle(api.classifier(), access="black-box", max_queries=3000)
    surrogate = _distil(oracle, digits, gmi_prior, steps=200)  # 200 steps would need 25,000+ queries
    api.close()
    assert oracle.queries <= 3000 and api.images == oracle.queries
    assert oracle.queries > 3000 - 128  # it stopped when the next batch (64 public + 64 prior) did not fit
    assert isinstance(surrogate, torch.nn.Module) and not surrogate.training
    with pytest.raises(M.QueryBudgetError, match="max_queries=3000"):
        oracle.answers(torch.zeros(200, *IMAGE_SHAPE))
    assert api.images == oracle.queries  # refused before asking


def test_black_box_needs_surrogates_and_a_valid_level(api_target, gmi_prior):
    api = API(api_target)
    api.close()
    classifier = api.classifier()
    with pytest.raises(ValueError, match="surrogates"):
        M.GMI(classifier, *gmi_prior, access="black-box")
    with pytest.raises(ValueError, match="access"):
        M.GMI(classifier, *gmi_prior, access="grey-box", surrogates=[api_target])
    # white-box still needs an estimator with gradients
    from art.exceptions import EstimatorError

    with pytest.raises(EstimatorError):
        M.GMI(classifier, *gmi_prior)


def test_oracle_maps_unit_images_to_the_estimators_space():
    seen = {}

    def predict(x):
        seen["x"] = x
        return np.tile(np.array([[2.0, 1.0, 0.0]], dtype=np.float32), (len(x), 1))  # logits, not probabilities

    oracle = M.PredictOracle(BlackBoxClassifier(predict, (4, 4, 3), 3, clip_values=(0.0, 255.0)))
    assert not oracle.channels_first and oracle.unit_shape == (3, 4, 4)
    answers = oracle.answers(torch.full((2, 3, 4, 4), 0.5))
    assert seen["x"].shape == (2, 4, 4, 3) and np.allclose(seen["x"], 127.5)
    assert torch.allclose(answers.sum(1), torch.ones(2)) and answers[0, 0] > answers[0, 1]
    assert np.allclose(oracle.to_unit(seen["x"]), 0.5)
    with pytest.raises(ValueError, match="predict"):
        M.PredictOracle(object())


# --------------------------------------------------------------------------- the pipeline: config, CLI, grids


def test_workbench_attacks_an_output_defense_through_predict(digits, tmp_path):
    """A label-only GMI+LOMMA cell against a target behind ART's ClassLabels postprocessor: surrogates learnt
    from its labels within the budget, every query counted in the record."""
    from mi_art.evaluations.cache import ArtifactCache
    from mi_art.evaluations.experiment import ExperimentConfig, Workbench, run_attack

    config = ExperimentConfig(defense="class-labels", attack="gmi", variant="lomma", access="label-only",
                              max_queries=6000, target_epochs=3, judge_epochs=3, gmi_steps=20, surrogate_steps=40,
                              iterations=20, n_reconstructions=2, gan_width=16)
    record = run_attack(Workbench(config, ArtifactCache(tmp_path), data=digits))
    assert record["access"] == "label-only" and record["query_budget"] == 6000
    per_surrogate = [s["queries"] for s in record["surrogates"]]
    assert all(0 < q <= 3000 for q in per_surrogate)  # an equal share each
    assert record["queries"] == sum(per_surrogate) + len(record["reconstructions"])
    assert all(s["used"] for s in record["surrogates"])  # LOMMA: the whole ensemble


@pytest.mark.parametrize("changes, match", [
    (dict(access="black-box", attack="miface", variant="baseline"), "gradients"),
    (dict(access="label-only", surrogate_archs=()), "surrogate"),
    (dict(access="grey-box"), "access"),
    (dict(access="black-box", max_queries=0), "max_queries"),
])
def test_config_refuses_what_predict_alone_cannot_do(changes, match):
    from mi_art.evaluations.experiment import ExperimentConfig

    with pytest.raises(ValueError, match=match):
        ExperimentConfig(**changes).validate()


def test_a_prior_made_against_the_target_is_made_against_the_first_surrogate(digits, tmp_path, monkeypatch):
    """KEDMI's prior learns a target's soft labels through its forward pass: below white-box it learns the
    stand-in surrogate's instead, and the target is never run but through predict."""
    import mi_art.evaluations.experiment as experiment
    from mi_art.evaluations.cache import ArtifactCache

    config = experiment.ExperimentConfig(attack="kedmi", variant="baseline", access="black-box", target_epochs=2,
                                         judge_epochs=2, gmi_steps=5, kedmi_steps=3, surrogate_steps=10,
                                         iterations=2, n_reconstructions=1, gan_width=16)
    bench = experiment.Workbench(config, ArtifactCache(tmp_path), data=digits)
    target = bench.target()
    seen = []
    real = experiment.Workbench.prior

    def prior(self, name, t=None):
        if name == "kedmi":
            seen.append(t)
        return real(self, name, t)

    monkeypatch.setattr(experiment.Workbench, "prior", prior)
    api_calls = []
    real_api = experiment.Workbench.api
    monkeypatch.setattr(experiment.Workbench, "api", lambda self, t: api_calls.append(t) or real_api(self, t))
    experiment.run_attack(bench, target=target)
    surrogate = bench.answer_surrogates(target)[0][0]
    assert seen and all(t is not target and experiment.model_fingerprint(t) == experiment.model_fingerprint(surrogate)
                        for t in seen)
    assert api_calls


def test_cli_attack_with_label_only_access(tmp_path):
    import json

    from click.testing import CliRunner

    from mi_art.evaluations.cli import main

    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "attack", "--dataset", "digits", "--attack", "kedmi", "--variant", "lom", "--access", "label-only",
        "--max-queries", "4000", "--iterations", "3", "--n-reconstructions", "1", "--target-epochs", "1",
        "--judge-epochs", "1", "--gmi-steps", "2", "--kedmi-steps", "2", "--surrogate-steps", "5", "--quiet",
        "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.json").read_text())
    assert record["access"] == "label-only" and record["queries"] <= 4000 + record["n_identities"]


# --------------------------------------------------------------------------- BREP-MI: labels only, no surrogate


def test_brepmi_reconstructs_from_labels_alone(api_target, gmi_prior, eval_model, attack_labels):
    """Through predict alone (the API's guard) and within its budget, boundary repulsion moves each code
    deeper into its identity's region (the radius grows) and beats chance (measured: Acc@1 0.90, chance 0.20)."""
    api = API(api_target)
    try:
        attack = M.BREPMI(api.classifier(), gmi_prior[0], patience=30, max_iterations=150, n_reconstructions=2,
                          max_queries=60_000, seed=0, verbose=False)
        rec = attack.infer(None, attack_labels)
    finally:
        api.close()
    assert rec.shape == (len(attack_labels) * 2,) + IMAGE_SHAPE
    assert attack.initialised_.all() and (attack.radius_ > attack.initial_radius).all()
    assert attack.queries_ == api.images <= 60_000
    acc = attack_accuracy(eval_model, rec, attack.labels_, rec_index=attack.reconstruction_index_, top_k=(1,))
    assert acc["acc@1"] >= 0.8, acc


def test_brepmi_stops_at_its_budget_and_validates(api_target, gmi_prior):
    api = API(api_target)
    try:
        attack = M.BREPMI(api.classifier(), gmi_prior[0], max_iterations=1000, max_queries=2000, seed=0,
                          verbose=False)
        attack.infer(None, np.arange(NUM_CLASSES))
    finally:
        api.close()
    assert attack.queries_ <= 2000 and api.images == attack.queries_
    with pytest.raises(ValueError, match="expansion"):
        M.BREPMI(api.classifier(), gmi_prior[0], expansion=1.0)
    with pytest.raises(ValueError, match="y is required"):
        attack.infer(None, None)
