"""`trafficsearch evaluate`: score a submission (competition JSON or infer.txt) against a label file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from trafficsearch.cli.options import k_option
from trafficsearch.data.labels import read_labels
from trafficsearch.errors import ConfigError
from trafficsearch.eval.metrics import RULES, EvalResult, evaluate, recall_ks
from trafficsearch.eval.report import write_html_report
from trafficsearch.eval.submission import load_ranking

console = Console()


def _table(result: EvalResult, title: str) -> Table:
    ks = recall_ks(result.k)
    table = Table(
        title=title,
        caption=f"mAP@{result.k}: the official scorer (divides by the hits found); "
        f"/min(R,{result.k}): divides by the relevant images that exist, up to {result.k}",
    )
    table.add_column("queries")
    table.add_column("n", justify="right")
    table.add_column(f"mAP@{result.k}", justify="right")
    table.add_column(f"mAP@{result.k}/min(R,{result.k})", justify="right")
    for m in ks:
        table.add_column(f"R@{m}", justify="right")
    for name, s in [("overall", result.overall), *result.per_kind.items()]:
        table.add_row(
            name,
            str(s.n_queries),
            f"{s.map_official:.4f}",
            f"{s.map_at_k:.4f}",
            *(f"{s.recall[m]:.4f}" for m in ks),
        )
    return table


def evaluate_command(
    labels: Annotated[
        Path, typer.Option("--labels", help="Label file: its lines are the queries, its images the gallery.")
    ],
    submission: Annotated[
        Path,
        typer.Option(
            "--submission", help="Competition JSON, or an infer.txt-style file (label line + names)."
        ),
    ],
    relevance: Annotated[
        str, typer.Option("--relevance", help="Relevance rule: equal, contain, or both.")
    ] = "equal",
    k: int = k_option(10, help="Cut-off for mAP/min(R,k) and the largest Recall@k."),
    as_json: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")
    ] = False,
    html_out: Annotated[
        Path | None,
        typer.Option("--html", help="Also write a self-contained HTML report with thumbnails here."),
    ] = None,
    images: Annotated[Path | None, typer.Option("--images", help="Image folder for the HTML report.")] = None,
    report_queries: Annotated[
        int, typer.Option("--report-queries", min=1, help="Queries shown in the report.")
    ] = 30,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the queries sampled in the report.")] = 0,
) -> None:
    """Score ranked lists: official mAP@10, mAP over min(R,10), Recall@1/5/10, overall and per kind."""
    rules = list(RULES) if relevance == "both" else [relevance]
    if relevance != "both" and relevance not in RULES:
        raise ConfigError(
            f"unknown relevance rule {relevance!r}: expected equal, contain or both", field="--relevance"
        )
    if html_out is not None and images is None:
        raise ConfigError("--html needs --images (the folder holding the gallery images)", field="--images")
    if images is not None and not images.is_dir():
        raise ConfigError("image folder not found", path=images, field="--images")
    records = read_labels(labels).records
    ranked = load_ranking(submission, records)
    results = [evaluate(records, records, ranked, rule, k) for rule in rules]  # type: ignore[arg-type]
    if html_out is not None:
        assert images is not None
        with console.status("writing the HTML report", spinner="dots"):
            write_html_report(
                html_out, records, records, ranked, images, rules[0], n_queries=report_queries, seed=seed, k=k
            )
    if as_json:
        payload = {
            "labels": str(labels),
            "submission": str(submission),
            "results": {r.rule: r.to_dict() for r in results},
        }
        if html_out is not None:
            payload["html"] = str(html_out)
        typer.echo(json.dumps(payload, indent=2))
        return
    for result in results:
        console.print(_table(result, f"{submission.name}: relevance '{result.rule}'"))
    if results[0].n_unknown:
        console.print(
            f"[yellow]{results[0].n_unknown} submitted name(s) are not in the label file (counted wrong)[/]"
        )
    if html_out is not None:
        console.print(f"report written to {html_out}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
