"""How much memory milvus-lite holds for a loaded collection, against its size: can this machine search
a 10M-vector collection in milvus-lite at all?

For each N: `city_scale`'s synthetic index (dim of the default model, camera/time/extra metadata), merged
Flat, pushed to milvus-lite with `index push`'s code (FLAT, every scalar field, partitions by day); then a
fresh process opens the collection, loads it and runs one search, with its peak anonymous memory sampled
(memory the kernel cannot drop; milvus-lite runs inside the calling process). A least-squares line through
the points projects the size at which a loaded collection would fill this machine's RAM.

    .venv/bin/python benchmarks/milvus_lite_memory.py [--n 100000 300000 1000000] [--work /tmp/mlmem]

Prints a table; writes benchmarks/results/milvus_lite_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import city_scale  # noqa: E402  (the stages, their fresh processes and memory sampling)

RESULTS = Path(__file__).parent / "results"


def total_ram_mb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def measure(work: Path, n: int, dim: int) -> dict[str, Any]:
    index_dir = str(work / f"n{n}" / "city")
    city_scale.run_stage(f"{n:,}: write shards", "stage_shards", index_dir, n, dim)
    city_scale.run_stage(f"{n:,}: merge", "stage_merge", index_dir, "Flat")
    push = city_scale.run_stage(f"{n:,}: push + search", "stage_milvus", index_dir, dim, 5)
    load = city_scale.run_stage(f"{n:,}: fresh process, load + search", "stage_milvus_load", index_dir, dim)
    if load["collection_count"] != n:
        raise SystemExit(f"collection holds {load['collection_count']:,} rows, not {n:,}")
    return {
        "n": n,
        "push_s": push["push_s"],
        "push_peak_anon_mb": push["peak_anon_mb"],
        "same_top10": push["top-10"]["recall"],
        "same_top10_filtered": push["filtered top-10"]["recall"],
        "load_s": load["load_s"],
        "load_peak_anon_mb": load["peak_anon_mb"],
        "imports_rss_mb": load["imports_rss_mb"],
    }


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from trafficsearch.benchmarking import machine_info
    from trafficsearch.ioutil import atomic_write_json, atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/trafficsearch-mlmem"))
    parser.add_argument("--target", type=int, default=10_000_000, help="the size to project")
    args = parser.parse_args()
    if len(args.n) < 2:
        raise SystemExit("--n: give at least two sizes (the projection is a line through them)")
    dim = city_scale.default_dim()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    try:
        rows = [measure(args.work, n, dim) for n in sorted(args.n)]
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    ns = np.array([r["n"] for r in rows], float)
    anon = np.array([r["load_peak_anon_mb"] for r in rows])
    slope, intercept = np.polyfit(ns, anon, 1)
    ram = total_ram_mb()
    projected = slope * args.target + intercept
    fits = (ram - intercept) / slope
    table = Table(title=f"milvus-lite (FLAT, dim {dim}): anonymous memory of a loaded collection")
    for column in ("n", "push s", "push anon MB", "same top-10", "load s", "loaded anon MB"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            f"{r['n']:,}",
            f"{r['push_s']:.0f}",
            f"{r['push_peak_anon_mb']:.0f}",
            f"{r['same_top10']:.2f} / {r['same_top10_filtered']:.2f}",
            f"{r['load_s']:.1f}",
            f"{r['load_peak_anon_mb']:.0f}",
        )
    Console(width=100).print(table)
    summary = (
        f"Line through the loaded points: {slope * 1024:.2f} KB per row + "
        f"{intercept:.0f} MB; at {args.target:,} rows {projected / 1024:.1f} GB, against {ram / 1024:.1f} GB "
        f"of RAM on this machine (raw float32 vectors: {args.target * dim * 4 / 2**30:.1f} GB). A loaded "
        f"collection fills this RAM at about {fits / 1e6:.1f}M rows."
    )
    print(summary)
    m = machine_info()
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        RESULTS / "milvus_lite_memory.json",
        {
            "benchmark": "milvus_lite_memory",
            "dim": dim,
            "rows": rows,
            "slope_mb_per_row": slope,
            "intercept_mb": intercept,
            "target": args.target,
            "projected_mb": projected,
            "ram_mb": ram,
            "machine": m,
        },
    )
    lines = [
        f"# milvus-lite: memory of a loaded collection (FLAT, dim {dim})",
        "",
        "Each N: city_scale's synthetic index pushed with `index push`'s code (all scalar fields, partitions "
        "by day), then a fresh process loads the collection and searches once; 'loaded anon' is that "
        "process's peak anonymous memory (RssAnon every 20 ms, imports included), 'push anon' the pushing "
        "process's. 'same top-10' is the share of 5 queries (unfiltered / filtered) whose ids equal the "
        "FAISS directory's.",
        "",
        f"Command: `benchmarks/milvus_lite_memory.py {' '.join(sys.argv[1:])}`. Machine: {m['cpu']}, "
        f"{m['cores']} cores, {ram / 1024:.1f} GB RAM, load average {m['load_avg_1m']:.1f}.",
        "",
        "| n | push s | push anon MB | same top-10 | load s | loaded anon MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['push_s']:.0f} | {r['push_peak_anon_mb']:.0f} | "
            f"{r['same_top10']:.2f} / {r['same_top10_filtered']:.2f} | {r['load_s']:.1f} | "
            f"{r['load_peak_anon_mb']:.0f} |"
        )
    lines += ["", summary]
    atomic_write_text(RESULTS / "milvus_lite_memory.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
