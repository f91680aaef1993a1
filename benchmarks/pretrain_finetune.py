"""Does pre-training help? The CLIP default fine-tuned from package:clip-default vs trained from scratch.

    python benchmarks/pretrain_finetune.py [--train 3000] [--val 1500] [--work /tmp/pretrain-finetune]

One demo data set (experiments.prepare_data: synthetic train with 5% label noise, the real val labels
rendered); then configs/demo/default.yaml as shipped (pre-trained start, low LR, 3 of 5 image groups,
3 epochs) against the same config from scratch (random image tower, the old demo's lr 2e-3, all groups
trained) at 3 epochs and at the old demo's 7. Reported: the best epoch's official mAP@10 (equal rule) on
val, overall / vehicles / pedestrians, from each run's metrics.jsonl. Writes
benchmarks/results/pretrain_finetune.{md,json} with the machine named.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trafficsearch.benchmarking import machine_info
from trafficsearch.experiments import DemoPlan, prepare_data, train_member
from trafficsearch.ioutil import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
SCRATCH = (
    "model.pretrained=null",
    "model.lock_image=false",
    "model.unlocked_image_groups=0",
    "optim.lr=0.002",
    "optim.warmup_steps=30",
)
VARIANTS = {
    "pre-trained, fine-tuned (demo config), 3 ep": ("train.epochs=3",),
    "from scratch, 3 ep": (*SCRATCH, "train.epochs=3"),
    "from scratch, 7 ep (old demo)": (*SCRATCH, "train.epochs=7"),
}


def best_val(run: Path) -> dict[str, float]:
    """The best epoch's official mAP@10 (equal) overall and per kind, from metrics.jsonl."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    vals = [r for r in rows if r.get("type") == "val"]
    best = max(vals, key=lambda r: r["map_equal"])
    eq = best["results"]["equal"]
    return {
        "overall": eq["overall"]["map_official"],
        "vehicles": eq["per_kind"]["vehicle"]["map_official"],
        "pedestrians": eq["per_kind"]["pedestrian"]["map_official"],
        "epoch": best["epoch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--val", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/pretrain-finetune"))
    parser.add_argument("--out", type=Path, default=RESULTS / "pretrain_finetune")
    parser.add_argument(
        "--merge", nargs="*", type=Path, default=[], help="also take the rows of these earlier JSON results"
    )
    args = parser.parse_args()
    plan = replace(DemoPlan(), train=args.train, val=args.val, test=0, dev=0, seed=args.seed)
    root = prepare_data(args.work, plan) if args.only else None
    rows = []
    for earlier in args.merge:  # variants run by separate invocations (in parallel) on the same plan
        prev = json.loads(earlier.read_text())
        same = all(prev.get("args", {}).get(k) == getattr(args, k) for k in ("train", "val", "seed"))
        rows += [r for r in prev.get("rows", []) if same and r["variant"] not in args.only]
    for i, name in enumerate(args.only):
        start = time.perf_counter()
        run = args.work / f"run-{list(VARIANTS).index(name)}"
        train_member(plan.config, root, run, VARIANTS[name], seed=args.seed, show_progress=False)
        rows.append({"variant": name, **best_val(run), "train_s": round(time.perf_counter() - start, 1)})
        atomic_write_json(args.work / "rows.json", rows)  # a killed invocation keeps what it measured
        print(f"[{i + 1}/{len(args.only)}] {name}: {rows[-1]}", flush=True)
    # rows of earlier invocations on the same plan are kept (variants can be run one at a time)
    old = args.out.with_suffix(".json")
    if old.is_file():
        prev = json.loads(old.read_text())
        same = all(prev.get("args", {}).get(k) == getattr(args, k) for k in ("train", "val", "seed"))
        done = {r["variant"] for r in rows}
        rows += [r for r in prev.get("rows", []) if same and r["variant"] not in done]
    rows = list({r["variant"]: r for r in rows}.values())
    rows.sort(key=lambda r: list(VARIANTS).index(r["variant"]))
    table = Table(
        title=f"CLIP default, val official mAP@10 x100 (equal), {args.val} real val labels", width=100
    )
    for col in ("start", "overall", "vehicles", "pedestrians", "best ep", "train s"):
        table.add_column(col, justify="right" if col != "start" else "left")
    md = ["| start | overall | vehicles | pedestrians | best epoch | train s |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["variant"], *(f"{100 * r[k]:.2f}" for k in ("overall", "vehicles", "pedestrians"))]
        cells += [str(r["epoch"]), f"{r['train_s']:.0f}"]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    Console(width=100).print(table)
    machine = machine_info()
    atomic_write_json(
        args.out.with_suffix(".json"),
        {
            "rows": rows,
            "args": vars(args)
            | {"work": str(args.work), "out": str(args.out), "merge": list(map(str, args.merge))},
            "machine": machine,
        },
    )
    note = (
        f"\n{args.train} synthetic train images (5% label noise), {args.val} real val labels rendered, "
        f"seed {args.seed}. Machine: {machine['cpu']}, {machine['cores']} cores, load "
        f"{machine['load_avg_1m']:.1f} at the end. Command: `python benchmarks/pretrain_finetune.py "
        f"--train {args.train} --val {args.val}`.\n"
    )
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(md) + "\n" + note)


if __name__ == "__main__":
    main()
