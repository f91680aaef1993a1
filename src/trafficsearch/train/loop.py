"""The training loop: contrastive fine-tuning of an open_clip model on a competition-layout split.

Run dir: config.yaml (resolved), metrics.jsonl (train loss per log step, val metrics per epoch),
curves.png, last/ (checkpoint + train_state.pt, every `save_every` steps and at epoch end) and best/
(checkpoint with the best val mAP). `resume=True` continues from last/ with the same batches, optimizer,
schedule and RNG, so an interrupted run ends with the weights an uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
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

from trafficsearch.data.dataset import EpochBatches, ImageDataset, load_split, preload
from trafficsearch.data.transforms import Preprocess, normalize_uint8
from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_open, atomic_write_text
from trafficsearch.models.checkpoint import existing_dir, load_checkpoint, save_checkpoint
from trafficsearch.models.clip import (
    OpenClipModel,
    create_clip,
    lock_text,
    text_project,
    text_trunk_frozen,
    text_trunk_modules,
)
from trafficsearch.train.config import Config, config_from_dict
from trafficsearch.train.dist import DistInfo, all_reduce_grads, cleanup, init_distributed
from trafficsearch.train.loss import ContrastiveLoss
from trafficsearch.train.plot import plot_curves
from trafficsearch.train.text_cache import TextFeatureCache
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
    """bf16 (or fp16) autocast on CUDA, fp32 on CPU unless asked otherwise."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def cosine_lr(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the base lr: linear warmup, then cosine decay to min_ratio at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip's rule: no weight decay on gains, biases, embeddings-like 1-d params and logit_scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


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


def build_model(cfg: Config, device: torch.device) -> OpenClipModel:
    pretrained = cfg.model.pretrained
    if pretrained and Path(pretrained).is_dir():
        model = load_checkpoint(pretrained)
        model.preprocess = Preprocess.from_dict({**model.preprocess.to_dict(), "kind": cfg.data.transform})
    else:
        model = create_clip(cfg.model.name, pretrained, transform=cfg.data.transform)
    model.model.to(device)
    model.device = device
    if cfg.model.lock_text:
        lock_text(model.model, cfg.model.unlocked_text_layers)
    return model


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
    device = resolve_device(cfg.train.device)
    dist = init_distributed(device.type)
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
    if resume and found is None:
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
    batches = EpochBatches(
        len(train_records), cfg.train.batch_size, cfg.train.seed, dist.rank, dist.world_size
    )
    if len(batches) == 0:
        raise ConfigError(
            f"{len(train_records)} train images make no full batch of {cfg.train.batch_size}",
            field="train.batch_size",
        )
    steps_per_epoch = len(batches)
    total_steps = steps_per_epoch * cfg.train.epochs
    # -- model
    wrapped = build_model(cfg, device)
    if state is not None:
        assert found is not None
        from safetensors.torch import load_file

        wrapped.model.load_state_dict(load_file(str(found / "weights.safetensors")), strict=True)
    model = wrapped.model
    trunk_frozen = text_trunk_frozen(model)
    use_cache = cfg.model.cache_text_features and trunk_frozen
    pre = wrapped.preprocess

    train_ds = ImageDataset(train_records, train_images, pre)

    with _progress(console, show_progress) as progress:
        train_u8 = None
        if cfg.data.cache_images:
            task = progress.add_task("decode train images", total=len(train_ds), info="")
            train_u8 = preload(train_ds, cfg.data.workers, lambda n: progress.advance(task, n))
        task = progress.add_task("decode val images", total=len(val_records), info="")
        val_u8 = preload(
            ImageDataset(val_records, val_images, pre), cfg.data.workers, lambda n: progress.advance(task, n)
        )
        cache = None
        if use_cache:
            cache = TextFeatureCache(wrapped)
            cache_file = run_dir / "text_features.pt"
            cache.load(cache_file)
            texts = list(dict.fromkeys([r.text for r in train_records] + [r.text for r in val_records]))
            todo = [t for t in texts if t not in cache.index]
            task = progress.add_task(
                "encode captions (frozen trunk)", total=len(texts), completed=len(texts) - len(todo), info=""
            )
            cache.add(todo, lambda n: progress.advance(task, n))
            if todo and dist.is_main:
                cache.save(cache_file)

    def encode_texts_train(texts: Sequence[str]) -> torch.Tensor:
        if cache is not None:
            return text_project(model, cache.rows(texts).to(device))
        return model.encode_text(wrapped.tokenize(texts).to(device))

    @torch.no_grad()
    def encode_texts_eval(texts: Sequence[str]) -> torch.Tensor:
        model.eval()
        rows = [
            F.normalize(encode_texts_train(texts[i : i + 512]).float(), dim=-1)
            for i in range(0, len(texts), 512)
        ]
        return torch.cat(rows)

    def set_train_mode() -> None:
        model.train()
        if trunk_frozen:  # a frozen trunk stays deterministic (no dropout): cached == recomputed features
            for m in text_trunk_modules(model):
                m.eval()

    # -- optimisation
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.optim.weight_decay),
        lr=cfg.optim.lr,
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_lr(s, total_steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
    )
    amp_dtype = autocast_dtype(cfg.train.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    loss_fn = ContrastiveLoss(cfg.loss.kind, dist.rank, dist.world_size)

    step, epoch, position, best = 0, 0, 0, None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        step, epoch, position, best = state["step"], state["epoch"], state["position"], state["best_map"]
        metrics.truncate_after(step)
        console.print(f"resuming {run_dir} at step {step} (epoch {epoch + 1}, batch {position})")

    def save(kind: str, ep: int, pos: int) -> None:
        if not dist.is_main:
            return
        extra = None
        if kind == "last":
            extra = {
                STATE_FILE: {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_state(),
                    "step": step,
                    "epoch": ep,
                    "position": pos,
                    "best_map": best,
                }
            }
        save_checkpoint(run_dir / kind, wrapped, cfg.to_yaml(), extra)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    last_loss: float | None = None
    finished = True
    with _progress(console, show_progress) as progress:
        task = progress.add_task("train", total=total_steps, completed=step, info="")
        window_t, window_n = time.perf_counter(), 0
        while epoch < cfg.train.epochs:
            set_train_mode()
            batch_iter = batches.batches(epoch, position)
            if train_u8 is not None:
                source = ((train_u8[idx], idx) for idx in batch_iter)
            else:
                loader = DataLoader(train_ds, batch_sampler=list(batch_iter), num_workers=cfg.data.workers)
                source = ((px, idx.tolist()) for px, idx in loader)
            for pixels_u8, idx in source:
                pixels = normalize_uint8(pixels_u8.to(device, non_blocking=True), pre)
                texts = [train_records[i].text for i in idx]
                with autocast():
                    img = F.normalize(model.encode_image(pixels), dim=-1)
                    txt = F.normalize(encode_texts_train(texts), dim=-1)
                    loss = loss_fn(img.float(), txt.float(), model.logit_scale.exp(), texts)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                all_reduce_grads(trainable, dist)
                if cfg.optim.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                step += 1
                position += 1
                last_loss = float(loss.detach())
                window_n += len(idx)
                if step % cfg.train.log_every == 0 or step == total_steps:
                    now = time.perf_counter()
                    sps = window_n * dist.world_size / max(now - window_t, 1e-9)
                    window_t, window_n = now, 0
                    metrics.write(
                        {
                            "type": "train",
                            "step": step,
                            "epoch": epoch + 1,
                            "loss": last_loss,
                            "lr": scheduler.get_last_lr()[-1],
                            "logit_scale": float(model.logit_scale.detach().exp()),
                            "samples_per_s": round(sps, 1),
                        }
                    )
                    progress.update(task, info=f"loss {last_loss:.3f}  {sps:.0f} samples/s")
                progress.update(
                    task, completed=step, description=f"train epoch {epoch + 1}/{cfg.train.epochs}"
                )
                if step % cfg.train.save_every == 0:
                    save("last", epoch, position)
                if on_step is not None:
                    on_step(step)
                if cfg.train.max_steps is not None and step >= cfg.train.max_steps:
                    break
            else:
                # epoch complete: validate, then save so a resume starts the next epoch
                val = validate(wrapped, val_records, val_u8, encode_texts_eval)
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
                set_train_mode()
                window_t, window_n = time.perf_counter(), 0
                continue
            # max_steps reached mid-epoch
            save("last", epoch, position)
            finished = False
            break
    if dist.is_main:
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    return TrainResult(
        run_dir=run_dir, step=step, epoch=epoch, best_map=best, last_loss=last_loss, finished=finished
    )


def write_summary(result: TrainResult) -> None:
    """summary.json beside the run: where the best and last checkpoints are and what they scored."""
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
