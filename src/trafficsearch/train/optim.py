"""One optimiser step: AdamW (open_clip's weight-decay groups), warmup + cosine, precision, accumulation and
the gradient average over ranks. Nothing here reads data or writes files (train/loop.py does)."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch

from trafficsearch.train.config import Config
from trafficsearch.train.dist import DistInfo, GradReducer
from trafficsearch.train.task import Batch, TrainTask


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
    gradient averaging over ranks (overlapped with the last backward), clipping, schedule and the task's
    post-step clamp. The logged scalars stay on the device (float64): no host sync per step."""

    def __init__(
        self, task: TrainTask, cfg: Config, device: torch.device, dist: DistInfo, total_steps: int
    ) -> None:
        self.task, self.cfg, self.device, self.dist = task, cfg, device, dist
        self.amp_dtype = setup_precision(task, cfg, device)
        self.trainable = [p for p in task.module.parameters() if p.requires_grad]
        self.reducer = GradReducer(self.trainable, dist)
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

    def step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """Train on `batch` (this rank's part of the global batch); returns the scalars to log (tensors)."""
        accum = self.cfg.train.grad_accum_steps
        n = len(batch.texts) // accum
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for j in range(accum):
            part = slice(j * n, (j + 1) * n)
            micro = Batch(batch.pixels[part], batch.texts[part], batch.records[part], batch.image_ids[part])
            with self.autocast():
                out = self.task.loss(micro, step, self.dist)
            if j == accum - 1:
                self.reducer.arm()
            self.scaler.scale(out["loss"] / accum).backward()
            for key, value in out.items():
                # float64, as the Python floats this replaced: the logged values are unchanged
                term = value.detach().to(torch.float64) / accum
                sums[key] = sums[key] + term if key in sums else 0.0 + term
        self.reducer.finish()
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
