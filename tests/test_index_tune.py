"""Approximate search is chosen only with measured recall: the saved setting really reaches the target."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from trafficsearch.index import build_index, open_index, tune_vectors
from trafficsearch.index.faiss_util import build_faiss, search
from trafficsearch.index.tune import default_candidates, recall_at_k
from trafficsearch.search.opener import open_engine


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_recall_at_k_counts_overlap() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, -1], [5, 6, 7, 8]])
    assert recall_at_k(found, truth) == pytest.approx((2 / 4 + 1) / 2)


def test_tune_picks_a_setting_that_reaches_the_target() -> None:
    faiss.omp_set_num_threads(1)
    vectors = clustered(6000, 32, 40, seed=0)
    queries = clustered(200, 32, 40, seed=0)[:200] + 0.01
    candidates = [
        ("Flat", None, [0]),
        ("IVF64,Flat", "nprobe", [1, 2, 4, 8, 16, 32, 64]),
        ("HNSW16", "efSearch", [8, 16, 32, 64, 128]),
    ]
    result = tune_vectors(vectors, queries, k=10, target=0.95, candidates=candidates, repeats=1)
    assert result.best.recall >= 0.95
    assert {t.factory for t in result.trials} == {"Flat", "IVF64,Flat", "HNSW16"}
    # Each sweep measured its knob's values in order and stopped at the first that reached the target;
    # exact search (Flat, no knob) has recall 1; the best is the fastest trial that reached the target.
    for factory, knob, values in candidates:
        trials = [t for t in result.trials if t.factory == factory]
        assert [t.params for t in trials] == [{knob: v} if knob else {} for v in values[: len(trials)]]
        assert all(t.recall < 0.95 for t in trials[:-1])
        assert trials[-1].recall >= 0.95 or len(trials) == len(values)
    assert [t.recall for t in result.trials if t.factory == "Flat"] == [1.0]
    ivf = [t.recall for t in result.trials if t.factory == "IVF64,Flat"]
    assert ivf == sorted(ivf) and len(ivf) > 1  # more probed lists find a superset of the neighbours
    reached = [t for t in result.trials if t.recall >= 0.95]
    assert result.best.ms_per_query == min(t.ms_per_query for t in reached)
    # Independently re-measure the chosen index with its saved parameters against brute-force numpy.
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    _, found = search(result.index, queries, 10, result.best.params)
    assert recall_at_k(found, truth) >= 0.95
    # A sweep stops at the first setting that reaches the target.
    ivf = [t for t in result.trials if t.factory == "IVF64,Flat"]
    assert all(t.recall < 0.95 for t in ivf[:-1])


def test_candidates_respect_training_size() -> None:
    for factory, knob, values in default_candidates(5000, 64):
        if factory.startswith("IVF"):
            nlist = int(factory[3:].split(",")[0])
            assert 5000 >= 30 * nlist and max(values) <= nlist and knob == "nprobe"
    assert not any("PQ" in f for f, _, _ in default_candidates(5000, 64))
    assert any("PQ16" in f for f, _, _ in default_candidates(50_000, 64))


def test_tune_index_dir_saves_choice_and_measurement(tmp_path: Path) -> None:
    from trafficsearch.index.tune import tune_index_dir
    from trafficsearch.testing.color import ColorModel, make_color_gallery

    colors = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple"]
    make_color_gallery(tmp_path / "g", {f"{i:03d}.jpg": colors[i % len(colors)] for i in range(24)})
    model = ColorModel()
    build_index(tmp_path / "g", tmp_path / "idx", model, workers=0, progress=False)
    result, manifest = tune_index_dir(tmp_path / "idx", [f"a {c} car" for c in colors] * 3, model=model)
    assert manifest["tune"]["chosen"]["recall"] >= 0.95 and manifest["tune"]["n_queries"] == len(colors)
    assert manifest["faiss"]["factory"] == result.best.factory
    data = open_index(tmp_path / "idx")
    assert data.faiss.ntotal == 24
    engine = open_engine(tmp_path / "idx", model=model)
    assert engine.info()["tuned_recall"] == manifest["tune"]["chosen"]["recall"]


def test_bad_factory_is_a_config_error() -> None:
    from trafficsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="factory"):
        build_faiss(np.zeros((10, 8), np.float32), "NotAnIndex")
    with pytest.raises(ConfigError, match="cannot be trained"):
        build_faiss(clustered(10, 8, 2, seed=1), "IVF64,Flat")
