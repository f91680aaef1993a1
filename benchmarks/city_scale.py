"""City scale on one machine: build and search an index of N vectors of the default model's dimension
with bounded memory, peak RSS measured per stage (each stage runs in a fresh process).

Stages: write N synthetic vectors as `index build` shards + a metadata CSV (camera, time) validated by
`--metadata`; merge (streaming into a memory-mapped fp16 file, SQLite, Flat FAISS written from the file);
open + exact and filtered search over the memory-mapped index (checked against a blocked numpy scan);
an IVF merge (trained on a sample, added in chunks). Baseline in the same run: main's in-RAM merge
(concatenate shards, float32 copy, serialise through memory, every metadata row loaded) beside the
streaming merge at --baseline-n vectors.

    .venv/bin/python benchmarks/city_scale.py --n 1000000 [--work /tmp/city] [--keep]
    .venv/bin/python benchmarks/city_scale.py --n 10000000   # ~35 GB of disk at the peak

Prints a table and writes benchmarks/results/city_scale-<N>.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import resource
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
SHARD = 4096
CAMERAS = 100
DAYS = 7


def default_dim() -> int:
    from trafficsearch.models.registry import DEFAULT_MODEL, get_model_config

    return int(get_model_config(DEFAULT_MODEL)["embed_dim"])


def clustered(seed: int, dim: int, n_centres: int = 4096):
    """Chunk source: unit vectors around fixed centres, deterministic per chunk start."""
    centres = np.random.default_rng(seed).standard_normal((n_centres, dim)).astype(np.float32)

    def source(start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng([seed, start])
        x = centres[rng.integers(0, n_centres, stop - start)]
        x = x + 0.6 * rng.standard_normal((stop - start, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return source


def camera_time(i: int) -> tuple[str, str]:
    day, second = 1 + i % DAYS, (i * 7919) % 86_400
    return (
        f"c{i % CAMERAS:03d}",
        f"2024-05-{day:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}",
    )


def _rss_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which a spawned child inherits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- stages (each runs in its own process) -----------------------------------------------------------
def stage_shards(index_dir: str, n: int, dim: int) -> dict[str, Any]:
    from trafficsearch.index.imagemeta import write_image_metadata
    from trafficsearch.index.synthetic import append_synthetic, start_synthetic

    path = Path(index_dir)
    start_synthetic(path, dim, SHARD, name="city")
    append_synthetic(path, clustered(0, dim), n, ["vehicle" if i % 3 else "pedestrian" for i in range(n)])
    csv_path = path.parent / f"{path.name}-meta.csv"
    with csv_path.open("w", encoding="utf-8") as handle:
        handle.write("name,camera,time,lane\n")
        for i in range(n):
            camera, when = camera_time(i)
            handle.write(f"img{i:08d}.jpg,{camera},{when},{i % 4}\n")
    names = (f"img{i:08d}.jpg" for i in range(n))
    write_image_metadata(path, csv_path, frozenset(names))
    return {}


def stage_merge(index_dir: str, factory: str) -> dict[str, Any]:
    from trafficsearch.index.merge import merge_index

    manifest = merge_index(index_dir, factory=factory, progress=False)
    return {"count": manifest["count"], "faiss": manifest["faiss"]["factory"]}


def _queries(dim: int, q: int) -> np.ndarray:
    rng = np.random.default_rng(123)
    x = clustered(0, dim)(10**9, 10**9 + q) + 0.3 * rng.standard_normal((q, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def stage_search(index_dir: str, dim: int, n_queries: int, check: int, params: dict | None) -> dict[str, Any]:
    import faiss

    from trafficsearch.index.stores.faiss_dir import FaissDirStore
    from trafficsearch.index.stores.milvus_tune import exact_ids
    from trafficsearch.index.tune import recall_at_k

    faiss.omp_set_num_threads(1)  # one-query calls: OpenMP spin-waits cost 10x on this shared 2-core box
    started = time.perf_counter()
    store = FaissDirStore(index_dir)
    data = store.data
    _ = data.metadata.ids, data.metadata.kinds  # the engine's per-row fast paths
    open_s = time.perf_counter() - started
    open_rss = _rss_mb()
    if params:
        data.manifest["faiss"]["params"] = params
    queries = _queries(dim, n_queries)
    where = {"camera": ["c001", "c002", "c003"], "time": {"gte": "2024-05-02", "lt": "2024-05-05"}}
    out: dict[str, Any] = {"open_s": open_s, "open_rss_mb": open_rss}
    for label, condition in (("top-10", None), ("filtered top-10", where)):
        store.search_rows(queries[:1], 10, condition)  # warm (selector built, pages touched)
        lat = []
        for q in queries:
            t = time.perf_counter()
            store.search_rows(q[None], 10, condition)
            lat.append((time.perf_counter() - t) * 1000)
        _, rows = store.search_rows(queries[:check], 10, condition)
        allowed = data.metadata.rows_where(condition) if condition else None
        vectors = data.vectors if allowed is None else np.asarray(data.vectors[allowed])
        ids = np.arange(data.count) if allowed is None else allowed
        truth = exact_ids(vectors, ids, queries[:check], 10)
        out[label] = {"p50_ms": float(np.median(lat)), "recall": recall_at_k(rows, truth)}
    out["allowed_filtered"] = int(len(data.metadata.rows_where(where)))
    return out


def stage_milvus(index_dir: str, dim: int, n_queries: int) -> dict[str, Any]:
    """Push to milvus-lite (FLAT, exact), then the same queries through both stores, filters included."""
    import faiss

    from trafficsearch.index.stores.faiss_dir import FaissDirStore
    from trafficsearch.index.stores.manage import push_to_milvus
    from trafficsearch.index.stores.milvus import MilvusStore

    faiss.omp_set_num_threads(1)
    started = time.perf_counter()
    manifest = push_to_milvus(index_dir, str(Path(index_dir).parent / "city.db"), progress=False)
    push_s = time.perf_counter() - started
    local, remote = FaissDirStore(index_dir), MilvusStore.from_spec(index_dir, manifest["store"])
    queries = _queries(dim, n_queries)
    where = {"camera": ["c001", "c002", "c003"], "time": {"gte": "2024-05-02", "lt": "2024-05-05"}}
    out: dict[str, Any] = {"push_s": push_s, "collection_count": remote.count()}
    for label, condition in (("top-10", None), ("filtered top-10", where)):
        remote.search(queries[:1], 10, condition)
        lat, same = [], 0
        for q in queries:
            t = time.perf_counter()
            _, ids = remote.search(q[None], 10, condition)
            lat.append((time.perf_counter() - t) * 1000)
            same += int(np.array_equal(ids, local.search(q[None], 10, condition)[1]))
        out[label] = {"p50_ms": float(np.median(lat)), "recall": same / len(queries)}
    return out


def stage_milvus_load(index_dir: str, dim: int) -> dict[str, Any]:
    """A fresh process opens the collection a push left and loads it for search: the memory a milvus-lite
    search process holds (the push's own process also holds its insert buffers)."""
    from trafficsearch.index.files import read_manifest
    from trafficsearch.index.stores.milvus import MilvusStore

    store = MilvusStore.from_spec(index_dir, read_manifest(Path(index_dir))["store"])
    started = time.perf_counter()
    store.client.load_collection(store.collection)
    load_s = time.perf_counter() - started
    _, ids = store.search(_queries(dim, 1), 10, None)
    return {"load_s": load_s, "collection_count": store.count(), "hits": int(len(ids[0]))}


def stage_baseline_merge(index_dir: str) -> dict[str, Any]:
    """main@514746c's merge: every shard in RAM, a float32 copy, the index serialised through memory."""
    import faiss

    from trafficsearch.index.plan import Plan
    from trafficsearch.index.shards import read_shard

    path = Path(index_dir)
    plan = Plan.load(path)
    shards = [read_shard(path, i) for i in range(len(plan.shards))]
    vectors = np.concatenate([s.vectors for s in shards])
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors.astype(np.float32))
    blob = faiss.serialize_index(index).tobytes()
    (path / "baseline.index").write_bytes(blob)
    np.save(path / "baseline.npy", vectors)
    return {}


def stage_baseline_open(index_dir: str) -> dict[str, Any]:
    """main's open: read the FAISS index into memory and every metadata row into Python lists."""
    import faiss

    from trafficsearch.index.files import read_manifest

    path = Path(index_dir)
    manifest = read_manifest(path)
    faiss.read_index(str(path / manifest["files"]["faiss"]))
    db = sqlite3.connect(path / manifest["files"]["metadata"])
    rows = db.execute("SELECT row, id, name, path, kind FROM images ORDER BY row").fetchall()
    _ = [r[2] for r in rows], [r[3] for r in rows], np.array([r[4] for r in rows], dtype=object)
    return {}


def _current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class AnonPeak:
    """Samples RssAnon (memory the kernel cannot drop, unlike pages of memory-mapped files) every 20 ms."""

    def __init__(self) -> None:
        import threading

        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) / 1024.0)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def _child(conn, fn_name: str, args: tuple) -> None:
    import faiss  # noqa: F401  (imports first, so their RSS is reported apart)

    import trafficsearch.index.build  # noqa: F401
    import trafficsearch.index.stores.faiss_dir  # noqa: F401

    imports = _current_rss_mb()
    anon = AnonPeak()
    started = time.perf_counter()
    result = globals()[fn_name](*args)
    result["peak_anon_mb"] = anon.stop()
    conn.send(
        {
            "seconds": time.perf_counter() - started,
            "peak_rss_mb": _rss_mb(),
            "imports_rss_mb": imports,
            **result,
        }
    )
    conn.close()


def run_stage(name: str, fn_name: str, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(child, fn_name, args))
    process.start()
    child.close()
    result = parent.recv()
    process.join()
    if process.exitcode:
        raise SystemExit(f"stage {name} failed (exit {process.exitcode})")
    result["stage"] = name
    print(
        f"  {name}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB "
        f"(anonymous {result['peak_anon_mb']:.0f} MB, imports {result['imports_rss_mb']:.0f} MB)",
        flush=True,
    )
    return result


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from trafficsearch.benchmarking import machine_info
    from trafficsearch.ioutil import atomic_write_json, atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--baseline-n", type=int, default=250_000, help="size of the old-vs-new merge")
    parser.add_argument(
        "--ivf", default=None, help="IVF factory (default IVF<~sqrt(n)>,SQfp16); 'none' skips"
    )
    parser.add_argument("--nprobe", type=int, default=64)
    parser.add_argument("--queries", type=int, default=50, help="one-query calls timed per search kind")
    parser.add_argument("--check", type=int, default=20, help="queries checked against a numpy scan")
    parser.add_argument(
        "--milvus-n", type=int, default=100_000, help="vectors pushed to milvus-lite; 0 skips"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/trafficsearch-city"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--search-only",
        action="store_true",
        help="only the Flat open + search stage, over the index a --keep run left in --work",
    )
    args = parser.parse_args()
    dim = default_dim()
    nlist = 1 << round(math.log2(max(16.0, math.sqrt(args.n))))
    ivf = args.ivf or f"IVF{nlist},SQfp16"
    big, small = str(args.work / "city"), str(args.work / "base")
    rows: list[dict[str, Any]] = []
    if args.search_only:
        if not (args.work / "city" / "manifest.json").is_file():
            raise SystemExit(f"{args.work}/city: no merged index (run with --keep first)")
        args.keep = True
    elif args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"city scale: n={args.n:,} dim={dim} in {args.work}", flush=True)
    if args.search_only:
        rows.append(
            {
                "n": args.n,
                **run_stage(
                    "open + search (Flat, mmap)", "stage_search", big, dim, args.queries, args.check, None
                ),
            }
        )
    else:
        try:
            rows.append(
                {"n": args.n, **run_stage("write shards + metadata CSV", "stage_shards", big, args.n, dim)}
            )
            rows.append({"n": args.n, **run_stage("merge (Flat, streaming)", "stage_merge", big, "Flat")})
            rows.append(
                {
                    "n": args.n,
                    **run_stage(
                        "open + search (Flat, mmap)", "stage_search", big, dim, args.queries, args.check, None
                    ),
                }
            )
            if ivf.lower() != "none":
                rows.append({"n": args.n, **run_stage(f"merge ({ivf})", "stage_merge", big, ivf)})
                rows.append(
                    {
                        "n": args.n,
                        **run_stage(
                            f"open + search ({ivf}, nprobe {args.nprobe})",
                            "stage_search",
                            big,
                            dim,
                            args.queries,
                            args.check,
                            {"nprobe": args.nprobe},
                        ),
                    }
                )
            if args.milvus_n:
                mv, mn = str(args.work / "milvus"), min(args.milvus_n, args.n)
                run_stage("milvus: write shards", "stage_shards", mv, mn, dim)
                run_stage("milvus: merge", "stage_merge", mv, "Flat")
                rows.append(
                    {
                        "n": mn,
                        **run_stage(
                            "push to milvus-lite + search (FLAT)", "stage_milvus", mv, dim, args.queries
                        ),
                    }
                )
            bn = min(args.baseline_n, args.n)
            run_stage("baseline: write shards", "stage_shards", small, bn, dim)
            rows.append(
                {"n": bn, **run_stage("baseline: main's merge (in RAM)", "stage_baseline_merge", small)}
            )
            rows.append({"n": bn, **run_stage("streaming merge (Flat)", "stage_merge", small, "Flat")})
            rows.append(
                {"n": bn, **run_stage("baseline: main's open (rows in Python)", "stage_baseline_open", small)}
            )
            rows.append(
                {
                    "n": bn,
                    **run_stage(
                        "open + search (Flat, mmap)",
                        "stage_search",
                        small,
                        dim,
                        args.queries,
                        args.check,
                        None,
                    ),
                }
            )
        finally:
            if not args.keep:
                shutil.rmtree(args.work, ignore_errors=True)
    table = Table(title=f"city scale, dim {dim}: peak RSS per stage (fresh process each)")
    for column in ("n", "stage", "s", "peak RSS MB", "anon MB", "imports", "search p50 ms (recall)"):
        table.add_column(column)
    for r in rows:
        search = ""
        if "top-10" in r:
            search = (
                f"{r['top-10']['p50_ms']:.1f} ({r['top-10']['recall']:.3f}); "
                f"filtered {r['filtered top-10']['p50_ms']:.1f} ({r['filtered top-10']['recall']:.3f})"
            )
        table.add_row(
            f"{r['n']:,}",
            r["stage"],
            f"{r['seconds']:.1f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['peak_anon_mb']:.0f}",
            f"{r['imports_rss_mb']:.0f}",
            search,
        )
    Console(width=100).print(table)
    by = {(r["n"], r["stage"]): r for r in rows}
    bn = min(args.baseline_n, args.n)
    old, new = by.get((bn, "baseline: main's merge (in RAM)")), by.get((bn, "streaming merge (Flat)"))
    ratio = old["peak_anon_mb"] / new["peak_anon_mb"] if old and new else None
    if old and new:
        print(
            f"merge peak anonymous memory at {bn:,}: main {old['peak_anon_mb']:.0f} MB / streaming "
            f"{new['peak_anon_mb']:.0f} MB = {ratio:.2f}x"
        )
    m = machine_info()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"city_scale-{args.n}" + ("-search" if args.search_only else "")
    atomic_write_json(
        RESULTS / f"{stem}.json",
        {"benchmark": "city_scale", "dim": dim, "n": args.n, "rows": rows, "machine": m},
    )
    lines = [
        f"# City scale: {args.n:,} vectors, dim {dim}",
        "",
        "Each stage ran in a fresh process; peak RSS is its VmHWM, which includes the imports (torch, FAISS, "
        "numpy: the 'imports' column, RSS right after importing) and the pages of memory-mapped files the "
        "process touched, which the kernel can drop; 'peak anonymous' (RssAnon sampled every 20 ms) is the "
        "memory it cannot. Search runs FAISS on 1 OpenMP thread (2 "
        "threads spin-wait on this loaded shared machine: 10x slower one-query calls), one query per call, "
        "k=10; recall against a blocked numpy scan of the stored vectors. Filter: 3 of 100 cameras, 3 of 7 "
        "days. The milvus-lite row's recall column is the share of queries whose top-10 ids equal the FAISS "
        "directory's (milvus-lite runs inside the benchmark process, so its memory is in that row).",
        "",
        f"Command: `benchmarks/city_scale.py {' '.join(sys.argv[1:])}`. "
        f"Machine: {m['cpu']}, {m['cores']} cores, "
        f"shared (load average {m['load_avg_1m']:.1f}); faiss {m.get('faiss')}, numpy {m.get('numpy')}.",
        "",
        "| n | stage | seconds | peak RSS MB | peak anonymous MB | imports MB | search p50 ms (recall@10) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        search = ""
        if "top-10" in r:
            search = (
                f"{r['top-10']['p50_ms']:.1f} ({r['top-10']['recall']:.3f}); filtered "
                f"{r['filtered top-10']['p50_ms']:.1f} ({r['filtered top-10']['recall']:.3f})"
            )
        lines.append(
            f"| {r['n']:,} | {r['stage']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_anon_mb']:.0f} | {r['imports_rss_mb']:.0f} | {search} |"
        )
    lines += (
        []
        if not (old and new)
        else [
            "",
            f"Merge peak anonymous memory at {bn:,} vectors: main {old['peak_anon_mb']:.0f} MB, streaming "
            f"{new['peak_anon_mb']:.0f} MB ({ratio:.2f}x less); peak RSS {old['peak_rss_mb']:.0f} vs "
            f"{new['peak_rss_mb']:.0f} MB. The baseline repeats main's vectors + FAISS steps only (no SQLite "
            "metadata, no metadata-file join), so its time is not comparable; its memory is a lower bound.",
        ]
    )
    atomic_write_text(RESULTS / f"{stem}.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
