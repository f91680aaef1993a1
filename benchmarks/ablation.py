"""The ablation: what each step of the seed's recipe and each part of its system is worth on our data.

    .venv/bin/python benchmarks/ablation.py --quick     # fits the 90-minute CI budget (2 CPU cores)
    .venv/bin/python benchmarks/ablation.py             # the full, demo-sized run

Trains the CLIP default (MiniLM text trunk + 64 px ViT) on the synthetic train set (5% label noise) and
scores it on the real val labels rendered (quick: an evenly spread subset) and on the test-style split
(colour+brand+type vehicle queries, camera domain). Rows:
- the plain baseline (stretch resize, no crop, no RandAugment, no prompts, no truncation, one-to-one
  targets; its text trunk stays frozen, see PLAIN_KEEPS), each recipe step added to it alone, the full
  recipe, each step removed from it alone; plain and full over `--seeds` seeds (mean and spread);
- each single member of the ensemble (CLIP full recipe seeds 0 and 1, BLIP-small ITC, the attribute
  baseline), their fusion under each normalisation, fusion + BLIP ITM re-ranking (three forms), kind
  routing, and a random ranking.
Columns: official mAP@10 (equal, contain), mAP@10 over min(R,10), R@1, per kind, cold single-query latency.

Every finished row is kept in WORK/rows/*.json and training resumes, so an interrupted run continues.
Writes benchmarks/results/ablation-{quick,full}.{json,md} and docs/ablation-{quick,full}.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from trafficsearch.benchmarking import machine_info
from trafficsearch.experiments import (
    DemoPlan,
    MemberIndex,
    ModelCache,
    fit_fusion,
    index_member,
    load_split_data,
    open_fused,
    open_single,
    prepare_data,
    score_ranking,
    score_system,
    train_attribute_member,
    train_member,
)
from trafficsearch.ioutil import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).parent / "results"
DOCS = Path(__file__).parent.parent / "docs"
CLIP_CONFIG = "demo/default"
BLIP_CONFIG = "demo/blip-small"
SPLITS = ("val", "test")


@dataclass(frozen=True)
class Sizes:
    train: int
    val: int | None  # real val labels used (evenly spread); None: all 10,000
    test: int
    epochs: int
    val_per_epoch: int
    blip_epochs: int
    attribute_epochs: int
    latency_queries: int


QUICK = Sizes(
    train=3000, val=2000, test=500, epochs=4, val_per_epoch=500, blip_epochs=2, attribute_epochs=4,
    latency_queries=20,
)  # fmt: skip
FULL = Sizes(
    train=9000, val=None, test=2000, epochs=7, val_per_epoch=2500, blip_epochs=3, attribute_epochs=6,
    latency_queries=50,
)  # fmt: skip

TINY = Sizes(
    train=200,
    val=120,
    test=60,
    epochs=1,
    val_per_epoch=60,
    blip_epochs=1,
    attribute_epochs=1,
    latency_queries=3,
)  # fmt: skip  (--tiny: a smoke run of every row in a few minutes; its numbers mean nothing)

# step: (what it is, its overrides in the plain baseline, its overrides in the full recipe)
STEPS: dict[str, tuple[str, list[str], list[str]]] = {
    "pad": ("aspect-preserving pad to square", ["data.transform=stretch"], ["data.transform=pad"]),
    "crop": (
        "random resized crop 0.9-1, random interpolation",
        ["data.crop_scale=null"],
        ["data.crop_scale=[0.9, 1.0]", "data.crop_interpolation=random"],
    ),
    "randaugment": (
        "restricted RandAugment N=2 M=5 p=0.5",
        ["data.randaugment=null"],
        ["data.randaugment={n: 2, magnitude: 5, prob: 0.5}"],
    ),
    "prompts": (
        "prompt augmentation (vehicles + pedestrians)",
        ["data.prompts={vehicles: false, pedestrians: false}"],
        ["data.prompts={vehicles: true, pedestrians: true}"],
    ),
    # How vehicle prompts are given (only acts where prompts are on, so it has no "plain +" row): the seed's
    # one in-place caption per vehicle, or one extra pair per brand/type/colour prompt.
    "prompt_form": (
        "vehicle prompts in place (the seed's form, not separate pairs)",
        ["data.prompts.vehicle_form=pairs"],
        ["data.prompts.vehicle_form=in_place"],
    ),
    "truncation": ("noisy-loss truncation 5%", ["loss.truncate_ratio=0"], ["loss.truncate_ratio=0.05"]),
    "targets": ("many-to-many targets (same text)", ["loss.targets=one_to_one"], ["loss.targets=same_text"]),
    "lock": (
        "text trunk frozen (few unlocked layers: 0)",
        ["model.lock_text=false"],
        ["model.lock_text=true"],
    ),
}


@dataclass
class Row:
    key: str
    group: str  # recipe | members | system | floor
    label: str
    seeds: list[int] = field(default_factory=list)
    results: list[list[dict[str, Any]]] = field(default_factory=list)  # per seed: score rows (split x rule)
    seconds: float = 0.0


# Steps the plain baseline keeps on, for cost: an unfrozen MiniLM trunk trains at ~1/8 of the speed of the
# cached frozen one on 2 CPU cores, so every row without it would cost 8x. Its worth is measured by removing
# it from the full recipe ("full recipe - text trunk frozen"); there is no "plain + frozen" row.
PLAIN_KEEPS = ("lock",)
# Steps that only modify another (prompt_form modifies prompts): measured by removal from the full recipe.
NO_PLAIN_ROW = ("prompt_form",)


def clip_overrides(step_on: Callable[[str], bool], sizes: Sizes, work: Path) -> list[str]:
    out = [
        f"train.epochs={sizes.epochs}",
        f"data.max_val={sizes.val_per_epoch}",
        f"model.text_cache_file={work / 'text_features.pt'}",
    ]
    for step, (_, plain, recipe) in STEPS.items():
        out += recipe if step_on(step) else plain
    return out


# Rows only the full run trains: "full recipe - text trunk frozen" unfreezes MiniLM on top of the prompt
# pairs (~3.2 pairs per image), about 40 minutes on 2 cores even at the quick sizes.
FULL_ONLY = ("full-lock",)


def recipe_runs(seeds: int, quick: bool = False) -> list[tuple[str, str, Callable[[str], bool], list[int]]]:
    """(key, label, which steps are on, seeds) for every recipe row."""
    key_seeds = list(range(seeds))
    runs: list[tuple[str, str, Callable[[str], bool], list[int]]] = [
        ("plain", "plain baseline", lambda s: s in PLAIN_KEEPS, key_seeds)
    ]
    for step, (what, _, _) in STEPS.items():
        if step not in PLAIN_KEEPS + NO_PLAIN_ROW:
            runs.append(
                (f"plain+{step}", f"plain + {what}", lambda s, step=step: s in (step, *PLAIN_KEEPS), [0])
            )
    runs.append(("full", "full recipe", lambda s: True, key_seeds))
    for step, (what, _, _) in STEPS.items():
        runs.append((f"full-{step}", f"full recipe - {what}", lambda s, step=step: s != step, [0]))
    return [run for run in runs if not (quick and run[0] in FULL_ONLY)]


class Ablation:
    def __init__(self, work: Path, sizes: Sizes, mode: str, seeds: int, console: Console) -> None:
        self.work, self.sizes, self.mode, self.seeds, self.console = work, sizes, mode, seeds, console
        self.rows_dir = work / "rows"
        self.rows_dir.mkdir(parents=True, exist_ok=True)
        self.root = prepare_data(
            work, DemoPlan(train=sizes.train, val=sizes.val, test=sizes.test, noise=0.05, seed=0, dev=1500)
        )
        self.splits = [load_split_data(self.root, name) for name in SPLITS]
        self.dev = load_split_data(work / "dev-data", "val")  # fusion weights are fitted here, never on val
        self.members = ModelCache()
        self.rows: list[Row] = []

    # -- bookkeeping
    def done(self, key: str) -> Row | None:
        path = self.rows_dir / f"{key.replace('/', '_')}.json"
        if path.is_file():
            row = Row(**json.loads(path.read_text(encoding="utf-8")))
            self.rows.append(row)
            return row
        return None

    def keep(self, row: Row) -> Row:
        atomic_write_json(self.rows_dir / f"{row.key.replace('/', '_')}.json", asdict(row))
        self.rows.append(row)
        return row

    def index_all(self, name: str, checkpoint: Path, models: ModelCache) -> dict[str, MemberIndex]:
        return {
            data.name: MemberIndex(
                name,
                checkpoint,
                index_member(
                    checkpoint, data, self.work / "index" / name / data.name, models, progress=False
                ),
            )
            for data in self.splits
        }

    def score_all(self, label: str, engines: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
        rows = []
        for data in self.splits:
            part, _ = score_system(
                label, engines[data.name], data, latency_queries=self.sizes.latency_queries, **kwargs
            )
            rows += part
        return rows

    # -- rows
    def recipe(self) -> dict[str, Path]:
        """Every recipe row; returns the checkpoints of the full recipe per seed (ensemble members)."""
        full: dict[str, Path] = {}
        for key, label, step_on, seeds in recipe_runs(self.seeds, quick=self.mode != "full"):
            row = self.done(key)
            if row is None:
                self.console.rule(f"[bold]{label}")
                start = time.perf_counter()
                row = Row(key, "recipe", label)
                for seed in seeds:
                    run = self.work / "runs" / f"{key}-s{seed}"
                    ckpt = train_member(
                        CLIP_CONFIG, self.root, run, clip_overrides(step_on, self.sizes, self.work), seed
                    )
                    models = ModelCache()
                    indexes = self.index_all(f"{key}-s{seed}", ckpt, models)
                    engines = {n: open_single(m, models) for n, m in indexes.items()}
                    row.seeds.append(seed)
                    row.results.append(self.score_all(label, engines))
                row.seconds = round(time.perf_counter() - start, 1)
                self.keep(row)
            if key == "full":
                for seed in row.seeds:
                    full[f"clip-s{seed}"] = self.work / "runs" / f"full-s{seed}"
        return {name: _best(path) for name, path in full.items()}

    def fit_on_dev(self, checkpoints: dict[str, Path]) -> dict[str, Any]:
        """Fusion weights fitted on the held-out synthetic dev split: one set ("all"), per kind ("kind")."""
        from types import SimpleNamespace

        path = self.work / "fits.json"
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            return {k: SimpleNamespace(**v) for k, v in saved.items()}
        dev = replace(self.dev, name="dev")
        members = [
            index_member(ckpt, dev, self.work / "index" / name.replace(" ", "-") / "dev", self.members)
            for name, ckpt in checkpoints.items()
        ]
        indexed = [MemberIndex(n, c, i) for (n, c), i in zip(checkpoints.items(), members, strict=True)]
        out = self.work / "ensembles" / "fit-dev"
        fit = fit_fusion(out, indexed, self.members, dev, by_kind=True)  # fits one set first, then per kind
        records = {
            "all": {**_fit_record(fit), "kind_weights": None, "dev_map_official": None},
            "kind": _fit_record(fit),
        }
        atomic_write_json(path, records)
        return {k: SimpleNamespace(**v) for k, v in records.items()}

    def systems(self, clip: dict[str, Path]) -> None:
        """Single members, fusion per normalisation, fusion + re-ranking, routing, the attribute baseline."""
        start = time.perf_counter()
        blip = train_member(
            BLIP_CONFIG,
            self.root,
            self.work / "runs" / "blip",
            [
                f"train.epochs={self.sizes.blip_epochs}",
                "data.max_train=null",
                f"data.max_val={self.sizes.val_per_epoch}",
            ],
            0,
        )
        blip_s = time.perf_counter() - start
        start = time.perf_counter()
        attributes = train_attribute_member(
            self.root, self.work / "runs" / "attributes", epochs=self.sizes.attribute_epochs
        )
        attr_s = time.perf_counter() - start
        names = sorted(clip)[:2]
        checkpoints = {**{f"CLIP {n}": clip[n] for n in names}, "BLIP ITC": blip, "attributes": attributes}
        indexes = {
            name: self.index_all(name.replace(" ", "-"), ckpt, self.members)
            for name, ckpt in checkpoints.items()
        }
        singles = {
            **{f"CLIP {n}": (n, f"CLIP full recipe, seed {n[-1]} (single model)", 0.0) for n in names},
            "BLIP ITC": ("blip", "BLIP-small ITC (single model)", blip_s),
            "attributes": ("attributes", "attribute-recognition baseline (3rd-place approach)", attr_s),
        }
        for name, (key, label, seconds) in singles.items():
            if self.done(key) is None:
                self.console.rule(f"[bold]{label}")
                engines = {s: open_single(indexes[name][s], self.members) for s in SPLITS}
                row = Row(key, "members", label, [0], [self.score_all(label, engines)], round(seconds, 1))
                self.keep(row)

        all_members = list(checkpoints)
        fits = self.fit_on_dev(checkpoints)

        def fused(
            tag: str,
            members: list[str],
            normalization: str = "zscore",
            rerank: bool = False,
            form: str = "seed",
            fit: str | None = None,
        ) -> dict[str, Any]:
            weights = fits[fit].weights if fit else [1.0] * len(members)
            kind_weights = fits[fit].kind_weights if fit else None
            return {
                s: open_fused(
                    self.work / "ensembles" / tag / s,
                    [replace(indexes[m][s], weight=w) for m, w in zip(members, weights, strict=True)],
                    self.members,
                    normalization=normalization,
                    rerank=blip if rerank else None,
                    rerank_form=form,
                    kind_weights=kind_weights,
                )
                for s in SPLITS
            }

        plans: list[tuple[str, str, Callable[[], dict[str, Any]], dict[str, Any]]] = []
        for norm in ("l2", "zscore", "minmax", "rrf"):
            label = f"fusion of 4, equal weights, {norm}" + (" (the seed's fusion)" if norm == "l2" else "")
            plans.append((f"fusion-{norm}", label, lambda n=norm: fused(f"fusion-{n}", all_members, n), {}))
        plans += [
            (
                "fusion-3",
                "fusion of 3 (no attribute model), equal weights, zscore",
                lambda: fused("fusion-3", all_members[:3]),
                {},
            ),
            (
                "fusion-fit",
                "fusion of 4, zscore, weights fitted on dev",
                lambda: fused("fusion-fit", all_members, fit="all"),
                {},
            ),
            (
                "fusion-fit-kind",
                "fusion of 4, zscore, weights fitted on dev per query kind",
                lambda: fused("fusion-fit-kind", all_members, fit="kind"),
                {},
            ),
        ]
        for form in ("seed", "itm_prob", "weighted"):
            plans.append(
                (
                    f"rerank-{form}",
                    f"fusion per kind + ITM re-rank top 10, {form} form"
                    + (" (full system)" if form == "seed" else ""),
                    lambda f=form: fused(f"rerank-{f}", all_members, rerank=True, form=f, fit="kind"),
                    {"rerank": True},
                )
            )
        plans.append(
            (
                "clip+rerank",
                "CLIP seed 0 + ITM re-rank top 10 (seed form)",
                lambda: fused("clip-rerank", all_members[:1], rerank=True),
                {"rerank": True},
            )
        )
        for route in ("hard", "soft"):
            plans.append(
                (
                    f"route-{route}",
                    f"full system + kind routing ({route})",
                    lambda: fused("rerank-seed", all_members, rerank=True, fit="kind"),
                    {"rerank": True, "route": route},
                )
            )
        for key, label, make, kwargs in plans:
            if self.done(key) is None:
                self.console.rule(f"[bold]{label}")
                start = time.perf_counter()
                rows = self.score_all(label, make(), **kwargs)
                self.keep(Row(key, "system", label, [0], [rows], round(time.perf_counter() - start, 1)))
        if self.done("random") is None:
            from trafficsearch.eval.metrics import random_ranking

            rows = []
            for data in self.splits:
                rows += score_ranking(
                    "random ranking", data, random_ranking(data.records, len(data.query_records), 10, seed=0)
                )
            self.keep(Row("random", "floor", "random ranking", [0], [rows]))


def _fit_record(fit: Any) -> dict[str, Any]:
    return {
        "weights": fit.weights,
        "kind_weights": fit.kind_weights,
        "dev_map_official": fit.map_official,
        "dev_baseline": fit.baseline,
        "dev_per_member": fit.per_member,
    }


def _best(run: Path) -> Path:
    return run / "best" if (run / "best").is_dir() else run / "last"


# -- reporting ----------------------------------------------------------------------------------------
COLUMNS: list[tuple[str, str, str, str | None]] = [
    # header, rule, metric, kind
    ("mAP@10 equal", "equal", "map_official", None),
    ("mAP@10 contain", "contain", "map_official", None),
    ("mAP/min(R,10)", "equal", "map_at_k", None),
    ("R@1", "equal", "recall1", None),
    ("vehicles", "equal", "map_official", "vehicle"),
    ("pedestrians", "equal", "map_official", "pedestrian"),
]


def _value(rows: list[dict[str, Any]], split: str, rule: str, metric: str, kind: str | None) -> float | None:
    for r in rows:
        if r["split"] == split and r["rule"] == rule:
            scores = r["overall"] if kind is None else r.get("per_kind", {}).get(kind)
            if scores is None:
                return None
            return 100 * (scores["recall"]["1"] if metric == "recall1" else scores[metric])
    return None


def summarise(row: Row, split: str) -> dict[str, Any]:
    """Mean and spread (sample sd over seeds) of every column, and the p50 latency of the first seed."""
    out: dict[str, Any] = {"key": row.key, "group": row.group, "label": row.label, "n_seeds": len(row.seeds)}
    for header, rule, metric, kind in COLUMNS:
        values = [v for res in row.results if (v := _value(res, split, rule, metric, kind)) is not None]
        out[header] = statistics.fmean(values) if values else None
        out[header + " sd"] = statistics.stdev(values) if len(values) > 1 else None
    latency = next((r.get("latency_ms", {}).get("p50") for r in row.results[0] if r["split"] == split), None)
    out["ms/query"] = latency
    return out


def markdown(summary: list[dict[str, Any]], title: str) -> str:
    headers = ["row", *[c[0] for c in COLUMNS], "ms/query"]
    lines = [f"**{title}**", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for s in summary:
        cells = [s["label"] + (f" ({s['n_seeds']} seeds)" if s["n_seeds"] > 1 else "")]
        for header, *_ in COLUMNS:
            v, sd = s[header], s[header + " sd"]
            cells.append("-" if v is None else f"{v:.2f}" + (f" ± {sd:.2f}" if sd is not None else ""))
        cells.append("-" if s["ms/query"] is None else f"{s['ms/query']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(summary: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [s["label"] for s in summary]
    values = [s["mAP/min(R,10)"] or 0.0 for s in summary]
    errors = [s["mAP/min(R,10) sd"] or 0.0 for s in summary]
    colours = {"recipe": "#4C72B0", "members": "#55A868", "system": "#C44E52", "floor": "#8C8C8C"}
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(labels) + 1.2))
    ax.barh(range(len(labels)), values, xerr=errors, color=[colours[s["group"]] for s in summary])
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mAP@10 over min(R,10), equal rule, x100")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


FULL_SYSTEM_KEY = "rerank-seed"


def targets(by_split: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The issue's targets, per split: full system vs the plain baseline (relative, mAP/min(R,10)) and vs
    the best single model (points), plus what re-ranking adds to the cold single-query latency."""
    lines = []
    metric = "mAP/min(R,10)"
    for split, summary in by_split.items():
        rows = {s["key"]: s for s in summary}
        full, plain = rows.get(FULL_SYSTEM_KEY), rows.get("plain")
        singles = [s for s in summary if s["group"] == "members"]
        if not full or not plain or not singles or full[metric] is None:
            continue
        best = max(singles, key=lambda s: s[metric] or 0.0)
        relative = 100 * (full[metric] / plain[metric] - 1) if plain[metric] else float("nan")
        lines.append(
            f"{split}: full system {full[metric]:.2f} vs plain baseline {plain[metric]:.2f} "
            f"({relative:+.1f}% relative; target +15%); vs the best single model ({best['label']}, "
            f"{best[metric]:.2f}): {full[metric] - best[metric]:+.2f} points (target +2); official mAP@10 "
            f"{full['mAP@10 equal']:.2f} vs {best['mAP@10 equal']:.2f}"
        )
        fused = rows.get("fusion-fit-kind")
        if fused and fused["ms/query"] and full["ms/query"]:
            lines.append(
                f"{split}: re-ranking adds {full['ms/query'] - fused['ms/query']:+.1f} ms to the cold "
                f"single-query "
                f"p50 ({fused['ms/query']:.1f} -> {full['ms/query']:.1f}; target <= 50)"
            )
    return lines


def report(ab: Ablation, total_s: float) -> None:
    order = {"recipe": 0, "members": 1, "system": 2, "floor": 3}
    rows = sorted(ab.rows, key=lambda r: order[r.group])
    by_split = {s: [summarise(r, s) for r in rows] for s in SPLITS}
    name = f"ablation-{ab.mode}"
    sizes = ab.sizes
    desc = (
        f"{ab.mode} run: {sizes.train} synthetic train images, {sizes.epochs} epochs; val = "
        f"{sizes.val or 10000} real val labels rendered; test-style = {sizes.test} synthetic; "
        f"total {total_s / 60:.1f} min"
    )
    md = [f"# Ablation ({ab.mode})", "", desc, ""]
    md.append(markdown(by_split["val"], "val (real labels rendered), x100"))
    md.append(markdown(by_split["test"], "test-style split, x100"))
    target_lines = targets(by_split)
    md += ["**Targets** (measured, not asserted)", "", *[f"- {line}" for line in target_lines], ""]
    results, docs = (ab.work, ab.work) if ab.mode == "tiny" else (RESULTS, DOCS)
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results / f"{name}.md", "\n".join(md))
    atomic_write_json(
        results / f"{name}.json",
        {
            "mode": ab.mode,
            "sizes": asdict(sizes),
            "seeds": ab.seeds,
            "total_s": round(total_s, 1),
            "machine": machine_info(),
            "summary": by_split,
            "targets": target_lines,
            "rows": [asdict(r) for r in rows],
        },
    )
    bar_chart(by_split["val"], docs / f"{name}.png", f"ablation ({ab.mode}): val, real labels rendered")
    table = Table(title=desc, title_justify="left")
    for header in ["row", *[c[0] for c in COLUMNS], "ms/query"]:
        table.add_column(header, justify="left" if header == "row" else "right")
    for s in by_split["val"]:
        cells = [s["label"]]
        for header, *_ in COLUMNS:
            cells.append("-" if s[header] is None else f"{s[header]:.2f}")
        cells.append("-" if s["ms/query"] is None else f"{s['ms/query']:.1f}")
        table.add_row(*cells)
    ab.console.print(table)
    ab.console.print(f"wrote {results / name}.md, .json and {docs / name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Smaller sizes: fits the 90-minute CI budget.")
    parser.add_argument("--tiny", action="store_true", help="Smoke run of every row on tiny sizes.")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds of the key rows (plain, full recipe).")
    parser.add_argument("--work", type=Path, default=None, help="Work folder (default runs/ablation-MODE).")
    parser.add_argument(
        "--stage", choices=("recipe", "all"), default="all", help="recipe: only the recipe rows (no report)."
    )
    args = parser.parse_args()
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    console = Console(width=140)
    work = args.work or Path("runs") / f"ablation-{mode}"
    start = time.perf_counter()
    ab = Ablation(work, {"tiny": TINY, "quick": QUICK, "full": FULL}[mode], mode, args.seeds, console)
    clip = ab.recipe()
    if args.stage == "recipe":
        return
    ab.systems(clip)
    elapsed = time.perf_counter() - start
    timing = work / "elapsed.json"
    spent = json.loads(timing.read_text())["s"] if timing.is_file() else 0.0
    atomic_write_json(timing, {"s": spent + elapsed})
    report(ab, spent + elapsed)


if __name__ == "__main__":
    main()
