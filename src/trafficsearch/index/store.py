"""Open a committed index and check that its parts agree before anything is searched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from trafficsearch.errors import IndexError_
from trafficsearch.index.faiss_util import load_faiss
from trafficsearch.index.files import read_manifest
from trafficsearch.index.metadata import Metadata


@dataclass
class IndexData:
    dir: Path
    manifest: dict[str, Any]
    vectors: np.ndarray  # [count, dim] memory-mapped: float32 under a Flat index, else float16
    faiss: faiss.Index
    metadata: Metadata

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def gallery_root(self) -> Path:
        return Path(self.manifest["gallery_root"])


def _part(index_dir: Path, manifest: dict[str, Any], key: str) -> Path:
    name = manifest.get("files", {}).get(key)
    path = index_dir / str(name)
    if not name or not path.is_file():
        raise IndexError_(
            f"the manifest names {key} file {name!r} but it is missing; rebuild or run "
            "`trafficsearch index merge`",
            path=index_dir,
            field=f"files.{key}",
        )
    return path


def load_vectors(index_dir: Path, manifest: dict[str, Any]) -> np.ndarray:
    path = _part(index_dir, manifest, "vectors")
    try:
        vectors = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise IndexError_(f"vectors file is unreadable: {exc}", path=path) from None
    expected = str(manifest.get("vectors_dtype", "float16"))
    if vectors.dtype.name != expected:
        raise IndexError_(
            f"vectors file holds {vectors.dtype.name}, the manifest says {expected}",
            path=path,
            field="vectors_dtype",
        )
    return vectors


def open_index(index_dir: str | Path) -> IndexData:
    """Load manifest, vectors, FAISS index and metadata; IndexError_ unless counts and dims all match."""
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    count, dim = int(manifest["count"]), int(manifest["dim"])
    vectors = load_vectors(index_dir, manifest)
    if vectors.shape != (count, dim):
        raise IndexError_(
            f"vectors have shape {vectors.shape}, the manifest says ({count}, {dim})",
            path=index_dir,
            field="count",
        )
    faiss_path = _part(index_dir, manifest, "faiss")
    try:
        index = load_faiss(faiss_path, mmap=True)
    except RuntimeError as exc:
        raise IndexError_(
            f"FAISS index is unreadable: {str(exc).strip().splitlines()[-1]}", path=faiss_path
        ) from None
    if index.ntotal != count or index.d != dim:
        raise IndexError_(
            f"FAISS index holds {index.ntotal} vectors of dim {index.d}, the manifest says "
            f"{count} of dim {dim}",
            path=faiss_path,
            field="count",
        )
    metadata = Metadata(_part(index_dir, manifest, "metadata"))
    if metadata.count != count:
        raise IndexError_(
            f"metadata has {metadata.count} images, the manifest says {count}",
            path=metadata.path,
            field="count",
        )
    return IndexData(index_dir, manifest, vectors, index, metadata)
