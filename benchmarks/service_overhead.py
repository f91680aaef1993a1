"""What HTTP costs on top of the engine: one query at a time, in-process `engine.search` vs POST /search.

Both sides answer the same queries the same number of times after a warm-up pass (so both use a warm
text-embedding cache, and the difference is the service: HTTP parsing, validation, the batcher's
thread hop, JSON). The service runs in its own process; the client is a bare h11 connection.
Writes benchmarks/results/service_overhead-<engine>.json and prints a table.

    python benchmarks/service_overhead.py                      # fake engine
    python benchmarks/service_overhead.py --index runs/index   # a real index (its model is loaded)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

from rich.console import Console
from rich.table import Table

from trafficsearch.testing.loadgen import LoadResult, run_load
from trafficsearch.testing.service import EngineSpec, load_queries, machine, serve_in_subprocess, write_result

DEFAULT_QUERIES = Path("/work/shared/data/cvpr2023-track2-val/val_label.txt")
RESULTS = Path(__file__).resolve().parent / "results"


def _stats(latencies: list[float]) -> dict[str, float]:
    probe = LoadResult(total=len(latencies), concurrency=1, wall_s=0.0, latencies_ms=latencies)
    return {
        "n": len(latencies),
        "p50_ms": probe.percentile(50),
        "p99_ms": probe.percentile(99),
        "mean_ms": statistics.fmean(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", help="index directory (default: the fake engine)")
    parser.add_argument("--fake-count", type=int, default=500)
    parser.add_argument("--queries", type=Path, default=DEFAULT_QUERIES, help="label or text file of queries")
    parser.add_argument("--distinct", type=int, default=100, help="distinct query texts")
    parser.add_argument("--repeats", type=int, default=5, help="times each query is asked per side")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cold", action="store_true", help="every query new to the text cache")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on each side")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    console = Console(width=110)
    texts = load_queries(args.queries, limit=args.distinct)
    # Warm: warm-up on the same texts, so both sides hit their text cache. Cold: warm-up on other texts
    # and each text asked once, so both sides encode every query (the model's cost is included).
    asked = texts if args.cold else texts * args.repeats
    warm = [f"warm-up query number {i}." for i in range(32)] if args.cold else texts
    with TemporaryDirectory() as tmp:
        spec = EngineSpec(index_dir=args.index, fake_dir=f"{tmp}/gallery", count=args.fake_count)
        console.print(f"engine: {spec.describe()}; {len(texts)} queries x {args.repeats}, k={args.k}")

        engine = spec.build()

        def measure() -> list[float]:
            for text in warm:  # warm-up one query at a time, as measured (model, FAISS, for warm the cache)
                engine.search([text], k=args.k)
            latencies = []
            for text in asked:
                started = time.perf_counter()
                engine.search([text], k=args.k)
                latencies.append((time.perf_counter() - started) * 1000.0)
            return latencies

        # In a worker thread, as the service runs it: torch's intra-op threading behaves differently on
        # the main thread (on a busy 2-core machine it made encoding ~5x slower there).
        with ThreadPoolExecutor(1) as pool:
            in_process = pool.submit(measure).result()

        bodies = [{"text": t, "k": args.k} for t in texts]
        warm_bodies = [{"text": t, "k": args.k} for t in warm]
        with serve_in_subprocess(spec, {"batch_window_ms": 5.0}, threads=args.threads) as url:
            asyncio.run(run_load(url, warm_bodies, total=len(warm), concurrency=1))  # warm-up
            http = asyncio.run(run_load(url, bodies, total=len(asked), concurrency=1, budget_s=600))
    if http.server_errors or http.failures or http.done != len(asked):
        raise SystemExit(f"HTTP side failed: {http.summary()}")

    engine_stats, http_stats = _stats(in_process), _stats(http.latencies_ms)
    overhead = {
        key: {
            "difference_ms": http_stats[key] - engine_stats[key],
            "ratio": http_stats[key] / engine_stats[key] if engine_stats[key] > 0 else None,
        }
        for key in ("p50_ms", "p99_ms", "mean_ms")
    }
    cache = "cold" if args.cold else "warm"
    table = Table(
        title=f"service overhead, one query at a time ({spec.describe()}, k={args.k}, {cache} cache)"
    )
    for column in ("path", "n", "p50 ms", "p99 ms", "mean ms"):
        table.add_column(column, justify="right")
    table.add_row("engine.search (in-process)", *_row(engine_stats))
    table.add_row("POST /search (HTTP)", *_row(http_stats))
    table.add_row(
        "difference",
        "",
        *(f"{overhead[key]['difference_ms']:+.2f}" for key in ("p50_ms", "p99_ms", "mean_ms")),
    )
    table.add_row("ratio", "", *(f"{overhead[key]['ratio']:.2f}x" for key in ("p50_ms", "p99_ms", "mean_ms")))
    console.print(table)

    label = ("fake" if not args.index else Path(args.index).name) + ("-cold" if args.cold else "")
    out = args.out or RESULTS / f"service_overhead-{label}.json"
    write_result(
        out,
        {
            "benchmark": "service_overhead",
            "engine": spec.describe(),
            "k": args.k,
            "queries": len(texts),
            "repeats": 1 if args.cold else args.repeats,
            "text_cache": "cold" if args.cold else "warm",
            "machine": machine(),
            "in_process": engine_stats,
            "http": http_stats,
            "overhead": overhead,
        },
    )
    console.print(f"wrote {out}")


def _row(stats: dict[str, float]) -> list[str]:
    return [str(stats["n"]), f"{stats['p50_ms']:.2f}", f"{stats['p99_ms']:.2f}", f"{stats['mean_ms']:.2f}"]


if __name__ == "__main__":
    main()
