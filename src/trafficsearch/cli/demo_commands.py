"""`trafficsearch demo`: the main job on the embedded default (no download)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from trafficsearch.experiments import DemoPlan


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
    seed: Annotated[int, typer.Option(help="Seed for data and training (the first seed with --seeds).")] = 0,
    seeds: Annotated[
        int,
        typer.Option(
            min=1,
            help="Run this many seeds (SEED, SEED+1, ...), each in WORK/seed-K, and print their spread.",
        ),
    ] = 1,
    spread: Annotated[
        Path | None,
        typer.Option(
            help="A measured seed spread to print one run beside (default: the committed "
            "benchmarks/results/demo_seeds.json, demo_seeds-fast.json with --fast)."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes for rendering and encoding.")] = 2,
) -> None:
    """Generate data, train the members, index, and print single models, fusion and fusion + ITM re-ranking
    beside random, with the full system compared to the best single model and to the measured seed spread."""
    from dataclasses import replace

    from trafficsearch.experiments import DemoPlan, demo_console, run_demo

    plan = DemoPlan.fast() if fast else DemoPlan()
    changes = {"train": train, "val": val, "test": test, "epochs": epochs, "config": config}
    plan = replace(plan, seed=seed, workers=workers, **{k: v for k, v in changes.items() if v is not None})
    if val_queries is not None:
        plan = replace(plan, val_queries=val_queries or None)
    if not ensemble:
        plan = replace(plan, blip_config=None, attributes=False)
    console = demo_console()
    if seeds > 1:
        _run_seeds(work, plan, list(range(seed, seed + seeds)), console)
        return
    run_demo(work, plan, console)
    _beside_spread(console, work, plan, spread or _default_spread(fast))


def _default_spread(fast: bool) -> Path:
    from trafficsearch.experiments import spread_path

    return spread_path(fast)


def _run_seeds(work: Path, plan: DemoPlan, seeds: list[int], console: Console) -> None:
    """Every seed in WORK/seed-K (resumable), then their spread printed and written to WORK/seeds.json."""
    from trafficsearch.experiments import difference_lines, run_seeds, spread_table, summarise_seeds
    from trafficsearch.ioutil import atomic_write_json

    results = run_seeds(work, plan, seeds, console)
    summary = summarise_seeds(results)
    atomic_write_json(work / "seeds.json", {"summary": summary})
    console.rule(f"{len(seeds)} seeds")
    console.print(spread_table(summary))
    for line in difference_lines(summary):
        console.print(line)
    console.print(f"per seed: {work}/seed-K/results.json; the spread: {work / 'seeds.json'}")


def _beside_spread(console: Console, work: Path, plan: DemoPlan, path: Path) -> None:
    """This run beside the measured seed spread, or a line saying there is none yet."""
    from trafficsearch.experiments import (
        difference_lines,
        load_results,
        load_spread,
        plan_differences,
        spread_table,
    )

    saved = load_spread(path)
    if saved is None:
        console.print(
            f"no seed spread measured yet ({path} not found): one run's numbers move by a point or more "
            "between seeds; benchmarks/demo_seeds.py --seeds 0 1 2 measures it"
        )
        return
    console.print(spread_table(saved["summary"], load_results(work)))
    for line in difference_lines(saved["summary"]):
        console.print(line)
    differs = plan_differences(saved.get("plan", {}), plan)
    note = f"; measured with another plan ({', '.join(differs)} differ)" if differs else ""
    machine = saved.get("machine", {}).get("cpu", "machine not named")
    console.print(f"spread from {path} ({machine}){note}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
