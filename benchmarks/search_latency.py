"""Search latency and throughput over 100k and 1M gallery vectors (synthetic, the default model's dimension):
numpy brute force (baseline) vs exact FAISS vs the approximate FAISS setting `index tune` would pick, with its
recall@10 against exact search measured on held-out queries; and the exact kernels side by side
(`--exact-only` runs just those): numpy brute force, the engine's blocked BLAS top-k (index/exact.py) over
FAISS Flat's float32 storage and over fp16 vectors, FAISS Flat as shipped and with its BLAS path forced, at 1
and 32 queries per call, timed in interleaved rounds so machine load hits every method alike.

    .venv/bin/python benchmarks/search_latency.py [--quick] [--sizes 100000 1000000] [--queries 1000]
    .venv/bin/python benchmarks/search_latency.py --exact-only --sizes 1000000   # 10000000: ~16 GB RAM
    .venv/bin/python benchmarks/search_latency.py --index DIR   # numpy vs the engine over a built index

`--index` times numpy brute force and the engine over an existing Flat index directory (e.g. the 10M one
`benchmarks/city_scale.py --keep` leaves): over its memory-mapped float32 vectors file (what a search scans),
over FAISS's mapped codes (copied block by block: the path before that file) and over an in-RAM copy.

Run it once as the environment is and once with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`: the table
names the OpenBLAS kernel each library ran (threadpoolctl).

Prints a table and writes benchmarks/results/search_latency[_quick].{json,md}.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from trafficsearch.benchmarking import machine_info
from trafficsearch.index.exact import flat_storage, topk
from trafficsearch.index.faiss_util import search
from trafficsearch.index.tune import recall_at_k, tune_vectors
from trafficsearch.ioutil import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).parent / "results"
K = 10


def default_dim() -> int:
    from trafficsearch.models.registry import DEFAULT_MODEL, get_model_config

    return int(get_model_config(DEFAULT_MODEL)["embed_dim"])


def synthetic(n: int, dim: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors (embeddings cluster by identity/attributes) and queries near the clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, n // 500), dim), dtype=np.float32)
    vectors = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        vectors[start:stop] = centres[rng.integers(0, len(centres), stop - start)] + 0.6 * noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = centres[rng.integers(0, len(centres), n_queries)]
    queries = queries + 0.8 * rng.standard_normal(queries.shape, dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return vectors, queries.astype(np.float32)


def numpy_topk(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    scores = queries @ vectors.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def measure(name: str, one, batch, queries: np.ndarray, single: int) -> dict[str, float]:
    """p50/p99 of one-query calls and queries/s of batched calls (chunks of 256)."""
    lat = []
    for q in queries[:single]:
        start = time.perf_counter()
        one(q[None, :])
        lat.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    for i in range(0, len(queries), 256):
        batch(queries[i : i + 256])
    qps = len(queries) / (time.perf_counter() - start)
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)), "qps": qps}


def blas_kernels() -> dict[str, str]:
    """Which OpenBLAS build and kernel each library loaded (numpy's and faiss's are separate copies)."""
    from threadpoolctl import threadpool_info

    return {
        f"{i['prefix']} {i.get('version')}": str(i.get("architecture"))
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    }


def exact_rows(n: int, vectors: np.ndarray, queries: np.ndarray, rounds: int, console: Console) -> list[dict]:
    """Exact kernels at 1 and 32 queries per call, interleaved round by round; ratios against numpy."""
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    half = vectors.astype(np.float16)
    storage = flat_storage(exact)
    assert storage is not None

    def faiss_blas(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        saved = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 1
        try:
            return exact.search(q, K)
        finally:
            faiss.cvar.distance_compute_blas_threshold = saved

    methods = {
        "numpy brute force": lambda q: numpy_topk(vectors, q),
        "blocked, Flat fp32 (engine)": lambda q: topk(storage, q, K),
        "blocked, fp16 vectors": lambda q: topk(half, q, K),
        "FAISS Flat": lambda q: exact.search(q, K),
        "FAISS Flat, BLAS thr. 1": faiss_blas,
    }
    truth = numpy_topk(vectors, queries[:32])
    checks = {
        "blocked, Flat fp32 (engine)": topk(storage, queries[:32], K)[1],
        "blocked, fp16 vectors": topk(half, queries[:32], K)[1],
        "FAISS Flat": exact.search(queries[:32], K)[1],
        "FAISS Flat, BLAS thr. 1": faiss_blas(queries[:32])[1],
    }
    with console.status(f"{n}: exact kernels, {rounds} interleaved rounds ..."):
        times = interleaved(methods, queries, rounds)
    checks["numpy brute force"] = truth
    return kernel_rows({"n": n}, methods, times, checks, truth)


def interleaved(methods: dict, queries: np.ndarray, rounds: int) -> dict[tuple[str, int], list[float]]:
    """ms per call of every method at 1 and 32 queries, method after method within each round."""
    times: dict[tuple[str, int], list[float]] = {(m, b): [] for m in methods for b in (1, 32)}
    for r in range(rounds):
        for batch in (1, 32):
            q = queries[(r * batch) % len(queries) :][:batch]
            for name, fn in methods.items():
                start = time.perf_counter()
                fn(q)
                times[(name, batch)].append((time.perf_counter() - start) * 1000)
    return times


def kernel_rows(head: dict, methods: dict, times: dict, found: dict, truth: np.ndarray) -> list[dict]:
    """One row per method: median ms and speed against numpy brute force at 1 and 32 queries, recall@10."""
    base = {b: float(np.median(times[("numpy brute force", b)])) for b in (1, 32)}
    rows = []
    for name in methods:
        row = {**head, "method": name}
        for b in (1, 32):
            ms = float(np.median(times[(name, b)]))
            row[f"ms_q{b}"], row[f"x_numpy_q{b}"] = ms, base[b] / ms
        row["recall@10"] = recall_at_k(found[name], truth)
        rows.append(row)
    return rows


def index_rows(index_dir: Path, rounds: int, console: Console) -> list[dict]:
    """numpy brute force vs the engine over a built Flat index, in three phases that each fit in memory.

    1. The engine as a search runs it (`search_exact`: the aligned float32 vectors file merge writes under a
       Flat index, memory-mapped, one sgemm per block, no copy) interleaved with numpy brute force over the
       same mapped file.
    2. The kernel over FAISS's own memory-mapped codes, which sit at an unaligned offset, so every block is
       copied first (what the engine scanned before the float32 vectors file), in rounds of its own.
    3. numpy brute force and the kernel over an aligned in-RAM copy (n x d x 4 bytes of memory), interleaved.
    Each phase runs alone because two 10 GB views of the gallery would evict each other's pages and time
    the disk (at 10M that made a scan 3x slower). Ratios are against numpy in the same phase.
    """
    from trafficsearch.index.exact import direct_scan, search_exact
    from trafficsearch.index.store import open_index

    data = open_index(index_dir)
    codes = flat_storage(data.faiss)
    if codes is None:
        raise SystemExit(f"{index_dir}: not a Flat inner-product index (no float32 storage to scan)")
    if not direct_scan(data.vectors):
        raise SystemExit(f"{index_dir}: {data.vectors.dtype} vectors; re-merge (`trafficsearch index merge`)")
    mapped = data.vectors
    n = len(mapped)
    rng = np.random.default_rng(7)
    picks = np.sort(rng.choice(n, 64, replace=False))
    queries = np.asarray(mapped[picks]) + 0.3 * rng.standard_normal((64, mapped.shape[1]), np.float32)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    truth = numpy_topk(mapped, queries[:32])
    mapped_methods = {
        "numpy brute force": lambda q: numpy_topk(mapped, q),
        "blocked, float32 vectors mmap (engine)": lambda q: search_exact(data.faiss, mapped, q, K),
    }
    with console.status(f"{n:,}: {rounds} rounds over the mapped vectors file ..."):
        times = interleaved(mapped_methods, queries, rounds)
        name = "blocked, float32 vectors mmap (engine)"
        found = {"numpy brute force": truth, name: mapped_methods[name](queries[:32])[1]}
    copied = {"blocked, FAISS codes mmap, copied blocks": lambda q: topk(codes, q, K)}
    with console.status(f"{n:,}: {rounds} rounds over FAISS's mapped codes ..."):
        times |= interleaved(copied, queries, rounds)  # against numpy over the mapped file (phase 1)
        found |= {name: fn(queries[:32])[1] for name, fn in copied.items()}
    head = {"n": n, "index": str(index_dir), "storage": "memory-mapped"}
    rows = kernel_rows(head, mapped_methods | copied, times, found, truth)
    with console.status(f"{n:,}: an aligned in-RAM copy for numpy ({mapped.nbytes / 2**30:.1f} GiB) ..."):
        ram = np.empty(mapped.shape, np.float32)
        for start in range(0, n, 1 << 20):
            ram[start : start + (1 << 20)] = mapped[start : start + (1 << 20)]
    in_ram = {
        "numpy brute force": lambda q: numpy_topk(ram, q),
        "blocked, in-RAM copy (kernel)": lambda q: topk(ram, q, K),
    }
    with console.status(f"{n:,}: {rounds} interleaved rounds in RAM ..."):
        times = interleaved(in_ram, queries, rounds)
        ram_found = {
            "numpy brute force": truth,
            "blocked, in-RAM copy (kernel)": topk(ram, queries[:32], K)[1],
        }
    head = {"n": n, "index": str(index_dir), "storage": "in-RAM copy"}
    rows += kernel_rows(head, in_ram, times, ram_found, truth)
    for row in rows:  # two numpy baselines: say which memory each scanned
        if row["method"] == "numpy brute force":
            row["method"] += f", {row['storage']}"
    return rows


def candidates(n: int, dim: int, with_hnsw: bool) -> list[tuple[str, str | None, list[int]]]:
    nlist = 1 << round(math.log2(max(16, 1.5 * math.sqrt(n))))
    probes = [p for p in (1, 2, 4, 8, 16, 32, 64, 128) if p <= nlist]
    grid: list[tuple[str, str | None, list[int]]] = [
        (f"IVF{nlist},Flat", "nprobe", probes),
        (f"IVF{nlist},PQ{dim // 4}x4fs", "nprobe", probes),
    ]
    if with_hnsw:
        grid.append(("HNSW32", "efSearch", [16, 32, 64, 128, 256]))
    return grid


def run_size(n: int, dim: int, n_queries: int, single: int, hnsw_max: int, console: Console) -> list[dict]:
    vectors, queries = synthetic(n, dim, n_queries)
    tune_q, test_q = queries[: n_queries // 2], queries[n_queries // 2 :]
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    _, truth = exact.search(test_q, K)
    rows = []
    with console.status(f"{n}: numpy brute force ..."):
        found = numpy_topk(vectors, test_q[:256])
        stats = measure(
            "numpy", lambda q: numpy_topk(vectors, q), lambda q: numpy_topk(vectors, q), test_q, single
        )
        rows.append(
            {"n": n, "method": "numpy brute force", "recall@10": recall_at_k(found, truth[:256]), **stats}
        )
    with console.status(f"{n}: exact FAISS ..."):
        stats = measure("flat", lambda q: exact.search(q, K), lambda q: exact.search(q, K), test_q, single)
        rows.append({"n": n, "method": "FAISS Flat (exact)", "recall@10": 1.0, **stats})
    with console.status(f"{n}: tuning approximate indexes on {len(tune_q)} queries ..."):
        start = time.perf_counter()
        result = tune_vectors(
            vectors,
            tune_q,
            k=K,
            target=0.95,
            candidates=candidates(n, dim, n <= hnsw_max),
            repeats=1,
            max_train=64 * 1024,
        )
        tune_s = time.perf_counter() - start
    best = result.best
    index, params = result.index, best.params
    _, found = search(index, test_q, K, params)
    stats = measure(
        "tuned", lambda q: search(index, q, K, params), lambda q: search(index, q, K, params), test_q, single
    )
    rows.append(
        {
            "n": n,
            "method": f"tuned: {best.factory} {params}",
            "recall@10": recall_at_k(found, truth),
            "tune_s": tune_s,
            **stats,
        }
    )
    for trial in result.trials:
        console.log(
            f"n={n} {trial.factory} {trial.params} recall@10={trial.recall:.3f} "
            f"{trial.ms_per_query:.3f} ms/q (batch) build {trial.build_s:.1f}s"
        )
    return rows, [{"n": n, **trial.__dict__} for trial in result.trials]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k vectors, 200 queries: a smoke run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000, help="half tune the index, half measure it")
    parser.add_argument("--single", type=int, default=200, help="one-query calls timed for p50/p99")
    parser.add_argument(
        "--hnsw-max", type=int, default=200_000, help="skip HNSW above this size (build time)"
    )
    parser.add_argument("--exact-only", action="store_true", help="only the exact-kernel comparison")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of the exact kernels")
    parser.add_argument(
        "--index", type=Path, default=None, help="time the exact kernels over this built Flat index"
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries, args.single = [20_000], 200, 50
    console = Console()
    dim = default_dim()
    rows, trials, exact = [], [], []
    if args.index is not None:
        exact += index_rows(args.index, args.rounds, console)
        args.sizes, args.exact_only = [], True
    for n in args.sizes:
        vectors, queries = synthetic(n, dim, max(args.queries, 64))
        exact += exact_rows(n, vectors, queries, args.rounds, console)
        del vectors, queries
        if args.exact_only:
            continue
        size_rows, size_trials = run_size(n, dim, args.queries, args.single, args.hnsw_max, console)
        rows += size_rows
        trials += size_trials
    kernels = blas_kernels()
    etable = Table(title=f"exact top-{K}, dim {dim}: ms per call (median of {args.rounds} rounds)")
    for column in ("n", "method", "recall", "1 q ms", "x numpy", "32 q ms", "x numpy"):
        etable.add_column(column)
    for r in exact:
        etable.add_row(
            f"{r['n']:,}", r["method"], f"{r['recall@10']:.3f}", f"{r['ms_q1']:.1f}",
            f"{r['x_numpy_q1']:.2f}", f"{r['ms_q32']:.1f}", f"{r['x_numpy_q32']:.2f}",
        )  # fmt: skip
    console.print(etable)
    console.print(f"BLAS kernels: {kernels}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    table = Table(title=f"search latency, dim {dim}, k={K}, synthetic clustered vectors")
    for column in ("n", "method", "recall@10", "p50 ms", "p99 ms", "queries/s (batch 256)"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            f"{r['n']:,}",
            r["method"],
            f"{r['recall@10']:.3f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['qps']:.0f}",
        )
    if rows:
        console.print(table)
    m = machine_info()
    suffix = "_quick" if args.quick else ("_exact" if args.exact_only else "")
    if args.index is not None:
        suffix = f"_index-{exact[0]['n']}"
    if os.environ.get("OPENBLAS_CORETYPE") is None:
        suffix += "_nocoretype"
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        RESULTS / f"search_latency{suffix}.json",
        {
            "benchmark": "search_latency",
            "dim": dim,
            "k": K,
            "queries": args.queries,
            "rows": rows,
            "trials": trials,
            "exact": exact,
            "blas_kernels": kernels,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
            "load_average": os.getloadavg()[0],
            "machine": m,
        },
    )
    lines = [
        "# Search latency",
        "",
        f"Synthetic clustered unit vectors of the default model's dimension ({dim}); queries near the "
        f"clusters. Half of {args.queries} queries tune the approximate index (fastest setting with "
        "recall@10 >= 0.95), "
        "the other half measure it. p50/p99: one query per call; queries/s: batches of 256.",
        "",
        "Synthetic clusters are easier than real text->image queries (CLIP's modality gap puts text away"
        " from image clusters): measure recall on the real gallery with `trafficsearch index tune`. FAIS"
        "S Flat loses to numpy here: numpy's BLAS sgemm beats faiss's exhaustive scan on this CPU.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared; load average {os.getloadavg()[0]:.1f}), "
        f"faiss {m['faiss']}, torch {m['torch']}, numpy {m['numpy']}.",
        "",
        f"Exact kernels, median of {args.rounds} interleaved rounds, ms per call of 1 and 32 queries and "
        "speed against numpy brute force in the same round (x > 1: faster). BLAS kernels: "
        + ", ".join(f"{lib}: {arch}" for lib, arch in kernels.items())
        + f" (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}).",
        *(
            [
                "",
                f"Over the built index {args.index} (`--index`): the memory-mapped rows are against numpy"
                " over the same mapped vectors file (the engine interleaved with it; the FAISS-codes row"
                " in rounds of its own after it), the in-RAM rows against numpy over an aligned in-RAM copy.",
            ]
            if args.index is not None
            else []
        ),
        "",
        "| n | method | recall@10 | 1 query ms | x numpy | 32 queries ms | x numpy |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r['n']:,} | {r['method']} | {r['recall@10']:.3f} | {r['ms_q1']:.1f} | "
            f"{r['x_numpy_q1']:.2f} | {r['ms_q32']:.1f} | {r['x_numpy_q32']:.2f} |"
            for r in exact
        ],
        "",
    ]
    if rows:
        lines += [
            "| n | method | recall@10 | p50 ms | p99 ms | queries/s |",
            "|---|---|---|---|---|---|",
            *[
                f"| {r['n']:,} | {r['method']} | {r['recall@10']:.3f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['qps']:.0f} |"
                for r in rows
            ],
            "",
        ]
    atomic_write_text(RESULTS / f"search_latency{suffix}.md", "\n".join(lines))


if __name__ == "__main__":
    main()
