"""`trafficsearch train`: fine-tuning (CLIP or BLIP) from a YAML config with dotted key=value overrides.

Data-parallel: `torchrun --nproc_per_node N -m trafficsearch.train --config FILE [key=value ...]`; multi-node:
the same on every node with `--nnodes M --node_rank K --rdzv_backend c10d --rdzv_endpoint HOST:PORT`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)


def train_command(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML config (e.g. configs/demo/default.yaml)."
    ),
    overrides: list[str] | None = typer.Argument(
        None, help="Dotted overrides, e.g. optim.lr=3e-4 train.epochs=2 data.root=runs/demo/data."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run dir (default: train.output_dir)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run from its last checkpoint."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Fine-tune a model on ROOT/train, validating on ROOT/val with the official mAP@10 every epoch.

    A config with `stages:` runs them in order, each from the previous stage's best checkpoint."""
    from trafficsearch.train.config import load_config
    from trafficsearch.train.loop import train, write_summary

    cfg = load_config(config, overrides or [])
    if out is not None:
        cfg.train.output_dir = str(out)
    result = train(cfg, resume=resume, show_progress=not quiet, console=console)
    write_summary(result)
    best = f"{100 * result.best_map:.2f}" if result.best_map is not None else "n/a"
    console.print(
        f"done: step {result.step}, epoch {result.epoch}, best val mAP@10 ({cfg.train.val_rule}) {best}; "
        f"checkpoints in {result.run_dir}/best and {result.run_dir}/last"
    )


# Standalone app for `python -m trafficsearch.train`.
train_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
train_app.command()(train_command)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
