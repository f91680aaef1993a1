"""Staged fine-tuning: `stages: [{name, <overrides>}, ...]` run one after another in RUN_DIR/<name>.

Why: the seed pre-trained on extra data, then fine-tuned on the competition split at a lower lr (docs
seed-recipe.md section 9). Stage i starts from stage i-1's BEST checkpoint (by val mAP) via
`model.pretrained`; the first stage starts from the base config's model. Resumable: a finished stage
(summary.json says so) is skipped and an interrupted one resumes from its last/ when `resume` is set.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from trafficsearch.errors import ConfigError
from trafficsearch.train.config import Config, stage_config


def _finished(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    return summary.is_file() and bool(json.loads(summary.read_text(encoding="utf-8")).get("finished"))


def train_stages(
    cfg: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    on_step=None,  # noqa: ANN001 - StepHook, forwarded
    show_progress: bool = True,
    console: Console | None = None,
):  # noqa: ANN201 - TrainResult of the last stage
    """Run every stage; returns the last stage's TrainResult (its run_dir is RUN_DIR/<last name>)."""
    from trafficsearch.train.loop import train, write_summary

    console = console or Console(stderr=True)
    previous_best: Path | None = None
    result = None
    for i, stage in enumerate(cfg.stages):
        name = stage["name"]
        scfg = stage_config(cfg, i)
        if previous_best is not None:
            if not (previous_best / "model.json").is_file():
                raise ConfigError(
                    "the previous stage left no best checkpoint to start from", path=previous_best
                )
            scfg.model.pretrained = str(previous_best)
        stage_dir = run_dir / name
        if resume and _finished(stage_dir):
            console.print(f"stage {name}: already finished, skipped")
            previous_best = stage_dir / "best"
            continue
        console.print(f"stage {i + 1}/{len(cfg.stages)}: {name} (from {scfg.model.pretrained or 'scratch'})")
        result = train(
            scfg,
            stage_dir,
            resume=resume,
            on_step=on_step,
            show_progress=show_progress,
            console=console,
        )
        if result.finished:
            write_summary(result)
        else:
            return result
        previous_best = stage_dir / "best"
    if result is None:  # every stage was already finished
        from trafficsearch.train.loop import TrainResult

        last = json.loads((run_dir / cfg.stages[-1]["name"] / "summary.json").read_text(encoding="utf-8"))
        return TrainResult(
            run_dir=run_dir / cfg.stages[-1]["name"],
            step=last["step"],
            epoch=last["epoch"],
            best_map=last["best_map"],
            last_loss=last["last_loss"],
            finished=True,
        )
    return result
