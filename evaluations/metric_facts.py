"""Every figure a run measures, declared once with its facts: the key it has in ``run_attack``'s result and in a
grid row, the title of its table in ``report.md``, which way means more leakage, its number format, whether the
panel of trained judges measures it (and so has a spread over judges), whether it is the independent judge's, and
whether old rows may lack it.

The other tables are read from here at each use, so a metric registered with :func:`register_metric` (here or
from a plug-in) is a column of results.csv / results.json (:data:`~mi_art.evaluations.rows.ROW_KEYS`), a figure a
grid cell copies from the attack's result into its row, a table of the report (:data:`METRICS` of
:mod:`~mi_art.evaluations.report`), a figure averaged over the panel's judges
(:func:`~mi_art.evaluations.metrics.judge_panel`, when the judges compute it), and a figure on ``mi-art attack``'s
line (the grid's line per cell stays a hand-picked few). Computing it is the one other step: in the judge panel,
the independent judge or ``run_attack``'s result. A metric registered from your own code is registered in the
process that imports it: grid workers started afresh (spawned processes, Ray) must import it too, as for a
defense.

Names on the way from the attack's result to the report's row are kept as results files were written, so old
files load and render: a metric whose result key differs from its row column says so in ``source`` (the target's
``natural_accuracy`` is the result's ``target_test_accuracy``); the row's other renamed columns are
:data:`~mi_art.evaluations.rows.ROW_SOURCES`. The one stored name changed since, the judges' mean held-out accuracy
``judge_test_accuracy`` (once ``evaluator_test_accuracy``), is read from old files under its name now
(:data:`~mi_art.evaluations.rows.RENAMED_RECORD_KEYS`).
"""
from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

from mi_art.registry import Registry

__all__ = ["MetricFacts", "Names", "figure_text", "get_metric", "metric_facts", "metric_names", "register_metric",
           "row_figures", "unregister_metric"]


@dataclass(frozen=True)
class MetricFacts:
    """One measured figure.

    :param name: Its key in a grid row, in ``run_attack``'s result (unless ``source`` says otherwise) and in
        ``report.md``'s aggregates.
    :param label: The title of its table in ``report.md``; None: it has no table of its own.
    :param higher_is_better: From the attack's side: True where a higher value means more leakage (Acc@1),
        False where a lower one does, or a lower cost (KNN distance, seconds); None where it measures no attack
        (the target's or the judges' accuracy).
    :param fmt: Its format spec in tables and console lines (``".3f"``).
    :param judged_by_panel: Each trained judge of the panel measures it: the result also has ``name + "_judges"``
        (each judge's value) and ``name + "_judge_std"`` (their spread), and the row keeps the latter.
    :param independent: The independent judge's (dlib's face recogniser): its own column, never averaged into the
        panel's.
    :param optional: Some rows lack it (an attack that makes no query, no independent judge, rows written before
        it was measured): its table is left out of a data set where no row has it.
    :param round_std: The result and the row also have ``name + "_std"``, the spread over reconstruction rounds
        (Acc@k). In the report's aggregates ``name + "_std"`` is the spread over seeds instead.
    :param per_identity: Each attacked identity's value is in the record's ``"per_identity"`` figures, merged over
        seeds by :func:`~mi_art.evaluations.leakage.merge_identities`.
    :param source: Its key in ``run_attack``'s result where that differs from ``name``.
    :param help: What it measures, in a sentence.
    """

    name: str
    label: Optional[str]
    higher_is_better: Optional[bool]
    fmt: str = ".3f"
    judged_by_panel: bool = False
    independent: bool = False
    optional: bool = False
    round_std: bool = False
    per_identity: bool = False
    source: Optional[str] = None
    help: str = ""

    @property
    def result_key(self) -> str:
        """Its key in ``run_attack``'s result."""
        return self.source or self.name

    @property
    def columns(self) -> Tuple[str, ...]:
        """Its columns in a grid row: the value, then its spread over rounds and over judges where it has them."""
        return ((self.name,) + ((f"{self.name}_std",) if self.round_std else ())
                + ((f"{self.name}_judge_std",) if self.judged_by_panel else ()))


#: A metric's name: letters, digits, ``_``, ``@`` and ``-`` (it is a column of results.csv and a key of JSON).
_NAME = re.compile(r"[a-z][a-z0-9_@-]*")


def _check_metric(facts: MetricFacts) -> None:
    if not isinstance(facts.name, str) or not _NAME.fullmatch(facts.name):
        raise ValueError(f"a metric's name must be lower-case letters, digits, '_', '@' or '-', starting with a "
                         f"letter, got {facts.name!r}")
    try:
        format(0.5, facts.fmt)
    except (TypeError, ValueError):
        raise ValueError(f"metric {facts.name!r}: fmt must be a format spec for a float such as '.3f', "
                         f"got {facts.fmt!r}") from None


_REGISTRY: Registry[MetricFacts] = Registry("metric", MetricFacts, check=_check_metric)


def register_metric(facts: MetricFacts, *, replace: bool = False) -> MetricFacts:
    """Declare ``facts``' metric: it becomes a row column, a report table (with a ``label``) and a figure of the
    console lines; returns it. A name already taken is refused unless ``replace=True``."""
    return _REGISTRY.register(facts, replace=replace)


def unregister_metric(name: str) -> None:
    """Forget the metric ``name`` (tests and plug-ins that register one for a while)."""
    _REGISTRY.unregister(name)


def get_metric(name: str) -> MetricFacts:
    """The facts of the registered metric ``name``; a ValueError listing the valid names otherwise."""
    return _REGISTRY.lookup(name)


def metric_facts(where: Optional[Callable[[MetricFacts], bool]] = None) -> Tuple[MetricFacts, ...]:
    """The registered metrics in registration order (the order of the report's tables), those ``where`` holds for
    when it is given."""
    return tuple(m for m in _REGISTRY.values() if where is None or where(m))


class Names(Sequence):
    """Column or metric names read at each use from ``read`` (a metric registered later is in them); compares
    equal to the tuple of the same names."""

    def __init__(self, read: Callable[[], Tuple[str, ...]]) -> None:
        self._read = read

    def __getitem__(self, index):  # type: ignore[override]
        return self._read()[index]

    def __len__(self) -> int:
        return len(self._read())

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __contains__(self, name: object) -> bool:
        return name in self._read()

    def __eq__(self, other: object) -> bool:
        return self._read() == (tuple(other) if isinstance(other, (tuple, list, Names)) else other)

    def __hash__(self) -> int:
        return hash(self._read())

    def __repr__(self) -> str:
        return repr(self._read())


def metric_names(where: Optional[Callable[[MetricFacts], bool]] = None) -> Names:
    """The names of the registered metrics ``where`` holds for, read at each use."""
    return Names(lambda: tuple(m.name for m in metric_facts(where)))


def _figure(value: Any) -> Any:
    """A row's value: an integer as it is (a count of queries), any other number a finite float, else None."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    from .rows import finite_or_none

    return finite_or_none(value)


def row_figures(result: Dict[str, Any], names: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """The row's columns of every registered metric (of ``names`` when given), copied from ``run_attack``'s
    ``result`` under the row's names (:attr:`MetricFacts.source`): None where the result lacks one or it is not a
    finite number."""
    chosen = metric_facts() if names is None else tuple(get_metric(n) for n in names)
    out: Dict[str, Any] = {}
    for m in chosen:
        for column in m.columns:
            key = m.result_key + column[len(m.name):]
            out[column] = _figure(result.get(key))
    return out


def figure_text(record: Dict[str, Any], shown: Iterable[str]) -> str:
    """``"name value, ..."`` for every registered metric of ``record`` (a result or a row) not in ``shown`` (those
    a console line writes by hand) and not None there; empty when there is none."""
    skip = set(shown)
    values = [(m, record.get(m.name, record.get(m.result_key))) for m in metric_facts(lambda m: m.name not in skip)]
    return ", ".join(f"{m.name} {format(v, m.fmt)}" for m, v in values if _figure(v) is not None)


# --------------------------------------------------------------------------------------------------
# The metrics of mi-art, in the order of the report's tables
# --------------------------------------------------------------------------------------------------
_K_NN = "k = 5, Naeem et al. 2020"
for _facts in (
        MetricFacts("natural_accuracy", None, None, source="target_test_accuracy",
                    help="The target's accuracy on held-out private images (its utility)."),
        MetricFacts("acc@1", "Attack accuracy Acc@1 (higher = more leakage)", True, judged_by_panel=True,
                    round_std=True, per_identity=True,
                    help="Share of reconstructions the trained judges put in the attacked identity (top 1)."),
        MetricFacts("acc@5", "Attack accuracy Acc@5", True, judged_by_panel=True, round_std=True,
                    help="Share of reconstructions with the attacked identity in the judges' top 5."),
        MetricFacts("knn_dist", "KNN distance to the closest private image, judge features (lower = closer)",
                    False, ".2f", judged_by_panel=True, per_identity=True,
                    help="Distance to the identity's closest private image in the judges' features."),
        MetricFacts("fid_eval_features", "FID on judge features (lower = closer)", False, ".2f",
                    judged_by_panel=True,
                    help="FID of the recognised reconstructions to the attacked identities' images, judges' "
                         "features."),
        MetricFacts("precision", "Precision: share of the reconstructions inside the k-NN balls of the attacked "
                                 f"identities' private training images, judge features ({_K_NN}; higher = "
                                 "more realistic)", True, judged_by_panel=True, optional=True,
                    help="Share of reconstructions inside the private training images' k-NN balls."),
        MetricFacts("recall", "Recall: share of those private training images inside the reconstructions' k-NN "
                              "balls (higher = more of the private images reached)", True, judged_by_panel=True,
                    optional=True, help="Share of private training images inside the reconstructions' k-NN balls."),
        MetricFacts("density", "Density: private images' k-NN balls around each reconstruction, over k (about 1 "
                               "when the reconstructions are distributed as the private images; higher = closer)",
                    True, judged_by_panel=True, optional=True,
                    help="Private images' k-NN balls around each reconstruction, over k."),
        MetricFacts("coverage", "Coverage: share of those private training images whose k-NN ball holds a "
                                "reconstruction (higher = more of them reached)", True, judged_by_panel=True,
                    optional=True, help="Share of private training images whose k-NN ball holds a reconstruction."),
        MetricFacts("seconds", "Attack seconds per cell (shared artifacts excluded)", False, ".1f",
                    help="The attack's seconds, without the shared artifacts (target, judges, prior) it used."),
        MetricFacts("queries", "Queries to the target through predict (black-box and label-only attacks: the "
                               "surrogates' distillation and one per reconstruction)", False, ".0f", optional=True,
                    help="Queries to the target's predict (None for a white-box attack)."),
        MetricFacts("judge_test_accuracy", None, None,
                    help="The trained judges' mean accuracy on held-out private images."),
        MetricFacts("independent_acc@1", "Independent judge Acc@1 (a public face recogniser trained on nothing "
                                         "here: nearest identity centroid of its embedding; its own column, never "
                                         "averaged into the trained judges')", True, independent=True,
                    optional=True, per_identity=True,
                    help="Acc@1 of the independent judge (dlib's embedding, nearest identity centroid)."),
        MetricFacts("independent_acc@5", None, True, independent=True, optional=True,
                    help="Acc@5 of the independent judge."),
        MetricFacts("independent_dist", "Distance to the nearest private training image of the identity in the "
                                        "independent judge's embedding (dlib: one person below 0.6; lower = "
                                        "closer)", False, independent=True, optional=True, per_identity=True,
                    help="Distance to the identity's nearest private training image in the independent "
                         "judge's embedding."),
        MetricFacts("independent_test_accuracy", None, None, independent=True, optional=True,
                    help="The independent judge's accuracy on the real private test images."),
        MetricFacts("independent_ratio", None, True, ".2f", independent=True, optional=True,
                    help="The independent judge's Acc@1 over the trained panel's."),
):
    register_metric(_facts)
del _facts
