"""CPU cost of one cold query (a distinct text: encode + search), this checkout against an older one.

Wall-clock throughput on these shared 2-core machines moves with other jobs' load; the CPU time a process
spends per query does much less. Each (round, variant) runs `engine.search([text], k=10)` over distinct real
val texts in a fresh process on one thread (torch, OpenMP and ONNX Runtime), timing `time.process_time()`;
rounds interleave the variants, texts are never repeated. Queries per CPU-second is the serial-throughput
bound: a 2-core service with no batching gains would serve at most about twice that.

    .venv/bin/python benchmarks/cold_query_cpu.py \
        --variant old=/work/wt/old/src:/tmp/svc/index-old \
        --variant torch=src:/tmp/svc/index-new --variant onnx=src:/tmp/svc/index-new:onnx

A variant is NAME=SRC:INDEX[:ENCODER] (ENCODER sets TRAFFICSEARCH_QUERY_ENCODER); the first is the baseline.
Writes benchmarks/results/cold_query_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trafficsearch.benchmarking import machine_info
from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.testing.service import CheckoutVariant

DEFAULT_QUERIES = Path("/work/shared/data/cvpr2023-track2-val/val_label.txt")
RESULTS = Path(__file__).resolve().parent / "results"

# Runs in the child under the variant's PYTHONPATH: only APIs both old and new checkouts have.
CHILD = r"""
import json, statistics, sys, time
import torch
torch.set_num_threads(1)
index, texts = sys.argv[1], json.loads(sys.argv[2])
try:
    from trafficsearch.search.opener import open_engine
    engine = open_engine(index)
except ImportError:  # checkouts before search/opener.py
    from trafficsearch.search.engine import SearchEngine
    engine = SearchEngine.open(index)
engine.search(["warm-up text, not measured"], k=10)
cpu = []
for text in texts:
    start = time.process_time()
    engine.search([text], k=10)
    cpu.append(1000 * (time.process_time() - start))
print(json.dumps({"cpu_ms": cpu}))
"""


def run_variant(variant: CheckoutVariant, texts: list[str]) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(variant.src), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.pop("TRAFFICSEARCH_QUERY_ENCODER", None)
    if variant.encoder:
        env["TRAFFICSEARCH_QUERY_ENCODER"] = variant.encoder
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(variant.index), json.dumps(texts)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{variant.name}: exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["cpu_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", required=True, help="NAME=SRC:INDEX[:ENCODER]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=100, help="distinct texts per variant and round")
    parser.add_argument("--queries", type=Path, default=DEFAULT_QUERIES)
    args = parser.parse_args()
    variants = [CheckoutVariant.parse(v) for v in args.variant]
    lines = args.queries.read_text().splitlines()
    texts = list(dict.fromkeys(line.rsplit("$", 1)[-1] for line in lines if line.strip()))
    need = args.texts * args.rounds * len(variants)
    if len(texts) < need:
        raise SystemExit(f"{args.queries}: {len(texts)} distinct texts, {need} needed")
    console = Console(width=100)
    per: dict[str, list[float]] = {v.name: [] for v in variants}  # median CPU ms per round
    chunk = 0
    for r in range(args.rounds):
        for v in variants:
            own = texts[chunk * args.texts : (chunk + 1) * args.texts]
            chunk += 1
            with console.status(f"round {r + 1}/{args.rounds}: {v.name}"):
                cpu = run_variant(v, own)
            per[v.name].append(statistics.median(cpu))
            console.print(f"round {r + 1} {v.name}: median {statistics.median(cpu):.2f} CPU ms/query")
    base = variants[0].name
    summary = []
    for v in variants:
        name = v.name
        ratios = [b / m for m, b in zip(per[name], per[base], strict=True)]
        summary.append(
            {
                "variant": name,
                "encoder": v.encoder or "torch",
                "cpu_ms_median": statistics.median(per[name]),
                "cpu_ms_rounds": [round(x, 3) for x in per[name]],
                "queries_per_cpu_s": 1000 / statistics.median(per[name]),
                "x_baseline_rounds": [round(x, 2) for x in ratios],
            }
        )
    table = Table(title=f"CPU ms per cold query (1 thread), baseline {base}")
    for col in ("variant", "CPU ms (median)", "per round", "queries/CPU-s", "x baseline per round"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for s in summary:
        table.add_row(
            s["variant"], f"{s['cpu_ms_median']:.2f}", " / ".join(f"{x:.1f}" for x in s["cpu_ms_rounds"]),
            f"{s['queries_per_cpu_s']:.0f}", " / ".join(f"{x:.2f}" for x in s["x_baseline_rounds"]),
        )  # fmt: skip
    console.print(table)
    info = machine_info()
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        RESULTS / "cold_query_cpu.json",
        {
            "benchmark": "cold_query_cpu",
            "variants": [{**v.__dict__, "src": str(v.src), "index": str(v.index)} for v in variants],
            "summary": summary,
            "machine": info,
        },
    )
    md = [
        "# CPU cost of a cold query: this checkout against a baseline checkout, same run",
        "",
        f"Command: `benchmarks/cold_query_cpu.py {' '.join(sys.argv[1:])}`",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        "| variant | encoder | CPU ms / query (median) | per round | queries / CPU-s "
        "| x baseline per round |",
        "|---|---|---|---|---|---|",
        *(
            f"| {s['variant']} | {s['encoder']} | {s['cpu_ms_median']:.2f} | "
            + " / ".join(f"{x:.1f}" for x in s["cpu_ms_rounds"])
            + f" | {s['queries_per_cpu_s']:.0f} | "
            + " / ".join(f"{x:.2f}" for x in s["x_baseline_rounds"])
            + " |"
            for s in summary
        ),
        "",
    ]
    atomic_write_text(RESULTS / "cold_query_cpu.md", "\n".join(md))


if __name__ == "__main__":
    main()
