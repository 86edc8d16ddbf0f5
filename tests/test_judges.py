"""The panel of judges (:func:`mi_art.evaluations.metrics.judge_panel`): every figure is the mean of its judges', and
``run_attack`` is judged by the workbench's panel. The judge's training data: test_data_judge.py; the independent
judge: test_independent_judge.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mi_art as M
from conftest import assert_matches_golden
from mi_art.evaluations import experiment as E
from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.metrics import attack_accuracy, judge_panel, knn_distance, natural_accuracy
from mi_art.renames import RenamedWarning


TINY = dict(dataset="digits", target_epochs=2, judge_epochs=2, gmi_steps=2, kedmi_steps=1, gan_width=8,
            iterations=2, n_reconstructions=2, surrogate_steps=1, augment="none")


def test_the_panel_is_the_mean_of_its_judges(target, eval_model, digits):
    """Every metric of judge_panel is the mean of the judges' own, its spread their population std; judges that
    disagree are not replaced by the first one."""
    x = np.random.default_rng(0).uniform(0, 1, (40, 1, 8, 8)).astype(np.float32)
    x[:20] = digits.private_test.x[:20]
    y = np.tile(np.arange(5), 8)
    rounds = np.repeat(np.arange(2), 20)
    priv = digits.private_all()
    judges = [eval_model, target]
    panel = judge_panel(judges, x, y, priv.x, priv.y, rec_index=rounds, top_k=(1, 3))
    acc = [attack_accuracy(j, x, y, rec_index=rounds, top_k=(1, 3)) for j in judges]
    knn = [knn_distance(j, x, y, priv.x, priv.y)["knn_dist"] for j in judges]
    assert acc[0]["acc@1"] != acc[1]["acc@1"]  # the judges disagree, so the mean is not either one
    assert panel["n_judges"] == 2
    assert panel["acc@1_judges"] == [a["acc@1"] for a in acc]
    assert panel["acc@1"] == pytest.approx(np.mean([a["acc@1"] for a in acc]))
    assert panel["acc@1_judge_std"] == pytest.approx(np.std([a["acc@1"] for a in acc]))
    assert panel["acc@3"] == pytest.approx(np.mean([a["acc@3"] for a in acc]))
    assert panel["acc@1_std"] == pytest.approx(np.mean([a["acc@1_std"] for a in acc]))
    assert panel["knn_dist"] == pytest.approx(np.mean(knn)) and panel["knn_dist_judges"] == pytest.approx(knn)
    assert panel["chance@1"] == pytest.approx(0.2) and panel["num_classes"] == 5
    single = judge_panel(eval_model, x, y, priv.x, priv.y, rec_index=rounds, top_k=(1, 5))
    assert single["acc@1"] == acc[0]["acc@1"] and single["acc@1_judge_std"] == 0.0
    assert single["acc@5"] is None  # k >= K: not applicable


def test_the_panel_refuses_judges_of_other_classes(eval_model, digits):
    other = M.make_classifier("cnn", 1, 7, 8)
    priv = digits.private_all()
    with pytest.raises(ValueError, match=r"judges\[1\] has 7 classes, judges\[0\] 5"):
        judge_panel([eval_model, other], digits.private_test.x[:10], digits.private_test.y[:10], priv.x, priv.y)
    with pytest.raises(ValueError, match="judges is empty"):
        judge_panel([], digits.private_test.x[:10], digits.private_test.y[:10], priv.x, priv.y)


def test_run_attack_is_judged_by_the_workbench_panel(digits, tmp_path):
    """config.judges evaluation models of one recipe from consecutive seeds; the record's metrics are their means."""
    bench = E.Workbench(E.ExperimentConfig(attack="gmi", variant="baseline", judges=3, **TINY), ArtifactCache(tmp_path),
                        data=digits)
    judges = bench.judges()
    assert len(judges) == 3 and judges[0] is not judges[1]
    assert not torch.equal(judges[0].fc.weight, judges[1].fc.weight)
    torch.testing.assert_close(judges[2].fc.weight, bench.redraw("judge", bench.config.seed + 1002).fc.weight)
    result = E.run_attack(bench)
    test = digits.private_test
    assert result["n_judges"] == 3 and len(result["acc@1_judges"]) == 3
    assert result["acc@1"] == pytest.approx(np.mean(result["acc@1_judges"]))
    assert result["knn_dist"] == pytest.approx(np.mean(result["knn_dist_judges"]))
    accuracies = [natural_accuracy(j, test.x, test.y) for j in judges]
    assert result["judge_test_accuracies"] == pytest.approx(accuracies)
    assert result["judge_test_accuracy"] == pytest.approx(np.mean(accuracies))
    assert not [k for k in result if k.startswith("evaluator")]  # records are written under the names now
    per_judge = [attack_accuracy(j, result["reconstructions"], result["labels"])["acc@1"] for j in judges]
    assert result["acc@1_judges"] == pytest.approx(per_judge)


def test_id_weight_reaches_the_search_and_the_record(digits, tmp_path, monkeypatch):
    from mi_art.attacks.gmi import GMI

    weights = []
    original = GMI.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        weights.append(self.id_weight)

    monkeypatch.setattr(GMI, "__init__", spy)
    cache = ArtifactCache(tmp_path)
    default = E.run_attack(E.Workbench(E.ExperimentConfig(attack="gmi", **TINY), cache, data=digits))
    light = E.run_attack(E.Workbench(E.ExperimentConfig(attack="gmi", id_weight=0.5, **TINY), cache, data=digits))
    assert weights == [100.0, 0.5]
    assert default["id_weight"] == 100.0 and light["id_weight"] == 0.5
    assert not np.allclose(default["reconstructions"], light["reconstructions"])
    assert "id_weight=0.5 was not used" in " ".join(E.run_attack(
        E.Workbench(E.ExperimentConfig(attack="miface", variant="baseline", id_weight=0.5, miface_iterations=2,
                                       **TINY), cache, data=digits))["warnings"])


def _pinned_panel_inputs():
    """Two untrained judges of fixed seeds, 30 reconstructions in 3 rounds of 5 identities, private images and a
    training subset: a panel input whose every output is pinned by tests/golden/judge_panel.json."""
    judges = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        judges.append(M.make_classifier("cnn", 1, 5, 8).eval())
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (30, 1, 8, 8)).astype(np.float32)
    y = np.tile(np.arange(5), 6)
    private_x = rng.uniform(0, 1, (40, 1, 8, 8)).astype(np.float32)
    private_y = np.repeat(np.arange(5), 8)
    train = np.arange(40) % 8 < 6
    return judges, x, y, private_x, private_y, dict(rec_index=np.repeat(np.arange(3), 10), top_k=(1, 2, 5),
                                                    train_x=private_x[train], train_y=private_y[train])


def test_the_panel_output_is_pinned():
    """judge_panel's whole output on a fixed input (every metric, its judges' values and spreads, chance levels,
    Acc@k not applicable at k >= K, per identity) stays what it was when the panel was one function."""
    judges, x, y, private_x, private_y, options = _pinned_panel_inputs()
    assert_matches_golden(judge_panel(judges, x, y, private_x, private_y, **options), "judge_panel.json")


def test_the_judges_earlier_python_names_still_work_reported_as_renamed(digits, tmp_path):
    """Workbench.evaluator() / evaluators() and run_attack(evaluator=...) were the judges' names: they give the
    same models, each reported once as renamed (a RenamedWarning at the caller's line); run_attack refuses both
    names with two values before any work."""
    bench = E.Workbench(E.ExperimentConfig(attack="gmi", variant="baseline", judges=2, **TINY), ArtifactCache(tmp_path),
                        data=digits)
    judges = bench.judges()
    with pytest.warns(RenamedWarning, match="the method 'evaluators' is now called 'judges'") as said:
        earlier = bench.evaluators()
    assert [w.filename for w in said] == [__file__]
    assert [torch.equal(a.fc.weight, b.fc.weight) for a, b in zip(earlier, judges)] == [True, True]
    with pytest.warns(RenamedWarning, match="the method 'evaluator' is now called 'judge'"):
        assert torch.equal(bench.evaluator().fc.weight, bench.judge().fc.weight)
    with pytest.warns(RenamedWarning, match="run_attack: the argument 'evaluator' is now called 'judges'"):
        result = E.run_attack(bench, evaluator=judges[1])
    assert result["n_judges"] == 1 and result["judge_test_accuracies"] == pytest.approx(
        [natural_accuracy(judges[1], digits.private_test.x, digits.private_test.y)])
    with pytest.raises(ValueError, match="evaluator and judges are both given: .*give judges only"):
        E.run_attack(bench, judges=judges[0], evaluator=judges[1])
