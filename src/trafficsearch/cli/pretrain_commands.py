"""`trafficsearch pretrain NAME`: the pre-training behind a shipped checkpoint (experiments/pretrain.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def pretrain(
    name: Annotated[str, typer.Argument(help="Which checkpoint: clip-default or blip-small.")],
    work: Annotated[Path, typer.Option(help="Work folder (web corpus, training run).")] = Path(
        "runs/pretrain"
    ),
    export: Annotated[
        Path | None, typer.Option(help="Folder for the exported checkpoint (default WORK/export/NAME).")
    ] = None,
    ship: Annotated[
        bool,
        typer.Option("--ship", help="Write into the package (resources/pretrained/NAME) and its manifest."),
    ] = False,
    workers: Annotated[int, typer.Option(help="Rendering processes.")] = 2,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Generate the web corpus, pre-train on it with configs/pretrain/NAME.yaml, export the trained tensors.

    Resumes: complete images are kept, training continues from its last checkpoint."""
    from trafficsearch.experiments.pretrain import plan_named, run_pretrain

    entry = run_pretrain(
        plan_named(name), work, export=export, ship=ship, workers=workers, show_progress=not quiet
    )
    best = entry["best_val_map10"]
    score = f"{100 * best:.2f}" if best is not None else "n/a"
    console.print(
        f"{name}: {entry['bytes'] / 1e6:.1f} MB ({entry['parameters_stored']:,} parameters stored, "
        f"{entry['tensors_from_base']} tensors from their package), sha256 {entry['sha256'][:16]}..., "
        f"web val mAP@10 {score}"
    )
    console.print(f"written to {entry['export']}")


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)
