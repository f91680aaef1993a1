"""The demo's input resolution: the CLIP default trained on the synthetic world at 64 px vs 96 px.

    .venv/bin/python benchmarks/demo_resolution.py [--train 3000] [--val 1500] [--epochs 5] [--work runs/res]

Each size runs the demo's pipeline with only the CLIP member (trafficsearch.experiments.demo.run_demo:
synthetic train set, the real val labels rendered, no BLIP / attributes / dev fit): the demo config
`demo/default` with its model swapped for `ts-minilm-vit-s64` (64 px, patch 8) or `ts-minilm-vit-s96`
(96 px, patch 12: the same 64 image tokens, so the cost difference is the patch embedding and the pixels).
A size whose WORK/<size>/results.json matches the plan is read back, not retrained.
Prints per-kind val official mAP@10 and training time, ratios against 64 px in the same run, and writes
benchmarks/results/demo_resolution.{json,md}. It also answers the real-task-shape question: does plain
CLIP find vehicles easier than pedestrians (as the official baseline does on the real val set)?
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from trafficsearch.experiments.demo import DemoPlan, run_demo
from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.train.config import resolve_config_path

RESULTS = Path(__file__).parent / "results"
MODELS = {"64 px": "ts-minilm-vit-s64", "96 px": "ts-minilm-vit-s96"}


def run_one(work: Path, model: str, args: argparse.Namespace) -> dict:
    cfg = yaml.safe_load(resolve_config_path("demo/default").read_text(encoding="utf-8"))
    cfg["model"]["name"] = model
    work.mkdir(parents=True, exist_ok=True)
    path = work / "clip.yaml"
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    plan = DemoPlan(
        config=str(path),
        train=args.train,
        val=args.val,
        test=0,
        epochs=args.epochs,
        blip_config=None,
        attributes=False,
        dev=0,
        latency_queries=0,
        seed=args.seed,
    )
    done = work / "results.json"  # a finished size is read back, not retrained (its timings stay true)
    if done.is_file() and json.loads(done.read_text(encoding="utf-8"))["plan"] == asdict(plan):
        saved = json.loads(done.read_text(encoding="utf-8"))
        rows, timings = saved["rows"], saved["timings"]
    else:
        res = run_demo(work, plan, Console(width=110))
        rows, timings = res.rows, res.timings
    row = next(r for r in rows if r["system"] == "clip" and r["split"] == "val" and r["rule"] == "equal")
    return {"model": model, "row": row, "train_s": timings["train clip"], "total_s": timings["total"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--val", type=int, default=1500)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/demo-resolution")
    ap.add_argument("--only", choices=list(MODELS), nargs="*", default=list(MODELS))
    args = ap.parse_args()
    out = {size: run_one(Path(args.work) / size.replace(" ", ""), MODELS[size], args) for size in args.only}
    console = Console(width=100)
    table = Table(title=f"CLIP default, val ({args.val} real labels rendered), {args.train} train, "
                  f"{args.epochs} epochs")  # fmt: skip
    for col in ("input", "mAP@10", "vehicles", "pedestrians", "veh/ped", "train s", "x 64 px time"):
        table.add_column(col, justify="right")
    base = out.get("64 px")
    md = [
        "| input | mAP@10 | vehicles | pedestrians | train s | time vs 64 px |",
        "|---|---|---|---|---|---|",
    ]
    for size, r in out.items():
        row = r["row"]
        kinds = row["per_kind"]
        cells = [100 * row["overall"]["map_official"]] + [
            100 * kinds[k]["map_official"] for k in ("vehicle", "pedestrian")
        ]
        ratio = f"{r['train_s'] / base['train_s']:.2f}" if base else "-"
        veh_ped = f"{cells[1] / max(cells[2], 1e-9):.2f}"
        table.add_row(size, *(f"{c:.2f}" for c in cells), veh_ped, f"{r['train_s']:.0f}", ratio)
        md.append(
            f"| {size} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {r['train_s']:.0f} | {ratio} |"
        )
    console.print(table)
    machine = f"{platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})"
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "demo_resolution.json", {"machine": machine, "args": vars(args), "runs": out})
    atomic_write_text(RESULTS / "demo_resolution.md", f"Machine: {machine}\n\n" + "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
