"""How much should the ITM head move a fused top 10? On a finished demo run's val split (real labels
rendered; the demo never fits on it), each query's fused top 10 (the demo's val ensemble: fitted fusion
weights, per-kind weights) is re-ordered by fused + b x L2-normalised ITM logits for a grid of b, by the
ITM logits alone, and by a seeded random shuffle of the same 10: official mAP@10 (equal and contain).
ITM alone below the shuffle means the head orders candidates worse than chance among the fusion's top 10.

    .venv/bin/python benchmarks/rerank_weight.py --work runs/demo-seeds/seed-0 [--work ...] [--queries 1000]

One ITM pass per run (search/rerank.ItmRerankStage.outputs over SearchEngine.staged_candidates); every
ordering only recombines. Prints a table; writes benchmarks/results/rerank_weight.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from trafficsearch.benchmarking import machine_info
from trafficsearch.eval.metrics import evaluate
from trafficsearch.experiments.systems import load_split_data
from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.search.ensemble.rerank_fit import rerank_stage
from trafficsearch.search.opener import open_engine

RESULTS = Path(__file__).parent / "results"
GRID = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


def orderings(work: Path, n_queries: int, seed: int) -> dict[str, Any]:
    """mAP@10 of every ordering of the fused top 10 on WORK's val split."""
    data = load_split_data(work / "data", "val", n_queries)
    engine = open_engine(work / "ensemble-val")
    stage = rerank_stage(engine)
    texts = [r.text for r in data.query_records]
    unique = list(dict.fromkeys(texts))
    candidates = engine.staged_candidates(unique, 10)
    outputs = stage.outputs(unique, candidates)
    names = engine.data.metadata.names
    by_text = dict(zip(unique, zip(candidates, outputs, strict=True), strict=True))
    rng = np.random.default_rng(seed)
    shuffles = {t: rng.permutation(10) for t in unique}

    def order(how: str, b: float = 0.0) -> list[list[str]]:
        lists = []
        for t in texts:
            cand, out = by_text[t]
            rows = cand.rows[:10]
            if how == "b":
                rows = stage.rescored(cand, out, b).rows[:10]
            elif how == "itm":
                rows = rows[np.argsort(-out, kind="stable")]
            elif how == "shuffle":
                rows = rows[shuffles[t][shuffles[t] < len(rows)]]
            lists.append([names[r] for r in rows.tolist()])
        return lists

    def score(lists: list[list[str]]) -> dict[str, float]:
        return {
            rule: 100 * evaluate(data.query_records, data.records, lists, rule, 10).overall.map_official
            for rule in ("equal", "contain")
        }

    rows = {f"b = {b:g}": score(order("b", b)) for b in GRID}
    rows["ITM logits alone"] = score(order("itm"))
    rows["random shuffle of the top 10"] = score(order("shuffle"))
    return {"work": str(work), "queries": len(texts), "fitted_b": float(stage.b), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, action="append", required=True, help="finished demo run dir")
    parser.add_argument("--queries", type=int, default=1000, help="val texts, evenly spread")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    parser.add_argument("--out", type=Path, default=RESULTS / "rerank_weight")
    args = parser.parse_args()
    console = Console()
    runs = []
    for work in args.work:
        with console.status(f"re-ranking {work} ..."):
            runs.append(orderings(work, args.queries, args.seed))
    table = Table(title=f"val mAP@10 (equal) of the fused top 10 re-ordered, {args.queries} queries")
    table.add_column("ordering")
    for run in runs:
        table.add_column(f"{Path(run['work']).name} (b {run['fitted_b']:g})")
    for label in runs[0]["rows"]:
        table.add_row(label, *(f"{run['rows'][label]['equal']:.2f}" for run in runs))
    console.print(table)
    machine = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), {"runs": runs, "machine": machine})
    fitted = ", ".join(f"{Path(r['work']).name} {r['fitted_b']:g}" for r in runs)
    header = " | ".join(f"{Path(r['work']).name} equal | contain" for r in runs)
    lines = [
        "# How much should the ITM head move the fused top 10?",
        "",
        "Val split of finished demo runs (real labels rendered, never fitted on), each query's fused top 10"
        " re-ordered: fused + b x L2-normalised ITM logits, ITM logits alone, a seeded shuffle. Official"
        f" mAP@10 x100 on {args.queries} val texts (evenly spread). Fitted b of each run (dev, fold-checked):"
        f" {fitted}.",
        "",
        f"Command: `python benchmarks/rerank_weight.py {' '.join('--work ' + r['work'] for r in runs)}"
        f" --queries {args.queries}`. Machine: {machine['cpu']}, {machine['cores']} cores.",
        "",
        f"| ordering | {header} |",
        "|---|" + "---|---|" * len(runs),
        *[
            f"| {label} | "
            + " | ".join(f"{r['rows'][label]['equal']:.2f} | {r['rows'][label]['contain']:.2f}" for r in runs)
            + " |"
            for label in runs[0]["rows"]
        ],
        "",
    ]
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines))


if __name__ == "__main__":
    main()
