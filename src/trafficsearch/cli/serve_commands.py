"""`trafficsearch serve`: the HTTP API and web page over one index directory."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from trafficsearch.cli.options import device_option, pick_device, rerank_option
from trafficsearch.errors import ConfigError, TrafficSearchError

console = Console(stderr=True)


def _machine_names() -> set[str]:
    """This machine's name and addresses: what clients use to reach a wildcard (0.0.0.0) bind."""
    names: set[str] = set()
    try:
        host = socket.gethostname()
        names.add(host)
        name, aliases, addresses = socket.gethostbyname_ex(host)
        names.update([name, *aliases, *addresses])
    except OSError:
        pass
    return names


def exposure_options(
    host: str,
    token_file: Path | None,
    allow_host: list[str],
    cors_origin: list[str],
    audit_log: Path | None,
    audit_max_mb: int,
    rate_limit: str | None,
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """create_app keyword arguments for how the service is exposed; ConfigError with one line if wrong."""
    from trafficsearch.serve.audit import AuditLog
    from trafficsearch.serve.security import TOKENS_ENV, host_allow_list, is_loopback, load_tokens, parse_rate

    tokens = load_tokens(token_file, environ)
    loopback = is_loopback(host)
    if not loopback and not tokens:
        raise ConfigError(
            f"--host {host} is reachable from other machines: give bearer tokens with --token-file FILE "
            f"(lines 'ID:SECRET') or ${TOKENS_ENV}='ID:SECRET,...'"
        )
    for origin in cors_origin:
        if origin == "*" or not origin.startswith(("http://", "https://")):
            raise ConfigError(f"--cors-origin {origin!r}: give a full origin such as https://analyst.example")
    extra = list(allow_host)
    if host in ("0.0.0.0", "::"):
        extra += sorted(_machine_names())
    return {
        "tokens": tokens,
        "require_auth": not loopback,
        "allowed_hosts": sorted(host_allow_list(host, extra)),
        "cors_origins": list(cors_origin),
        "audit_log": AuditLog(audit_log, max_bytes=audit_max_mb * 1024 * 1024) if audit_log else None,
        "rate_limit": parse_rate(rate_limit) if rate_limit else None,
    }


def warm_up(engine: Any) -> None:
    """One query through every stage before the first request, so no analyst waits for an ONNX export or a
    first-call allocation (a reranking engine is warmed with and without re-ranking)."""
    engine.search(["warm-up"], k=1)
    if getattr(engine, "rerank_stages", None):
        engine.search(["warm-up"], k=1, rerank=True)


def serve(
    index_dir: Path = typer.Argument(..., help="Index directory written by `trafficsearch index`."),
    host: str = typer.Option(
        "127.0.0.1", help="Address to bind; loopback by default. Any other address needs tokens."
    ),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    model: str | None = typer.Option(
        None, help="Model/checkpoint to encode queries with (default: the index's)."
    ),
    device: str = device_option(),
    rerank: bool = rerank_option(
        "Default of requests that do not say `rerank`: re-rank with the ensemble's ITM re-ranker when it "
        "has one (--no-rerank: fusion alone unless a request asks)."
    ),
    max_k: int = typer.Option(100, min=1, help="Largest k a request may ask for."),
    batch_window_ms: float = typer.Option(5.0, min=0.0, help="How long concurrent queries are collected."),
    max_batch: int = typer.Option(32, min=1, help="Most queries searched in one engine call."),
    access_log: bool = typer.Option(True, help="Log every request."),
    token_file: Path | None = typer.Option(
        None, help="Bearer tokens, one 'ID:SECRET' per line (also $TRAFFICSEARCH_TOKENS='ID:SECRET,...')."
    ),
    allow_host: list[str] = typer.Option(  # noqa: B008
        [], help="Host header to accept besides localhost and the bind address (repeatable; '*': any)."
    ),
    cors_origin: list[str] = typer.Option(  # noqa: B008
        [], help="Origin allowed to call the API from a browser (repeatable); CORS is off by default."
    ),
    audit_log: Path | None = typer.Option(None, help="Append one JSON line per search to this file."),
    audit_max_mb: int = typer.Option(10, min=1, help="Rotate the audit log past this size (5 kept)."),
    rate_limit: str | None = typer.Option(None, help="Searches per token, e.g. 60/min or 5/s."),
    query_encoder: str | None = typer.Option(
        None,
        help="torch | onnx | auto (default: $TRAFFICSEARCH_QUERY_ENCODER, else auto = ONNX Runtime when "
        "installed): runs the query text towers and the ITM head, exported at start-up.",
    ),
    itm_head: str | None = typer.Option(
        None,
        help="fp32 | int8 (default: $TRAFFICSEARCH_ITM_HEAD, else fp32): the ONNX ITM head's precision; "
        "int8 (dynamically quantised MatMul weights) re-ranks faster but re-orders the top K "
        "(benchmarks/results/itm_int8_val_ranking.json).",
    ),
) -> None:
    """Serve search over HTTP: POST /search, GET /images/{id}, /thumbs/{id}, /healthz, the page at /."""
    if not index_dir.is_dir():
        raise TrafficSearchError("index directory not found", path=index_dir)
    options = exposure_options(host, token_file, allow_host, cors_origin, audit_log, audit_max_mb, rate_limit)
    from trafficsearch.models import onnx_text
    from trafficsearch.search.opener import open_engine
    from trafficsearch.serve.app import create_app
    from trafficsearch.serve.server import serve_forever

    if query_encoder is not None:
        os.environ[onnx_text.ENV] = onnx_text.check_choice(query_encoder, "--query-encoder")
    onnx_text.set_default("auto")  # a long-lived service: the export pays for itself after a few queries
    if itm_head is not None:
        os.environ[onnx_text.ITM_ENV] = onnx_text.check_itm_choice(itm_head, "--itm-head")
    onnx_text.itm_precision()  # a bad $TRAFFICSEARCH_ITM_HEAD stops here too
    encoder = onnx_text.backend()  # a bad $TRAFFICSEARCH_QUERY_ENCODER stops here, not at every request
    device = pick_device(device)
    with console.status(f"opening index {index_dir} ..."):
        engine = open_engine(index_dir, model=model, device=device)
    with console.status(f"preparing the query encoder ({encoder}) ..."):
        try:
            warm_up(engine)
        except TrafficSearchError as exc:  # e.g. an empty gallery: requests get the same error, as a 4xx
            console.print(f"[yellow]warm-up query failed, serving anyway:[/] {exc}")
    app = create_app(
        engine,
        max_k=max_k,
        batch_window_ms=batch_window_ms,
        max_batch=max_batch,
        index_name=index_dir.name,
        rerank_default=rerank,
        **options,
    )
    shown = f"[{host}]" if ":" in host else host
    auth = f"{len(options['tokens'])} token(s)" if options["tokens"] else "no authentication (loopback)"
    console.print(
        f"serving {engine.info().get('count', '?')} images at [bold]http://{shown}:{port}/[/] "
        f"({auth}; API docs at /docs, Ctrl-C to stop)"
    )
    serve_forever(app, host=host, port=port, access_log=access_log)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
