"""`trafficsearch check`: validate and summarise a labelled data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from trafficsearch.data.check import CheckReport, check_dataset

console = Console()


def _print_report(report: CheckReport, show: int) -> None:
    counts = report.kind_counts
    table = Table(title=f"{report.labels.path}", show_header=True)
    table.add_column("kind")
    table.add_column("records", justify="right")
    for kind in ("vehicle", "pedestrian"):
        table.add_row(kind, str(counts.get(kind, 0)))
    table.add_row("total", str(len(report.labels.records)))
    console.print(table)

    rates = report.attribute_rates()
    if rates:
        attr_table = Table(title="pedestrian attributes (share of pedestrians)")
        attr_table.add_column("attribute")
        attr_table.add_column("share", justify="right")
        for name, rate in rates.items():
            attr_table.add_row(name, f"{rate:.3f}")
        console.print(attr_table)
    vehicle = report.vehicle_counts()
    if any(vehicle.values()):
        vt = Table(title="vehicle attributes (most common)")
        vt.add_column("part")
        vt.add_column("distinct", justify="right")
        vt.add_column("top values")
        for part, counter in vehicle.items():
            top = ", ".join(f"{k} {v}" for k, v in counter.most_common(6))
            vt.add_row(part, str(len(counter)), top)
        console.print(vt)

    problems = report.labels.skipped + report.image_errors
    if report.labels.skipped:
        console.print(f"[yellow]skipped {len(report.labels.skipped)} bad label line(s)[/]")
    if report.image_errors:
        console.print(f"[yellow]{len(report.image_errors)} missing or unreadable image(s)[/]")
    for error in problems[:show]:
        console.print(f"  {error.one_line()}", highlight=False, soft_wrap=True)
    if len(problems) > show:
        console.print(f"  ... and {len(problems) - show} more")
    if report.unlabelled_images:
        console.print(f"{len(report.unlabelled_images)} image(s) in the folder have no label line")
    if report.ok:
        decoded = f" and all {report.images_checked} images decoded" if report.images_checked else ""
        console.print(f"[green]ok[/]: all {len(report.labels.records)} lines parsed{decoded}")


def check(
    labels: Annotated[Path, typer.Argument(help="Label file (image$attributes$text per line).")],
    images: Annotated[
        Path | None, typer.Option("--images", help="Folder of the images the labels name.")
    ] = None,
    on_error: Annotated[
        str, typer.Option("--on-error", help="raise: stop at the first bad line; skip: skip and report them.")
    ] = "raise",
    show: Annotated[int, typer.Option(help="How many problems to list.")] = 20,
) -> None:
    """Validate a data set and print a summary (counts per kind, attribute distribution, bad lines/images)."""
    if on_error not in ("raise", "skip"):
        raise typer.BadParameter("expected 'raise' or 'skip'", param_hint="--on-error")
    report = check_dataset(labels, images, on_error=on_error)  # type: ignore[arg-type]
    _print_report(report, show)


def register(app: typer.Typer) -> None:
    app.command("check")(check)
