"""`trafficsearch index ...`, `search` and `submit`: build/extend/tune an index and query it.

`trafficsearch index build GALLERY_DIR --model SPEC --out DIR` is the explicit form; `trafficsearch index
GALLERY_DIR ...` is short for it when GALLERY_DIR is not a sub-command name (add, build, delete, detach, info,
merge, push, tune).
A folder named like a sub-command must be indexed with `index build`: a clear error says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from typer.core import TyperGroup

from trafficsearch.cli.options import (
    device_option,
    k_option,
    kind_option,
    pick_device,
    rerank_option,
    time_from_option,
    time_to_option,
    where_option,
)
from trafficsearch.errors import TrafficSearchError

console = Console()
err = Console(stderr=True)


def _names_model(args: list[str]) -> bool:
    return any(a == "--model" or a.startswith("--model=") for a in args)


class _DefaultToBuild(TyperGroup):
    """A group whose default sub-command is `build`, so `index GALLERY ...` keeps working.

    Only `build` takes --model: `index add --model ...` can only mean a gallery folder named "add", which
    must be written `index build add ...` (a sub-command name always means the sub-command)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] in self.commands and args[0] != "build" and _names_model(args[1:]):
            raise typer.BadParameter(
                f"{args[0]!r} is an `index` sub-command, not a gallery folder; to index a folder named "
                f"{args[0]!r} write `trafficsearch index build {args[0]} --model ... --out ...`",
                ctx=ctx,
                param_hint="GALLERY_DIR",
            )
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["build", *args]
        return super().parse_args(ctx, args)


index_app = typer.Typer(
    cls=_DefaultToBuild,
    no_args_is_help=True,
    help="Build, extend, merge, tune and inspect an index. "
    "`index GALLERY_DIR --model SPEC --out DIR` is short for `index build GALLERY_DIR ...` "
    "(use `index build` when the folder is named like a sub-command).",
)


@index_app.command("build")
def build(
    gallery: Path = typer.Argument(..., help="Folder of gallery images (searched recursively)."),
    model: str = typer.Option(..., "--model", help="Checkpoint dir or open_clip:<name>[:<tag or weights>]."),
    out: Path = typer.Option(..., "--out", help="Index directory to write (resumes when it exists)."),
    labels: Path | None = typer.Option(None, "--labels", help="Label file: gives each image its kind."),
    metadata: Path | None = typer.Option(
        None,
        "--metadata",
        help="CSV/JSONL per image: name, camera, time (ISO 8601) and any extra columns, all filterable.",
    ),
    factory: str = typer.Option("Flat", "--factory", help="FAISS factory string; Flat is exact search."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    workers: int = typer.Option(2, "--workers", min=0, help="DataLoader processes decoding images."),
    shard_size: int = typer.Option(4096, "--shard-size", min=1, help="Images per resumable shard."),
    max_pixels: int = typer.Option(64_000_000, "--max-pixels", min=1, help="Refuse to decode larger images."),
    device: str = device_option(),
) -> None:
    """Encode a gallery into an index; an interrupted build resumes where it stopped.

    With RANK/WORLD_SIZE set (torchrun) each rank encodes shards i % WORLD_SIZE == RANK and the rank that
    finishes last merges them (or run `trafficsearch index merge DIR`).
    """
    from trafficsearch.index.build import build_index
    from trafficsearch.models.factory import load_model

    device = pick_device(device)
    with err.status(f"loading model {model} ..."):
        retrieval_model = load_model(model, device=device)
    result = build_index(
        gallery,
        out,
        retrieval_model,
        model_spec=model,
        labels=labels,
        metadata=metadata,
        factory=factory,
        batch_size=batch_size,
        workers=workers,
        shard_size=shard_size,
        max_pixels=max_pixels,
        device=device,
    )
    prefix = f"rank {result.rank}/{result.world_size}: " if result.world_size > 1 else ""
    err.print(
        f"{prefix}encoded {result.encoded} images in {result.shards_encoded} shards "
        f"({result.shards_done_before} already done)"
    )
    if result.manifest:
        _sync_store(out)
        _print_summary(out, result.manifest)
    else:
        err.print(
            "other ranks' shards are still running: the last rank merges, or run "
            f"`trafficsearch index merge {out}`"
        )


@index_app.command("add")
def add(
    index_dir: Path = typer.Argument(..., help="Existing index directory."),
    images: list[Path] = typer.Argument(None, help="Image files or folders to append."),
    folder: Path | None = typer.Option(None, "--dir", help="Append every image in this folder."),
    labels: Path | None = typer.Option(None, "--labels", help="Label file giving the new images' kinds."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    workers: int = typer.Option(2, "--workers", min=0),
    device: str = device_option(),
) -> None:
    """Append new images without re-encoding the others; the FAISS index is extended, not rebuilt."""
    from trafficsearch.index.build import add_images

    device = pick_device(device)
    items = list(images or []) + ([folder] if folder else [])
    if not items:
        raise TrafficSearchError("give image files/folders or --dir FOLDER", field="images")
    result = add_images(
        index_dir, items, labels=labels, batch_size=batch_size, workers=workers, device=device
    )
    err.print(f"added {result.encoded} images")
    if result.manifest:
        _sync_store(index_dir)
        _print_summary(index_dir, result.manifest)


@index_app.command("merge")
def merge(
    index_dir: Path = typer.Argument(..., help="Index directory whose shards are all encoded."),
    factory: str | None = typer.Option(None, "--factory", help="FAISS factory (default: as built)."),
) -> None:
    """Gather finished shards into the vectors, metadata and FAISS index (after a multi-rank build)."""
    from trafficsearch.index.build import merge_index

    with err.status("merging shards ..."):
        manifest = merge_index(index_dir, factory=factory)
    _sync_store(index_dir)
    _print_summary(index_dir, manifest)


def _sync_store(index_dir: Path) -> None:
    """An index pushed to a vector store pushes what the merge changed (upserts by id: idempotent)."""
    from trafficsearch.index.stores.manage import sync_store

    with err.status("updating the vector store ..."):
        written = sync_store(index_dir)
    if written is not None:
        err.print(f"vector store updated ({written} shards pushed)")


@index_app.command("push")
def push(
    index_dir: Path = typer.Argument(..., help="A committed index directory."),
    milvus: str = typer.Option(
        ..., "--milvus", help="Milvus URI: a milvus-lite file (e.g. city.db) or http://host:19530."
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="TRAFFICSEARCH_MILVUS_TOKEN", help="Milvus token (user:password or API key)."
    ),
    collection: str | None = typer.Option(None, "--collection", help="Default: one per model."),
    partition_by: str = typer.Option("day", "--partition-by", help="day, camera or none."),
    index_type: str = typer.Option("FLAT", "--index-type", help="FLAT (exact), IVF_FLAT or HNSW."),
    queries: Path | None = typer.Option(
        None, "--queries", help="Query texts: measure recall@k and choose the fastest index type reaching it."
    ),
    k: int = k_option(help="Recall@k the index type is tuned for (with --queries)."),
    target: float = typer.Option(0.95, "--target", min=0.0, max=1.0),
    device: str = device_option(),
) -> None:
    """Upsert the index into a Milvus collection (a killed push resumes) and search through it from now on.

    The vectors stay in the directory too; `index detach DIR` goes back to the local FAISS index.
    """
    from trafficsearch.index.stores.manage import push_to_milvus

    vectors = None
    if queries is not None:
        from trafficsearch.data.labels import read_queries
        from trafficsearch.index.files import read_manifest
        from trafficsearch.index.tune import encode_texts
        from trafficsearch.models.factory import load_model

        spec = read_manifest(index_dir)["model_spec"]
        with err.status(f"encoding queries with {spec} ..."):
            vectors = encode_texts(load_model(spec, device=pick_device(device)), read_queries(queries))
    with err.status(f"pushing to {milvus} ...") as status:
        manifest = push_to_milvus(
            index_dir,
            milvus,
            token=token,
            collection=collection,
            partition_by=partition_by,
            index_type=index_type.upper(),
            queries=vectors,
            k=k,
            target=target,
            progress=False,
            log=lambda line: status.update(f"tuning: {line}"),
        )
    store = manifest["store"]
    chosen = (store.get("tune") or {}).get("chosen") or {}
    err.print(
        f"pushed {manifest['count']} images to {store['collection']} at {store['uri']} "
        f"({store['index_type']} {store['search_params'] or ''}"
        + (f", recall@{k} {chosen['recall']:.4f}" if chosen else "")
        + ")"
    )


@index_app.command("detach")
def detach(index_dir: Path = typer.Argument(..., help="Index directory pushed to a store.")) -> None:
    """Search the local FAISS index again instead of the vector store the manifest names."""
    from trafficsearch.index.stores.manage import detach_store

    detach_store(index_dir)
    err.print(f"{index_dir} searches its local FAISS index")


@index_app.command("delete")
def delete(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    ids: list[int] = typer.Argument(..., help="Image ids to delete (as `search --json` prints them)."),
) -> None:
    """Delete images by id from the index and its vector store; later merges and pushes keep them out."""
    from trafficsearch.index.stores.manage import delete_images

    manifest = delete_images(index_dir, ids)
    err.print(f"deleted {len(set(ids))} images; {manifest['count']} remain")


@index_app.command("tune")
def tune(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    queries: Path = typer.Option(
        ..., "--queries", help="Query file (one text per line), e.g. test_text.txt."
    ),
    k: int = k_option(),
    target: float = typer.Option(0.95, "--target", min=0.0, max=1.0, help="Recall@k the setting must reach."),
    device: str = device_option(),
) -> None:
    """Measure recall@k and latency of IVF/HNSW/IVF-PQ against exact search; keep the fastest good one."""
    from trafficsearch.data.labels import read_queries
    from trafficsearch.index.tune import tune_index_dir

    texts = read_queries(queries)
    device = pick_device(device)
    with err.status("tuning ...") as status:
        result, _ = tune_index_dir(
            index_dir,
            texts,
            k=k,
            target=target,
            device=device,
            log=lambda line: status.update(f"tuning: {line}"),
        )
    table = Table(
        title=f"recall@{result.k} vs exact ({result.n_queries} distinct queries, {result.n_vectors} images)"
    )
    for column in ("factory", "params", f"recall@{result.k}", "ms/query", "build s", ""):
        table.add_column(column)
    for trial in result.trials:
        chosen = "chosen" if trial is result.best else ""
        table.add_row(
            trial.factory,
            json.dumps(trial.params),
            f"{trial.recall:.4f}",
            f"{trial.ms_per_query:.4f}",
            f"{trial.build_s:.2f}",
            chosen,
        )
    console.print(table)
    console.print(f"saved {result.best.factory} {result.best.params or ''} (recall {result.best.recall:.4f})")


@index_app.command("info")
def info(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest summary as JSON."),
) -> None:
    """Show what an index holds: model, count, kinds, FAISS setting and its measured recall."""
    from trafficsearch.index.files import read_manifest
    from trafficsearch.index.store import open_index

    open_index(index_dir)  # verifies that every part agrees
    manifest = read_manifest(index_dir)
    if as_json:
        console.print_json(json.dumps(manifest))
        return
    _print_summary(index_dir, manifest)


def _print_summary(index_dir: Path, manifest: dict) -> None:
    table = Table(show_header=False, title=str(index_dir))
    tune_info = manifest.get("tune") or {}
    rows = {
        "images": f"{manifest['count']} encoded, {manifest['n_skipped']} skipped (see skipped.jsonl)",
        "kinds": ", ".join(f"{k}: {v}" for k, v in manifest.get("kinds", {}).items()),
        "model": f"{manifest['model_name']} ({manifest['model_spec']})",
        "fingerprint": manifest["model_fingerprint"],
        "dim": str(manifest["dim"]),
        "faiss": f"{manifest['faiss']['factory']} {json.dumps(manifest['faiss']['params'] or {})}",
        "store": _store_line(manifest.get("store")),
        "tuned recall": str(
            (tune_info.get("chosen") or {}).get(
                "recall", "not tuned (exact)" if manifest["faiss"]["factory"] == "Flat" else "-"
            )
        ),
        "gallery": manifest["gallery_root"],
        "updated": manifest.get("updated", ""),
    }
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)


def _store_line(store: dict | None) -> str:
    if not store:
        return "local FAISS index"
    where = f"{store.get('collection', '')} at {store.get('uri', '')}"
    return f"{store['backend']} {where} ({store.get('index_type')})"


def search(
    index_dir: Path = typer.Argument(..., help="Index directory."),
    text: str = typer.Argument(..., help="What to look for, e.g. 'This is a white Audi Sedan.'"),
    k: int = k_option(),
    kind: str | None = kind_option(),
    where: list[str] = where_option(),
    time_from: str | None = time_from_option(),
    time_to: str | None = time_to_option(),
    rerank: bool = rerank_option(),
    device: str = device_option(),
    as_json: bool = typer.Option(False, "--json", help="Print hits as JSON."),
) -> None:
    """Print the top-k images for a text query with their scores (filtered by kind and metadata;
    re-ranked if the index has a re-ranker)."""
    from trafficsearch.index.filters import parse_where
    from trafficsearch.search.opener import open_engine

    conditions = parse_where(where or [], time_from, time_to)
    device = pick_device(device)
    with err.status("opening index ..."):
        engine = open_engine(index_dir, device=device)
    hits = engine.search([text], k=k, kind=kind, where=conditions or None, rerank=rerank)[0]
    meta = engine.data.metadata
    records = [meta.record(meta.row_of_id(h.id)) for h in hits]
    if as_json:
        console.print_json(
            json.dumps(
                [
                    {**h.__dict__, "camera": r.get("camera"), "time": r.get("time"), "extra": r.get("extra")}
                    for h, r in zip(hits, records, strict=True)
                ]
            )
        )
        return
    table = Table(title=text)
    for column in ("#", "score", "name", "kind", "camera", "time", "path"):
        table.add_column(column)
    for rank, (hit, record) in enumerate(zip(hits, records, strict=True), start=1):
        table.add_row(
            str(rank),
            f"{hit.score:.4f}",
            hit.name,
            hit.kind,
            record.get("camera") or "",
            record.get("time") or "",
            str(engine.image_path(hit.id)),
        )
    console.print(table)


def submit(
    index_dir: Path = typer.Argument(..., help="Index directory over the test gallery."),
    queries: Path = typer.Option(..., "--queries", help="test_text.txt: one query per line."),
    out: Path = typer.Option(..., "--out", help="Submission JSON to write."),
    k: int = k_option(),
    kind: str | None = kind_option("Restrict every query to one kind"),
    rerank: bool = rerank_option(),
    device: str = device_option(),
) -> None:
    """Write the competition submission JSON: top-k image names per query line, in file order.

    An ensemble with a `rerank:` section re-ranks its top candidates with ITM unless --no-rerank is given."""
    from trafficsearch.data.labels import read_queries
    from trafficsearch.eval.submission import write_submission
    from trafficsearch.search.opener import open_engine

    texts = read_queries(queries)
    device = pick_device(device)
    with err.status("opening index ..."):
        engine = open_engine(index_dir, device=device)
    ranked: list[list[str]] = []
    chunk = 2048
    with Progress(console=err) as progress:
        task = progress.add_task("searching", total=len(texts))
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            ranked.extend(
                [h.name for h in hits] for hits in engine.search(part, k=k, kind=kind, rerank=rerank)
            )
            progress.advance(task, len(part))
    write_submission(out, texts, ranked)
    err.print(f"wrote {len(texts)} results ({len(set(texts))} distinct queries) to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
    app.command("search")(search)
    app.command("submit")(submit)
