"""Systems built from member indexes: an ensemble over existing indexes, cold latency, and the comparison the
demo prints (full system vs the best single model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trafficsearch.experiments.demo import FULL_SYSTEM, compare_with_best_single
from trafficsearch.experiments.systems import (
    MemberIndex,
    ModelCache,
    SplitData,
    cold_caches,
    evenly,
    index_member,
    latency_texts,
    open_fused,
    open_single,
    score_system,
)
from trafficsearch.search import fusion
from trafficsearch.testing.color import ColorModel

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def split_data(color_vehicles) -> SplitData:
    vehicles = color_vehicles(16, text="This is a {color} Audi.")
    return SplitData("val", vehicles.records, vehicles.images, vehicles.labels)


@pytest.fixture(scope="module")
def members(split_data: SplitData, tmp_path_factory: pytest.TempPathFactory) -> tuple[list, ModelCache]:
    root = tmp_path_factory.mktemp("members")
    models = ModelCache()
    out = []
    for name, variant in (("a", 0), ("b", 2)):
        checkpoint = root / f"ckpt-{name}"  # a path key: the cache hands out the in-memory model
        models.models[str(checkpoint.resolve())] = ColorModel(variant)
        index = index_member(checkpoint, split_data, root / "index" / name, models, workers=0, progress=False)
        out.append(MemberIndex(name, checkpoint, index, weight=1.0 + variant))
    return out, models


def test_fused_engine_over_existing_indexes_ranks_by_the_fused_scores(
    split_data: SplitData, members: tuple[list, ModelCache], tmp_path: Path
) -> None:
    indexes, models = members
    engine = open_fused(tmp_path / "ens", indexes, models, normalization="zscore")
    assert (tmp_path / "ens" / "ensemble.yaml").is_file()
    assert not (tmp_path / "ens" / "members").exists()  # nothing re-encoded: the yaml points at the indexes
    text = "This is a blue Audi."
    rows = []
    for member in indexes:
        single = open_single(member, models)
        vectors = np.asarray(single.data.vectors, dtype=np.float32)
        rows.append(models.get(member.checkpoint).encode_texts([text]).numpy() @ vectors.T)
    fused = fusion.fuse_rows(rows, [1.0, 3.0], "zscore")[0]
    expected = [
        open_single(indexes[0], models).data.metadata.names[i] for i in np.argsort(-fused, kind="stable")
    ]
    got = [h.name for h in engine.search([text], k=16)[0]]
    assert got[:4] == expected[:4]
    # one query-vector cache per model, shared by the single engine and the fused one: encoded once
    single = open_single(indexes[0], models)
    assert single.cache is engine.model.members[0].cache
    calls = models.get(indexes[0].checkpoint).text_calls
    single.search([text], k=3)
    assert models.get(indexes[0].checkpoint).text_calls == calls


def test_score_system_rows_latency_and_cold_caches(
    split_data: SplitData, members: tuple[list, ModelCache], tmp_path: Path
) -> None:
    indexes, models = members
    engine = open_fused(tmp_path / "ens", indexes, models, normalization="l2")
    rows, ranked = score_system("fusion", engine, split_data, latency_queries=3)
    assert [r["rule"] for r in rows] == ["equal", "contain"]
    assert len(ranked) == len(split_data.records) and all(len(r) == 10 for r in ranked)
    for row in rows:
        assert row["overall"]["n_queries"] == 16 and row["latency_ms"]["p50"] > 0
    # colour models find the right colour: every query's top hit is relevant
    assert rows[0]["overall"]["recall"]["1"] == 1.0
    assert len(latency_texts(split_data, 3)) == 3 and len(set(latency_texts(split_data, 3))) == 3
    cached = [len(m.cache) for m in engine.model.members]
    assert min(cached) > 0  # the full search cached its query vectors
    with cold_caches(engine):
        assert all(len(m.cache) == 0 for m in engine.model.members) and engine.cache is None  # fused
        calls = models.get(indexes[0].checkpoint).text_calls
        engine.search([split_data.records[0].text], k=3)
        assert models.get(indexes[0].checkpoint).text_calls == calls + 1  # cold: encoded again
    # afterwards the shared caches hold what they held: the next system re-encodes nothing
    assert [len(m.cache) for m in engine.model.members] == cached
    calls = models.get(indexes[0].checkpoint).text_calls
    score_system("again", engine, split_data, latency_queries=2)
    assert models.get(indexes[0].checkpoint).text_calls == calls + 2  # only the two cold probes


def test_query_subset_searches_fewer_texts_over_the_whole_gallery(
    split_data: SplitData, members: tuple[list, ModelCache]
) -> None:
    from dataclasses import replace

    indexes, models = members
    assert evenly(list(range(10)), 4) == [0, 2, 5, 7] and evenly([1, 2], None) == [1, 2]
    subset = replace(split_data, queries=evenly(split_data.records, 5))
    engine = open_single(indexes[0], models)
    rows, hits = score_system("a", engine, subset)
    assert rows[0]["overall"]["n_queries"] == 5 and len(hits) == 5
    # each query still ranks the whole 16-image gallery (two images per colour): both same-colour images lead,
    # including the one whose record is not among the queries, and the metric judges against all 16
    assert rows[0]["overall"]["recall"]["1"] == 1.0
    for query, row in zip(subset.query_records, hits, strict=True):
        assert {h.name for h in row[:2]} == {r.image for r in split_data.records if r.text == query.text}
    assert {h.name for row in hits for h in row} - {r.image for r in subset.query_records}
    full_rows, _ = score_system("a", engine, split_data)
    assert full_rows[0]["overall"]["n_queries"] == 16


def test_a_query_count_below_one_is_refused_before_any_work(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from trafficsearch.cli import demo_commands
    from trafficsearch.experiments.systems import load_split_data

    with pytest.raises(ValueError, match="n_queries must be at least 1"):
        load_split_data(tmp_path, "val", 0)
    app = typer.Typer()
    demo_commands.register(app)
    app.command("noop")(lambda: None)  # two commands: the demo is invoked by name, as on the real CLI
    result = CliRunner().invoke(app, ["demo", "--val-queries", "-5", "--work", str(tmp_path / "demo")])
    assert result.exit_code == 2 and "--val-queries" in result.output
    assert not (tmp_path / "demo").exists()  # refused before the demo started


def _row(split: str, system: str, rule: str, map_official: float, map_at_k: float) -> dict:
    return {
        "split": split,
        "system": system,
        "rule": rule,
        "overall": {"map_official": map_official, "map_at_k": map_at_k},
    }


def test_comparison_picks_the_best_single_model_per_split() -> None:
    rows = []
    for rule in ("equal", "contain"):
        rows += [
            _row("val", "clip", rule, 0.20, 0.10),
            _row("val", "blip", rule, 0.25, 0.08),  # higher official mAP, lower mAP/min(R,10)
            _row("val", "fusion (zscore)", rule, 0.26, 0.12),
            _row("val", FULL_SYSTEM, rule, 0.30, 0.15),
        ]
    out = compare_with_best_single(rows, ["clip", "blip"])
    assert out["val"]["best_single"] == "blip"  # chosen on the official mAP@10, the targets' metric
    assert out["val"]["system"] == FULL_SYSTEM
    assert out["val"]["map_official_equal_points"] == pytest.approx(5.0)
    assert out["val"]["map_at_k_equal_points"] == pytest.approx(7.0)
    assert out["val"]["map_at_k_equal_relative"] == pytest.approx(0.875)
    # without a re-ranked system the fusion is compared
    fusion_only = [r for r in rows if r["system"] != FULL_SYSTEM]
    assert compare_with_best_single(fusion_only, ["clip", "blip"])["val"]["system"] == "fusion (zscore)"


def test_a_reranking_member_index_stores_itm_tokens_and_reranks_as_re_encoding_does(
    split_data: SplitData, blip_tiny, tmp_path: Path
) -> None:
    from trafficsearch.experiments.demo import index_split
    from trafficsearch.experiments.systems import reranker_of
    from trafficsearch.index.itm_tokens import TOKENS_FILE

    models = ModelCache()
    checkpoints = {"color": tmp_path / "ckpt-color", "blip": tmp_path / "ckpt-blip"}
    models.models[str(checkpoints["color"].resolve())] = ColorModel(0)
    models.models[str(checkpoints["blip"].resolve())] = blip_tiny
    stored = index_split(tmp_path / "stored", split_data, checkpoints, models, workers=0)
    plain = index_split(tmp_path / "plain", split_data, checkpoints, models, workers=0, itm_tokens=False)
    # the demo's BLIP index dir holds its ITM tokens (one row per image); the colour member has none
    tokens = np.load(tmp_path / "stored" / "index-val" / "blip" / TOKENS_FILE, mmap_mode="r")
    assert tokens.shape[0] == len(split_data.records)
    assert not (tmp_path / "stored" / "index-val" / "color" / TOKENS_FILE).exists()
    assert not list((tmp_path / "plain").rglob(TOKENS_FILE))

    texts = ["A red Audi.", "A blue Audi.", "A white Audi."]
    results = []
    for name, members in (("stored", stored), ("plain", plain)):
        blip = reranker_of(members, models)
        assert blip == checkpoints["blip"].resolve()
        engine = open_fused(tmp_path / f"ens-{name}", members, models, rerank=blip, rerank_k=8)
        stage = engine.rerank_stages[0]
        assert (stage.stored is not None) == (name == "stored")
        results.append(engine.search(texts, k=8, rerank=True))
        assert (stage.pixels.misses == 0) == (name == "stored")  # stored: no candidate re-encoded
    for a, b in zip(*results, strict=True):
        assert [h.name for h in a] == [h.name for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=2e-3)
