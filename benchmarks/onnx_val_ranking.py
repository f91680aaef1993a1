"""Does the ONNX query encoder change the val ranking? Search every distinct val text through
open_engine with the PyTorch encoder and then with TRAFFICSEARCH_QUERY_ENCODER=onnx (same process, a fresh
engine each, so no cached embedding crosses over) and compare top-10 agreement and official mAP@10.

    python benchmarks/onnx_val_ranking.py --index runs/demo/index-val/clip \
        --labels /work/shared/data/cvpr2023-track2-val/val_label.txt
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trafficsearch.data.labels import read_labels
from trafficsearch.eval.metrics import evaluate
from trafficsearch.models.onnx_text import ENV
from trafficsearch.search.opener import open_engine
from trafficsearch.testing.service import machine, write_result

RESULTS = Path(__file__).resolve().parent / "results"


def ranked_lists(index: str, texts: list[str], k: int, backend: str) -> tuple[dict[str, list[str]], float]:
    os.environ[ENV] = backend
    engine = open_engine(index)
    start = time.perf_counter()
    lists: dict[str, list[str]] = {}
    for i in range(0, len(texts), 256):
        batch = texts[i : i + 256]
        for text, hits in zip(batch, engine.search(batch, k=k), strict=True):
            lists[text] = [hit.name for hit in hits]
    return lists, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", required=True, help="index or ensemble directory")
    parser.add_argument("--labels", type=Path, required=True, help="val label file (the gallery and queries)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS / "onnx_val_ranking.json")
    args = parser.parse_args()
    console = Console(width=100)
    records = read_labels(args.labels).records
    texts = list(dict.fromkeys(r.text for r in records))
    rows = {}
    lists = {}
    for backend in ("torch", "onnx"):
        lists[backend], seconds = ranked_lists(args.index, texts, args.k, backend)
        ranked = [lists[backend][r.text] for r in records]
        result = evaluate(records, records, ranked, rule="equal", k=args.k)
        rows[backend] = {"map_official": result.overall.map_official, "search_s": round(seconds, 2)}
        console.print(f"{backend}: mAP@{args.k} {100 * result.overall.map_official:.3f} in {seconds:.1f} s")
    same_list = sum(lists["torch"][t] == lists["onnx"][t] for t in texts)
    overlap = sum(len(set(lists["torch"][t]) & set(lists["onnx"][t])) for t in texts) / (args.k * len(texts))
    top1 = sum(lists["torch"][t][:1] == lists["onnx"][t][:1] for t in texts)
    delta = 100 * (rows["onnx"]["map_official"] - rows["torch"]["map_official"])
    table = Table(
        title=f"ONNX vs PyTorch query encoder, {len(texts)} distinct val texts, {len(records)} queries"
    )
    for column in ("encoder", f"mAP@{args.k} (official)", "search s"):
        table.add_column(column, justify="right")
    for backend, row in rows.items():
        table.add_row(backend, f"{100 * row['map_official']:.3f}", f"{row['search_s']:.1f}")
    console.print(table)
    console.print(
        f"identical top-{args.k} lists {same_list}/{len(texts)}; top-{args.k} overlap {overlap:.4f}; "
        f"same top-1 {top1}/{len(texts)}; mAP delta {delta:+.3f} points"
    )
    write_result(
        args.out,
        {
            "benchmark": "onnx_val_ranking",
            "index": args.index,
            "labels": str(args.labels),
            "k": args.k,
            "distinct_texts": len(texts),
            "queries": len(records),
            "rows": rows,
            "identical_lists": same_list,
            "topk_overlap": overlap,
            "same_top1": top1,
            "map_delta_points": delta,
            "machine": machine(),
        },
    )
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
