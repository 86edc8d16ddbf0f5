"""The sections of ``report.md``: per data set, its judges, warnings and one table per metric, what each defense
bought, what transfers to a judge we did not train, DP's targets, the identities that leak, the figures and the
reconstructions (:mod:`mi_art.evaluations.report`)."""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .markdown import markdown_text, mean_std_text as _fmt
from .report_rows import EXPOSED_IDENTITIES, METRICS, OPTIONAL_METRICS, _dataset_warnings, _mean_std
from .rows import finite_or_none, form_attack, pair_label
from .utility import adaptive_lines, equal_utility_lines


def _chance_note(k: int, rows: Sequence[Dict[str, Any]]) -> str:
    """The line under an Acc@k table: its chance level, or why it is not applicable."""
    classes = sorted({r["n_classes"] for r in rows if isinstance(r.get("n_classes"), int)})
    if not classes:
        return f"Chance level of Acc@{k}: unknown (cells saved without their number of classes)."
    parts = []
    for n in classes:
        if k >= n:
            parts.append(f"not applicable with {n} classes: every label is in the judge's top {k}, so Acc@{k} "
                         f"is 1 whatever the reconstructions (n/a)")
        else:
            parts.append(f"chance {min(k, n) / n:.3f} with {n} classes (a judge guessing uniformly)")
    return f"Acc@{k}: " + "; ".join(parts) + "."



def _pairs(aggs: Sequence[Dict[str, Any]]) -> List[Tuple[str, str]]:
    return list(dict.fromkeys((a["attack"], a["variant"]) for a in aggs))


def _labels(aggs: Sequence[Dict[str, Any]]) -> List[str]:
    return list(dict.fromkeys(a["defense_label"] for a in aggs))


#: What DP's epsilon bounds, and what it does not, for model inversion: printed wherever a DP target is.
EPSILON_NOTE = (
    "What epsilon means here: (epsilon, delta)-DP bounds how much any *one training image* can change the "
    "trained model, so it limits what an attack can learn about that image beyond what the other images "
    "already reveal. Model inversion reconstructs an *identity's* typical face from everything the model "
    "learned about the class, which comes from many images of that person; DP does not bound that, and a "
    "model that classifies the identity well has, by design, learned it. Read epsilon as a bound on "
    "membership of single images, not as a guarantee against reconstruction: the Acc@1 columns measure "
    "the latter. Measured on a deployed face recogniser (dlib's network frozen, its head trained with DP-SGD "
    "on LFW's 50 persons at delta 1e-5; benchmarks/results/face_recogniser.md): the head kept 0.906 / 0.706 / "
    "0.238 accuracy at epsilon 8 / 3 / 1 against 0.958 without privacy, and the reconstructions of GMI+LOM "
    "(a reduced budget) were named by the target's own backbone 0.93 / 0.63 / 0.10 of the time against 1.00. "
    "GMI+LOMMA (one seed, 30 reconstructions) was named by a judge trained on the same images 0.200 of the time "
    "without privacy, 0.133 at epsilon 8, 0.133 at epsilon 3 and 0.067 at epsilon 1, and by the backbone 1.00 / 0.90 "
    "/ 0.70 / 0.27: at the accuracy a deployment keeps (epsilon 8), DP moved neither judge's figure beyond about "
    "one standard error.")


def identity_lines(rows: Sequence[Dict[str, Any]], n: int = EXPOSED_IDENTITIES) -> List[str]:
    """Which identities leak: per defense setting, the attack that recovers the most (highest mean Acc@1 of its
    cells), and the ``n`` identities it recovers most and least often (their reconstructions' Acc@1 by the
    judges, by the independent judge where there is one, merged over seeds), each with its number of private
    training images. Nothing for rows without per-identity figures (written before they were kept)."""
    from .leakage import merge_identities, rank_identities

    groups: "OrderedDict[Tuple[str, str, str], List[Dict[str, Any]]]" = OrderedDict()
    for r in rows:
        if isinstance(r.get("per_identity"), list) and r["per_identity"]:
            groups.setdefault((r["defense_label"], form_attack(r), r["variant"]), []).append(r)
    best: "OrderedDict[str, Tuple[float, Tuple[str, str], List[Dict[str, Any]]]]" = OrderedDict()
    for (label, attack, variant), rs in groups.items():
        acc = _mean_std([r.get("acc@1") for r in rs])[0]
        acc = -1.0 if acc is None else acc
        if label not in best or acc > best[label][0]:
            best[label] = (acc, (attack, variant), rs)
    if not best:
        return []

    def who(entry: Dict[str, Any]) -> str:
        name = f"{entry['identity']}" + (f" ({entry['name']})" if entry.get("name") is not None else "")
        ind = entry.get("independent_acc@1")
        figures = f"{entry['acc@1']:.2f}" + ("" if ind is None else f", independent {ind:.2f}")
        n_train = entry.get("n_private_train")
        return markdown_text(f"{name}: {figures}" + ("" if n_train is None else f", {n_train} training images"))

    lines = ["### Which identities leak", "",
             "Per defense, the attack that recovers the most, and the identities whose reconstructions the judges "
             "recognise most and least often (Acc@1 of that identity's reconstructions; the independent judge's "
             "beside it where there is one; merged over seeds), with each identity's number of private training "
             "images: an identity that leaks much from few images is the most exposed.", "",
             "| defense | attack/variant | most exposed | least exposed |", "|---|---|---|---|"]
    for label, (_, (attack, variant), rs) in best.items():
        most, least = rank_identities(merge_identities(rs), n)
        lines.append(f"| {markdown_text(label)} | {markdown_text(f'{attack}/{variant}')} | "
                     f"{'; '.join(map(who, most)) or '-'} | {'; '.join(map(who, least)) or '-'} |")
    return lines + [""]


def _dp_targets(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """A table of every DP-SGD target: epsilon, delta, accountant, noise, sample rate, steps, the layers
    trained and natural accuracy (from the defense record each row carries)."""
    seen: "OrderedDict[Tuple[Any, Any], Dict[str, Any]]" = OrderedDict()
    for r in rows:
        if r.get("defense") == "dp-sgd":
            seen.setdefault((r["defense_label"], r.get("artifact_seed")), r)
    if not seen:
        return []
    lines = ["### DP-SGD targets", "", "The accountant's epsilon at delta, and the noise multiplier, Poisson sample "
             "rate and optimiser steps it was computed from (Opacus; recompute it with "
             "`mi_art.defenses.accountant_epsilon`).", "",
             "| defense | seed | natural acc | epsilon | delta | accountant | noise | sample rate | steps | "
             "trained | pre-trained |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def num(v: Any, spec: str) -> str:
        return "-" if finite_or_none(v) is None else f"{float(v):{spec}}"

    for (label, seed), r in seen.items():
        rec = r.get("defense_record") or {}
        d = rec.get("details") or {}
        trained = d.get("trainable", "all")
        if d.get("trained_parameters") is not None:
            trained = f"{trained} ({d['trained_parameters']} parameters)"
        lines.append(f"| {markdown_text(label)} | {markdown_text(seed)} | {num(r.get('natural_accuracy'), '.3f')} | "
                     f"{num(r.get('epsilon'), '.2f')} | {num(r.get('delta'), '.3g')} | "
                     f"{markdown_text(rec.get('accountant') or '-')} | {num(d.get('noise_multiplier'), '.3f')} | "
                     f"{num(d.get('sample_rate'), '.3f')} | {markdown_text(d.get('steps', '-'))} | "
                     f"{markdown_text(trained)} | {'yes' if d.get('pretrain_epochs') else 'no'} |")
    return lines + ["", EPSILON_NOTE, ""]


def privacy_line(result: Dict[str, Any]) -> Optional[str]:
    """One line on a DP target's privacy, from an attack's result (or record: ``run_attack``'s, a grid row, with
    a ``"defense_record"``) or from a defense record itself: epsilon at delta, the accountant, the noise
    multiplier, sample rate and steps it was computed from, and who trained it. None for a target without DP."""
    rec = result.get("defense_record", result) if isinstance(result, dict) else None
    if not isinstance(rec, dict) or rec.get("defense") != "dp-sgd":
        return None
    d = rec.get("details") or {}

    def num(v: Any, spec: str) -> str:
        if isinstance(v, (list, tuple)):
            return "/".join(num(x, spec) for x in v)
        return "?" if finite_or_none(v) is None else f"{float(v):{spec}}"

    source = {"privacy-engine": "read from its PrivacyEngine", "by hand": "given by hand"}.get(d.get("source"))
    who = f"; trained by the user with Opacus, {source}" if source else ""
    clip = "" if finite_or_none(d.get("max_grad_norm")) is None else f", clipping {num(d['max_grad_norm'], 'g')}"
    return (f"DP-SGD target: epsilon {num(rec.get('epsilon'), '.2f')} at delta {num(rec.get('delta'), '.3g')} "
            f"({rec.get('accountant') or '?'} accountant; noise multiplier {num(d.get('noise_multiplier'), '.3f')}, "
            f"sample rate {num(d.get('sample_rate'), '.4g')}, {d.get('steps', '?')} steps{clip}{who})")


def _access_of(agg: Dict[str, Any]) -> str:
    """An aggregated row's access level: its ``access``, or for rows written without one the level written in the
    attack's name (``gmi[black-box]``), white-box when none is."""
    if agg.get("access"):
        return str(agg["access"])
    attack = agg["attack"]
    return attack[attack.index("[") + 1:-1] if attack.endswith("]") and "[" in attack else "white-box"


#: What an output postprocessor does not change, said wherever one is measured against a white-box attack.
OUTPUT_DEFENSE_NOTE = (
    "It is an output postprocessor: it changes only what the target's predict returns, so the model, its "
    "natural accuracy and the gradients a white-box attack follows are those of the undefended target, and "
    "its white-box rows match the undefended ones by construction; it can matter only to an attack that sees "
    "the answers alone (access black-box or label-only).")


def _is_output_defense(defense: str) -> bool:
    from mi_art.defenses.postprocessing import POSTPROCESSORS

    return defense in POSTPROCESSORS


def _what_it_bought(aggs: Sequence[Dict[str, Any]]) -> List[str]:
    """One sentence per defense setting: its natural accuracy, and for each access level the Acc@1 of the
    strongest attack on it, each against the undefended target of the same grid when there is one."""
    ref = [a for a in aggs if a["defense"] == "none" and a["acc@1"] is not None]
    ref_nat = ref[0]["natural_accuracy"] if ref else None
    ref_acc = {(a["attack"], a["variant"]): a["acc@1"] for a in ref}
    lines = []
    for label in _labels(aggs):
        la = [a for a in aggs if a["defense_label"] == label and a["acc@1"] is not None]
        if not la or la[0]["defense"] == "none":
            continue
        nat = la[0]["natural_accuracy"]
        eps = f" at epsilon {la[0]['epsilon']:.2f}" if la[0].get("epsilon") is not None else ""
        cost = "natural accuracy unknown" if nat is None else f"natural accuracy {nat:.3f}"
        if nat is not None and ref_nat is not None:
            cost += f" ({100 * (nat - ref_nat):+.1f} points against the undefended {ref_nat:.3f})"
        levels = list(dict.fromkeys(_access_of(a) for a in la))
        gains = []
        for level in levels:
            best = max((a for a in la if _access_of(a) == level), key=lambda a: a["acc@1"])
            pair = (best["attack"], best["variant"])
            name = markdown_text(f"{pair[0]}/{pair[1]}")
            gain = (f"the strongest attack on it, {name}, reaches Acc@1 {best['acc@1']:.3f}" if len(levels) == 1
                    else f"{markdown_text(level)}: {name} reaches {best['acc@1']:.3f}")
            if pair in ref_acc:
                gain += f" ({100 * (best['acc@1'] - ref_acc[pair]):+.1f} points against {ref_acc[pair]:.3f} undefended)"
            gains.append(gain)
        chance = la[0].get("chance@1")
        tail = "" if chance is None else f"; chance is {chance:.3f}"
        lines.append(f"- **{markdown_text(label)}**{eps}: {cost}; {'; '.join(gains)}{tail}."
                     + (" " + OUTPUT_DEFENSE_NOTE if _is_output_defense(la[0]["defense"]) and "white-box" in levels
                        else ""))
    if not lines:
        return []
    return ["### What each defense bought and what it cost", ""] + lines + [""]


#: Below this ratio of the independent judge's Acc@1 to the panel's, the panel's figure is not confirmed.
TRANSFER_RATIO = 0.5
#: Two judges disagree on a defense when the shares of the undefended Acc@1 it removes differ by more than this.
DISAGREEMENT = 0.3


def transfer_lines(aggs: Sequence[Dict[str, Any]]) -> List[str]:
    """The transfer table: per defense and attack, the trained panel's Acc@1, the independent judge's and their
    ratio; then one line per defense that looks effective by one judge and not by the other (the share of the
    undefended Acc@1 it removes differs by more than :data:`DISAGREEMENT`). Nothing without an independent
    judge."""
    judged = [a for a in aggs if a.get("independent_acc@1") is not None and a.get("acc@1") is not None]
    if not judged:
        return []
    lines = ["### Transfer: what a judge we did not train confirms", "",
             f"The ratio is the independent judge's Acc@1 over the trained panel's; below {TRANSFER_RATIO} the "
             "panel's figure is not confirmed.", "",
             "| defense | attack/variant | panel Acc@1 | independent Acc@1 | ratio |", "|---|---|---|---|---|"]
    for a in judged:
        ratio = a["independent_acc@1"] / a["acc@1"] if a["acc@1"] > 0 else None
        flag = "" if ratio is None or ratio >= TRANSFER_RATIO else " (not confirmed)"
        lines.append(f"| {a['defense_label']} | {a['attack']}/{a['variant']} | {a['acc@1']:.3f} | "
                     f"{a['independent_acc@1']:.3f} | {'-' if ratio is None else f'{ratio:.2f}'}{flag} |")
    ref = {(a["attack"], a["variant"]): a for a in judged if a["defense"] == "none"}
    verdicts = []
    for a in judged:
        base = ref.get((a["attack"], a["variant"]))
        if a["defense"] == "none" or base is None or base["acc@1"] <= 0 or base["independent_acc@1"] <= 0:
            continue
        panel_cut = 1 - a["acc@1"] / base["acc@1"]
        independent_cut = 1 - a["independent_acc@1"] / base["independent_acc@1"]
        if abs(panel_cut - independent_cut) > DISAGREEMENT:
            verdicts.append(f"- **{a['defense_label']}** against {a['attack']}/{a['variant']}: the trained panel says "
                            f"it removes {100 * panel_cut:.0f}% of the undefended Acc@1, the independent judge "
                            f"{100 * independent_cut:.0f}%: the judges disagree on this defense.")
    return lines + [""] + (verdicts + [""] if verdicts else [])


def _markdown(rows: List[Dict[str, Any]], aggs: List[Dict[str, Any]], meta: Dict[str, Any],
              figures: Dict[str, List[Path]], images: Dict[str, Dict[str, Path]], out: Path) -> str:
    lines = _title_lines(rows, meta, out)
    for dataset in dict.fromkeys(a["dataset"] for a in aggs):
        da = [a for a in aggs if a["dataset"] == dataset]
        dr = [r for r in rows if r["dataset"] == dataset]
        lines += [f"## {markdown_text(dataset)}", ""]
        lines += _judge_lines(dr)
        warned = _dataset_warnings(dr)
        if warned:
            lines += ["**Warnings** (the attack numbers below mean little where these apply):", ""]
            lines += [f"- {markdown_text(w)}" for w in warned] + [""]
        for key, title, spec in METRICS:
            if key in OPTIONAL_METRICS and not any(r.get(key) is not None for r in dr):
                continue  # white-box attacks make no query; no independent judge without its weights
            lines += _metric_table(key, title, spec, da, dr)
        lines += _what_it_bought(da) + transfer_lines(da) + equal_utility_lines(da) + adaptive_lines(da)
        lines += _dp_targets(dr)
        lines += identity_lines(dr)
        lines += _figure_lines(figures.get(dataset), out)
        lines += _reconstruction_lines(dr, images, out)
    return "\n".join(lines)


def _title_lines(rows: List[Dict[str, Any]], meta: Dict[str, Any], out: Path) -> List[str]:
    """The report's title, how many cells finished, the grid's budgets and how to read the tables."""
    grid = meta.get("grid", {})
    n_cells = len(meta.get("cells", [])) or len(rows)
    lines = [f"# Model inversion defense grid: {markdown_text(grid.get('name', out.name))}", ""]
    missing = n_cells - len(rows)
    lines.append(f"{len(rows)} of {n_cells} cells finished" + (f" ({missing} missing: run the same "
                                                                 "`mi-art evaluate` command to finish them)"
                                                                 if missing else "") + ".")
    if grid:
        budgets = {k: v for k, v in grid.items() if k not in ("datasets", "defenses", "name")}
        lines += ["", "Grid: " + markdown_text(", ".join(f"{k}={json.dumps(v)}" for k, v in budgets.items()
                                                         if k != "identities" or v is None)
                                               + (f", identities={len(budgets['identities'])} "
                                                  f"({budgets['identities'][0]}-{budgets['identities'][-1]})"
                                                  if budgets.get("identities") else "")) + "."]
    return lines + ["", "Each value is the mean ± sample std over seeds (one value: a single seed). Natural accuracy "
                    "is the target's test accuracy on held-out private images; epsilon is DP-SGD's (epsilon, delta) "
                    "from Opacus's accountant. Acc@1/Acc@5 are judged by independent evaluation models and mean "
                    "something only above their chance level (given under each table; n/a: not applicable); FID is "
                    "computed on their features, not Inception's. Where several judges score each cell, a value is "
                    "their mean and \"(judges ± s)\" the std over judges, averaged over seeds.", ""]


def _judge_lines(dr: Sequence[Dict[str, Any]]) -> List[str]:
    """A data set's judges: the trained ones' test accuracy against chance, and the independent judge's, with what
    it shares with the target."""
    lines: List[str] = []
    evals = _mean_std(list({r["artifact_seed"]: r.get("judge_test_accuracy") for r in dr}.values()))
    if evals[0] is not None:
        classes = sorted({r["n_classes"] for r in dr if isinstance(r.get("n_classes"), int)})
        chance = "" if len(classes) != 1 else f" (chance {1 / classes[0]:.3f} with {classes[0]} classes)"
        n_judges = max(int(r.get("n_judges") or 1) for r in dr)
        what = "Evaluation model" if n_judges == 1 else f"Evaluation models' (mean of {n_judges} judges)"
        lines += [f"{what} test accuracy: {_fmt(*evals, '.3f')}{chance}.", ""]
    independent = _mean_std(list({r["artifact_seed"]: r.get("independent_test_accuracy") for r in dr}.values()))
    if independent[0] is not None:
        shared = sorted({s for r in dr for s in r.get("independent_shares") or []})
        lines += [f"Independent judge ({markdown_text(dr[0].get('independent_judge') or 'dlib')}) accuracy on the "
                  f"real private test images at the attack's resolution: {_fmt(*independent, '.3f')}"
                  + (f"; it shares {markdown_text(', '.join(map(str, shared)))} with the target, so it is not "
                     "independent of it"
                     if shared else "") + ".", ""]
    return lines


def _metric_table(key: str, title: str, spec: str, da: Sequence[Dict[str, Any]],
                  dr: Sequence[Dict[str, Any]]) -> List[str]:
    """One metric's table of a data set: a row per defense (its natural accuracy and epsilon, one value per
    target), a column per attack/variant (the mean over seeds of ``key``)."""
    pairs = _pairs(da)
    lines = [f"### {title}", ""]
    if key.startswith("acc@"):
        lines += [_chance_note(int(key[4:]), dr), ""]
    header = ["defense", "natural acc", "epsilon"] + [markdown_text(f"{a}/{v}") for a, v in pairs]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for label in _labels(da):
        la = [a for a in da if a["defense_label"] == label]
        lr = [r for r in dr if r["defense_label"] == label]
        # natural accuracy: one value per target (seed), not per attack cell
        per_seed = {(r["artifact_seed"]): r.get("natural_accuracy") for r in lr}
        nat = _mean_std(list(per_seed.values()))
        eps = _mean_std(list({r["artifact_seed"]: r.get("epsilon") for r in lr}.values()))
        cells = [markdown_text(label), _fmt(*nat, ".3f"), "-" if eps[0] is None else _fmt(*eps, ".2f")]
        for a, v in pairs:
            match = [x for x in la if (x["attack"], x["variant"]) == (a, v)]
            judge_std = match[0].get(key + "_judge_std") if match and match[0]["n_judges"] > 1 else None
            cells.append(_fmt(match[0][key], match[0][key + "_std"], match[0][key + "_n"], spec, judge_std)
                         if match else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _figure_lines(figures: Optional[List[Path]], out: Path) -> List[str]:
    if not figures:
        return []
    return ["### Figures", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in figures] + [""]


def _reconstruction_lines(dr: Sequence[Dict[str, Any]], images: Dict[str, Dict[str, Path]], out: Path) -> List[str]:
    """A data set's table of cells, each linked to its image grid and its prior's samples."""
    lines = ["### Reconstructions (first column: a real private image; last: a sample of the prior searched)",
             "", "| defense | attack/variant | seed | Acc@1 | image | prior samples |", "|---|---|---|---|---|---|"]
    for r in dr:
        img = images.get(r["cell_id"], {})
        link = (f"[{markdown_text(r['cell_id'])}]({img['reconstructions'].relative_to(out).as_posix()})"
                if "reconstructions" in img else "(no saved reconstructions)")
        link += " | " + (f"[prior]({img['prior_samples'].relative_to(out).as_posix()})" if "prior_samples" in img
                         else "-")
        acc = "n/a" if r.get("acc@1") is None else f"{r['acc@1']:.3f}"
        pair = markdown_text(pair_label(r))
        label, seed = markdown_text(r["defense_label"]), markdown_text(r["seed"])
        lines.append(f"| {label} | {pair} | {seed} | {acc} | {link} |")
    return lines + [""]

