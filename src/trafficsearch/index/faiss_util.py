"""FAISS helpers: build an inner-product index from a factory string, save it atomically, and search it
with per-index settings (nprobe, efSearch) and an optional id selector for filtered search."""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from trafficsearch.errors import ConfigError

DEFAULT_FACTORY = "Flat"
# Training on more than this many vectors buys little and costs minutes.
MAX_TRAIN = 200_000
# Vectors converted to float32 and added per step when building from a (memory-mapped) file.
ADD_CHUNK = 65_536


def build_faiss(
    vectors: np.ndarray, factory: str = DEFAULT_FACTORY, seed: int = 0, max_train: int = MAX_TRAIN
) -> faiss.Index:
    """Create, train (on a seeded sample) and fill an inner-product index; ConfigError on a bad factory."""
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    index = new_faiss(data, factory, seed, max_train)
    if len(data):
        index.add(data)
    return index


def add_vectors(index: faiss.Index, vectors: np.ndarray, chunk: int = ADD_CHUNK) -> None:
    """Add in float32 chunks, so a memory-mapped fp16 file is never copied whole."""
    for start in range(0, len(vectors), chunk):
        index.add(np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32))


def train_sample(vectors: np.ndarray, max_train: int = MAX_TRAIN, seed: int = 0) -> np.ndarray:
    """A seeded sample of at most `max_train` rows as float32 (rows read in file order)."""
    n = len(vectors)
    if n <= max_train:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, max_train, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def new_faiss(
    vectors: np.ndarray, factory: str = DEFAULT_FACTORY, seed: int = 0, max_train: int = MAX_TRAIN
) -> faiss.Index:
    """Create and train (on a sample of `vectors`) an empty inner-product index; ConfigError when bad."""
    n, dim = vectors.shape
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(
            f"invalid FAISS factory string {factory!r}: {_first_line(exc)}", field="factory"
        ) from None
    if not index.is_trained:
        try:
            index.train(train_sample(vectors, max_train, seed))
        except RuntimeError as exc:
            raise ConfigError(
                f"FAISS index {factory!r} cannot be trained on {n} vectors: {_first_line(exc)}; "
                "use fewer lists/centroids or the exact 'Flat' index",
                field="factory",
            ) from None
    return index


def is_flat(factory: str) -> bool:
    return factory.strip() == "Flat"


def write_flat(path: Path, vectors: np.ndarray, chunk: int = ADD_CHUNK) -> None:
    """Write an IndexFlatIP file straight from `vectors` in chunks, never holding the index in memory.

    The header comes from FAISS serialising an empty IndexFlatIP of the same dim; only its ntotal and
    the codes length change (tests compare the bytes with faiss.serialize_index of the same index).
    """
    n, dim = vectors.shape
    header = bytearray(faiss.serialize_index(faiss.IndexFlatIP(dim)).tobytes())
    # "IxFI", int32 d, int64 ntotal, 2 x int64 dummies, bool is_trained, int32 metric, uint64 n floats
    struct.pack_into("<q", header, 8, n)
    struct.pack_into("<Q", header, len(header) - 8, n * dim)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(bytes(header))
        for start in range(0, n, chunk):
            handle.write(np.ascontiguousarray(vectors[start : start + chunk], dtype="<f4").tobytes())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_faiss(index: faiss.Index, path: Path) -> None:
    """faiss.write_index to a temporary beside `path`, then rename (atomic; no in-memory copy)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    os.replace(tmp, path)


def load_faiss(path: Path, mmap: bool = False) -> faiss.Index:
    """Read an index; `mmap` maps flat codes / inverted lists from the file instead of copying them."""
    if mmap:
        try:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:  # a type that cannot be mapped: read it normally
            pass
    return faiss.read_index(str(path))


def describe(index: faiss.Index) -> str:
    """'flat', 'ivf', 'hnsw' or the class name: what kind of settings the index takes."""
    inner = _inner(index)
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexFlat):
        return "flat"
    return type(inner).__name__


def _inner(index: faiss.Index) -> faiss.Index:
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        return faiss.downcast_index(index.index)
    if isinstance(index, faiss.IndexRefine):
        return faiss.downcast_index(index.base_index)
    return index


def search_parameters(
    index: faiss.Index, params: dict[str, Any] | None, selector: faiss.IDSelector | None = None
) -> faiss.SearchParameters:
    """The SearchParameters object for this index type, carrying tuned settings and the selector.

    FAISS ignores an index's own nprobe/efSearch once a params object is passed, so both always travel here.
    """
    params = params or {}
    kind = describe(index)
    if kind == "ivf":
        sp: faiss.SearchParameters = faiss.SearchParametersIVF()
        sp.nprobe = int(params.get("nprobe", _inner(index).nprobe))
    elif kind == "hnsw":
        sp = faiss.SearchParametersHNSW()
        sp.efSearch = int(params.get("efSearch", _inner(index).hnsw.efSearch))
    else:
        sp = faiss.SearchParameters()
    if selector is not None:
        sp.sel = selector
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexPreTransform):
        wrapper = faiss.SearchParametersPreTransform()
        wrapper.index_params = sp
        wrapper.sel = selector
        wrapper._keep = sp  # the C++ side holds a raw pointer: keep the Python object alive
        return wrapper
    return sp


def apply_parameters(index: faiss.Index, params: dict[str, Any] | None) -> None:
    """Set tuned settings on the index itself (for callers that search without a params object)."""
    for key, value in (params or {}).items():
        faiss.ParameterSpace().set_index_parameter(index, key, value)


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    params: dict[str, Any] | None = None,
    selector: faiss.IDSelector | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the top k per query; rows are -1 where fewer than k vectors qualify."""
    k = max(1, min(int(k), index.ntotal)) if index.ntotal else 1
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    sp = search_parameters(index, params, selector)
    return index.search(queries, k, params=sp)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    for line in text:
        if "Error" in line or "error" in line or "should" in line:
            return line.strip()
    return text[-1].strip() if text else type(exc).__name__
