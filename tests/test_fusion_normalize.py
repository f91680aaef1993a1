"""Normalisation and fusion on hand-made rows: l2, zscore, minmax, rrf values; weights; exact Gram stats."""

from __future__ import annotations

import numpy as np
import pytest

from trafficsearch.errors import ConfigError
from trafficsearch.search import fusion

ROW = np.array([[3.0, 4.0, 0.0], [1.0, 1.0, 2.0]], dtype=np.float32)


def test_l2_divides_by_the_row_norm() -> None:
    out = fusion.normalize(ROW, "l2")
    assert np.allclose(out[0], [0.6, 0.8, 0.0])
    assert np.allclose(out[1], np.array([1, 1, 2]) / np.sqrt(6))


def test_zscore_centres_and_scales() -> None:
    out = fusion.normalize(ROW, "zscore")
    mean, std = 7 / 3, np.std([3, 4, 0])
    assert np.allclose(out[0], (np.array([3, 4, 0]) - mean) / std, atol=1e-6)
    assert np.allclose(out.mean(axis=1), 0, atol=1e-6) and np.allclose(out.std(axis=1), 1, atol=1e-5)


def test_minmax_maps_to_unit_interval() -> None:
    out = fusion.normalize(ROW, "minmax")
    assert np.allclose(out[0], [0.75, 1.0, 0.0]) and np.allclose(out[1], [0.0, 0.0, 1.0])


def test_rrf_uses_ranks_with_k60_and_stable_ties() -> None:
    out = fusion.normalize(ROW, "rrf")
    assert np.allclose(out[0], [1 / 62, 1 / 61, 1 / 63])
    assert np.allclose(out[1], [1 / 62, 1 / 63, 1 / 61])  # tie: the earlier column ranks first
    assert np.allclose(fusion.normalize(ROW, "rrf", rrf_k=0)[0], [1 / 2, 1, 1 / 3])


def test_constant_row_does_not_divide_by_zero() -> None:
    flat = np.ones((1, 4), np.float32)
    for method in ("zscore", "minmax"):
        assert np.all(np.isfinite(fusion.normalize(flat, method)))


def test_fuse_is_the_weighted_mean() -> None:
    a = np.array([[1.0, 0.0]], np.float32)
    b = np.array([[0.0, 1.0]], np.float32)
    assert np.allclose(fusion.fuse([a, b], [1, 1]), [[0.5, 0.5]])
    assert np.allclose(fusion.fuse([a, b], [3, 1]), [[0.75, 0.25]])
    assert np.allclose(fusion.fuse([a, b], [0, 2]), b)
    with pytest.raises(ConfigError):
        fusion.fuse([a, b], [0, 0])
    with pytest.raises(ConfigError):
        fusion.fuse([a, b], [1])


def test_fusion_changes_the_winner_with_the_weights() -> None:
    a = np.array([[0.9, 0.1, 0.0]], np.float32)
    b = np.array([[0.0, 0.5, 0.4]], np.float32)
    assert fusion.fuse_rows([a, b], [1, 0], "l2").argmax() == 0
    assert fusion.fuse_rows([a, b], [1, 4], "l2").argmax() == 1


def test_gram_stats_match_the_full_row() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 6))
    queries = rng.normal(size=(3, 6))
    exact = fusion.row_stats(queries @ vectors.T)
    fast = fusion.gram_stats(queries, vectors.T @ vectors, vectors.sum(0), len(vectors))
    assert np.allclose(fast.norm, exact.norm) and np.allclose(fast.mean, exact.mean)
    assert np.allclose(fast.std, exact.std)


def test_unknown_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="normalization"):
        fusion.normalize(ROW, "softmax")
