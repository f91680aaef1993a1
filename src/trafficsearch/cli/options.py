"""Options shared by several commands, spelled once: `-k/--k`, `--device`, `--kind`, `--rerank/--no-rerank`,
`--where`, `--time-from`, `--time-to`.

Every command that takes one of these builds it here, so the spelling, default and allowed values are the
same everywhere (and `--kind` accepts exactly what the HTTP API accepts).
"""

from __future__ import annotations

from typing import Any

import typer

# The kinds a query may be restricted to: the same values as the HTTP API's `kind` field.
KINDS = ("pedestrian", "vehicle")
DEVICE_HELP = "torch device: auto (cuda if available, else mps, else cpu), cpu, cuda or cuda:N."


def k_option(default: int = 10, help: str = "How many images to return per query.") -> Any:
    return typer.Option(default, "-k", "--k", min=1, help=help)


def device_option(help: str = DEVICE_HELP) -> Any:
    return typer.Option("auto", "--device", help=help)


def _check_kind(value: str | None) -> str | None:
    if value is not None and value not in KINDS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(KINDS)}")
    return value


def kind_option(help: str = "Only this kind of image") -> Any:
    return typer.Option(None, "--kind", callback=_check_kind, help=f"{help}: {' or '.join(KINDS)}.")


def rerank_option(
    help: str = "Re-rank the top candidates with the ensemble's ITM re-ranker when it has one "
    "(on by default; --no-rerank gives the fusion alone).",
) -> Any:
    return typer.Option(True, "--rerank/--no-rerank", help=help)


def pick_device(device: str) -> str:
    """The concrete device for `--device` (auto -> cuda | mps | cpu); torch is imported only here."""
    from trafficsearch.models.device import resolve_device

    return resolve_device(device)


def where_option(
    help: str = "Metadata filter, repeatable: camera=c1,c2 (any of), color=red, time>=2024-05-01T08:00, "
    "id<100 (index/filters.py).",
) -> Any:
    return typer.Option(None, "--where", help=help)


def time_from_option(help: str = "Only images at or after this time (ISO 8601).") -> Any:
    return typer.Option(None, "--time-from", help=help)


def time_to_option(help: str = "Only images at or before this time (a bare date includes that day).") -> Any:
    return typer.Option(None, "--time-to", help=help)
