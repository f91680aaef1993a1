"""The re-ranker's image tokens stored with an index, so a query runs only the ITM head on its candidates.

ITM re-ranking attends to the BLIP ViT's output tokens of each candidate image. Encoding them at query time
(decode K images + run the ViT) is most of a cold re-rank; stored, a query reads K rows of a memory map.
BLIP-small (64 px, patch 8, width 128): 65 tokens x 128 x fp16 = 16,640 bytes per image.

    INDEX_DIR/itm_tokens.npy     fp16 [count, tokens, width], rows in the index's row order
    manifest.json "itm_tokens"   {file, shape, model_fingerprint, vectors}: the model that wrote them and
                                 the vectors generation whose row order they follow

`load_itm_tokens` returns None (the caller encodes on the fly) when nothing is stored, the model is not the
one that wrote them, or the index was merged again since (other rows).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trafficsearch.errors import IndexError_
from trafficsearch.index.files import MANIFEST, locked, model_fingerprint, read_manifest
from trafficsearch.index.images import SkipImage, load_rgb
from trafficsearch.ioutil import atomic_write_json

TOKENS_FILE = "itm_tokens.npy"
KEY = "itm_tokens"


def tokens_fingerprint(model: Any) -> str:
    return model_fingerprint(dict(model.manifest()))


def _load_pixels(root: Path, rel: str, transform: Any) -> torch.Tensor:
    try:
        image, _, _ = load_rgb(root / rel)
    except SkipImage:  # as the re-rank stage does: an unreadable image scores as blank pixels
        from PIL import Image

        image = Image.new("RGB", (8, 8))
    return transform(image)


def write_itm_tokens(
    index_dir: str | Path, model: Any, *, batch_size: int = 64, progress: bool = True
) -> dict[str, Any]:
    """Encode every indexed image's ITM tokens into INDEX_DIR/itm_tokens.npy and record them in the manifest.

    Written to a temporary file and renamed, then the manifest is replaced: a crash leaves the old state.
    """
    from rich.progress import Progress

    from trafficsearch.index.metadata import Metadata

    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    metadata = Metadata(index_dir / manifest["files"]["metadata"])
    root = Path(manifest["gallery_root"])
    transform = model.image_transform()
    count = int(manifest["count"])
    tmp = index_dir / f".{TOKENS_FILE}.{os.getpid()}.tmp"
    out: np.ndarray | None = None
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("ITM image tokens", total=count)
            for start in range(0, count, batch_size):
                stop = min(count, start + batch_size)
                pixels = torch.stack(
                    [_load_pixels(root, metadata.paths[r], transform) for r in range(start, stop)]
                )
                tokens = model.itm_image_tokens(pixels).to(torch.float16).numpy()
                if out is None:
                    out = np.lib.format.open_memmap(
                        tmp, mode="w+", dtype=np.float16, shape=(count, *tokens.shape[1:])
                    )
                out[start:stop] = tokens
                bar.advance(task, stop - start)
        if out is None:
            raise IndexError_("the index is empty: no ITM tokens to store", path=index_dir)
        shape = list(out.shape)
        out.flush()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        del out
        with locked(index_dir):
            current = read_manifest(index_dir)
            if current["files"]["vectors"] != manifest["files"]["vectors"]:
                raise IndexError_(
                    "the index was merged again while its ITM tokens were encoded; run it again",
                    path=index_dir,
                )
            os.replace(tmp, index_dir / TOKENS_FILE)
            entry = {
                "file": TOKENS_FILE,
                "shape": shape,
                "dtype": "float16",
                "model_fingerprint": tokens_fingerprint(model),
                "vectors": current["files"]["vectors"],
            }
            atomic_write_json(index_dir / MANIFEST, {**current, KEY: entry})
        return entry
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def load_itm_tokens(index_dir: str | Path, manifest: dict[str, Any], model: Any) -> np.ndarray | None:
    """The stored tokens as a read-only memory map, or None when they cannot be used for `model`."""
    entry = manifest.get(KEY)
    if not entry:
        return None
    if entry.get("model_fingerprint") != tokens_fingerprint(model):
        return None
    if entry.get("vectors") != manifest.get("files", {}).get("vectors"):
        return None
    path = Path(index_dir) / str(entry.get("file"))
    try:
        tokens = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if list(tokens.shape) != list(entry.get("shape", [])) or len(tokens) != int(manifest["count"]):
        return None
    return tokens


def has_itm_tokens(index_dir: str | Path, model: Any) -> bool:
    """Whether the committed index already stores usable tokens of `model` (a rerun skips them)."""
    index_dir = Path(index_dir)
    return load_itm_tokens(index_dir, read_manifest(index_dir), model) is not None
