"""The main job (`trafficsearch demo`, `make demo`): synthetic train set -> real val labels rendered -> three
members trained (the CLIP default, BLIP-small with its ITM head, the attribute baseline) -> each split indexed
once per member -> every single model, their fusion and fusion + ITM re-ranking (the full system) scored
beside a random ranking, with the full system compared to the best single model.

Every stage writes files under the work folder and is skipped or resumed when its output is already there,
so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from trafficsearch.data.labels import read_labels, write_labels
from trafficsearch.data.layout import split
from trafficsearch.experiments.labels import FULL_SYSTEM, FUSION, RANDOM
from trafficsearch.experiments.systems import RULES, evenly
from trafficsearch.experiments.tables import WIDTH, contain_table, results_table
from trafficsearch.ioutil import atomic_write_json
from trafficsearch.resources import extract_val_labels
from trafficsearch.search.ensemble.folds import points_reason


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo run. `val` caps the real val labels used (evenly spread); None = all 10,000.
    `val_queries` is how many of them (evenly spread) are searched against the whole val gallery.

    `blip_config` None or `attributes` False drop that member (no BLIP: no re-ranking either).
    """

    config: str = "demo/default"
    train: int = 9000
    val: int | None = None
    val_queries: int | None = 4000  # val texts (evenly spread) searched: the 15-minute budget; None: all
    test: int = 1000
    noise: float = 0.05
    epochs: int | None = 3  # fine-tuning from package:clip-default (the seed's 2-3 epochs)
    val_per_epoch: int | None = 1000  # val images scored after each epoch to keep the best checkpoint
    blip_config: str | None = "demo/blip-small"
    blip_epochs: int | None = 2  # fine-tuning from package:blip-small; None: the config's epochs
    attributes: bool = True
    attribute_epochs: int = 4
    normalization: str = "zscore"
    rerank_k: int = 10
    latency_queries: int = 20
    dev: int = 2500  # held-out synthetic images (train distribution) the weights are fitted on; 0: equal
    fit_min_gain: float = 0.003  # a weight change must gain 0.3 points dev mAP@10 (1,000 dev images overfit)
    # Against weights that do not transfer (search/ensemble/folds.py): the fit's objective pays
    # `fit_regularise` mAP per unit of L1 distance from equal weight shares, and the fitted weights are kept
    # only when, on `fit_folds` held-out folds of dev, they beat equal weights by more than the folds'
    # spread (sample sd of the per-fold gains) and `fit_margin`; otherwise the demo fuses with equal weights.
    fit_folds: int = 5
    fit_regularise: float = 0.005
    fit_margin: float = 0.0
    # The ITM re-rank weight (seed form: fused + b x normalised logits; the seed's b = 1) fitted on dev and
    # kept only when it beats b = 1 on the same held-out folds (search/ensemble/rerank_fit.py); False: b = 1.
    rerank_fit: bool = True
    seed: int = 0
    workers: int = 2

    @classmethod
    def fast(cls) -> DemoPlan:
        return cls(
            config="demo/fast",
            train=3000,
            val=1500,
            test=500,
            epochs=None,
            val_per_epoch=None,
            blip_epochs=1,
            attribute_epochs=2,
            dev=500,
        )

    @classmethod
    def tiny(cls) -> DemoPlan:
        """Test-sized: every stage runs in about a minute (the end-to-end test, `demo_seeds.py --tiny`)."""
        return cls(
            config="demo/fast",
            train=160,
            val=80,
            val_queries=50,  # half the texts searched, against the whole 80-image gallery
            test=40,
            epochs=1,
            val_per_epoch=40,
            blip_epochs=1,
            attribute_epochs=1,
            dev=60,
            latency_queries=3,
        )


@dataclass
class DemoResult:
    """What the demo measured, also written to WORK/results.json."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    comparison: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)  # fusion weights fitted on the dev split


def prepare_data(work: Path, plan: DemoPlan) -> Path:
    """Synthetic train (+ test-style split) and the real val labels rendered, in the competition layout."""
    from trafficsearch.data.synth.generate import generate_dataset, render_labels

    root = work / "data"
    generate_dataset(
        root, plan.train, 0, seed=plan.seed, noise_rate=plan.noise, n_test=plan.test, workers=plan.workers
    )
    val = split(root, "val")
    all_val = work / "cvpr2023_val_label.txt"
    if not all_val.is_file():
        extract_val_labels(all_val)
    records = evenly(read_labels(all_val).records, plan.val)
    if not val.labels.is_file() or [r.image for r in read_labels(val.labels).records] != [
        r.image for r in records
    ]:
        write_labels(records, val.labels)
    render_labels(val.labels, val.images, seed=plan.seed, domain="web", workers=plan.workers)
    if plan.dev:  # its own root (its val split), so the real val labels above stay the val split
        generate_dataset(work / "dev-data", 0, plan.dev, seed=plan.seed + 1, workers=plan.workers)
    return root


def train_members(work: Path, root: Path, plan: DemoPlan, timings: dict[str, float]) -> dict[str, Path]:
    """Train (or resume) every member; checkpoint dirs by member name ("clip", "blip", "attributes")."""
    from trafficsearch.experiments.systems import train_attribute_member, train_member

    clip_overrides = []
    if plan.epochs is not None:
        clip_overrides.append(f"train.epochs={plan.epochs}")
    if plan.val_per_epoch is not None:
        clip_overrides.append(f"data.max_val={plan.val_per_epoch}")
    checkpoints = {
        "clip": _timed(
            timings,
            "train clip",
            lambda: train_member(plan.config, root, work / "train", clip_overrides, plan.seed),
        )
    }
    if plan.blip_config:
        blip_overrides = [] if plan.blip_epochs is None else [f"train.epochs={plan.blip_epochs}"]
        checkpoints["blip"] = _timed(
            timings,
            "train blip",
            lambda: train_member(plan.blip_config, root, work / "train-blip", blip_overrides, plan.seed),
        )
    if plan.attributes:
        checkpoints["attributes"] = _timed(
            timings,
            "train attributes",
            lambda: train_attribute_member(
                root,
                work / "train-attributes",
                epochs=plan.attribute_epochs,
                seed=plan.seed,
                workers=plan.workers,
            ),
        )
    return checkpoints


def index_split(
    work: Path, data: Any, checkpoints: dict[str, Path], models: Any, workers: int, itm_tokens: bool = True
) -> list[Any]:
    """Index one split once per member: WORK/index-<split>/<member>; the re-ranker's index also stores its
    ITM image tokens unless `itm_tokens` is False (the dev split is fitted on, never re-ranked)."""
    from trafficsearch.experiments.systems import MemberIndex, index_member

    folder = f"index-{data.name}"
    return [
        MemberIndex(
            name,
            ckpt,
            index_member(ckpt, data, work / folder / name, models, workers=workers, itm_tokens=itm_tokens),
        )
        for name, ckpt in checkpoints.items()
    ]


def fold_check(plan: DemoPlan) -> dict[str, Any]:
    """The held-out fold check both dev fits run (fusion weights, re-rank weight): `fit_folds` folds (none
    below 2), the margin a fit must clear, the fold seed."""
    return {
        "folds": plan.fit_folds if plan.fit_folds >= 2 else 0,
        "fold_margin": plan.fit_margin,
        "seed": plan.seed,
    }


def fit_weights_on_dev(work: Path, dev: Any, members: list[Any], models: Any, plan: DemoPlan) -> Any:
    """Fusion weights (one set per query kind) fitted on the held-out synthetic dev split, never on val:
    regularised toward equal weights and fold-checked (DemoPlan.fit_*): equal weights unless the fit
    transfers across held-out folds of dev. An ensemble FitResult (`folds` holds the check)."""
    from trafficsearch.experiments.systems import fit_fusion

    return fit_fusion(
        work / "ensemble-dev",
        members,
        models,
        dev,
        normalization=plan.normalization,
        min_gain=plan.fit_min_gain,
        regularise=plan.fit_regularise,
        **fold_check(plan),
    )


def fit_rerank_on_dev(work: Path, dev: Any, members: list[Any], models: Any, plan: DemoPlan, fit: Any) -> Any:
    """The ITM re-rank weight fitted on dev over the fusion as fitted (its weights), fold-checked against
    the seed's 1:1 (DemoPlan.fit_folds, fit_margin); None without a member that can re-rank."""
    from trafficsearch.experiments.systems import fit_rerank, reranker_of

    weighted = [replace(m, weight=w) for m, w in zip(members, fit.weights, strict=True)]
    blip = reranker_of(weighted, models)
    if blip is None:
        return None
    return fit_rerank(
        work / "ensemble-dev-rerank",
        weighted,
        models,
        dev,
        blip,
        normalization=plan.normalization,
        rerank_k=plan.rerank_k,
        kind_weights=fit.kind_weights,
        **fold_check(plan),
    )


def fit_summary(fit: Any, names: list[str], plan: DemoPlan) -> dict[str, Any]:
    """What results.json records of the fit: the weights used, whether the fitted ones were kept and why,
    and the fitted vs equal weights' held-out dev mAP@10 per fold."""
    folds = fit.folds
    kept = True if folds is None else bool(folds["keep"])
    out: dict[str, Any] = {
        "kept": kept,
        "weights": dict(zip(names, fit.weights, strict=True)),
        "kind_weights": {
            kind: dict(zip(names, w, strict=True)) for kind, w in (fit.kind_weights or {}).items()
        },
        "dev_images": plan.dev,
        "regularise": plan.fit_regularise,
        "min_gain": plan.fit_min_gain,
        "dev_map_official": round(fit.map_official, 6),
        "dev_equal_weights": round(fit.equal_map if fit.equal_map is not None else fit.baseline, 6),
        "dev_per_member": {k: round(v, 6) for k, v in fit.per_member.items()},
    }
    if folds is not None:
        out["folds"] = {k: [round(x, 6) for x in v] if isinstance(v, list) else v for k, v in folds.items()}
        out["reason"] = points_reason(
            folds["mean_gain"],
            folds["spread"],
            folds["margin"],
            kept,
            "fitted weights kept",
            "equal weights kept",
        )
    else:
        out["reason"] = "no fold check (fit_folds < 2): fitted weights used"
    return out


def fit_lines(summary: dict[str, Any]) -> list[str]:
    """The fit as printed: fitted vs equal weights on the dev folds, which was kept and why, the weights."""
    lines = [
        f"fusion weights fitted on the {summary['dev_images']}-image synthetic dev split "
        f"(regularised {summary['regularise']:g} toward equal weights):"
    ]
    folds = summary.get("folds")
    if folds:
        lines.append(f"  held-out dev mAP@10 on {folds['folds']} folds:")
        for name in ("fitted", "equal"):
            lines.append(f"    {name:>6} weights: " + " ".join(f"{100 * x:.2f}" for x in folds[name]))
    lines.append(f"  {summary['reason']}")
    weights = {"all": summary["weights"], **summary["kind_weights"]}
    lines.append(
        "  weights used: "
        + "; ".join(f"{k}: " + ", ".join(f"{m} {w:g}" for m, w in ws.items()) for k, ws in weights.items())
    )
    rerank = summary.get("rerank")
    if rerank:
        lines.append("ITM re-rank weight b (fused + b x L2-normalised logits; the seed's b = 1) on dev:")
        lines.append(
            "  dev mAP@10 by b: "
            + ", ".join(f"{float(b):g}: {100 * m:.2f}" for b, m in rerank["map_by_b"].items())
        )
        folds = rerank.get("folds")
        if folds:
            lines.append(
                f"  held-out folds: fitted {' '.join(f'{100 * x:.2f}' for x in folds['fitted'])}; "
                f"b = {rerank['baseline_b']:g}: {' '.join(f'{100 * x:.2f}' for x in folds['equal'])}"
            )
        lines.append(f"  {rerank['reason']}")
    return lines


def score_split(
    work: Path,
    data: Any,
    members: list[Any],
    models: Any,
    plan: DemoPlan,
    fit: Any = None,
    rerank_weight: float = 1.0,
) -> tuple[list, dict]:
    """Rows of every system on one split, and each system's hits (the report shows the full system's).
    `rerank_weight`: the seed form's weight of the normalised ITM logits (fitted on dev, else 1)."""
    from trafficsearch.eval.metrics import random_ranking
    from trafficsearch.experiments.systems import (
        open_fused,
        open_single,
        reranker_of,
        score_ranking,
        score_system,
    )

    latency = plan.latency_queries if data.name == "val" else 0
    rows: list[dict[str, Any]] = []
    hits: dict[str, Any] = {}
    for member in members:
        part, hits[member.name] = score_system(
            member.name, open_single(member, models), data, latency_queries=latency
        )
        rows += part
    if len(members) > 1:
        if fit is not None:
            members = [replace(m, weight=w) for m, w in zip(members, fit.weights, strict=True)]
        blip = reranker_of(members, models)  # chosen by capability (an ITM head), not by name
        engine = open_fused(
            work / f"ensemble-{data.name}",
            members,
            models,
            normalization=plan.normalization,
            rerank=blip,
            rerank_k=plan.rerank_k,
            rerank_b=rerank_weight,
            kind_weights=None if fit is None else fit.kind_weights,
        )
        part, hits[FUSION] = score_system(
            f"{FUSION} ({plan.normalization})", engine, data, latency_queries=latency
        )
        rows += part
        if blip is not None:
            part, hits[FULL_SYSTEM] = score_system(
                FULL_SYSTEM, engine, data, rerank=True, latency_queries=latency
            )
            rows += part
    rows += score_ranking(
        RANDOM, data, random_ranking(data.records, len(data.query_records), 10, seed=plan.seed)
    )
    return rows, hits


def compare_with_best_single(rows: list[dict[str, Any]], members: Sequence[str]) -> dict[str, Any]:
    """Full system (or fusion without BLIP) minus the best single model, per split, in points (x100).

    "Best" is chosen per split on the official mAP@10 under the equal rule (the metric the targets name).
    """
    out: dict[str, Any] = {}
    by_key = {(r["split"], r["system"], r["rule"]): r for r in rows}
    for split_name in dict.fromkeys(r["split"] for r in rows):
        singles = [m for m in members if (split_name, m, "equal") in by_key]
        systems = [r["system"] for r in rows if r["split"] == split_name and r["rule"] == "equal"]
        system = (
            FULL_SYSTEM
            if FULL_SYSTEM in systems
            else next((s for s in systems if s.startswith(FUSION)), None)
        )
        if not singles or system is None:
            continue
        best = max(singles, key=lambda m: by_key[(split_name, m, "equal")]["overall"]["map_official"])
        entry: dict[str, Any] = {"best_single": best, "system": system}
        for rule in RULES:
            mine, theirs = (
                by_key[(split_name, system, rule)]["overall"],
                by_key[(split_name, best, rule)]["overall"],
            )
            for metric in ("map_official", "map_at_k"):
                entry[f"{metric}_{rule}_points"] = round(100 * (mine[metric] - theirs[metric]), 2)
            if theirs["map_at_k"] > 0:
                entry[f"map_at_k_{rule}_relative"] = round(mine["map_at_k"] / theirs["map_at_k"] - 1, 4)
        out[split_name] = entry
    return out


def print_tables(console: Console, rows: list[dict]) -> None:
    """The two compact tables (equal rule; contain rule and ranking metrics): see experiments/tables.py."""
    console.print(results_table(rows))
    console.print(contain_table(rows))


def print_comparison(console: Console, comparison: dict[str, Any]) -> None:
    """Per split, two lines under WIDTH columns: which systems are compared, then by how much."""
    for split_name, c in comparison.items():
        console.print(f"{split_name}: {c['system']} vs the best single model ({c['best_single']}), points:")
        console.print(
            f"  official mAP@10 {c['map_official_equal_points']:+.2f} (equal), "
            f"{c['map_official_contain_points']:+.2f} (contain); "
            f"mAP/min(R,10) {c['map_at_k_equal_points']:+.2f} "
            f"({100 * c.get('map_at_k_equal_relative', 0.0):+.1f}% relative)"
        )


def _timed(timings: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = fn()
    timings[name] = round(time.perf_counter() - start, 1)
    return value


def run_demo(work: str | Path, plan: DemoPlan, console: Console | None = None) -> DemoResult:
    """Run every stage (resuming finished ones) and print the comparison table."""
    from trafficsearch.data.synth.sheet import write_contact_sheet
    from trafficsearch.eval.report import write_html_report
    from trafficsearch.experiments.systems import ModelCache, load_split_data

    console = console or demo_console()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    out = DemoResult()
    t = out.timings
    start = time.perf_counter()

    console.rule("1/5 data: synthetic train set + real val labels rendered")
    root = _timed(t, "data", lambda: prepare_data(work, plan))
    sheet = write_contact_sheet(
        split(root, "train").dir, None, work / "train_samples.png", n=24, seed=plan.seed
    )
    console.rule("2/5 training the members: CLIP default, BLIP-small (ITC + ITM), attribute baseline")
    checkpoints = train_members(work, root, plan, t)
    splits = [load_split_data(root, "val", plan.val_queries)]
    if plan.test:
        splits.append(load_split_data(root, "test"))
    models = ModelCache()
    console.rule("3/5 indexing each split once per member")
    indexed = {
        data.name: _timed(
            t,
            f"index {data.name}",
            lambda data=data: index_split(work, data, checkpoints, models, plan.workers),
        )
        for data in splits
    }
    fit = None
    if plan.dev and len(checkpoints) > 1:
        dev = replace(load_split_data(work / "dev-data", "val"), name="dev")
        dev_members = _timed(
            t,
            "index dev",
            lambda: index_split(work, dev, checkpoints, models, plan.workers, itm_tokens=False),
        )
        fit = _timed(t, "fit weights", lambda: fit_weights_on_dev(work, dev, dev_members, models, plan))
        out.fit = fit_summary(fit, list(checkpoints), plan)
        if plan.rerank_fit:
            rerank_b = _timed(
                t, "fit rerank", lambda: fit_rerank_on_dev(work, dev, dev_members, models, plan, fit)
            )
            if rerank_b is not None:
                out.fit["rerank"] = rerank_b.to_dict()
    console.rule("4/5 searching and scoring: single models, fusion, fusion + ITM re-rank, random")
    val_hits: dict[str, Any] = {}
    for data in splits:
        rows, hits = _timed(
            t,
            f"search {data.name}",
            lambda data=data: score_split(
                work, data, indexed[data.name], models, plan, fit, out.fit.get("rerank", {}).get("b", 1.0)
            ),
        )
        for row in rows:
            if row["split"] == "test":
                row["split"] = "test-style"
        out.rows += rows
        if data.name == "val":
            val_hits = hits
    out.comparison = compare_with_best_single(out.rows, list(checkpoints))

    console.rule("5/5 report")
    val = splits[0]
    shown = next(s for s in (FULL_SYSTEM, FUSION, *checkpoints) if s in val_hits)
    write_html_report(
        work / "report.html",
        val.query_records,
        val.records,
        [[h.name for h in row] for row in val_hits[shown]],
        val.images,
        scores=[[h.score for h in row] for row in val_hits[shown]],
        title=f"trafficsearch demo: real val labels, {shown}",
    )
    t["total"] = round(time.perf_counter() - start, 1)
    out.paths = {
        "report": str(work / "report.html"),
        "curves": str(work / "train" / "curves.png"),
        "train_samples": str(sheet),
        **{f"checkpoint {k}": str(v) for k, v in checkpoints.items()},
        "val_ensemble": str(work / "ensemble-val"),
        "results": str(work / "results.json"),
    }
    atomic_write_json(work / "results.json", {"plan": asdict(plan), **asdict(out)})
    print_tables(console, out.rows)
    print_comparison(console, out.comparison)
    for line in fit_lines(out.fit) if out.fit else []:
        console.print(line)
    console.print("timings (s): " + ", ".join(f"{k} {v}" for k, v in t.items()))
    for key, path in out.paths.items():
        console.print(f"{key:>22}: {path}")
    return out


def demo_console() -> Console:
    """The terminal's console, or one WIDTH columns wide when the output is not a terminal (a log file):
    the tables are made for WIDTH columns, which rich would otherwise squeeze into 80."""
    console = Console()
    return console if console.is_terminal else Console(width=WIDTH)


def load_results(work: str | Path) -> dict[str, Any]:
    return json.loads((Path(work) / "results.json").read_text())
