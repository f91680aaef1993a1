"""Staged fine-tuning: `stages: [{name, <overrides>}, ...]` run one after another in RUN_DIR/<name>.

Why: the seed pre-trained on extra data, then fine-tuned on the competition split at a lower lr, then again
on the A-board split (docs seed-recipe.md section 9; configs/seed/*.yaml). Stage i starts from stage i-1's
BEST checkpoint (by val mAP) via `model.pretrained`; the first stage starts from the base config's model.
Resumable: a finished stage (summary.json says so) is skipped and an interrupted one resumes from its last/
when `resume` is set.

No recursion: the loop (train/loop.py) hands `run_stages` the function that trains ONE run; this module
never imports the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from trafficsearch.errors import ConfigError
from trafficsearch.train.config import Config, stage_config
from trafficsearch.train.result import TrainResult, finished_run, write_summary

TrainOne = Callable[[Config, Path], TrainResult]  # (stage config, stage run dir) -> result


def stage_plan(cfg: Config, run_dir: Path) -> list[tuple[str, Config, Path]]:
    """(name, config, run dir) per stage; stage i's model.pretrained is stage i-1's best/."""
    plan = []
    previous_best: Path | None = None
    for i, stage in enumerate(cfg.stages):
        scfg = stage_config(cfg, i)
        if previous_best is not None:
            scfg.model.pretrained = str(previous_best)
        stage_dir = run_dir / stage["name"]
        plan.append((stage["name"], scfg, stage_dir))
        previous_best = stage_dir / "best"
    return plan


def run_stages(
    cfg: Config, run_dir: Path, train_one: TrainOne, *, resume: bool, console: Console | None = None
) -> TrainResult:
    """Run every stage; returns the last stage's TrainResult (its run_dir is RUN_DIR/<last name>), or the
    interrupted stage's (finished False) when a stage stopped early (train.max_steps)."""
    console = console or Console(stderr=True)
    plan = stage_plan(cfg, run_dir)
    result: TrainResult | None = None
    for i, (name, scfg, stage_dir) in enumerate(plan):
        if resume and finished_run(stage_dir):
            console.print(f"stage {name}: already finished, skipped")
            result = TrainResult.from_summary(stage_dir)
            continue
        if i > 0 and not (Path(str(scfg.model.pretrained)) / "model.json").is_file():
            raise ConfigError(
                "the previous stage left no best checkpoint to start from", path=scfg.model.pretrained
            )
        console.print(f"stage {i + 1}/{len(plan)}: {name} (from {scfg.model.pretrained or 'scratch'})")
        result = train_one(scfg, stage_dir)
        if not result.finished:
            return result
        write_summary(result)
    assert result is not None  # validate() refuses an empty stage list only by running none: stages is truthy
    return result
