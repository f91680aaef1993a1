"""The blocked exact top-k (index/exact.py) against a numpy oracle: full gallery, filtered subsets, fp16
storage, blocks smaller than k, and the FAISS-layout wrapper the engine calls."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from trafficsearch.index.exact import block_rows, flat_storage, search_exact, topk


def oracle(vectors: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None):
    """Stable full sort of float64 scores: ties-free data has one right answer."""
    ids = np.arange(len(vectors)) if rows is None else rows
    scores = queries.astype(np.float64) @ np.asarray(vectors[ids], dtype=np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((5_000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((7, 32)).astype(np.float32)
    return vectors, queries


@pytest.mark.parametrize("block", [None, 997, 5])
def test_topk_equals_numpy_oracle(data, block) -> None:
    vectors, queries = data
    scores, rows = topk(vectors, queries, 10, block=block)
    want_s, want_r = oracle(vectors, queries, 10)
    np.testing.assert_array_equal(rows, want_r)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)


def test_fp16_storage_equals_oracle_on_the_same_fp16_vectors(data) -> None:
    vectors, queries = data
    half = vectors.astype(np.float16)
    _, rows = topk(half, queries, 10, block=1024)
    np.testing.assert_array_equal(rows, oracle(half.astype(np.float32), queries, 10)[1])


def test_filtered_subset_returns_gallery_rows_of_the_subset_only(data) -> None:
    vectors, queries = data
    subset = np.flatnonzero(np.arange(len(vectors)) % 7 == 3)
    scores, rows = topk(vectors, queries, 10, rows=subset, block=100)
    want_s, want_r = oracle(vectors, queries, 10, subset)
    np.testing.assert_array_equal(rows, want_r)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)
    assert np.isin(rows, subset).all()
    # fewer allowed rows than k: all of them, best first
    small = np.array([4, 17, 4000])
    _, rows = topk(vectors, queries, 10, rows=small)
    np.testing.assert_array_equal(rows, oracle(vectors, queries, 3, small)[1])


def test_ties_go_to_the_lower_row_across_blocks() -> None:
    vectors = np.zeros((50, 4), np.float32)
    vectors[:, 0] = 1.0  # every row scores the same
    _, rows = topk(vectors, np.array([[1, 0, 0, 0]], np.float32), 5, block=7)
    np.testing.assert_array_equal(rows[0], [0, 1, 2, 3, 4])


def test_search_exact_reads_the_flat_index_storage_and_pads_like_faiss(data) -> None:
    vectors, queries = data
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    view = flat_storage(index)
    assert view is not None and view.shape == vectors.shape and view.dtype == np.float32
    np.testing.assert_array_equal(view, vectors)
    _, faiss_rows = index.search(queries, 10)
    _, rows = search_exact(index, vectors.astype(np.float16), queries, 10)
    np.testing.assert_array_equal(rows, faiss_rows)
    scores, rows = search_exact(index, vectors, queries, 10, rows=np.array([1, 2]))
    assert (rows[:, 2:] == -1).all() and np.isinf(scores[:, 2:]).all()
    assert set(rows[:, :2].ravel()) == {1, 2}
    # not a plain Flat index: no storage view, the fp16 vectors are scanned instead
    hnsw = faiss.IndexHNSWFlat(vectors.shape[1], 8, faiss.METRIC_INNER_PRODUCT)
    assert flat_storage(hnsw) is None


def test_block_size_keeps_the_score_block_bounded() -> None:
    assert block_rows(1) * 1 >= block_rows(32) * 32 >= 1 << 20
    assert block_rows(10**9) >= 1


def test_bad_query_shape_is_refused(data) -> None:
    vectors, _ = data
    with pytest.raises(ValueError, match="dim"):
        topk(vectors, np.zeros((1, 5), np.float32), 3)


def _unaligned_copy(vectors: np.ndarray) -> np.ndarray:
    """`vectors` at an odd byte offset, as a memory-mapped FAISS Flat file holds its codes."""
    raw = np.zeros(vectors.nbytes + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, np.float32, count=vectors.size, offset=1).reshape(vectors.shape)
    assert not unaligned.flags.aligned
    unaligned[:] = vectors
    return unaligned


def test_unaligned_storage_like_a_mapped_faiss_file_equals_the_oracle(data, tmp_path) -> None:
    """A memory-mapped FAISS Flat file holds its float32 codes at an odd byte offset; the kernel copies
    such blocks aligned (numpy's matmul skips BLAS otherwise) and must still return the oracle's top k."""
    vectors, queries = data
    unaligned = _unaligned_copy(vectors)
    scores, rows = topk(unaligned, queries, 10, block=997)
    want_s, want_r = oracle(vectors, queries, 10)
    np.testing.assert_array_equal(rows, want_r)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    path = tmp_path / "flat.index"
    faiss.write_index(index, str(path))
    mapped = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
    storage = flat_storage(mapped)
    assert storage is not None
    np.testing.assert_array_equal(search_exact(mapped, vectors, queries, 10)[1], want_r)


def test_copied_blocks_stay_cache_sized_and_still_equal_the_oracle(monkeypatch) -> None:
    """Unaligned (or fp16) storage is copied block by block; the default block is capped at COPY_BYTES so
    the copy is still in cache when the sgemm reads it. Several capped blocks must give the oracle's top k."""
    from trafficsearch.index import exact

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((5000, 64)).astype(np.float32)
    queries = rng.standard_normal((3, 64)).astype(np.float32)
    unaligned = _unaligned_copy(vectors)
    seen: list[int] = []
    real_select = exact._select

    def counting(scores, rows, k):
        seen.append(1)
        return real_select(scores, rows, k)

    monkeypatch.setattr(exact, "COPY_BYTES", 1024 * 64 * 4)  # 1,024 rows of dim 64 per copied block
    monkeypatch.setattr(exact, "_select", counting)
    _, rows = exact.topk(unaligned, queries, 10)
    np.testing.assert_array_equal(rows, oracle(vectors, queries, 10)[1])
    assert len(seen) == 5  # ceil(5000 / 1024) blocks, not one block of the whole gallery
    seen.clear()
    exact.topk(vectors, queries, 10)  # aligned float32 is scanned in place: no cap, one block
    assert len(seen) == 1
