"""The demo's printed tables, each narrow enough for a 100-column terminal.

One table per question: the equal rule's official mAP@10 per system and split (with per-kind columns and the
cold query latency), the looser contain rule and the ranking metrics beside it, and a run (or several seeds)
beside the measured seed spread. Everything else the demo measures is in results.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table

from trafficsearch.experiments.labels import BEST_SINGLE, short

SPLITS = ("val", "test-style")
WIDTH = 100  # the terminal the tables are made for (tests render them at this width)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        collapse_padding=True,
    )


def _by_key(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["split"], r["system"], r["rule"]): r for r in rows}


def systems_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """System names in the order the rows first name them."""
    return list(dict.fromkeys(r["system"] for r in rows))


def _kind(row: dict[str, Any] | None, kind: str | None, metric: str = "map_official") -> float | None:
    if row is None:
        return None
    scores = row["overall"] if kind is None else row.get("per_kind", {}).get(kind)
    return None if scores is None else scores.get(metric)


def results_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Systems x (official mAP@10 overall / vehicles / pedestrians per split, ms/query), equal rule."""
    table = _table(
        "equal rule, official mAP@10 x100. val: the real val labels rendered; test-style: colour+brand+type "
        "vehicle queries, camera domain. ms/q: cold single query, p50"
    )
    table.add_column("system")
    for split in SPLITS:
        for header in ("mAP@10", "veh.", "ped."):
            table.add_column(f"{split}\n{header}", justify="right")
    table.add_column("ms/q", justify="right")
    by_key = _by_key(rows)
    for system in systems_of(rows):
        cells = [short(system)]
        for split in SPLITS:
            row = by_key.get((split, system, "equal"))
            cells += [_fmt(_kind(row, kind)) for kind in (None, "vehicle", "pedestrian")]
        latency = (by_key.get(("val", system, "equal")) or {}).get("latency_ms", {}).get("p50")
        cells.append("-" if latency is None else f"{latency:.1f}")
        table.add_row(*cells)
    return table


def contain_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Systems x (contain-rule official mAP@10 per split, and mAP/min(R,10), R@1, R@10 of val, equal)."""
    table = _table(
        "contain rule (a pedestrian is relevant when it has every attribute the query names; vehicles as "
        "under equal) and ranking metrics (equal rule), x100"
    )
    table.add_column("system")
    for split in SPLITS:
        table.add_column(f"{split}\ncontain", justify="right")
    for header in ("mAP/min(R,10)", "R@1", "R@10"):
        table.add_column(f"val\n{header}", justify="right")
    by_key = _by_key(rows)
    for system in systems_of(rows):
        cells = [short(system)]
        cells += [_fmt(_kind(by_key.get((split, system, "contain")), None)) for split in SPLITS]
        equal = by_key.get(("val", system, "equal"))
        cells.append(_fmt(_kind(equal, None, "map_at_k")))
        for k in ("1", "10"):
            cells.append("-" if equal is None else _fmt(equal["overall"]["recall"].get(k)))
        table.add_row(*cells)
    return table


def _spread(stats: dict[str, Any] | None) -> tuple[str, str]:
    """("mean ± sd", "min-max") of a seeds summary entry (x100 already applied)."""
    if not stats or stats.get("mean") is None:
        return "-", "-"
    sd = stats.get("std")
    return (
        f"{stats['mean']:.2f}" + ("" if sd is None else f" ± {sd:.2f}"),
        f"{stats['min']:.2f}-{stats['max']:.2f}",
    )


def spread_table(summary: dict[str, Any], this_run: dict[str, Any] | None = None) -> Table:
    """Per system: official mAP@10 (equal) mean ± sd and min-max over the seeds of `summary`
    (experiments.seeds.summarise_seeds), per split; with `this_run` (a results.json: rows and comparison),
    that run's value beside them."""
    n = len(summary.get("seeds", []))
    title = f"official mAP@10 x100, equal rule: {n} seeds (mean ± sample sd, min-max)"
    table = _table(title + (" beside this run" if this_run is not None else ""))
    table.add_column("system")
    for split in SPLITS:
        if this_run is not None:
            table.add_column(f"{split}\nthis run", justify="right")
        table.add_column(f"{split}\nmean ± sd", justify="right")
        table.add_column(f"{split}\nmin-max", justify="right")
    mine = _by_key(this_run["rows"]) if this_run is not None else {}
    for system, per_split in summary.get("systems", {}).items():
        cells = [short(system)]
        for split in SPLITS:
            if this_run is not None:
                name = system
                if system == BEST_SINGLE:
                    name = this_run.get("comparison", {}).get(split, {}).get("best_single", system)
                cells.append(_fmt(_kind(mine.get((split, name, "equal")), None)))
            cells += list(_spread(per_split.get(split, {}).get("equal", {}).get("overall")))
        table.add_row(*cells)
    return table
