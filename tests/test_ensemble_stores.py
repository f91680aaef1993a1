"""Ensemble members search their own vector store: a member pushed to Milvus (milvus-lite) gets the filter
conditions in union mode (candidates: N) and its ids are mapped back to reference rows, so the fused,
filtered hits are the ones the FAISS directories give."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from trafficsearch.index.stores.manage import detach_store, push_to_milvus
from trafficsearch.index.stores.milvus import MilvusStore
from trafficsearch.search.ensemble import build_ensemble_index
from trafficsearch.search.opener import open_engine
from trafficsearch.testing.color import ColorModel, write_color_vehicles

torch.set_num_threads(1)
MODELS = {"color0": ColorModel(0), "color2": ColorModel(2)}
KEEP = ["v00.jpg", "v03.jpg", "v05.jpg", "v08.jpg", "v11.jpg", "v17.jpg"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ens-store")
    write_color_vehicles(root / "g", root / "labels.txt", 24)
    config = {
        "name": "two-colours",
        "normalization": "l2",
        "candidates": 4,
        "members": [
            {"name": "a", "model": "color0", "weight": 1.0},
            {"name": "b", "model": "color2", "weight": 3.0},
        ],
    }
    (root / "ens.yaml").write_text(yaml.safe_dump(config))
    build_ensemble_index(
        root / "ens.yaml",
        root / "g",
        root / "idx",
        labels=root / "labels.txt",
        models=MODELS,
        progress=False,
        workers=0,
    )
    return root


def _search(engine, where):  # noqa: ANN001, ANN202
    return [
        [(h.name, round(h.score, 4)) for h in hits] for hits in engine.search(["red", "blue"], 3, where=where)
    ]


def test_a_member_on_milvus_gets_the_filter_and_fuses_the_same_hits(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = {"name": KEEP}
    local = open_engine(built / "idx", models=MODELS)
    expected, unfiltered = _search(local, where), _search(local, None)
    assert {n for hits in expected for n, _ in hits} <= set(KEEP)
    member_dir = built / "idx" / "members" / "b"
    push_to_milvus(member_dir, str(built / "m.db"), collection="member_b", progress=False)
    calls: list[dict | None] = []
    search = MilvusStore.search

    def spy(self, queries, k, where=None):  # noqa: ANN001, ANN202
        calls.append(where)
        return search(self, queries, k, where)

    monkeypatch.setattr(MilvusStore, "search", spy)
    try:
        engine = open_engine(built / "idx", models=MODELS)
        stores = [m._first.store.backend for m in engine.first_stage.members]  # type: ignore[union-attr]
        assert stores == ["faiss-dir", "milvus"]
        assert _search(engine, where) == expected
        assert calls and calls[-1] == {"name": KEEP}
        assert _search(engine, None) == unfiltered and calls[-1] is None
    finally:
        detach_store(member_dir)
