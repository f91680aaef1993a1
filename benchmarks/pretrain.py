"""Re-run the pre-training behind each shipped checkpoint and compare with what the package ships.

    python benchmarks/pretrain.py [--only clip-default] [--work /tmp/pretrain-bench]

Each checkpoint is re-made with its manifest's command (experiments/pretrain.py: same corpus sizes, config,
seed), exported to WORK/export/NAME, and compared with resources/pretrained/NAME: sha256 equal or not; as
CPU training need not be bit-identical, also the cosine between the two models' embeddings of the web val
images and captions, and both models' official mAP@10 (equal) on that val split. Prints a table and writes
benchmarks/results/pretrain.{md,json} with the machine named.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from trafficsearch.benchmarking import machine_info
from trafficsearch.data.labels import read_labels
from trafficsearch.data.layout import split
from trafficsearch.eval.metrics import evaluate
from trafficsearch.experiments.pretrain import PLANS, run_pretrain
from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.models.factory import load_model
from trafficsearch.models.pretrained import pretrained_root, read_manifest
from trafficsearch.train.validate import rank_top_k

RESULTS = Path(__file__).resolve().parent / "results"


def embed(model: Any, root: Path) -> tuple[list, torch.Tensor, list[str], torch.Tensor]:
    """(val records, image embeddings, distinct captions, their embeddings) on the corpus's val split."""
    s = split(root, "val")
    records = read_labels(s.labels).records
    transform = model.image_transform()
    rows = []
    for i in range(0, len(records), 128):
        pixels = []
        for r in records[i : i + 128]:
            with Image.open(s.images / r.image) as im:
                pixels.append(transform(im.convert("RGB")))
        rows.append(model.encode_images(torch.stack(pixels)))
    texts = list(dict.fromkeys(r.text for r in records))
    return records, torch.cat(rows), texts, model.encode_texts(texts)


def val_map(records: list, images: torch.Tensor, texts: list[str], text_emb: torch.Tensor) -> float:
    top = rank_top_k(text_emb, images, 10)
    row = {t: i for i, t in enumerate(texts)}
    ranked = [[records[j].image for j in top[row[r.text]].tolist()] for r in records]
    return evaluate(records, records, ranked, rule="equal", k=10).overall.map_official


def compare(name: str, work: Path, workers: int) -> dict[str, Any]:
    plan = PLANS[name]
    shipped = read_manifest()["checkpoints"].get(name, {})
    start = time.perf_counter()
    entry = run_pretrain(plan, work, export=work / "export" / name, workers=workers)
    wall = time.perf_counter() - start
    corpus = work / f"web-{plan.n_train}-{plan.n_val}-seed{plan.seed}"
    a, b = load_model(pretrained_root() / name), load_model(entry["export"])
    records, img_a, texts, txt_a = embed(a, corpus)
    _, img_b, _, txt_b = embed(b, corpus)
    return {
        "name": name,
        "command": plan.command(),
        "seed": plan.seed,
        "sha256_shipped": shipped.get("sha256"),
        "sha256_rerun": entry["sha256"],
        "identical": shipped.get("sha256") == entry["sha256"],
        "image_cosine_mean": float((img_a * img_b).sum(-1).mean()),
        "text_cosine_mean": float((txt_a * txt_b).sum(-1).mean()),
        "val_map_shipped": val_map(records, img_a, texts, txt_a),
        "val_map_rerun": val_map(records, img_b, texts, txt_b),
        "rerun_wall_s": round(wall, 1),
        "n_val": len(records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=list(PLANS), choices=list(PLANS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/pretrain-bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "pretrain")
    args = parser.parse_args()
    rows = [compare(name, args.work, args.workers) for name in args.only]
    table = Table(title="shipped pre-trained checkpoints vs a re-run of their command (web val)", width=100)
    for col in ("checkpoint", "sha256 equal", "img cos", "text cos", "mAP shipped", "mAP re-run", "wall s"):
        table.add_column(col, justify="right")
    md = [
        "| checkpoint | sha256 equal | image cosine | text cosine | val mAP@10 shipped | re-run | re-run s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["name"],
            "yes" if r["identical"] else "no",
            f"{r['image_cosine_mean']:.4f}",
            f"{r['text_cosine_mean']:.4f}",
            f"{100 * r['val_map_shipped']:.2f}",
            f"{100 * r['val_map_rerun']:.2f}",
            f"{r['rerun_wall_s']:.0f}",
        ]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    Console(width=100).print(table)
    machine = machine_info()
    atomic_write_json(args.out.with_suffix(".json"), {"rows": rows, "machine": machine})
    note = (
        f"\nMachine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_avg_1m']:.1f} at the "
        f"end; torch {machine.get('torch')}. "
        f"Command: `python benchmarks/pretrain.py --only {' '.join(args.only)}`. "
        "mAP: official mAP@10, equal rule, every web val caption against the web val gallery.\n"
    )
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(md) + "\n" + note)


if __name__ == "__main__":
    main()
