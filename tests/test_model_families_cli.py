"""Every model family opens through every entry (issue 10's done-when): a tiny open_clip, BLIP and attribute
checkpoint are each indexed and searched from the CLI, then fused as an ensemble whose file holds relative
paths; the run directory copied elsewhere searches identically."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from trafficsearch.cli import main
from trafficsearch.models import load_model
from trafficsearch.search import fusion
from trafficsearch.search.opener import open_engine
from trafficsearch.testing.color import make_color_gallery

torch.set_num_threads(2)
COLORS = ["red", "green", "blue", "yellow", "white", "black"]
QUERY = "This is a white Audi."
FAMILIES = ("clip", "blip", "attributes")


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    monkeypatch.setattr(sys, "argv", ["trafficsearch", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def search_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], index: Path, k: int = 5
) -> list[dict]:
    capsys.readouterr()
    assert run_cli(monkeypatch, "search", index, QUERY, "-k", str(k), "--json") == 0
    return json.loads(capsys.readouterr().out)


def brute_force(index: Path, checkpoint: Path) -> tuple[np.ndarray, list[str]]:
    """The query's scores over the stored vectors with the checkpoint loaded afresh (no engine involved)."""
    from trafficsearch.index.store import open_index

    data = open_index(index)
    query = load_model(checkpoint).encode_texts([QUERY]).float().numpy()[0]
    return np.asarray(data.vectors, np.float32) @ query, list(data.metadata.paths)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trafficsearch.models.attributes import create_attribute_model
    from trafficsearch.models.blip import create_blip
    from trafficsearch.models.clip import save_checkpoint

    root = tmp_path_factory.mktemp("families") / "run"
    make_color_gallery(root / "g", {f"v{i:02d}.jpg": COLORS[i % len(COLORS)] for i in range(12)})
    torch.manual_seed(0)
    save_checkpoint(root / "ckpt" / "clip", load_model("open_clip:ts-tiny-test"))
    create_blip("blip-tiny", seed=0).save(root / "ckpt" / "blip")
    create_attribute_model(image_size=32, width=8, depth=2).save(root / "ckpt" / "attributes")
    return root


@pytest.mark.parametrize("family", FAMILIES)
def test_index_and_search_each_family_from_the_cli(
    family: str, run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, index = run_dir / "ckpt" / family, run_dir / f"idx-{family}"
    code = run_cli(
        monkeypatch, "index", run_dir / "g", "--model", checkpoint, "--out", index, "--workers", "0"
    )
    assert code == 0
    hits = search_json(monkeypatch, capsys, index)
    scores, paths = brute_force(index, checkpoint)
    assert len(hits) == 5
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(scores)[::-1][:5], rtol=1e-4, atol=1e-5)
    assert {h["path"] for h in hits} <= set(paths)
    assert open_engine(index).info()["model"] == load_model(checkpoint).name
    best = paths[int(np.argmax(scores))]
    assert hits[0]["path"] == best or np.isclose(hits[0]["score"], scores.max(), atol=1e-6)
    # `index tune` reloads the model from the manifest's spec too (it failed for attribute checkpoints)
    (run_dir / f"q-{family}.txt").write_text(f"{QUERY}\nA red car.\n")
    tune = ("index", "tune", index, "--queries", run_dir / f"q-{family}.txt", "-k", "3")
    assert run_cli(monkeypatch, *tune) == 0


def test_ensemble_of_the_three_families_searches_and_survives_a_copy(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    weights = {"clip": 1.0, "blip": 1.0, "attributes": 0.5}
    config = {
        "name": "three-families",
        "normalization": "l2",
        "members": [{"name": f, "model": f"ckpt/{f}", "weight": w} for f, w in weights.items()],
    }
    (run_dir / "ens.yaml").write_text(yaml.safe_dump(config))
    out = run_dir / "ens-idx"
    code = run_cli(monkeypatch, "ensemble", "index", run_dir / "ens.yaml", run_dir / "g", "--out", out)
    assert code == 0
    saved = yaml.safe_load((out / "ensemble.yaml").read_text())
    assert [m["model"] for m in saved["members"]] == [f"../ckpt/{f}" for f in weights]  # relative paths

    hits = search_json(monkeypatch, capsys, out, k=12)
    # the fused order computed by hand: each member's l2-normalised row, weighted, summed
    rows, reference = [], None
    for family in weights:
        scores, paths = brute_force(out / "members" / family, run_dir / "ckpt" / family)
        order = {p: i for i, p in enumerate(paths)}
        reference = reference or paths
        rows.append(scores[[order[p] for p in reference]][None])
    assert reference is not None
    fused = fusion.fuse_rows(rows, list(weights.values()), "l2")[0]
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(fused)[::-1], rtol=1e-4, atol=1e-5)
    assert hits[0]["path"] == reference[int(np.argmax(fused))]

    # the whole run directory copied elsewhere (the original gone): the same hits
    copy = tmp_path / "elsewhere" / "run"
    shutil.copytree(run_dir, copy)
    moved = run_dir.with_name("moved-away")
    run_dir.rename(moved)
    try:
        copied_hits = search_json(monkeypatch, capsys, copy / "ens-idx", k=12)
        engine = open_engine(copy / "ens-idx")
        assert all(str(copy) in m.model for m in engine.model.config.members)
    finally:
        moved.rename(run_dir)
    assert [(h["name"], h["score"]) for h in copied_hits] == [(h["name"], h["score"]) for h in hits]
