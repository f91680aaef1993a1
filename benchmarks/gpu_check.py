"""One-GPU check (< 10 min): training-step and image-encoding throughput for ViT-B-16 and ViT-H-14.

    python benchmarks/gpu_check.py [--batches 64,128,256] [--steps 10]

Random weights (no download), bf16 autocast, the real training step (Stepper + ClipTask: AdamW, open_clip's
weight-decay groups, contrastive loss with the seed's 5% truncation) and the eval image encoder. Writes
benchmarks/results/gpu_check_<gpu>.{json,md} with the GPU name. A batch that runs out of memory is
recorded as "oom" and the check goes on. On a machine without CUDA it prints a message and exits 0.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
MODELS = ("ViT-B-16", "ViT-H-14")


def sync_time(fn, steps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def measure(name: str, batch: int, steps: int, extra: list[str]) -> dict:
    """Train-step and encode throughput of one model at one batch size (fresh model, freed after)."""
    from trafficsearch.data.records import Record
    from trafficsearch.train.clip_task import ClipTask
    from trafficsearch.train.config import load_config
    from trafficsearch.train.dist import DistInfo
    from trafficsearch.train.loop import Stepper
    from trafficsearch.train.task import Batch

    device = torch.device("cuda")
    row: dict = {"model": name, "batch": batch, "trainable": "last 5 image groups" if extra else "all"}
    overrides = [
        f"model.name={name}",
        "model.lock_text=false",
        "model.cache_text_features=false",
        "train.device=cuda",
        "train.precision=bf16",
        f"train.batch_size={batch}",
        "loss.truncate_ratio=0.05",
        *extra,
    ]
    try:
        cfg = load_config(None, overrides)
        torch.manual_seed(0)
        task = ClipTask.create(cfg, device)
        stepper = Stepper(task, cfg, device, DistInfo(), total_steps=steps + 2)
        size = task.preprocess.image_size
        pixels = torch.randn(batch, 3, size, size, device=device)
        texts = [f"This is a white car number {i}." for i in range(batch)]
        records = [
            Record(image=f"{i}.jpg", kind="vehicle", attributes="", text=t) for i, t in enumerate(texts)
        ]
        b = Batch(pixels, texts, records, torch.arange(batch, device=device))
        task.train_mode()
        counter = iter(range(10**6))
        t = sync_time(lambda: stepper.step(b, next(counter)), steps)
        row["train_images_per_s"] = round(batch / t, 1)
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        model = task.retrieval_model()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            t = sync_time(lambda: model.encode_images(pixels), steps)
        row["encode_images_per_s"] = round(batch / t, 1)
    except torch.OutOfMemoryError:
        row.setdefault("train_images_per_s", "oom")
        row.setdefault("encode_images_per_s", "oom")
    return row


def check_model(name: str, batches: list[int], steps: int, lock_image_groups: int | None) -> list[dict]:
    extra = (
        ["model.lock_image=true", f"model.unlocked_image_groups={lock_image_groups}"]
        if lock_image_groups
        else []
    )
    rows = []
    for batch in batches:
        row = measure(name, batch, steps, extra)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="64,128,256")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a machine with a GPU (nothing measured).")
        return 0
    from trafficsearch.ioutil import atomic_write_json, atomic_write_text

    gpu = torch.cuda.get_device_name(0)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for name in MODELS:
        rows += check_model(name, batches, args.steps, None)
    rows += check_model("ViT-H-14", batches, args.steps, 5)  # strategy B's lock
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        RESULTS / f"gpu_check_{slug}.json", {"gpu": gpu, "torch": torch.__version__, "rows": rows}
    )
    lines = [
        f"# GPU check: {gpu} (bf16 autocast, random weights)",
        "",
        "| model | trainable | batch | train img/s | encode img/s | peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['trainable']} | {r['batch']} | {r.get('train_images_per_s')} | "
            f"{r.get('encode_images_per_s')} | {r.get('peak_gib', '')} |"
        )
    atomic_write_text(RESULTS / f"gpu_check_{slug}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
