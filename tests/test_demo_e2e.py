"""The main job end to end on tiny sizes: synthetic train -> real val labels rendered -> three members trained
-> indexed -> single models, fusion (weights fitted on the dev split) and fusion + ITM re-ranking scored
beside random, compared with the best single model; a second run resumes instead of redoing the work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from trafficsearch.data.labels import read_labels
from trafficsearch.experiments.demo import FULL_SYSTEM, DemoPlan, run_demo

SYSTEMS = ("clip", "blip", "attributes", "fusion (zscore)", FULL_SYSTEM, "random ranking")


def _scores(rows: list[dict]) -> list[dict]:
    """Rows without the timings (latency and search seconds change from run to run)."""
    return [{k: v for k, v in r.items() if k not in ("latency_ms", "search_s")} for r in rows]


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path: Path) -> None:
    plan = DemoPlan.tiny()
    work = tmp_path / "demo"
    result = run_demo(work, plan)

    # the val split is an evenly spread subset of the real competition labels, rendered
    val_labels = read_labels(work / "data" / "val" / "val_label.txt").records
    assert len(val_labels) == 80
    assert {r.kind for r in val_labels} == {"vehicle", "pedestrian"}
    assert all((work / "data" / "val" / "val_images" / r.image).is_file() for r in val_labels)

    rows = {(r["split"], r["system"], r["rule"]): r for r in result.rows}
    assert set(rows) == {
        (split, system, rule)
        for split in ("val", "test-style")
        for system in SYSTEMS
        for rule in ("equal", "contain")
    }
    for row in rows.values():
        overall = row["overall"]
        # every list holds the top 10 names, so each query's official AP (divided by the hits found, at most
        # min(R, 10)) is at least its AP@10 (divided by min(R, 10)); with no hit both are 0
        assert 0.0 <= overall["map_at_k"] <= overall["map_official"] <= 1.0
        assert overall["n_queries"] == (50 if row["split"] == "val" else 40)
        # contain is the looser rule: it can only find more relevant images
        if row["rule"] == "contain":
            equal = rows[(row["split"], row["system"], "equal")]["overall"]
            assert overall["recall"]["10"] >= equal["recall"]["10"]

    # single models and systems on val carry a cold single-query latency; re-ranking costs time
    val_latency = {s: rows[("val", s, "equal")]["latency_ms"]["p50"] for s in SYSTEMS[:-1]}
    assert all(v > 0 for v in val_latency.values())
    # the comparison names the best single model (by official mAP@10) and the full system's difference to it
    for split in ("val", "test-style"):
        c = result.comparison[split]
        assert c["system"] == FULL_SYSTEM and c["best_single"] in ("clip", "blip", "attributes")
        best = max(
            ("clip", "blip", "attributes"), key=lambda s: rows[(split, s, "equal")]["overall"]["map_official"]
        )
        assert c["best_single"] == best
        diff = (
            rows[(split, FULL_SYSTEM, "equal")]["overall"]["map_official"]
            - rows[(split, best, "equal")]["overall"]["map_official"]
        )
        assert c["map_official_equal_points"] == pytest.approx(100 * diff, abs=0.01)
    # fusion weights were fitted on the dev split (one set per query kind) and fold-checked: the fused
    # engine uses them when they beat equal weights on the held-out folds, else equal weights
    fit = result.fit
    assert fit["folds"]["folds"] == plan.fit_folds and fit["kept"] == fit["folds"]["keep"]
    assert len(fit["folds"]["fitted"]) == len(fit["folds"]["equal"]) == plan.fit_folds
    saved_ensemble = (work / "ensemble-val" / "ensemble.yaml").read_text()
    if fit["kept"]:
        assert set(fit["kind_weights"]) == {"vehicle", "pedestrian"} and "kind_weights" in saved_ensemble
    else:
        assert fit["kind_weights"] == {} and set(fit["weights"].values()) == {1.0}
        assert "equal weights kept" in fit["reason"]
    # the ITM re-rank weight was fitted on dev against the seed's 1:1 and the val ensemble re-ranks with it
    rerank = fit["rerank"]
    assert rerank["baseline_b"] == 1.0 and len(rerank["folds"]["fitted"]) == plan.fit_folds
    assert rerank["b"] == 1.0 or rerank["folds"]["keep"] is True
    assert yaml.safe_load(saved_ensemble)["rerank"]["b"] == rerank["b"]
    assert (work / "dev-data" / "val" / "val_label.txt").is_file()
    # the re-ranker's val index stores its ITM image tokens; the dev indexes (never re-ranked) do not
    assert (work / "index-val" / "blip" / "itm_tokens.npy").is_file()
    assert not list((work / "index-dev").rglob("itm_tokens.npy"))

    saved = json.loads((work / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result.rows))
    report = (work / "report.html").read_text()
    assert report.count("data:image/jpeg;base64") >= 10
    assert (work / "train" / "curves.png").stat().st_size > 0
    assert (work / "train_samples.png").stat().st_size > 0

    # a second run finds every stage done: same checkpoint, same scores
    weights = Path(result.paths["checkpoint clip"]) / "weights.safetensors"
    before = weights.stat().st_mtime_ns
    again = run_demo(work, plan)
    assert weights.stat().st_mtime_ns == before
    assert _scores(again.rows) == _scores(result.rows)
