"""FAISS helpers: build an inner-product index from a factory string, save it atomically, and search it
with per-index settings (nprobe, efSearch) and an optional id selector for filtered search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from trafficsearch.errors import ConfigError
from trafficsearch.ioutil import atomic_write_bytes

DEFAULT_FACTORY = "Flat"
# Training on more than this many vectors buys little and costs minutes.
MAX_TRAIN = 200_000


def build_faiss(
    vectors: np.ndarray, factory: str = DEFAULT_FACTORY, seed: int = 0, max_train: int = MAX_TRAIN
) -> faiss.Index:
    """Create, train (on a seeded sample) and fill an inner-product index; ConfigError on a bad factory."""
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = data.shape
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(
            f"invalid FAISS factory string {factory!r}: {_first_line(exc)}", field="factory"
        ) from None
    if not index.is_trained:
        sample = data
        if n > max_train:
            rng = np.random.default_rng(seed)
            sample = data[np.sort(rng.choice(n, max_train, replace=False))]
        try:
            index.train(sample)
        except RuntimeError as exc:
            raise ConfigError(
                f"FAISS index {factory!r} cannot be trained on {n} vectors: {_first_line(exc)}; "
                "use fewer lists/centroids or the exact 'Flat' index",
                field="factory",
            ) from None
    if n:
        index.add(data)
    return index


def add_vectors(index: faiss.Index, vectors: np.ndarray) -> None:
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))


def save_faiss(index: faiss.Index, path: Path) -> None:
    atomic_write_bytes(path, faiss.serialize_index(index).tobytes())


def load_faiss(path: Path) -> faiss.Index:
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
