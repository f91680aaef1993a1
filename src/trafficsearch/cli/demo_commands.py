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
    val_queries: Annotated[
        int | None,
        typer.Option(
            min=0, help="How many val texts (evenly spread) to search the whole val gallery with; 0: all."
        ),
    ] = None,
    test: Annotated[int | None, typer.Option(help="Synthetic test-style images (0 to skip).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (overrides the config).")] = None,
    config: Annotated[str | None, typer.Option(help="Training config file or packaged name.")] = None,
    ensemble: Annotated[
        bool,
        typer.Option(
            "--ensemble/--single",
            help="Train BLIP-small and the attribute baseline too and score fusion + ITM re-ranking "
            "(default), or only the CLIP default model.",
        ),
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed for data and training.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes for rendering and encoding.")] = 2,
) -> None:
    """Generate data, train the members, index, and print single models, fusion and fusion + ITM re-ranking
    beside random, with the full system compared to the best single model."""
    from dataclasses import replace

    from trafficsearch.experiments import DemoPlan, run_demo

    plan = DemoPlan.fast() if fast else DemoPlan()
    changes = {"train": train, "val": val, "test": test, "epochs": epochs, "config": config}
    plan = replace(plan, seed=seed, workers=workers, **{k: v for k, v in changes.items() if v is not None})
    if val_queries is not None:
        plan = replace(plan, val_queries=val_queries or None)
    if not ensemble:
        plan = replace(plan, blip_config=None, attributes=False)
    run_demo(work, plan)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
