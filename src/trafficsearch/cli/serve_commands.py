"""`trafficsearch serve`: the HTTP API and web page over one index directory."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from trafficsearch.errors import TrafficSearchError

console = Console(stderr=True)
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


def serve(
    index_dir: Path = typer.Argument(..., help="Index directory written by `trafficsearch index`."),
    host: str = typer.Option(
        "127.0.0.1", help="Address to bind; loopback by default (not reachable from outside)."
    ),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    model: str | None = typer.Option(
        None, help="Model/checkpoint to encode queries with (default: the index's)."
    ),
    device: str = typer.Option("cpu", help="torch device for query encoding and re-ranking."),
    max_k: int = typer.Option(100, min=1, help="Largest k a request may ask for."),
    batch_window_ms: float = typer.Option(5.0, min=0.0, help="How long concurrent queries are collected."),
    max_batch: int = typer.Option(32, min=1, help="Most queries searched in one engine call."),
    access_log: bool = typer.Option(True, help="Log every request."),
) -> None:
    """Serve search over HTTP: POST /search, GET /images/{id}, /thumbs/{id}, /healthz, the page at /."""
    if not index_dir.is_dir():
        raise TrafficSearchError("index directory not found", path=index_dir)
    from trafficsearch.search.opener import open_engine
    from trafficsearch.serve.app import create_app
    from trafficsearch.serve.server import serve_forever

    with console.status(f"opening index {index_dir} ..."):
        engine = open_engine(index_dir, model=model, device=device)
    app = create_app(engine, max_k=max_k, batch_window_ms=batch_window_ms, max_batch=max_batch)
    if host not in LOOPBACK_HOSTS:
        console.print(
            f"[yellow]warning:[/] listening on {host}: the gallery images are readable by anyone who "
            "can reach this address (there is no authentication)"
        )
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"serving {engine.info().get('count', '?')} images at [bold]http://{shown}:{port}/[/] "
        "(API docs at /docs, Ctrl-C to stop)"
    )
    serve_forever(app, host=host, port=port, access_log=access_log)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
