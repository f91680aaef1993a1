"""Gallery encoding throughput: `trafficsearch index` (DataLoader workers, sharded, resumable) beside a plain
open_clip loop (PIL open, preprocess, encode_image, batch 64) on the same model and the same images.

    .venv/bin/python benchmarks/encode.py [--images 1000] [--model open_clip:ts-minilm-vit-s64] [--workers 2]

Prints a table and writes benchmarks/results/encode.{json,md}. Ours must not be slower (ratio >= 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from trafficsearch.benchmarking import machine_info
from trafficsearch.index import build_index
from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.models.factory import load_model

RESULTS = Path(__file__).parent / "results"


def make_images(root: Path, n: int, seed: int = 0) -> list[Path]:
    """Traffic-crop-like JPEGs: varied sizes (60-300 px), a body shape on a noisy background."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = int(rng.integers(60, 300)), int(rng.integers(60, 300))
        base = rng.integers(0, 255, size=(h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(image)
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.rectangle((w // 5, h // 5, 4 * w // 5, 4 * h // 5), fill=color)
        path = root / f"{i:06d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def plain_loop(model, paths: list[Path], batch: int = 64, threads: int | None = None) -> float:
    """The reference: a single-process loop as the open_clip README writes it; returns seconds.

    `threads` None keeps torch's default thread count; 1 is the better setting for tiny models on few cores,
    measured too so the comparison is against the best plain loop, not a strawman.
    """
    preprocess = model.image_transform()
    clip = model.model
    default = torch.get_num_threads()
    torch.set_num_threads(threads or default)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for i in range(0, len(paths), batch):
                pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[i : i + batch]])
                features = clip.encode_image(pixels)
                features = features / features.norm(dim=-1, keepdim=True)
    finally:
        torch.set_num_threads(default)
    return time.perf_counter() - start


def ours(model, spec: str, gallery: Path, out: Path, workers: int, batch: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    build_index(gallery, out, model, model_spec=spec, batch_size=batch, workers=workers, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--model", default="open_clip:ts-minilm-vit-s64")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    console = Console()
    model = load_model(args.model)
    with tempfile.TemporaryDirectory(prefix="ts-encode-bench-") as tmp:
        gallery = Path(tmp) / "gallery"
        with console.status(f"writing {args.images} JPEGs ..."):
            paths = make_images(gallery, args.images)
        plain_loop(model, paths[:64])  # warm-up (first-call allocations)
        plain_default = f"plain open_clip loop ({torch.get_num_threads()} threads)"
        times: dict[str, list[float]] = {
            plain_default: [],
            "plain open_clip loop (1 thread)": [],
            "trafficsearch index": [],
        }
        for _ in range(args.repeats):  # interleaved, best of N: the machine is shared
            times[plain_default].append(plain_loop(model, paths, args.batch_size))
            times["plain open_clip loop (1 thread)"].append(
                plain_loop(model, paths, args.batch_size, threads=1)
            )
            times["trafficsearch index"].append(
                ours(model, args.model, gallery, Path(tmp) / "idx", args.workers, args.batch_size)
            )
    best = {k: min(v) for k, v in times.items()}
    rate = {k: args.images / v for k, v in best.items()}
    best_plain = max((k for k in rate if k.startswith("plain")), key=lambda k: rate[k])
    ratio = rate["trafficsearch index"] / rate[best_plain]
    table = Table(title=f"gallery encoding, {args.images} JPEGs, {args.model}, batch {args.batch_size}")
    for column in ("pipeline", "best s", "images/s", "runs (s)"):
        table.add_column(column)
    for name, runs in times.items():
        table.add_row(name, f"{best[name]:.2f}", f"{rate[name]:.1f}", ", ".join(f"{t:.2f}" for t in runs))
    console.print(table)
    console.print(
        f"ratio ours / best plain ({best_plain}) = [bold]{ratio:.2f}x[/] "
        f"(workers={args.workers}; ours includes plan, shard writes and the FAISS merge)"
    )
    load = os.getloadavg()[0]
    result = {
        "benchmark": "encode",
        "images": args.images,
        "model": args.model,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "seconds": times,
        "images_per_s": rate,
        "ratio_vs_best_plain": ratio,
        "best_plain": best_plain,
        "load_average": load,
        "machine": machine_info(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "encode.json", result)
    m = machine_info()
    lines = [
        "# Gallery encoding throughput",
        "",
        f"{args.images} generated JPEGs (60-300 px), model `{args.model}`, batch {args.batch_size}, "
        f"{args.workers} DataLoader workers.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores (shared), torch {m['torch']}, faiss {m['faiss']}.",
        "",
        "| pipeline | best s | images/s |",
        "|---|---|---|",
        *[f"| {k} | {best[k]:.2f} | {rate[k]:.1f} |" for k in times],
        "",
        f"Ratio ours / best plain ({best_plain}): **{ratio:.2f}x** (best of {args.repeats} interleaved runs; "
        f"load average {load:.1f} at the end: the machine is shared with other jobs).",
        "",
    ]
    atomic_write_text(RESULTS / "encode.md", "\n".join(lines))


if __name__ == "__main__":
    main()
