"""The main job end to end on tiny sizes: synthetic train -> real val labels rendered -> train -> index ->
search -> official scores beside random, and a second run resumes instead of redoing the work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trafficsearch.data.labels import read_labels
from trafficsearch.demo import DemoPlan, run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path: Path) -> None:
    plan = DemoPlan(config="demo/fast", train=160, val=80, test=40, epochs=1, val_per_epoch=40)
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
        for system in ("default model", "random ranking")
        for rule in ("equal", "contain")
    }
    for row in rows.values():
        overall = row["overall"]
        assert 0.0 <= overall["map_at_k"] <= overall["map_official"] <= 1.0 or overall["map_official"] == 0.0
        assert overall["n_queries"] == (80 if row["split"] == "val" else 40)
        # contain is the looser rule: it can only find more relevant images
        if row["rule"] == "contain":
            equal = rows[(row["split"], row["system"], "equal")]["overall"]
            assert overall["recall"]["10"] >= equal["recall"]["10"]

    saved = json.loads((work / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result.rows))
    report = (work / "report.html").read_text()
    assert report.count("data:image/jpeg;base64") >= 10
    assert (work / "train" / "curves.png").stat().st_size > 0
    assert (work / "train_samples.png").stat().st_size > 0

    # a second run finds every stage done: same checkpoint, same scores
    weights = Path(result.paths["checkpoint"]) / "weights.safetensors"
    before = weights.stat().st_mtime_ns
    again = run_demo(work, plan)
    assert weights.stat().st_mtime_ns == before
    assert again.rows == result.rows
