"""`trafficsearch demo`: the main job on the embedded default (no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    work: Annotated[Path, typer.Option(help="Work folder (data, run, indexes, report).")] = Path("runs/demo"),
    fast: Annotated[bool, typer.Option("--fast", help="A ~3-minute version on fewer images.")] = False,
    train: Annotated[int | None, typer.Option(help="Synthetic train images (overrides the plan).")] = None,
    val: Annotated[
        int | None, typer.Option(help="Real val labels to render and search (default all).")
    ] = None,
    test: Annotated[int | None, typer.Option(help="Synthetic test-style images (0 to skip).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (overrides the config).")] = None,
    config: Annotated[str | None, typer.Option(help="Training config file or packaged name.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for data and training.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes for rendering and encoding.")] = 2,
) -> None:
    """Generate data, train the default model, index the val gallery, and print scores beside random."""
    from dataclasses import replace

    from trafficsearch.demo import DemoPlan, run_demo

    plan = DemoPlan.fast() if fast else DemoPlan()
    changes = {"train": train, "val": val, "test": test, "epochs": epochs, "config": config}
    plan = replace(plan, seed=seed, workers=workers, **{k: v for k, v in changes.items() if v is not None})
    run_demo(work, plan)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
