"""The index directory and its commit protocol.

    INDEX_DIR/plan.json              build config + image list + shard ranges (written before encoding)
    INDEX_DIR/shards/shard-NNNNN.safetensors   one finished shard: fp16 vectors, ids, sizes, skipped
    INDEX_DIR/vectors.<gen>.npy      merged fp16 vectors, one row per encoded image
    INDEX_DIR/metadata.<gen>.sqlite  image metadata (id, row, name, path, kind, width, height, camera, time)
    INDEX_DIR/faiss.<gen>.index      the FAISS index over the rows
    INDEX_DIR/skipped.jsonl          images that could not be read, with the reason
    INDEX_DIR/manifest.json          written last: names the generation files above

Merged files carry a generation tag and are only referenced by the manifest, which is replaced atomically
last: a crash at any moment leaves either the old complete index or the new one, never a mix that loads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trafficsearch.errors import IndexError_, TrafficSearchError

FORMAT = "trafficsearch-index"
FORMAT_VERSION = 1
PLAN = "plan.json"
MANIFEST = "manifest.json"
SKIPPED = "skipped.jsonl"
SHARDS = "shards"
_GEN_FILE = re.compile(r"^(vectors|metadata|faiss)\.([0-9a-f]{12})\.(npy|sqlite|index)$")
# Keys of a model manifest that describe where/when it was loaded, not what it computes.
# ("checkpoint" is the folder a checkpoint was read from; its weights are identified by weights_sha256.)
_VOLATILE_MODEL_KEYS = frozenset(
    {"created", "path", "spec", "checkpoint", "checkpoint_path", "device", "loaded_from"}
)


def new_generation() -> str:
    return uuid.uuid4().hex[:12]


def gen_file(kind: str, gen: str) -> str:
    suffix = {"vectors": "npy", "metadata": "sqlite", "faiss": "index"}[kind]
    return f"{kind}.{gen}.{suffix}"


def shard_path(index_dir: Path, shard: int) -> Path:
    return index_dir / SHARDS / f"shard-{shard:05d}.safetensors"


def model_fingerprint(model_manifest: dict[str, Any]) -> str:
    """A hash of what the model computes (weights, architecture, preprocessing), not of where it lives."""
    stable = {k: v for k, v in model_manifest.items() if k not in _VOLATILE_MODEL_KEYS}
    blob = json.dumps(stable, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_fingerprint(model: Any, manifest: dict[str, Any], index_dir: Path, what: str = "model") -> None:
    """The one check that `model` computes what the index at `index_dir` was built with (and its dim)."""
    if model_fingerprint(dict(model.manifest())) != manifest["model_fingerprint"]:
        raise TrafficSearchError(
            f"{what} {getattr(model, 'name', '?')!r} is not the model this index was built with "
            f"({manifest['model_name']!r}, fingerprint {manifest['model_fingerprint']}); "
            "rebuild the index or pass the same model",
            path=Path(index_dir) / MANIFEST,
            field="model_fingerprint",
        )
    dim = manifest.get("dim")
    if dim is not None and int(model.embed_dim) != int(dim):
        raise TrafficSearchError(f"model dim {model.embed_dim} != index dim {dim}", path=index_dir)


def read_manifest(index_dir: Path) -> dict[str, Any]:
    """The committed manifest, or a clear error when the directory holds no finished index."""
    path = index_dir / MANIFEST
    if not path.is_file():
        hint = (
            "the build has not finished: run the same `trafficsearch index` command again to resume, or "
            "`trafficsearch index merge` once every rank is done"
            if (index_dir / PLAN).is_file()
            else "not an index directory (build one with `trafficsearch index GALLERY --model ... --out DIR`)"
        )
        raise IndexError_(f"no manifest.json: {hint}", path=index_dir)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexError_(f"manifest is not readable JSON: {exc}", path=path) from None
    if manifest.get("format") != FORMAT:
        raise IndexError_(f"not a {FORMAT} manifest", path=path, field="format")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexError_(
            f"index format version {manifest.get('format_version')} is not supported (this version reads "
            f"{FORMAT_VERSION}); rebuild the index",
            path=path,
            field="format_version",
        )
    return manifest


def cleanup_stale(index_dir: Path, keep: set[str]) -> None:
    """Delete generation files the committed manifest no longer names (and leftover temporaries)."""
    for path in index_dir.iterdir():
        name = path.name
        if (_GEN_FILE.match(name) and name not in keep) or (name.startswith(".") and name.endswith(".tmp")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@contextlib.contextmanager
def locked(index_dir: Path) -> Iterator[None]:
    """Serialise merges/tunes/adds on one index directory (ranks may finish at the same moment)."""
    index_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(index_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
