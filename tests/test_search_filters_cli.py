"""Through the CLI with a tiny open_clip checkpoint: `index build --metadata`, `search --where/--time-*`,
`index push --milvus` (the same hits through milvus-lite, filters pushed down), `index delete`, `detach`,
and bad input as one line naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trafficsearch.testing.cli import run_cli

torch.set_num_threads(2)
N = 10


# camera c0 or c2, an extra column, and a time range with an offset (normalised to UTC)
FILTERS = ("--where", "camera=c0,c2", "--where", "lane=1", "--time-from", "2024-05-02T10:00:00+01:00")

@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trafficsearch.models import load_model
    from trafficsearch.models.clip import save_checkpoint

    root = tmp_path_factory.mktemp("filters")
    torch.manual_seed(0)
    save_checkpoint(root / "ckpt", load_model("open_clip:ts-tiny-test"))
    rng = np.random.default_rng(1)
    (root / "g").mkdir()
    lines = ["name,camera,time,lane"]
    for i in range(N):
        name = f"vehicle_{i:07d}.jpg"
        Image.fromarray(rng.integers(0, 255, size=(40, 36, 3), dtype=np.uint8)).save(root / "g" / name)
        lines.append(f"{name},c{i % 3},2024-05-0{1 + i % 2}T{8 + i:02d}:00:00,{i % 2}")
    (root / "m.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def built(workspace: Path) -> Path:
    """The gallery indexed with its metadata file (through the CLI)."""
    mp = pytest.MonkeyPatch()
    idx = workspace / "idx"
    build = ("index", "build", workspace / "g", "--model", workspace / "ckpt", "--out", idx, "--workers", "0")
    try:
        assert run_cli(mp, *build, "--shard-size", "4", "--metadata", workspace / "m.csv") == 0
    finally:
        mp.undo()
    return idx


def _hits(monkeypatch, capsys, *args) -> list[dict]:
    capsys.readouterr()
    assert run_cli(monkeypatch, "search", *args, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_metadata_filters_and_milvus_backend(
    workspace: Path,
    built: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    idx = tmp_path / "idx"
    shutil.copytree(built, idx)
    query = (idx, "A red car.", "-k", str(N))
    everything = _hits(monkeypatch, capsys, *query)
    assert len(everything) == N
    filtered = _hits(monkeypatch, capsys, *query, *FILTERS)
    expected = [
        h
        for h in everything
        if h["camera"] in ("c0", "c2") and h["extra"]["lane"] == "1" and h["time"] >= "2024-05-02T09:00:00"
    ]
    assert filtered == expected and 0 < len(filtered) < N
    day_one = _hits(monkeypatch, capsys, *query, "--time-to", "2024-05-01")
    assert {h["time"][:10] for h in day_one} == {"2024-05-01"} and len(day_one) == N // 2

    db = tmp_path / "city.db"
    assert run_cli(monkeypatch, "index", "push", idx, "--milvus", db, "--partition-by", "camera") == 0
    capsys.readouterr()
    assert run_cli(monkeypatch, "index", "info", idx, "--json") == 0
    store = json.loads(capsys.readouterr().out)["store"]
    assert (
        store["backend"] == "milvus" and store["uri"] == str(db.resolve()) and store["index_type"] == "FLAT"
    )
    through_milvus = _hits(monkeypatch, capsys, *query)
    assert [h["id"] for h in through_milvus] == [h["id"] for h in everything]
    np.testing.assert_allclose(
        [h["score"] for h in through_milvus], [h["score"] for h in everything], atol=1e-5
    )
    filtered_milvus = _hits(monkeypatch, capsys, *query, *FILTERS)
    # the same hits and fields; scores to float32 rounding (Milvus FLAT vs the local BLAS scan)
    without_score = lambda hits: [{k: v for k, v in h.items() if k != "score"} for h in hits]  # noqa: E731
    assert without_score(filtered_milvus) == without_score(filtered)
    np.testing.assert_allclose(
        [h["score"] for h in filtered_milvus], [h["score"] for h in filtered], atol=1e-5
    )

    gone = everything[0]["id"]
    assert run_cli(monkeypatch, "index", "delete", idx, str(gone)) == 0
    after = _hits(monkeypatch, capsys, *query)
    assert [h["id"] for h in after] == [h["id"] for h in everything[1:]]
    assert run_cli(monkeypatch, "index", "push", idx, "--milvus", db, "--partition-by", "camera") == 0
    assert [h["id"] for h in _hits(monkeypatch, capsys, *query)] == [h["id"] for h in everything[1:]]

    more = tmp_path / "more"
    more.mkdir()
    Image.new("RGB", (30, 40), (200, 20, 20)).save(more / "vehicle_9999999.jpg")
    assert run_cli(monkeypatch, "index", "add", idx, "--dir", more, "--workers", "0") == 0  # pushes too
    with_new = _hits(monkeypatch, capsys, idx, "A red car.", "-k", str(N + 1))
    from trafficsearch.index.stores.factory import open_store

    assert open_store(idx).count() == N  # N - 1 + the added image, in the collection
    assert N in {h["id"] for h in with_new} and gone not in {h["id"] for h in with_new}
    assert run_cli(monkeypatch, "index", "detach", idx) == 0
    local = _hits(monkeypatch, capsys, idx, "A red car.", "-k", str(N + 1))
    assert [h["id"] for h in local] == [h["id"] for h in with_new]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name,camera\nvehicle_0000001.jpg,c1\nnope.jpg,c1\n", "bad.csv:3: unknown image name 'nope.jpg'"),
        (
            "name,time\nvehicle_0000001.jpg,01/05/2024\n",
            "bad.csv:2: field 'time': time '01/05/2024' is not ISO 8601",
        ),
    ],
)
def test_bad_metadata_is_one_line_before_encoding(
    workspace: Path, tmp_path: Path, monkeypatch, capsys, content: str, expected: str
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content, encoding="utf-8")
    out = tmp_path / "idx"
    args = ("index", "build", workspace / "g", "--model", workspace / "ckpt", "--out", out, "--workers", "0")
    assert run_cli(monkeypatch, *args, "--metadata", bad) != 0
    err = capsys.readouterr().err.strip()
    assert expected in err and "Traceback" not in err
    assert not list((out / "shards").glob("*.safetensors"))  # validated before anything was encoded


def test_bad_filters_are_one_line(built: Path, monkeypatch, capsys) -> None:
    idx = built
    for args, expected in (
        (("--where", "speed=3"), "unknown filter field 'speed'"),
        (("--where", "camera"), "is not COLUMN=VALUE"),
        (("--time-from", "tuesday"), "not ISO 8601"),
    ):
        capsys.readouterr()
        assert run_cli(monkeypatch, "search", idx, "a car", *args) != 0
        err = capsys.readouterr().err.strip()
        assert expected in err and "Traceback" not in err and len(err.splitlines()) == 1
