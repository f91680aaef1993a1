"""Cold distinct queries through the service: this checkout against an older one, in the same run.

Each variant is a `trafficsearch serve` process started from its own source tree (PYTHONPATH) over its own
index of the same images, on a free loopback port; every (round, variant) gets a fresh process, so the
query-embedding cache starts empty, and every request is a distinct real val text (cold). Within a round
every variant gets the same texts (a seeded shuffle of the file, so each round mixes vehicle and pedestrian
texts alike); rounds interleave the variants, rotating their order, so machine load hits them alike. The
table reports each variant's median over the rounds and its ratio to the baseline (the first variant).

    .venv/bin/python benchmarks/service_baseline.py \
        --variant old=/work/wt/old/src:/tmp/svc/index-old \
        --variant torch=src:/tmp/svc/index-new \
        --variant onnx=src:/tmp/svc/index-new:onnx \
        --rounds 2 --requests 400 --concurrency 1 32

A variant is NAME=SRC:INDEX[:ENCODER]; ENCODER sets TRAFFICSEARCH_QUERY_ENCODER for that service.
Writes benchmarks/results/service_baseline.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.testing.loadgen import run_load
from trafficsearch.testing.service import (
    CheckoutVariant,
    free_port,
    load_queries,
    machine,
    running_service,
)

DEFAULT_QUERIES = Path("/work/shared/data/cvpr2023-track2-val/val_label.txt")
RESULTS = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def serve(
    variant: CheckoutVariant, startup_timeout: float = 300, extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    """`trafficsearch serve` from the variant's source tree on a free port; its log goes to the temp dir."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(variant.src), OMP_NUM_THREADS="2", **(extra_env or {}))
    if variant.encoder:
        env["TRAFFICSEARCH_QUERY_ENCODER"] = variant.encoder
    cmd = [sys.executable, "-m", "trafficsearch.cli", "serve", str(variant.index), "--port", str(port)]
    # 514746c resolved an ensemble's relative member paths against the working directory; this checkout
    # resolves them against the ensemble's own directory: started there, both find the same members
    cwd = variant.index if (variant.index / "ensemble.yaml").is_file() else None
    log_path = Path(tempfile.gettempdir()) / f"service_baseline-{variant.name}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        started = False
        try:
            with running_service(process, f"http://127.0.0.1:{port}", startup_timeout) as url:
                started = True
                yield url
        except RuntimeError as exc:
            if started:  # raised by the measurement, not by the start-up
                raise
            raise SystemExit(f"{variant.name}: {exc}; see {log_path}") from None


def measure(
    variant: CheckoutVariant,
    texts: list[str],
    levels: list[int],
    requests: int,
    budget: float,
    extra: dict | None = None,
    env: dict[str, str] | None = None,
) -> list[dict]:
    """One fresh service: warm-up (not measured), then each level with its own distinct texts."""
    per_level = len(texts) // len(levels)
    rows = []
    with serve(variant, extra_env=env) as url:
        warm = [{"text": f"warm-up query {i}", "k": 10} for i in range(64)]
        asyncio.run(run_load(url, warm, total=64, concurrency=8, budget_s=120))
        for i, concurrency in enumerate(levels):
            own = texts[i * per_level : (i + 1) * per_level]
            bodies = [{"text": t, "k": 10, **(extra or {})} for t in own]
            total = min(requests, len(bodies))  # each text once: every request misses the cache
            result = asyncio.run(run_load(url, bodies, total=total, concurrency=concurrency, budget_s=budget))
            rows.append({"variant": variant.name, "concurrency": concurrency, **result.summary()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", required=True, help="NAME=SRC:INDEX[:ENCODER]")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=400, help="distinct texts per level and round")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--budget-s", type=float, default=90.0, help="time limit per level")
    parser.add_argument("--queries", type=Path, default=DEFAULT_QUERIES)
    parser.add_argument(
        "--rerank", action="store_true", help='send "rerank": true (an ensemble with ITM re-ranking)'
    )
    parser.add_argument("--out", default="service_baseline", help="results/OUT.{json,md}")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="an environment variable for one variant's service, e.g. int8:TRAFFICSEARCH_ITM_HEAD=int8",
    )
    args = parser.parse_args()
    variants = [CheckoutVariant.parse(v) for v in args.variant]
    envs: dict[str, dict[str, str]] = {}
    for item in args.env:
        name, _, pair = item.partition(":")
        key, eq, value = pair.partition("=")
        if not eq or not key or name not in {v.name for v in variants}:
            raise SystemExit(f"--env {item!r}: expected NAME:KEY=VALUE with NAME one of the variants")
        envs.setdefault(name, {})[key] = value
    console = Console(width=100)
    per_round = args.requests * len(args.concurrency)
    texts = load_queries(args.queries, limit=per_round * args.rounds)
    if len(texts) < per_round * args.rounds:
        raise SystemExit(f"{args.queries}: {len(texts)} distinct texts, need {per_round * args.rounds}")
    # One seeded shuffle: every round gets the file's mix of short vehicle and long pedestrian texts (the
    # file lists them in blocks), and within a round every variant gets the same texts. Each variant is a
    # fresh process, so they are cold for each; comparing variants on different texts made the ratio
    # measure the texts' lengths (encoding a long pedestrian text costs ~4x a vehicle's).
    random.Random(0).shuffle(texts)
    rows: list[dict] = []
    for r in range(args.rounds):
        own = texts[r * per_round : (r + 1) * per_round]
        for variant in variants[r % len(variants) :] + variants[: r % len(variants)]:  # rotated per round
            with console.status(f"round {r + 1}/{args.rounds}: {variant.name} ..."):
                part = measure(
                    variant,
                    own,
                    args.concurrency,
                    args.requests,
                    args.budget_s,
                    {"rerank": True} if args.rerank else None,
                    envs.get(variant.name),
                )
            for row in part:
                row["round"] = r + 1
                console.print(
                    f"round {r + 1} {variant.name} c={row['concurrency']}: {row['throughput_rps']} req/s, "
                    f"p50 {row['p50_ms']} ms, status {row['status_counts']}"
                )
            rows += part
    base = variants[0].name
    summary = []
    for variant in variants:
        for c in args.concurrency:
            mine = [x for x in rows if x["variant"] == variant.name and x["concurrency"] == c]
            ref = [x for x in rows if x["variant"] == base and x["concurrency"] == c]
            rps = statistics.median(x["throughput_rps"] for x in mine)
            ratios = [m["throughput_rps"] / b["throughput_rps"] for m, b in zip(mine, ref, strict=True)]
            bad = sum(v for x in mine for k, v in x["status_counts"].items() if int(k) >= 500) + sum(
                sum(x["transport_errors"].values()) for x in mine
            )
            summary.append(
                {
                    "variant": variant.name,
                    "concurrency": c,
                    "req_s_median": rps,
                    "req_s_rounds": [x["throughput_rps"] for x in mine],
                    "x_baseline_rounds": [round(x, 2) for x in ratios],
                    "p50_ms_median": statistics.median(x["p50_ms"] for x in mine),
                    "completed": sum(x["completed"] for x in mine),
                    "5xx_or_errors": bad,
                }
            )
    table = Table(title=f"cold distinct queries through the service; baseline: {base}")
    for col in ("variant", "conc.", "req/s (median)", "x baseline per round", "p50 ms", "done", "5xx+err"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for s in summary:
        table.add_row(
            s["variant"], str(s["concurrency"]), f"{s['req_s_median']:.1f}",
            " / ".join(f"{x:.2f}" for x in s["x_baseline_rounds"]), f"{s['p50_ms_median']:.0f}",
            str(s["completed"]), str(s["5xx_or_errors"]),
        )  # fmt: skip
    console.print(table)
    info = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        RESULTS / f"{args.out}.json",
        {
            "benchmark": "service_baseline",
            "variants": [{**v.__dict__, "src": str(v.src), "index": str(v.index)} for v in variants],
            "rounds": rows,
            "summary": summary,
            "machine": info,
            "argv": sys.argv[1:],
        },
    )
    lines = [
        "# Cold distinct queries through the service, against a baseline checkout in the same run",
        "",
        f"Command: `benchmarks/service_baseline.py {' '.join(sys.argv[1:])}`",
        "",
        "Machine: "
        + ", ".join(f"{k} {v}" for k, v in info.items())
        + f"; load average at the end {os.getloadavg()[0]:.1f}. Each row: median over the rounds; the ratio"
        " column gives each round's req/s over the baseline's in the same round.",
        "",
        "| variant | concurrency | req/s (median) | x baseline per round | p50 ms | done | 5xx+errors |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {s['variant']} | {s['concurrency']} | {s['req_s_median']:.1f} | "
            + " / ".join(f"{x:.2f}" for x in s["x_baseline_rounds"])
            + f" | {s['p50_ms_median']:.0f} | {s['completed']} | {s['5xx_or_errors']} |"
            for s in summary
        ),
        "",
    ]
    atomic_write_text(RESULTS / f"{args.out}.md", "\n".join(lines))


if __name__ == "__main__":
    main()
