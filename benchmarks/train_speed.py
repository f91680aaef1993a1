"""Training step throughput of the demo recipe on CPU: the pieces that size configs/demo/*.yaml.

    .venv/bin/python benchmarks/train_speed.py [--steps 10] [--batch 128] [--threads 2]

Measures, on random pixels and real val captions: image-tower train steps (fwd+bwd+AdamW) for the default
ViT, the cached-text step (projection only) vs recomputing the frozen MiniLM trunk every step, and caption
encoding for the cache. Prints a table and writes benchmarks/results/train_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.models.clip import create_clip, lock_text, text_project
from trafficsearch.train.loss import ContrastiveLoss
from trafficsearch.train.text_cache import TextFeatureCache

RESULTS = Path(__file__).parent / "results"
VAL = Path(__file__).resolve().parents[1].parent / "shared/data/cvpr2023-track2-val/val_label.txt"


def captions(n: int) -> list[str]:
    if VAL.is_file():
        texts = [line.rstrip("\n").split("$")[2] for line in VAL.read_text(encoding="utf-8").splitlines()]
        return list(dict.fromkeys(texts))[:n]
    return [f"This is a car number {i}." for i in range(n)]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    wrapped = create_clip("ts-minilm-vit-s64")
    model = wrapped.model
    lock_text(model, 0)
    model.train()
    model.text.transformer.eval()
    texts = captions(max(args.batch, 1024))
    batch_texts = texts[: args.batch]
    pixels = torch.randn(args.batch, 3, wrapped.image_size, wrapped.image_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = ContrastiveLoss("multi_positive")
    cache = TextFeatureCache(wrapped)
    t0 = time.perf_counter()
    cache.add(texts)
    encode_s = time.perf_counter() - t0

    def step(cached: bool) -> None:
        img = F.normalize(model.encode_image(pixels), dim=-1)
        if cached:
            txt = text_project(model, cache.rows(batch_texts))
        else:
            txt = model.encode_text(wrapped.tokenize(batch_texts))
        loss = loss_fn(img, F.normalize(txt, dim=-1), model.logit_scale.exp(), batch_texts)
        opt.zero_grad()
        loss.backward()
        opt.step()

    cached_s = timed(lambda: step(True), args.steps)
    uncached_s = timed(lambda: step(False), max(2, args.steps // 3))
    rows = [
        ("train step, cached text features", f"{1 / cached_s:.2f} steps/s", f"{args.batch / cached_s:.0f}"),
        (
            "train step, frozen trunk recomputed",
            f"{1 / uncached_s:.2f} steps/s",
            f"{args.batch / uncached_s:.0f}",
        ),
        ("caption encoding for the cache", f"{len(texts) / encode_s:.0f} texts/s", "-"),
    ]
    table = Table(title=f"demo training speed ({args.threads} threads, batch {args.batch})")
    for col in ("what", "rate", "samples/s"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    result = {
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "threads": args.threads, "load": os.getloadavg()[0]},
        "batch": args.batch,
        "cached_steps_per_s": 1 / cached_s,
        "uncached_steps_per_s": 1 / uncached_s,
        "caption_texts_per_s": len(texts) / encode_s,
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "train_speed.json", result)
    md = ["| what | rate | samples/s |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in rows]]
    atomic_write_text(
        RESULTS / "train_speed.md",
        f"Machine: {cpu}, {os.cpu_count()} cores, {args.threads} threads, "
        f"load {result['machine']['load']:.1f}\n\n" + "\n".join(md) + "\n",
    )


if __name__ == "__main__":
    main()
