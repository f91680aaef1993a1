"""What a training run returns and leaves beside itself (summary.json): shared by the loop and the stages."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from trafficsearch.ioutil import atomic_open

SUMMARY_FILE = "summary.json"


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    epoch: int
    best_map: float | None
    last_loss: float | None
    finished: bool
    skipped: int = 0  # unreadable images + bad label lines left out (data.on_error: skip), in skipped.jsonl

    @classmethod
    def from_summary(cls, run_dir: Path) -> TrainResult:
        data = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        return cls(
            run_dir=run_dir,
            step=data["step"],
            epoch=data["epoch"],
            best_map=data["best_map"],
            last_loss=data["last_loss"],
            finished=bool(data["finished"]),
            skipped=int(data.get("skipped", 0)),
        )


def finished_run(run_dir: Path) -> bool:
    summary = run_dir / SUMMARY_FILE
    return summary.is_file() and bool(json.loads(summary.read_text(encoding="utf-8")).get("finished"))


def write_summary(result: TrainResult) -> None:
    """summary.json beside the run: where the best and last checkpoints are and what they scored (rank 0)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    summary = {
        "step": result.step,
        "epoch": result.epoch,
        "best_map": result.best_map,
        "last_loss": result.last_loss,
        "finished": result.finished,
        "best": str(result.run_dir / "best"),
        "last": str(result.run_dir / "last"),
        "skipped": result.skipped,
    }
    if result.skipped:
        summary["skipped_file"] = str(result.run_dir / "skipped.jsonl")
    with atomic_open(result.run_dir / SUMMARY_FILE) as handle:
        json.dump(summary, handle, indent=2)
