"""The one training loop: any model family behind a TrainTask (train/task.py), on a competition-layout split.

The loop owns data order, augmentation, optimiser (AdamW, open_clip's weight-decay groups), schedule
(warmup then cosine), precision, gradient accumulation, DDP and checkpoints; the task (train/clip_task.py,
train/blip_task.py) owns the model and its loss.

Run dir: config.yaml (resolved), metrics.jsonl (train loss per log step, val metrics per epoch),
curves.png, last/ (checkpoint + train_state.pt, every `save_every` steps and at epoch end) and best/
(checkpoint with the best val mAP). `resume=True` continues from last/ with the same batches, optimizer,
schedule and RNG, so an interrupted run ends with the weights an uninterrupted one would have.
A config with `stages:` runs them through train/stages.py (one run dir per stage), which gets the
one-run function from here and never calls back.

Shape (open_clip_train's main.py / train.py split, timm's CheckpointSaver): `setup` builds a `Run` (resume
state, data, model, preload, optimiser, saver), `train_epoch` runs one epoch's steps, `end_epoch` validates,
saves last/ (+ best/) and plots; train/checkpoints.py writes checkpoints off the training path.

DDP: `torchrun --nproc_per_node N -m trafficsearch.train --config FILE` (multi-node: add --nnodes M
--node_rank K --rdzv_backend c10d --rdzv_endpoint HOST:PORT on every node). train.batch_size is the GLOBAL
batch; each rank takes a disjoint slice of the same seeded order, features are gathered with gradients so
the contrastive loss and its truncation are over the global batch, gradients are averaged while backward
runs (train/dist.py GradReducer), rank 0 validates, writes checkpoints (in the background) and logs; the
group's timeout (train.dist_timeout_s) bounds how long the others wait for it.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable
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

from trafficsearch.data.dataset import EpochBatches, ImageDataset, TrainPairs, make_pairs
from trafficsearch.data.records import Record
from trafficsearch.data.transforms import Preprocess, TrainAugment, normalize_uint8
from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_write_text
from trafficsearch.models.checkpoint import existing_dir
from trafficsearch.train.checkpoints import STATE_FILE, CheckpointSaver, rng_state, set_rng_state
from trafficsearch.train.config import Config, config_from_dict
from trafficsearch.train.dist import DistInfo, barrier, broadcast_module, cleanup, init_distributed
from trafficsearch.train.inputs import AugmentedBatches, SkipLog, batch_loader, decode, load_records
from trafficsearch.train.optim import Stepper, autocast_dtype, cosine_lr, make_optimizer, setup_precision
from trafficsearch.train.plot import plot_curves
from trafficsearch.train.result import TrainResult, write_summary
from trafficsearch.train.stages import run_stages
from trafficsearch.train.task import Batch, TrainTask
from trafficsearch.train.validate import validate

__all__ = [
    "STATE_FILE",
    "Stepper",
    "TrainResult",
    "autocast_dtype",
    "cosine_lr",
    "make_optimizer",
    "setup_precision",
    "train",
    "train_one",
    "write_summary",
]

# Keys that may change between an interrupted run and its resume without changing the result.
RESUME_MUTABLE = {
    "train.max_steps",
    "train.device",
    "train.threads",
    "data.workers",
    "train.output_dir",
    "train.dist_timeout_s",
    "train.async_checkpoint",
}

StepHook = Callable[[int], None]


# ------------------------------------------------------------------------------------------------ helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA requested but not available", field="train.device")
    return device


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
    """The TrainTask of `model.family` (config.py restricts it to these); imported on use: BLIP pulls in
    transformers."""
    if cfg.model.family == "blip":
        from trafficsearch.train.blip_task import BlipTask

        return BlipTask.create(cfg, device)
    from trafficsearch.train.clip_task import ClipTask

    return ClipTask.create(cfg, device)


def task_preprocess(task: TrainTask) -> Preprocess:
    pre = getattr(task, "preprocess", None) or getattr(task.retrieval_model(), "preprocess", None)
    if not isinstance(pre, Preprocess):
        raise ConfigError(f"{type(task).__name__} exposes no Preprocess", field="model.family")
    return pre


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


# ---------------------------------------------------------------------------------------------------- run
@dataclass
class Run:
    """Everything one training run holds between its steps (built by `setup`)."""

    cfg: Config
    run_dir: Path
    device: torch.device
    dist: DistInfo
    console: Console
    show_progress: bool
    task: TrainTask
    pre: Preprocess
    augment: TrainAugment
    pairs: TrainPairs
    batches: EpochBatches
    train_ds: ImageDataset
    train_u8: torch.Tensor | None
    val_records: list[Record]
    val_u8: torch.Tensor
    stepper: Stepper
    saver: CheckpointSaver
    metrics: MetricsLog
    skips: SkipLog
    total_steps: int
    step: int = 0
    epoch: int = 0
    position: int = 0
    best: float | None = None
    last_loss: torch.Tensor | float | None = None

    def train_state(self) -> dict[str, Any]:
        """What last/train_state.pt holds to resume exactly here (+ the task's own state, when it has one:
        BLIP's momentum encoders and ITC queue)."""
        state = {
            **self.stepper.state_dict(),
            "rng": rng_state(),
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "best_map": self.best,
        }
        task_state = getattr(self.task, "train_state", None)
        if task_state is not None:
            state["task"] = task_state()
        return state

    def save_last(self) -> None:
        self.saver.save("last", self.train_state())

    def loss_value(self) -> float | None:
        return None if self.last_loss is None else float(self.last_loss)


def _resume_state(
    cfg: Config, run_dir: Path, resume: bool, dist: DistInfo, console: Console
) -> tuple[Path | None, dict[str, Any] | None]:
    """(last/ to resume from, its train state), or (None, None) for a new run; refuses to overwrite a run."""
    found = existing_dir(run_dir / "last")
    if resume and found is None and dist.is_main:
        console.print(f"no checkpoint in {run_dir} to resume from; starting a new run")
    if not resume and found is not None:
        raise ConfigError(
            "run dir already holds a training run; pass --resume or choose another --out", path=run_dir
        )
    if not (resume and found is not None):
        return None, None
    saved = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
    check_resume_config(saved, cfg)
    return found, torch.load(found / STATE_FILE, map_location="cpu", weights_only=False)


def _epoch_batches(cfg: Config, pairs: TrainPairs, dist: DistInfo) -> EpochBatches:
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
    return batches


def _pairs(cfg: Config, records: list[Record]) -> TrainPairs:
    return make_pairs(
        records,
        vehicles=cfg.data.prompts.vehicles,
        pedestrians=cfg.data.prompts.pedestrians,
        vehicle_form=cfg.data.prompts.vehicle_form,
    )


def setup(
    cfg: Config,
    run_dir: Path,
    resume: bool,
    show_progress: bool,
    console: Console,
    device: torch.device,
    dist: DistInfo,
) -> Run:
    """Resume state, data (checked before the slow model build), model, decoded images, optimiser, saver."""
    found, state = _resume_state(cfg, run_dir, resume, dist, console)
    barrier(dist)  # every rank has read the state before rank 0 may overwrite it
    if device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    metrics = MetricsLog(run_dir / "metrics.jsonl", dist.is_main)

    # -- data
    skips = SkipLog.of(cfg)
    train_records, train_images = load_records(cfg, cfg.data.train_split, cfg.data.max_train, skips)
    val_records, val_images = load_records(cfg, cfg.data.val_split, cfg.data.max_val, skips)
    pairs = _pairs(cfg, train_records)
    batches = _epoch_batches(cfg, pairs, dist)
    # -- model
    task = build_task(cfg, device)
    broadcast_module(task.module, dist)
    if found is not None:
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
    # -- images: decoded once (kept when data.cache_images), unreadable ones left out under on_error: skip
    with _progress(console, show_progress) as progress:

        def advance(description: str, total: int, done: int = 0) -> Callable[[int], None]:
            bar = progress.add_task(description, total=total, completed=done, info="")
            return lambda n: progress.advance(bar, n)

        train_u8 = None
        if cfg.data.cache_images or skips.skip:
            verb = "decode" if cfg.data.cache_images else "check"
            kept, train_u8 = decode(
                pairs.images,
                train_images,
                pre,
                split=cfg.data.train_split,
                keep=cfg.data.cache_images,
                workers=cfg.data.workers,
                skips=skips,
                progress=advance(f"{verb} train images", len(pairs.images)),
            )
            if len(kept) < len(pairs.images):  # drop the pairs of unreadable images; rows follow the images
                readable = {r.image for r in kept}
                pairs = _pairs(cfg, [r for r in train_records if r.image in readable])
                batches = _epoch_batches(cfg, pairs, dist)
        val_records, val_u8 = decode(
            val_records,
            val_images,
            pre,
            split=cfg.data.val_split,
            keep=True,
            workers=cfg.data.workers,
            skips=skips,
            progress=advance("decode val images", len(val_records)),
        )
        assert val_u8 is not None
        if dist.is_main:
            skips.write(run_dir)
        skips.check(run_dir)

        prepare = getattr(task, "prepare", None)
        if prepare is not None:
            prepare(pairs.texts + [r.text for r in val_records], run_dir, advance, dist.is_main)

    # -- optimisation
    total_steps = len(batches) * cfg.train.epochs
    set_steps = getattr(task, "set_steps_per_epoch", None)
    if set_steps is not None:
        set_steps(len(batches))
    stepper = Stepper(task, cfg, device, dist, total_steps)
    saver = CheckpointSaver(run_dir, task, cfg.to_yaml(), dist.is_main, cfg.train.async_checkpoint)
    run = Run(
        cfg=cfg,
        run_dir=run_dir,
        device=device,
        dist=dist,
        console=console,
        show_progress=show_progress,
        task=task,
        pre=pre,
        augment=augment,
        pairs=pairs,
        batches=batches,
        train_ds=ImageDataset(pairs.images, train_images, pre),
        train_u8=train_u8,
        val_records=val_records,
        val_u8=val_u8,
        stepper=stepper,
        saver=saver,
        metrics=metrics,
        skips=skips,
        total_steps=total_steps,
    )
    if state is not None:
        stepper.load_state_dict(state)
        load_task_state = getattr(task, "load_train_state", None)
        if load_task_state is not None:
            load_task_state(state.get("task", {}))
        set_rng_state(state["rng"])
        run.step, run.epoch, run.position, run.best = (
            state["step"],
            state["epoch"],
            state["position"],
            state["best_map"],
        )
        metrics.truncate_after(run.step)
        if dist.is_main:
            console.print(
                f"resuming {run_dir} at step {run.step} (epoch {run.epoch + 1}, batch {run.position})"
            )
    return run


def train_epoch(run: Run, progress: Progress, bar: Any, on_step: StepHook | None) -> bool:
    """The steps of epoch `run.epoch` from batch `run.position`; False when train.max_steps stopped it."""
    cfg, dist = run.cfg, run.dist
    run.task.train_mode()
    index_lists = list(run.batches.batches(run.epoch, run.position))
    source = AugmentedBatches(
        index_lists, run.pairs.image_of, run.augment, run.epoch, run.train_u8, run.train_ds
    )
    loader = batch_loader(source, cfg.data.workers, pin_memory=run.device.type == "cuda")
    window_t, window_n = time.perf_counter(), 0
    for pixels_u8, idx in loader:
        batch = Batch(
            pixels=normalize_uint8(pixels_u8.to(run.device, non_blocking=True), run.pre),
            texts=[run.pairs.texts[i] for i in idx],
            records=[run.pairs.records[i] for i in idx],
            # built on the host and sent without a stream sync (torch.tensor(..., device=cuda) waits)
            image_ids=torch.tensor([run.pairs.image_of[i] for i in idx]).to(run.device, non_blocking=True),
        )
        logged = run.stepper.step(batch, run.step)
        run.step += 1
        run.position += 1
        run.last_loss = logged["loss"]
        window_n += len(idx)
        if run.step % cfg.train.log_every == 0 or run.step == run.total_steps:
            # the only host sync of the step loop: every log_every steps
            now = time.perf_counter()
            sps = window_n * dist.world_size / max(now - window_t, 1e-9)
            window_t, window_n = now, 0
            loss = float(logged["loss"])
            row: dict[str, Any] = {"type": "train", "step": run.step, "epoch": run.epoch + 1, "loss": loss}
            row["lr"] = run.stepper.scheduler.get_last_lr()[-1]
            row.update({k: float(v) for k, v in logged.items() if k != "loss"})
            row["samples_per_s"] = round(sps, 1)
            run.metrics.write(row)
            progress.update(bar, info=f"loss {loss:.3f}  {sps:.0f} samples/s")
        progress.update(
            bar, completed=run.step, description=f"train epoch {run.epoch + 1}/{cfg.train.epochs}"
        )
        if run.step % cfg.train.save_every == 0:
            run.save_last()
        if on_step is not None:
            on_step(run.step)
        if cfg.train.max_steps is not None and run.step >= cfg.train.max_steps:
            return False
    return True


def end_epoch(run: Run) -> None:
    """Validate (rank 0), log, save last/ (a resume starts the next epoch) and best/ when improved, plot."""
    cfg, dist = run.cfg, run.dist
    improved = False
    row: dict[str, Any] = {}
    if dist.is_main:
        val = validate(run.task.retrieval_model(), run.val_records, run.val_u8, run.pre)
        score = val[cfg.train.val_rule]["overall"]["map_official"]
        row = {
            "type": "val",
            "step": run.step,
            "epoch": run.epoch + 1,
            "map_equal": val["equal"]["overall"]["map_official"],
            "map_contain": val["contain"]["overall"]["map_official"],
            "results": val,
        }
        run.metrics.write(row)
        improved = run.best is None or score > run.best
        if improved:
            run.best = score
    run.epoch, run.position = run.epoch + 1, 0
    run.save_last()
    if improved:
        run.saver.save("best")
    if dist.is_main:
        plot_curves(run.run_dir / "metrics.jsonl", run.run_dir / "curves.png")
        run.console.print(
            f"epoch {run.epoch}/{cfg.train.epochs}: loss {run.loss_value():.3f}  val mAP@10 equal "
            f"{100 * row['map_equal']:.2f}  contain {100 * row['map_contain']:.2f}"
            + ("  (best)" if improved else "")
        )
    barrier(dist)


def fit(run: Run, on_step: StepHook | None) -> TrainResult:
    """Epochs until train.epochs (or train.max_steps); waits for the last checkpoint write."""
    finished = True
    try:
        with _progress(run.console, run.show_progress) as progress:
            bar = progress.add_task("train", total=run.total_steps, completed=run.step, info="")
            while run.epoch < run.cfg.train.epochs:
                if not train_epoch(run, progress, bar, on_step):
                    run.save_last()  # max_steps reached mid-epoch
                    finished = False
                    break
                end_epoch(run)
    finally:
        run.saver.close()
    if run.dist.is_main:
        plot_curves(run.run_dir / "metrics.jsonl", run.run_dir / "curves.png")
    barrier(run.dist)
    return TrainResult(
        run_dir=run.run_dir,
        step=run.step,
        epoch=run.epoch,
        best_map=run.best,
        last_loss=run.loss_value(),
        finished=finished,
        skipped=len(run.skips.rows),
    )


# --------------------------------------------------------------------------------------------------- train
def train_one(
    cfg: Config,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    on_step: StepHook | None = None,
    show_progress: bool = True,
    console: Console | None = None,
) -> TrainResult:
    """One run (no stages) per `cfg`, writing into `run_dir` (default cfg.train.output_dir)."""
    run_dir = Path(run_dir or cfg.train.output_dir)
    console = console or Console(stderr=True)
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device.type, cfg.train.dist_timeout_s)
    if device.type == "cuda" and dist.distributed:
        device = torch.device("cuda", dist.local_rank)
    try:
        run = setup(cfg, run_dir, resume, show_progress and dist.is_main, console, device, dist)
        return fit(run, on_step)
    finally:
        cleanup(dist)


def train(
    cfg: Config,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    on_step: StepHook | None = None,
    show_progress: bool = True,
    console: Console | None = None,
) -> TrainResult:
    """Train per `cfg` (its stages one after another when it has `stages:`). See the module docstring."""
    run_dir = Path(run_dir or cfg.train.output_dir)
    console = console or Console(stderr=True)

    def one(scfg: Config, directory: Path) -> TrainResult:
        return train_one(
            scfg, directory, resume=resume, on_step=on_step, show_progress=show_progress, console=console
        )

    if cfg.stages:
        return run_stages(cfg, run_dir, one, resume=resume, console=console)
    return one(cfg, run_dir)
