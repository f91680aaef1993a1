"""The one training loop: any model family behind a TrainTask (train/task.py), on a competition-layout split.

The loop owns data order, augmentation, optimiser (AdamW, open_clip's weight-decay groups), schedule
(warmup then cosine), precision, gradient accumulation, DDP and checkpoints; the task (train/clip_task.py,
train/blip_task.py) owns the model and its loss.

Run dir: config.yaml (resolved), metrics.jsonl (train loss per log step, val metrics per epoch),
curves.png, last/ (checkpoint + train_state.pt, every `save_every` steps and at epoch end) and best/
(checkpoint with the best val mAP). `resume=True` continues from last/ with the same batches, optimizer,
schedule and RNG, so an interrupted run ends with the weights an uninterrupted one would have.
A config with `stages:` runs train/stages.py instead (one run dir per stage).

DDP: `torchrun --nproc_per_node N -m trafficsearch.train --config FILE` (multi-node: add --nnodes M
--node_rank K --rdzv_backend c10d --rdzv_endpoint HOST:PORT on every node). train.batch_size is the GLOBAL
batch; each rank takes a disjoint slice of the same seeded order, features are gathered with gradients so
the contrastive loss and its truncation are over the global batch, rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch.utils.data import DataLoader

from trafficsearch.data.dataset import EpochBatches, ImageDataset, load_split, make_pairs, preload
from trafficsearch.data.transforms import Preprocess, TrainAugment, normalize_uint8
from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_open, atomic_write_text
from trafficsearch.models.checkpoint import existing_dir, swap_in
from trafficsearch.train.config import Config, config_from_dict
from trafficsearch.train.dist import (
    DistInfo,
    all_reduce_grads,
    barrier,
    broadcast_module,
    cleanup,
    init_distributed,
)
from trafficsearch.train.plot import plot_curves
from trafficsearch.train.task import Batch, TrainTask
from trafficsearch.train.validate import validate

STATE_FILE = "train_state.pt"
# Keys that may change between an interrupted run and its resume without changing the result.
RESUME_MUTABLE = {"train.max_steps", "train.device", "train.threads", "data.workers", "train.output_dir"}

StepHook = Callable[[int], None]


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    best_map: float | None
    last_loss: float | None
    finished: bool


# ------------------------------------------------------------------------------------------------ helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA requested but not available", field="train.device")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 (or fp16) autocast on CUDA; fp32 on CPU (autocast requests fall back: CPU fp16 autocast is slow
    and the demo trains in fp32); none for pure_bf16 (the weights themselves are bf16)."""
    if precision in ("fp32", "pure_bf16") or device.type != "cuda":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def cosine_lr(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the base lr: linear warmup, then cosine decay to min_ratio at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def check_resume_config(saved: Config, given: Config) -> None:
    a, b = _flatten(saved.to_dict()), _flatten(given.to_dict())
    diff = sorted(k for k in a if a[k] != b.get(k) and k not in RESUME_MUTABLE)
    if diff:
        raise ConfigError(
            "the config differs from the interrupted run's ("
            + ", ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in diff)
            + "); resume with the same config or start a new run dir",
            field=diff[0],
        )


def build_task(cfg: Config, device: torch.device) -> TrainTask:
    """The TrainTask of `model.family`: ClipTask, or BlipTask (train/blip_task.py, imported lazily)."""
    if cfg.model.family == "blip":
        try:
            from trafficsearch.train.blip_task import BlipTask
        except ImportError as exc:
            if exc.name != "trafficsearch.train.blip_task":
                raise
            raise ConfigError(
                "BLIP training needs trafficsearch.train.blip_task, which this install lacks",
                field="model.family",
            ) from None
        return BlipTask.create(cfg, device)
    from trafficsearch.train.clip_task import ClipTask

    return ClipTask.create(cfg, device)


def task_preprocess(task: TrainTask) -> Preprocess:
    pre = getattr(task, "preprocess", None) or getattr(task.retrieval_model(), "preprocess", None)
    if not isinstance(pre, Preprocess):
        raise ConfigError(f"{type(task).__name__} exposes no Preprocess", field="model.family")
    return pre


def make_optimizer(task: TrainTask, cfg: Config) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, no decay on gains/biases/logit scale (open_clip's groups).

    The fused kernel (CPU and CUDA) replaces the per-tensor Python loop torch picks by default on CPU,
    which was a large share of a small model's step time here."""
    groups = task.param_groups(cfg.optim.weight_decay)
    params = [p for group in groups for p in group["params"]]
    fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params) and all(
        p.device.type in ("cpu", "cuda") for p in params
    )
    return torch.optim.AdamW(
        groups,
        lr=cfg.optim.lr,
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps,
        fused=fused or None,
    )


def setup_precision(task: TrainTask, cfg: Config, device: torch.device) -> torch.dtype | None:
    """pure_bf16 casts the weights (the task's own rule when it has one); returns the autocast dtype."""
    if cfg.train.precision == "pure_bf16":
        cast = getattr(task, "to_pure_bf16", None)
        if cast is not None:
            cast()
        else:
            task.module.to(torch.bfloat16)
    return autocast_dtype(cfg.train.precision, device)


class Stepper:
    """One optimiser step over a rank's batch: micro-batches (grad accumulation), autocast, GradScaler,
    gradient averaging over ranks, clipping, schedule and the task's post-step clamp."""

    def __init__(
        self, task: TrainTask, cfg: Config, device: torch.device, dist: DistInfo, total_steps: int
    ) -> None:
        self.task, self.cfg, self.device, self.dist = task, cfg, device, dist
        self.amp_dtype = setup_precision(task, cfg, device)
        self.trainable = [p for p in task.module.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(task, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: cosine_lr(s, total_steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio),
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)

    def autocast(self):  # noqa: ANN201 - a context manager
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def step(self, batch: Batch, step: int) -> dict[str, float]:
        """Train on `batch` (this rank's part of the global batch); returns the logged scalars."""
        accum = self.cfg.train.grad_accum_steps
        n = len(batch.texts) // accum
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for j in range(accum):
            part = slice(j * n, (j + 1) * n)
            micro = Batch(batch.pixels[part], batch.texts[part], batch.records[part], batch.image_ids[part])
            with self.autocast():
                out = self.task.loss(micro, step, self.dist)
            self.scaler.scale(out["loss"] / accum).backward()
            for key, value in out.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) / accum
        all_reduce_grads(self.trainable, self.dist)
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.task.after_step()
        return sums

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


class MetricsLog:
    """metrics.jsonl, append-only; on resume, lines past the resumed step are dropped (they are redone)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.is_file():
            return
        keep = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


# --------------------------------------------------------------------------------------------------- train
def train(
    cfg: Config,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    on_step: StepHook | None = None,
    show_progress: bool = True,
    console: Console | None = None,
) -> TrainResult:
    """Train per `cfg`, writing into `run_dir` (default cfg.train.output_dir). See the module docstring."""
    run_dir = Path(run_dir or cfg.train.output_dir)
    console = console or Console(stderr=True)
    if cfg.stages:
        from trafficsearch.train.stages import train_stages

        return train_stages(
            cfg, run_dir, resume=resume, on_step=on_step, show_progress=show_progress, console=console
        )
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device.type)
    if device.type == "cuda" and dist.distributed:
        device = torch.device("cuda", dist.local_rank)
    try:
        return _train(cfg, run_dir, resume, on_step, show_progress and dist.is_main, console, device, dist)
    finally:
        cleanup(dist)


def _train(
    cfg: Config,
    run_dir: Path,
    resume: bool,
    on_step: StepHook | None,
    show_progress: bool,
    console: Console,
    device: torch.device,
    dist: DistInfo,
) -> TrainResult:
    last_dir = run_dir / "last"
    found = existing_dir(last_dir)
    if resume and found is None and dist.is_main:
        console.print(f"no checkpoint in {run_dir} to resume from; starting a new run")
    if not resume and found is not None:
        raise ConfigError(
            "run dir already holds a training run; pass --resume or choose another --out", path=run_dir
        )
    state: dict[str, Any] | None = None
    if resume and found is not None:
        saved = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
        check_resume_config(saved, cfg)
        state = torch.load(found / STATE_FILE, map_location="cpu", weights_only=False)
    barrier(dist)  # every rank has read the state before rank 0 may overwrite it

    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    metrics = MetricsLog(run_dir / "metrics.jsonl", dist.is_main)

    # -- data (checked before the slow model build)
    train_records, train_images = load_split(cfg.data.root, cfg.data.train_split, cfg.data.max_train)
    val_records, val_images = load_split(cfg.data.root, cfg.data.val_split, cfg.data.max_val)
    pairs = make_pairs(
        train_records,
        vehicles=cfg.data.prompts.vehicles,
        pedestrians=cfg.data.prompts.pedestrians,
        vehicle_form=cfg.data.prompts.vehicle_form,
    )
    batches = EpochBatches(
        len(pairs),
        cfg.train.batch_size,
        cfg.train.seed,
        dist.rank,
        dist.world_size,
        cfg.train.grad_accum_steps,
    )
    if len(batches) == 0:
        raise ConfigError(
            f"{len(pairs)} train pairs make no full batch of {cfg.train.batch_size}", field="train.batch_size"
        )
    steps_per_epoch = len(batches)
    total_steps = steps_per_epoch * cfg.train.epochs
    # -- model
    task = build_task(cfg, device)
    broadcast_module(task.module, dist)
    if state is not None:
        assert found is not None
        task.load_weights(found)
    pre = task_preprocess(task)
    augment = TrainAugment(
        pre.image_size,
        cfg.train.seed,
        tuple(cfg.data.crop_scale) if cfg.data.crop_scale else None,
        tuple(cfg.data.crop_ratio),
        cfg.data.crop_interpolation,
        dataclasses.asdict(cfg.data.randaugment) if cfg.data.randaugment else None,
    )
    train_ds = ImageDataset(pairs.images, train_images, pre)

    with _progress(console, show_progress) as progress:
        train_u8 = None
        if cfg.data.cache_images:
            bar = progress.add_task("decode train images", total=len(train_ds), info="")
            train_u8 = preload(train_ds, cfg.data.workers, lambda n: progress.advance(bar, n))
        bar = progress.add_task("decode val images", total=len(val_records), info="")
        val_u8 = preload(
            ImageDataset(val_records, val_images, pre), cfg.data.workers, lambda n: progress.advance(bar, n)
        )

        def advance(description: str, total: int, done: int) -> Callable[[int], None]:
            bar = progress.add_task(description, total=total, completed=done, info="")
            return lambda n: progress.advance(bar, n)

        prepare = getattr(task, "prepare", None)
        if prepare is not None:
            prepare(pairs.texts + [r.text for r in val_records], run_dir, advance, dist.is_main)

    # -- optimisation
    stepper = Stepper(task, cfg, device, dist, total_steps)
    step, epoch, position, best = 0, 0, 0, None
    if state is not None:
        stepper.load_state_dict(state)
        set_rng_state(state["rng"])
        step, epoch, position, best = state["step"], state["epoch"], state["position"], state["best_map"]
        metrics.truncate_after(step)
        if dist.is_main:
            console.print(f"resuming {run_dir} at step {step} (epoch {epoch + 1}, batch {position})")

    def save(kind: str, ep: int, pos: int) -> None:
        if not dist.is_main:
            return
        staging = run_dir / f"{kind}.staging"
        if staging.exists():
            shutil.rmtree(staging)
        task.save(staging, cfg.to_yaml())
        if kind == "last":
            train_state = {
                **stepper.state_dict(),
                "rng": rng_state(),
                "step": step,
                "epoch": ep,
                "position": pos,
                "best_map": best,
            }
            torch.save(train_state, staging / STATE_FILE)
        swap_in(staging, run_dir / kind)

    last_loss: float | None = None
    finished = True
    with _progress(console, show_progress) as progress:
        bar = progress.add_task("train", total=total_steps, completed=step, info="")
        window_t, window_n = time.perf_counter(), 0
        while epoch < cfg.train.epochs:
            task.train_mode()
            batch_iter = batches.batches(epoch, position)
            if train_u8 is not None:
                source = ((train_u8[[pairs.image_of[i] for i in idx]], idx) for idx in batch_iter)
            else:
                index_lists = [(idx, [pairs.image_of[i] for i in idx]) for idx in batch_iter]
                loader = DataLoader(
                    train_ds, batch_sampler=[rows for _, rows in index_lists], num_workers=cfg.data.workers
                )
                source = ((px, idx) for (px, _), (idx, _) in zip(loader, index_lists, strict=True))
            for pixels_u8, idx in source:
                pixels_u8 = augment.batch(pixels_u8, epoch, idx)
                batch = Batch(
                    pixels=normalize_uint8(pixels_u8.to(device, non_blocking=True), pre),
                    texts=[pairs.texts[i] for i in idx],
                    records=[pairs.records[i] for i in idx],
                    image_ids=torch.tensor([pairs.image_of[i] for i in idx], device=device),
                )
                logged = stepper.step(batch, step)
                step += 1
                position += 1
                last_loss = logged["loss"]
                window_n += len(idx)
                if step % cfg.train.log_every == 0 or step == total_steps:
                    now = time.perf_counter()
                    sps = window_n * dist.world_size / max(now - window_t, 1e-9)
                    window_t, window_n = now, 0
                    row = {"type": "train", "step": step, "epoch": epoch + 1, "loss": last_loss}
                    row["lr"] = stepper.scheduler.get_last_lr()[-1]
                    row.update({k: v for k, v in logged.items() if k != "loss"})
                    row["samples_per_s"] = round(sps, 1)
                    metrics.write(row)
                    progress.update(bar, info=f"loss {last_loss:.3f}  {sps:.0f} samples/s")
                progress.update(
                    bar, completed=step, description=f"train epoch {epoch + 1}/{cfg.train.epochs}"
                )
                if step % cfg.train.save_every == 0:
                    save("last", epoch, position)
                if on_step is not None:
                    on_step(step)
                if cfg.train.max_steps is not None and step >= cfg.train.max_steps:
                    break
            else:
                # epoch complete: validate (rank 0), then save so a resume starts the next epoch
                improved = False
                if dist.is_main:
                    val = validate(task.retrieval_model(), val_records, val_u8, pre)
                    score = val[cfg.train.val_rule]["overall"]["map_official"]
                    row = {
                        "type": "val",
                        "step": step,
                        "epoch": epoch + 1,
                        "map_equal": val["equal"]["overall"]["map_official"],
                        "map_contain": val["contain"]["overall"]["map_official"],
                        "results": val,
                    }
                    metrics.write(row)
                    improved = best is None or score > best
                    if improved:
                        best = score
                epoch, position = epoch + 1, 0
                save("last", epoch, position)
                if improved:
                    save("best", epoch, position)
                if dist.is_main:
                    plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
                    console.print(
                        f"epoch {epoch}/{cfg.train.epochs}: loss {last_loss:.3f}  val mAP@10 equal "
                        f"{100 * row['map_equal']:.2f}  contain {100 * row['map_contain']:.2f}"
                        + ("  (best)" if improved else "")
                    )
                barrier(dist)
                task.train_mode()
                window_t, window_n = time.perf_counter(), 0
                continue
            # max_steps reached mid-epoch
            save("last", epoch, position)
            finished = False
            break
    if dist.is_main:
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    barrier(dist)
    return TrainResult(
        run_dir=run_dir, step=step, epoch=epoch, best_map=best, last_loss=last_loss, finished=finished
    )


def write_summary(result: TrainResult) -> None:
    """summary.json beside the run: where the best and last checkpoints are and what they scored (rank 0)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    with atomic_open(result.run_dir / "summary.json") as handle:
        json.dump(
            {
                "step": result.step,
                "epoch": result.epoch,
                "best_map": result.best_map,
                "last_loss": result.last_loss,
                "finished": result.finished,
                "best": str(result.run_dir / "best"),
                "last": str(result.run_dir / "last"),
            },
            handle,
            indent=2,
        )
