"""The seed's fine-tuning tricks, measured on a pre-trained start (the ablation the seed's recipe is about).

    python benchmarks/finetune_tricks.py [--train 2000] [--val 1500] [--test 500] [--seeds 3]

The seed fine-tuned pre-trained models with few unlocked layers, a low learning rate and 2-3 epochs, against
catastrophic forgetting, and truncated the largest losses against label noise. Here each of those is
changed alone, from the shipped demo regime (configs/demo/default.yaml: package:clip-default, 3 of 5 image
groups unlocked, lr 5e-4, 3 epochs, no truncation), on the same synthetic train set (web-domain vehicles)
with 5% or 20% of its captions swapped for another image's:

- all image groups unlocked, a 4x learning rate (2e-3, the pre-training LR), 8 epochs instead of 3;
- truncation of the largest 5% of per-pair losses, at 5% noise; at 20% noise without it, with 5% and 20%.

Every variant is trained over `--seeds` training seeds (the data stays seed 0) and its *last* checkpoint
is scored (no epoch picked on val), with the official mAP@10 (equal rule) on val (the real val labels
rendered, web domain) and on the test-style split (colour+brand+type vehicle queries, camera domain: the
train/test vehicle domain shift). Reported: mean and sample sd per variant, and each variant's paired
difference to its reference (the regime at the same noise, same seed). Every finished (variant, seed) is
kept in WORK/rows/, so an interrupted run continues. Writes benchmarks/results/finetune_tricks.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from trafficsearch.benchmarking import machine_info
from trafficsearch.experiments import (
    DemoPlan,
    MemberIndex,
    ModelCache,
    index_member,
    load_split_data,
    official_points,
    open_single,
    prepare_data,
    score_system,
    seed_stats,
    train_member,
)
from trafficsearch.ioutil import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = "demo/default"
SPLITS = {"val": "val", "test": "test-style"}
KINDS = {"overall": None, "vehicles": "vehicle", "pedestrians": "pedestrian"}


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    noise: float
    overrides: tuple[str, ...]
    reference: str | None  # the variant it differs from in one trick (paired by seed)


VARIANTS = [
    Variant("regime", "demo regime (3/5 groups, lr 5e-4, 3 ep)", 0.05, (), None),
    Variant("all-groups", "all image groups unlocked", 0.05, ("model.lock_image=false",), "regime"),
    Variant("high-lr", "lr 2e-3 (4x)", 0.05, ("optim.lr=0.002",), "regime"),
    Variant("many-epochs", "8 epochs", 0.05, ("train.epochs=8",), "regime"),
    Variant("trunc5", "truncation 5%", 0.05, ("loss.truncate_ratio=0.05",), "regime"),
    Variant("noise20", "20% noise, no truncation", 0.20, (), None),
    Variant("noise20-trunc5", "20% noise, truncation 5%", 0.20, ("loss.truncate_ratio=0.05",), "noise20"),
    Variant("noise20-trunc20", "20% noise, truncation 20%", 0.20, ("loss.truncate_ratio=0.2",), "noise20"),
]
BY_KEY = {v.key: v for v in VARIANTS}


def points(rows: list[dict[str, Any]], split: str, kind: str | None) -> float:
    """Official mAP@10 (equal rule) x100 of one split, overall or one kind, from score_system rows."""
    value = official_points(next(r for r in rows if r["split"] == split and r["rule"] == "equal"), kind)
    assert value is not None, f"no {kind} queries in {split}"
    return value


class Tricks:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work, self.args = work, args
        (work / "rows").mkdir(parents=True, exist_ok=True)
        self.roots: dict[float, Path] = {}
        self.splits: dict[float, list[Any]] = {}

    def data(self, noise: float) -> tuple[Path, list[Any]]:
        """The data set at this noise rate (train differs; val and test-style are the same images)."""
        if noise not in self.roots:
            plan = DemoPlan(
                train=self.args.train, val=self.args.val, test=self.args.test, noise=noise, dev=0, seed=0
            )
            root = prepare_data(self.work / f"noise{round(100 * noise):02d}", plan)
            self.roots[noise] = root
            self.splits[noise] = [load_split_data(root, name) for name in SPLITS]
        return self.roots[noise], self.splits[noise]

    def run(self, variant: Variant, seed: int) -> dict[str, Any]:
        """Train, index and score one (variant, seed); read back when a finished run kept its row."""
        path = self.work / "rows" / f"{variant.key}-s{seed}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        root, splits = self.data(variant.noise)
        run = self.work / "runs" / f"{variant.key}-s{seed}"
        start = time.perf_counter()
        overrides = [
            f"data.max_val={self.args.val_per_epoch}",
            f"model.text_cache_file={self.work / 'text_features.pt'}",
            *variant.overrides,
        ]
        train_member(CONFIG, root, run, overrides, seed, show_progress=False)
        train_s = time.perf_counter() - start
        checkpoint = run / "last"  # the regime's own end point, not an epoch picked on val
        models, rows = ModelCache(), []
        for data in splits:
            index = index_member(checkpoint, data, self.work / "index" / run.name / data.name, models,
                                 progress=False)  # fmt: skip
            engine = open_single(MemberIndex(run.name, checkpoint, index), models)
            rows += score_system(variant.key, engine, data)[0]
        out = {
            "variant": variant.key,
            "seed": seed,
            "train_s": round(train_s, 1),
            "scores": {
                f"{split}/{kind}": round(points(rows, split, k), 4)
                for split in SPLITS
                for kind, k in KINDS.items()
            },
        }
        atomic_write_json(path, out)
        return out


COLUMNS = ("val/overall", "val/vehicles", "val/pedestrians", "test/overall")


def summarise(runs: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """Per variant: mean/sd of every score, and the per-seed paired difference to its reference."""
    by = {(r["variant"], r["seed"]): r for r in runs}
    out = []
    for v in VARIANTS:
        mine = [by[(v.key, s)] for s in seeds if (v.key, s) in by]
        if not mine:
            continue
        row: dict[str, Any] = {"variant": v.key, "label": v.label, "noise": v.noise, "reference": v.reference}
        row["seeds"] = [r["seed"] for r in mine]
        row["scores"] = {c: seed_stats([r["scores"][c] for r in mine]) for c in mine[0]["scores"]}
        row["train_s"] = seed_stats([r["train_s"] for r in mine])
        if v.reference:
            pairs = [(by[(v.key, s)], by[(v.reference, s)]) for s in seeds
                     if (v.key, s) in by and (v.reference, s) in by]  # fmt: skip
            row["diff"] = {
                c: seed_stats([a["scores"][c] - b["scores"][c] for a, b in pairs])
                for c in ("val/overall", "test/overall")
            }
        out.append(row)
    return out


def _ms(s: dict[str, Any], sign: str = "") -> str:
    if s["mean"] is None:
        return "-"
    return f"{s['mean']:{sign}.2f}" + (f"±{s['std']:.2f}" if s["std"] is not None else "")


def _diff(row: dict[str, Any], col: str) -> str:
    return _ms(row["diff"][col], "+") if "diff" in row else "ref."


def render(summary: list[dict[str, Any]]) -> tuple[Table, list[str]]:
    heads = ("variant", "val", "val veh.", "val ped.", "test-style", "Δ val", "Δ test", "train s")
    table = Table(
        title="official mAP@10 x100 (equal), last checkpoint, mean±sd over seeds; Δ: paired, vs ref.",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    for i, head in enumerate(("variant", "val", "veh.", "ped.", "test", "Δ val", "Δ test", "s")):
        table.add_column(head, justify="left" if i == 0 else "right", no_wrap=True)
    md = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in summary:
        cells = [*(_ms(row["scores"][c]) for c in COLUMNS)]
        cells += [_diff(row, "val/overall"), _diff(row, "test/overall"), f"{row['train_s']['mean']:.0f}"]
        table.add_row(row["variant"], *cells)  # the key: the labels are in the .md and the docstring
        md.append("| " + " | ".join([row["label"], *cells]) + " |")
    return table, md


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=1500, help="real val labels (evenly spread)")
    parser.add_argument("--test", type=int, default=500, help="test-style images (camera domain)")
    parser.add_argument("--val-per-epoch", type=int, default=200, help="val images the loop logs per epoch")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=list(BY_KEY), help="variants to run (default: all)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/finetune-tricks"))
    parser.add_argument("--out", type=Path, default=RESULTS / "finetune_tricks")
    args = parser.parse_args()
    console = Console(width=100)
    tricks, seeds = Tricks(args.work, args), list(range(args.seeds))
    wanted = [BY_KEY[k] for k in args.only] if args.only else VARIANTS
    # references first, so a partial run still has its paired differences
    wanted = sorted(wanted, key=lambda v: v.reference is not None)
    runs: list[dict[str, Any]] = []
    start = time.perf_counter()
    for seed in seeds:
        for variant in wanted:
            done = tricks.run(variant, seed)
            runs.append(done)
            console.print(
                f"[{time.perf_counter() - start:6.0f} s] {variant.key} seed {seed}: val "
                f"{done['scores']['val/overall']:.2f}, test-style {done['scores']['test/overall']:.2f}"
            )
    have = {(r["variant"], r["seed"]) for r in runs}
    for path in sorted((args.work / "rows").glob("*.json")):  # rows of earlier invocations (--only)
        row = json.loads(path.read_text(encoding="utf-8"))
        if (row["variant"], row["seed"]) not in have and row["variant"] in BY_KEY and row["seed"] in seeds:
            runs.append(row)
    summary = summarise(runs, seeds)
    table, md = render(summary)
    console.print(table)
    machine = machine_info()
    command = (
        f"python benchmarks/finetune_tricks.py --train {args.train} --val {args.val} --test {args.test} "
        f"--seeds {args.seeds}"
    )
    note = [
        "",
        f"{args.train} synthetic train images (web-domain vehicles; 5% or 20% of captions swapped), "
        f"{args.val} real val labels rendered (val), {args.test} test-style images (camera domain). "
        f"Training seeds {seeds}; the data is seed 0. Δ: per-seed paired difference to the reference "
        "(the demo regime at the same noise), mean ± sd.",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_avg_1m']:.1f} at the end. "
        f"Command: `{command}`.",
    ]
    saved_args = vars(args) | {"work": str(args.work), "out": str(args.out)}
    atomic_write_json(
        args.out.with_suffix(".json"),
        {"summary": summary, "runs": runs, "args": saved_args, "machine": machine, "command": command},
    )
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(md + note) + "\n")


if __name__ == "__main__":
    main()
