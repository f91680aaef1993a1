"""Training throughput of our loop's step vs a plain open_clip training loop, same model, batch and data.

    .venv/bin/python benchmarks/train_speed.py [--model ts-tiny-test] [--batch 64] [--steps 20] [--threads 2]

"Ours" is trafficsearch.train.loop.Stepper driving ClipTask (the code `trafficsearch train` runs per step:
uint8 -> normalise, Batch, loss via train/loss.py, AdamW with open_clip's groups, schedule, clamp);
"plain" is open_clip's recipe written out: encode_image/encode_text, ClipLoss, AdamW, clamp. Both train
the full model in fp32 on the same random pixels and captions. Prints a table and writes
benchmarks/results/train_speed.{json,md}; the ratio ours/plain should be >= 0.95.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import torch
from open_clip.loss import ClipLoss
from rich.console import Console
from rich.table import Table

from trafficsearch.data.records import Record
from trafficsearch.data.transforms import normalize_uint8
from trafficsearch.ioutil import atomic_write_json, atomic_write_text
from trafficsearch.models.clip import create_clip
from trafficsearch.train.clip_task import ClipTask
from trafficsearch.train.config import load_config
from trafficsearch.train.contrastive import param_groups
from trafficsearch.train.dist import DistInfo
from trafficsearch.train.loop import Stepper
from trafficsearch.train.task import Batch

RESULTS = Path(__file__).parent / "results"


def data(n_batches: int, batch: int, size: int) -> list[tuple[torch.Tensor, list[str]]]:
    gen = torch.Generator().manual_seed(0)
    colours = ["red", "blue", "white", "black", "grey", "green"]
    return [
        (
            torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=gen),
            [f"This is a {colours[(b + i) % 6]} car number {i}." for i in range(batch)],
        )
        for b in range(n_batches)
    ]


def run_ours(args: argparse.Namespace, batches) -> float:
    torch.manual_seed(0)
    cfg = load_config(
        None,
        [
            f"model.name={args.model}",
            "model.lock_text=false",
            "model.cache_text_features=false",
            "train.device=cpu",
            "train.precision=fp32",
            f"train.batch_size={args.batch}",
            "optim.grad_clip=null",
            "optim.warmup_steps=1",
        ],
    )
    task = ClipTask.create(cfg, torch.device("cpu"))
    stepper = Stepper(task, cfg, torch.device("cpu"), DistInfo(), total_steps=len(batches))
    pre = task.preprocess
    task.train_mode()
    records = [Record(image=f"{i}.jpg", kind="vehicle", attributes="", text="") for i in range(args.batch)]
    ids = torch.arange(args.batch)

    def step(i: int) -> None:
        pixels_u8, texts = batches[i]
        stepper.step(Batch(normalize_uint8(pixels_u8, pre), texts, records, ids), i)

    return timed(step, len(batches), args.warmup)


def run_plain(args: argparse.Namespace, batches) -> float:
    torch.manual_seed(0)
    wrapped = create_clip(args.model)
    model, pre = wrapped.model, wrapped.preprocess
    model.train()
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / len(batches))))

    def step(i: int) -> None:
        pixels_u8, texts = batches[i]
        img = model.encode_image(normalize_uint8(pixels_u8, pre), normalize=True)
        txt = model.encode_text(wrapped.tokenize(texts), normalize=True)
        loss = loss_fn(img, txt, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

    return timed(step, len(batches), args.warmup)


def timed(step, n: int, warmup: int) -> float:
    for i in range(warmup):
        step(i)
    start = time.perf_counter()
    for i in range(warmup, n):
        step(i)
    return (time.perf_counter() - start) / (n - warmup)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ts-tiny-test")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternate ours/plain this many times, best of"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = create_clip(args.model).preprocess.image_size
    batches = data(args.steps + args.warmup, args.batch, size)
    ours, plain = [], []
    for _ in range(args.repeats):  # alternate, best of: the machine is shared
        ours.append(run_ours(args, batches))
        plain.append(run_plain(args, batches))
    t_ours, t_plain = min(ours), min(plain)
    result = {
        "model": args.model,
        "batch": args.batch,
        "steps": args.steps,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, CPU",
        "ours_samples_per_s": round(args.batch / t_ours, 1),
        "plain_samples_per_s": round(args.batch / t_plain, 1),
        "ratio": round(t_plain / t_ours, 3),
    }
    table = Table(title=f"train step throughput, {args.model}, batch {args.batch} (samples/s)")
    for col in ("loop", "samples/s", "ms/step"):
        table.add_column(col)
    table.add_row("ours (Stepper + ClipTask)", f"{result['ours_samples_per_s']}", f"{1000 * t_ours:.1f}")
    table.add_row(
        "plain open_clip (ClipLoss + AdamW)", f"{result['plain_samples_per_s']}", f"{1000 * t_plain:.1f}"
    )
    table.add_row("ratio ours / plain", f"{result['ratio']}", "")
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "train_speed.json", result)
    md = [
        f"# Train step throughput ({result['machine']})",
        "",
        "| loop | samples/s |",
        "|---|---|",
        f"| ours (Stepper + ClipTask) | {result['ours_samples_per_s']} |",
        f"| plain open_clip (ClipLoss + AdamW) | {result['plain_samples_per_s']} |",
        f"| ratio | {result['ratio']} |",
        "",
        f"model {args.model}, batch {args.batch}, {args.steps} timed steps, best of {args.repeats}.",
    ]
    atomic_write_text(RESULTS / "train_speed.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
