"""Ensemble members search their own vector store: a member pushed to Milvus (milvus-lite) gets the filter
conditions in union mode (candidates: N) and its ids are mapped back to reference rows, so the fused,
filtered hits are the ones the FAISS directories give."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trafficsearch.index.stores.manage import detach_store, push_to_milvus
from trafficsearch.index.stores.milvus import MilvusStore
from trafficsearch.search.opener import open_engine
from trafficsearch.testing.color import COLOR_MODELS, build_color_ensemble

torch.set_num_threads(1)
MODELS = COLOR_MODELS
KEEP = ["v00.jpg", "v03.jpg", "v05.jpg", "v08.jpg", "v11.jpg", "v17.jpg"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_color_ensemble(tmp_path_factory.mktemp("ens-store"), candidates=4)


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
