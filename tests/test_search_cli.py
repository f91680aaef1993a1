"""End to end with a real (tiny, randomly initialised) open_clip checkpoint: `index`, `search`, `submit`,
`index info/tune/add/merge` through the CLI, and user errors printed as one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trafficsearch.cli import main
from trafficsearch.data.labels import write_queries
from trafficsearch.eval.submission import read_submission
from trafficsearch.search.opener import open_engine

torch.set_num_threads(2)


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    monkeypatch.setattr(sys, "argv", ["trafficsearch", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trafficsearch.models import load_model
    from trafficsearch.models.clip import save_checkpoint

    root = tmp_path_factory.mktemp("e2e")
    torch.manual_seed(0)
    save_checkpoint(root / "ckpt", load_model("open_clip:ts-tiny-test"))
    rng = np.random.default_rng(0)
    (root / "g").mkdir()
    for i in range(12):
        pixels = rng.integers(0, 255, size=(48 + i, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "g" / f"vehicle_{i:07d}.jpg")
    write_queries(
        ["This is a white Audi Sedan.", "A red car.", "This is a white Audi Sedan."], root / "q.txt"
    )
    return root


def test_index_search_submit_end_to_end(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = workspace
    code = run_cli(
        monkeypatch,
        "index",
        root / "g",
        "--model",
        root / "ckpt",
        "--out",
        root / "idx",
        "--workers",
        "2",
        "--batch-size",
        "4",
        "--shard-size",
        "5",
    )
    assert code == 0
    engine = open_engine(root / "idx")  # model reloaded from the manifest's checkpoint spec
    assert engine.info()["count"] == 12 and engine.info()["dim"] == engine.model.embed_dim
    # The stored vectors are what the model computes for the images (fp16 storage aside).
    transform = engine.model.image_transform()
    pixels = torch.stack([transform(Image.open(root / "g" / "vehicle_0000003.jpg").convert("RGB"))])
    expected = engine.model.encode_images(pixels).numpy()[0]
    assert np.allclose(engine.vector(3), expected, atol=2e-3)
    # Ranking equals brute force over the stored vectors.
    query = engine.model.encode_texts(["A red car."]).numpy()[0]
    order = np.argsort(-(np.asarray(engine.data.vectors, np.float32) @ query))[:5]
    hits = engine.search(["A red car."], k=5)[0]
    assert [h.name for h in hits] == [engine.data.metadata.names[i] for i in order]

    capsys.readouterr()
    assert run_cli(monkeypatch, "search", root / "idx", "A red car.", "-k", "3", "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert [h["name"] for h in printed] == [h.name for h in hits[:3]]

    assert (
        run_cli(
            monkeypatch,
            "submit",
            root / "idx",
            "--queries",
            root / "q.txt",
            "--out",
            root / "sub.json",
            "-k",
            "4",
        )
        == 0
    )
    submission = read_submission(
        root / "sub.json", ["This is a white Audi Sedan.", "A red car.", "This is a white Audi Sedan."]
    )
    assert [len(n) for n in submission.ranked_names] == [4, 4, 4]
    assert submission.ranked_names[1] == [h.name for h in hits[:4]]
    assert submission.ranked_names[0] == submission.ranked_names[2]


def test_cli_add_merge_tune_info(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = workspace
    assert (
        run_cli(
            monkeypatch,
            "index",
            "build",
            root / "g",
            "--model",
            root / "ckpt",
            "--out",
            root / "idx2",
            "--workers",
            "0",
        )
        == 0
    )
    (root / "more").mkdir()
    Image.new("RGB", (30, 60), (255, 255, 255)).save(root / "more" / "vehicle_9999999.jpg")
    assert run_cli(monkeypatch, "index", "add", root / "idx2", "--dir", root / "more", "--workers", "0") == 0
    assert run_cli(monkeypatch, "index", "merge", root / "idx2") == 0
    assert run_cli(monkeypatch, "index", "tune", root / "idx2", "--queries", root / "q.txt") == 0
    capsys.readouterr()
    assert run_cli(monkeypatch, "index", "info", root / "idx2", "--json") == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["count"] == 13 and manifest["tune"]["chosen"]["recall"] >= 0.95
    engine = open_engine(root / "idx2")
    assert engine.image_path(12) == (root / "more" / "vehicle_9999999.jpg").resolve()


def test_cli_errors_are_one_line(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert run_cli(monkeypatch, "search", workspace / "nowhere", "red") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not an index directory" in err and "Traceback" not in err
    build = [
        "index",
        workspace / "g",
        "--model",
        workspace / "ckpt",
        "--out",
        workspace / "idx3",
        "--workers",
        "0",
    ]
    assert run_cli(monkeypatch, *build) == 0
    assert (
        run_cli(
            monkeypatch,
            "index",
            workspace / "g",
            "--model",
            "open_clip:ts-tiny-test",
            "--out",
            workspace / "idx3",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "model_fingerprint" in err and "Traceback" not in err
