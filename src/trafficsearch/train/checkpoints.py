"""Checkpoints of a run: last/ (weights + train_state.pt for resume) and best/, written off the training path.

Why a background writer (timm's CheckpointSaver keeps last/best the same way; open_clip_train saves from
rank 0): a ViT-H-14 last/ with AdamW state is gigabytes, and under DDP the other ranks wait for rank 0 at
the next collective. The saver copies the model and optimiser state to CPU (the only part on the training
path), then a thread writes the staging folder and swaps it in atomically; one write is in flight at a time
and `close()` waits for it, so a finished or interrupted run never leaves a half-written checkpoint
(checkpoint.swap_in keeps the previous one until the rename).
"""

from __future__ import annotations

import random
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trafficsearch.models.checkpoint import swap_in
from trafficsearch.train.task import TrainTask

STATE_FILE = "train_state.pt"
Writer = Callable[[Path, "str | None"], None]  # (directory, config yaml) -> writes a checkpoint dir


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


def to_cpu(obj: Any) -> Any:
    """A deep CPU copy of the tensors in nested dicts / lists (optimizer state points at live tensors)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def snapshot_writer(task: TrainTask) -> Writer:
    """The task's `snapshot()` (state copied now, written later) or, without one, a write of the live model
    (then the saver writes synchronously)."""
    snapshot = getattr(task, "snapshot", None)
    if snapshot is not None:
        return snapshot()
    return task.save


class CheckpointSaver:
    """Rank 0's last/ and best/ writer; every other rank's calls are no-ops."""

    def __init__(self, run_dir: Path, task: TrainTask, config_yaml: str, enabled: bool, background: bool):
        self.run_dir, self.task, self.config_yaml = run_dir, task, config_yaml
        self.enabled = enabled
        self.background = background and getattr(task, "snapshot", None) is not None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, kind: str, train_state: dict[str, Any] | None = None) -> None:
        """Write RUN_DIR/<kind> (+ `train_state` as train_state.pt) from the state as it is now."""
        if not self.enabled:
            return
        self.wait()
        writer = snapshot_writer(self.task)
        state = to_cpu(train_state) if train_state is not None else None
        if not self.background:
            self._write(kind, writer, state)
            return
        self._thread = threading.Thread(
            target=self._guarded, args=(kind, writer, state), name=f"save-{kind}", daemon=False
        )
        self._thread.start()

    def _guarded(self, kind: str, writer: Writer, state: dict[str, Any] | None) -> None:
        try:
            self._write(kind, writer, state)
        except BaseException as exc:  # re-raised on the training thread by wait()
            self._error = exc

    def _write(self, kind: str, writer: Writer, state: dict[str, Any] | None) -> None:
        staging = self.run_dir / f"{kind}.staging"
        if staging.exists():
            shutil.rmtree(staging)
        writer(staging, self.config_yaml)
        if state is not None:
            torch.save(state, staging / STATE_FILE)
        swap_in(staging, self.run_dir / kind)

    def wait(self) -> None:
        """Block until the write in flight is on disk; raise its error if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    close = wait
