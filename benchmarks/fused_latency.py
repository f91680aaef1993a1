"""Cold fused-query latency against the sum of its members, on a finished demo run's val ensemble.

For each of N distinct real val texts, interleaved text by text and with every cache emptied before each
search (experiments.systems.cold_caches): each member's own engine over its index (one model: encode +
exact scan + top 10), the fused first stage (the text encoded and scored by every member the fusion
weights, normalised, fused), every member scored as before (the baseline), and the full system (fusion +
ITM re-rank of the top 10 from the stored image tokens). Once with the PyTorch query encoder and once with
ONNX Runtime (the service's default, which also runs the ITM head); `onnx-itm-int8` runs that head int8.

    .venv/bin/python benchmarks/fused_latency.py --work runs/demo-seeds/seed-0 [--texts 60]

"sum of members" adds the p50s of the members the fusion weights (a member at weight 0 for every query kind
is not scored; the "before" row scores it, as the fused stage did until it skipped such members); "fused
/ sum" near 1 means fusing costs little beyond its members. Prints a table; writes
benchmarks/results/fused_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from trafficsearch.benchmarking import machine_info
from trafficsearch.experiments.systems import cold_caches, latency_texts, load_split_data
from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.models.onnx_text import ENV, ITM_ENV
from trafficsearch.search.opener import open_engine

RESULTS = Path(__file__).parent / "results"


def engines(work: Path) -> tuple[Any, dict[str, Any], dict[str, bool]]:
    """The val ensemble's engine, each member's own engine (sharing the loaded models), and which members
    the fusion weights for some query kind."""
    fused = open_engine(work / "ensemble-val")
    singles, weighted = {}, {}
    weight_rows = [fused.first_stage.weights, *fused.first_stage.kind_weights.values()]
    for i, member in enumerate(fused.first_stage.members):
        singles[member.name] = open_engine(member.data.dir, model=member.model)
        weighted[member.name] = any(float(w[i]) > 0 for w in weight_rows)
    return fused, singles, weighted


def every_member_scored(fused: Any) -> Any:
    """The fused engine as it was before zero-weight members were skipped: a weight of 0 becomes 1e-9, so
    every member's text is encoded and its rows scored, and the fused order stays the same."""
    first = fused.first_stage

    def lifted(weights: Any) -> list[float]:
        return [float(w) or 1e-9 for w in weights]

    kinds = {kind: lifted(w) for kind, w in first.kind_weights.items()}
    return fused.with_first_stage(first.reweighted(lifted(first.weights), kinds or None))


def timed(engine: Any, text: str, rerank: bool) -> float:
    with cold_caches(engine):
        start = time.perf_counter()
        engine.search([text], k=10, rerank=rerank)
        return (time.perf_counter() - start) * 1000.0


# an encoder choice: the query encoder and the ONNX ITM head's precision
ENCODERS = {"torch": ("torch", "fp32"), "onnx": ("onnx", "fp32"), "onnx-itm-int8": ("onnx", "int8")}


def run(work: Path, n_texts: int, encoder: str) -> dict[str, Any]:
    os.environ[ENV], os.environ[ITM_ENV] = ENCODERS[encoder]
    fused, singles, weighted = engines(work)
    texts = latency_texts(load_split_data(work / "data", "val"), n_texts + 2)
    systems: dict[str, tuple[Any, bool]] = {name: (e, False) for name, e in singles.items()}
    systems["fusion"] = (fused, False)
    systems["fusion, every member scored (before)"] = (every_member_scored(fused), False)
    systems["full system (fusion + ITM)"] = (fused, True)
    for warm in texts[:2]:  # ONNX export, first-call allocations
        for engine, rerank in systems.values():
            engine.search([warm], k=10, rerank=rerank)
    times: dict[str, list[float]] = {name: [] for name in systems}
    names = list(systems)
    for t, text in enumerate(texts[2:]):
        for name in names[t % len(names) :] + names[: t % len(names)]:  # rotate the order per text
            engine, rerank = systems[name]
            times[name].append(timed(engine, text, rerank))
    p50 = {name: float(np.median(v)) for name, v in times.items()}
    mean = {name: float(np.mean(v)) for name, v in times.items()}
    members_sum = sum(p50[n] for n in singles if weighted[n])
    all_sum = sum(p50[n] for n in singles)
    return {
        "encoder": encoder,
        "p50_ms": p50,
        "mean_ms": mean,
        "weighted": weighted,
        "sum_weighted_members_ms": members_sum,
        "sum_all_members_ms": all_sum,
        "fused_over_sum": p50["fusion"] / members_sum,
        "before_over_sum": p50["fusion, every member scored (before)"] / members_sum,
        "rerank_added_ms": p50["full system (fusion + ITM)"] - p50["fusion"],
        "texts": len(texts) - 2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/demo"))
    parser.add_argument("--texts", type=int, default=60)
    parser.add_argument("--encoders", nargs="+", choices=list(ENCODERS), default=["torch", "onnx"])
    parser.add_argument("--out", type=Path, default=RESULTS / "fused_latency")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    results = [run(args.work, args.texts, enc) for enc in args.encoders]
    info = machine_info()
    table = Table(title=f"cold query latency, {args.work} val, {args.texts} texts, p50 ms")
    table.add_column("system")
    for r in results:
        table.add_column(f"{r['encoder']} p50", justify="right")
        table.add_column(f"{r['encoder']} mean", justify="right")
    heads = " | ".join(f"{r['encoder']} p50 ms | mean ms" for r in results)
    lines = [f"| system | {heads} |"]
    lines.append("|---|" + "---:|---:|" * len(results))
    for name in results[0]["p50_ms"]:
        zero = not results[0]["weighted"].get(name, True)
        label = f"{name} (weight 0)" if zero else name
        pairs = [(f"{r['p50_ms'][name]:.1f}", f"{r['mean_ms'][name]:.1f}") for r in results]
        table.add_row(label, *[c for pair in pairs for c in pair])
        cells = [" | ".join(pair) for pair in pairs]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    console = Console(width=100)
    console.print(table)
    summary = []
    for r in results:
        summary.append(
            f"- {r['encoder']}: fusion {r['p50_ms']['fusion']:.1f} ms p50 vs its weighted members' sum "
            f"{r['sum_weighted_members_ms']:.1f} (all members {r['sum_all_members_ms']:.1f}): "
            f"**{r['fused_over_sum']:.2f}x** (every member scored, as before: "
            f"{r['before_over_sum']:.2f}x); ITM re-rank adds **{r['rerank_added_ms']:.1f} ms** p50"
        )
    for line in summary:
        console.print(line)
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    command = "benchmarks/fused_latency.py " + " ".join(
        [f"--work {args.work}", f"--texts {args.texts}", "--encoders", *args.encoders]
    )
    md = "\n".join(
        [
            "# Cold fused-query latency against the sum of its members",
            "",
            f"Command: `{command}`",
            "",
            f"Machine: {machine}.",
            "",
            *lines,
            "",
            *summary,
            "",
        ]
    )
    atomic_write_text(args.out.with_suffix(".md"), md)
    atomic_write_json(args.out.with_suffix(".json"), {"machine": info, "command": command, "runs": results})


if __name__ == "__main__":
    main()
