"""Load test of the search service: N requests at several concurrencies, p50/p99 and throughput.

The service runs in its own process; this script is the client. Writes
benchmarks/results/load_test.json and prints a table.

    python benchmarks/load_test.py                       # fake engine (no model needed)
    python benchmarks/load_test.py --index runs/index    # a real index
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from rich.console import Console
from rich.table import Table

from trafficsearch.testing.loadgen import run_load
from trafficsearch.testing.service import EngineSpec, load_queries, machine, serve_in_subprocess, write_result

DEFAULT_QUERIES = Path("/work/shared/data/cvpr2023-track2-val/val_label.txt")
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", help="index directory (default: the fake engine)")
    parser.add_argument("--fake-count", type=int, default=500, help="images in the fake gallery")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--window-ms", type=float, default=5.0, help="micro-batching window")
    parser.add_argument("--budget-s", type=float, default=180.0, help="time limit per concurrency level")
    parser.add_argument("--queries", type=Path, default=DEFAULT_QUERIES, help="label or text file of queries")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    console = Console(width=110)
    # Each concurrency level gets its own query texts where the file has enough, so a real engine's
    # text-embedding cache starts cold at every level and query encoding is part of what is measured.
    texts = load_queries(args.queries, limit=args.requests * len(args.concurrency))
    per_level = max(1, len(texts) // len(args.concurrency))
    rows = []
    with TemporaryDirectory() as tmp:
        spec = EngineSpec(index_dir=args.index, fake_dir=f"{tmp}/gallery", count=args.fake_count)
        console.print(f"engine: {spec.describe()}; {len(texts)} distinct texts; window {args.window_ms} ms")
        app_kwargs = {"batch_window_ms": args.window_ms}
        with serve_in_subprocess(spec, app_kwargs) as url:
            warm = [{"text": f"warm-up query {i}", "k": args.k} for i in range(64)]
            asyncio.run(run_load(url, warm, total=64, concurrency=8, budget_s=60))  # model, FAISS, threads
            for level, concurrency in enumerate(args.concurrency):
                own = texts[level * per_level : (level + 1) * per_level] or texts
                bodies = [{"text": t, "k": args.k} for t in own]
                started = time.time()
                result = asyncio.run(
                    run_load(
                        url, bodies, total=args.requests, concurrency=concurrency, budget_s=args.budget_s
                    )
                )
                summary = result.summary() | {"started": started}
                rows.append(summary | {"distinct_texts": len(own)})
                console.print(f"concurrency {concurrency}: done {result.done}, p50 {summary['p50_ms']} ms")

    table = Table(title=f"search service load test ({spec.describe()}, k={args.k})")
    for column in (
        "concurrency",
        "requests",
        "2xx",
        "4xx",
        "5xx",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        counts = {int(k): v for k, v in row["status_counts"].items()}
        table.add_row(
            str(row["concurrency"]),
            str(row["completed"]),
            str(sum(v for k, v in counts.items() if 200 <= k < 300)),
            str(sum(v for k, v in counts.items() if 400 <= k < 500)),
            str(sum(v for k, v in counts.items() if k >= 500)),
            str(sum(row["transport_errors"].values())),
            f"{row['throughput_rps']:.0f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p90_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
        )
    console.print(table)
    out = args.out or RESULTS / f"load_test-{'fake' if not args.index else Path(args.index).name}.json"
    write_result(
        out,
        {
            "benchmark": "load_test",
            "engine": spec.describe(),
            "k": args.k,
            "window_ms": args.window_ms,
            "distinct_texts_total": len(texts),
            "machine": machine(),
            "rows": rows,
        },
    )
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
