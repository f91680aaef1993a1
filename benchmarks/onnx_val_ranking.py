"""Does the ONNX query encoder (or the int8 ITM head) change the val ranking? Search every distinct val
text through open_engine under each variant (same process, a fresh engine each, so no cached embedding
crosses over) and compare each one's top-10 lists and official mAP@10 with the first variant's.

    python benchmarks/onnx_val_ranking.py --index runs/demo/index-val/clip \
        --labels /work/shared/data/cvpr2023-track2-val/val_label.txt
    python benchmarks/onnx_val_ranking.py --index runs/demo/ensemble-val --rerank \
        --variants onnx onnx-itm-int8 --labels ... --out benchmarks/results/itm_int8_val_ranking.json

A variant: torch | onnx (query encoder, ITM head fp32) | onnx-itm-int8 (ITM head int8).
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
from trafficsearch.models.onnx_text import ENV, ITM_ENV
from trafficsearch.search.opener import open_engine
from trafficsearch.testing.service import machine, write_result

RESULTS = Path(__file__).resolve().parent / "results"


VARIANTS = {"torch": ("torch", "fp32"), "onnx": ("onnx", "fp32"), "onnx-itm-int8": ("onnx", "int8")}


def ranked_lists(
    index: str, texts: list[str], k: int, variant: str, rerank: bool
) -> tuple[dict[str, list[str]], float]:
    os.environ[ENV], os.environ[ITM_ENV] = VARIANTS[variant]
    engine = open_engine(index)
    start = time.perf_counter()
    lists: dict[str, list[str]] = {}
    for i in range(0, len(texts), 256):
        batch = texts[i : i + 256]
        for text, hits in zip(batch, engine.search(batch, k=k, rerank=rerank), strict=True):
            lists[text] = [hit.name for hit in hits]
    return lists, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", required=True, help="index or ensemble directory")
    parser.add_argument("--labels", type=Path, required=True, help="val label file (the gallery and queries)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["torch", "onnx"])
    parser.add_argument("--rerank", action="store_true", help="search with the ensemble's ITM re-ranking")
    parser.add_argument("--out", type=Path, default=RESULTS / "onnx_val_ranking.json")
    args = parser.parse_args()
    if len(args.variants) < 2:
        raise SystemExit("--variants: give at least two (each is compared with the first)")
    console = Console(width=100)
    records = read_labels(args.labels).records
    texts = list(dict.fromkeys(r.text for r in records))
    rows, lists = {}, {}
    for variant in args.variants:
        lists[variant], seconds = ranked_lists(args.index, texts, args.k, variant, args.rerank)
        ranked = [lists[variant][r.text] for r in records]
        result = evaluate(records, records, ranked, rule="equal", k=args.k)
        rows[variant] = {"map_official": result.overall.map_official, "search_s": round(seconds, 2)}
        console.print(f"{variant}: mAP@{args.k} {100 * result.overall.map_official:.3f} in {seconds:.1f} s")
    base = args.variants[0]
    for variant in args.variants[1:]:
        a, b = lists[base], lists[variant]
        rows[variant]["vs"] = base
        rows[variant]["identical_lists"] = sum(a[t] == b[t] for t in texts)
        rows[variant]["topk_overlap"] = sum(len(set(a[t]) & set(b[t])) for t in texts) / (args.k * len(texts))
        rows[variant]["same_top1"] = sum(a[t][:1] == b[t][:1] for t in texts)
        rows[variant]["map_delta_points"] = 100 * (rows[variant]["map_official"] - rows[base]["map_official"])
    table = Table(
        title=f"val ranking per variant, {len(texts)} distinct val texts, {len(records)} queries"
        + (", ITM re-ranked" if args.rerank else "")
    )
    for column in ("variant", f"mAP@{args.k}", "search s", f"same top-{args.k}", "overlap", "same top-1"):
        table.add_column(column, justify="right")
    for variant, row in rows.items():
        same = (
            ("", "", "")
            if variant == base
            else (
                f"{row['identical_lists']}/{len(texts)}",
                f"{row['topk_overlap']:.4f}",
                f"{row['same_top1']}/{len(texts)}",
            )
        )
        table.add_row(variant, f"{100 * row['map_official']:.3f}", f"{row['search_s']:.1f}", *same)
    console.print(table)
    for variant in args.variants[1:]:
        console.print(f"{variant} vs {base}: mAP delta {rows[variant]['map_delta_points']:+.3f} points")
    write_result(
        args.out,
        {
            "benchmark": "onnx_val_ranking",
            "index": args.index,
            "labels": str(args.labels),
            "k": args.k,
            "rerank": args.rerank,
            "distinct_texts": len(texts),
            "queries": len(records),
            "rows": rows,
            "machine": machine(),
        },
    )
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
