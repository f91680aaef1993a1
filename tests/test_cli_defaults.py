"""Right by default: `submit`/`search` re-rank when the ensemble has a re-ranker (`--no-rerank` turns it
off), `serve`'s API follows the same default, and `--device auto` picks the device torch reports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from trafficsearch.cli import main
from trafficsearch.data.labels import write_queries
from trafficsearch.eval.submission import read_submission
from trafficsearch.search import opener
from trafficsearch.search.opener import open_engine
from trafficsearch.testing.color import make_color_gallery

torch.set_num_threads(2)
CONFIG = Path(__file__).resolve().parents[1] / "src/trafficsearch/configs/ensembles/tiny-test.yaml"
# The packaged tiny ensemble, re-ranked by ITM probability alone: the random BLIP's ITM then decides the
# order of the top 10, so re-ranked and fused lists differ and the tests can tell which one ran.
QUERIES = ["A red car.", "A blue car.", "A green car.", "A red car."]


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    monkeypatch.setattr(sys, "argv", ["trafficsearch", *map(str, args)])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def ensemble_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yaml

    from trafficsearch.search.ensemble import build_ensemble_index

    root = tmp_path_factory.mktemp("defaults")
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    config["rerank"]["form"] = "itm_prob"
    (root / "ensemble.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    colors = ["red", "blue", "green", "purple", "magenta", "yellow"] * 2
    make_color_gallery(root / "g", {f"i{i:02d}.jpg": c for i, c in enumerate(colors)})
    build_ensemble_index(root / "ensemble.yaml", root / "g", root / "idx", progress=False, workers=0)
    write_queries(QUERIES, root / "q.txt")
    return root / "idx"


@pytest.fixture(scope="module")
def expected(ensemble_index: Path) -> dict[bool, list[list[str]]]:
    engine = open_engine(ensemble_index)
    assert engine.rerank_stages, "the tiny ensemble has a BLIP re-ranker"
    out = {
        flag: [[h.name for h in hits] for hits in engine.search(QUERIES, k=10, rerank=flag)]
        for flag in (False, True)
    }
    assert out[True] != out[False], "precondition: the tiny BLIP's ITM reorders the fusion's top 10"
    return out


def test_submit_reranks_by_default_and_no_rerank_gives_the_fusion(
    ensemble_index: Path, expected: dict[bool, list[list[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = ensemble_index.parent
    queries = root / "q.txt"
    code = run_cli(monkeypatch, "submit", ensemble_index, "--queries", queries, "--out", root / "a.json")
    assert code == 0
    assert read_submission(root / "a.json", QUERIES).ranked_names == expected[True]
    code = run_cli(
        monkeypatch,
        "submit",
        ensemble_index,
        "--queries",
        root / "q.txt",
        "--out",
        root / "b.json",
        "--no-rerank",
    )
    assert code == 0
    assert read_submission(root / "b.json", QUERIES).ranked_names == expected[False]


def test_search_reranks_by_default(
    ensemble_index: Path,
    expected: dict[bool, list[list[str]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    for flags, rerank in (((), True), (("--no-rerank",), False)):
        capsys.readouterr()
        assert run_cli(monkeypatch, "search", ensemble_index, QUERIES[0], "--json", *flags) == 0
        names = [h["name"] for h in json.loads(capsys.readouterr().out)]
        assert names == expected[rerank][0]


def test_serve_api_reranks_by_default_unless_told(ensemble_index: Path, expected: dict) -> None:
    from fastapi.testclient import TestClient

    from trafficsearch.serve.app import create_app

    engine = open_engine(ensemble_index)
    for default in (True, False):
        with TestClient(create_app(engine, rerank_default=default), base_url="http://localhost") as client:
            assert client.get("/healthz").json()["rerank_default"] is default  # what the page starts from
            body = client.post("/search", json={"text": QUERIES[0], "k": 10}).json()
            assert body["rerank"] is default
            assert [h["name"] for h in body["hits"]] == expected[default][0]
            forced = client.post("/search", json={"text": QUERIES[0], "k": 10, "rerank": not default}).json()
            assert [h["name"] for h in forced["hits"]] == expected[not default][0]


def test_device_auto_picks_cuda_when_torch_reports_one(
    ensemble_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def fake_open(index_dir: Path, model: object = None, device: str = "cpu", **kwargs: object) -> None:
        seen.append(device)
        raise SystemExit(0)

    monkeypatch.setattr(opener, "open_engine", fake_open)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert run_cli(monkeypatch, "search", ensemble_index, "red") == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert run_cli(monkeypatch, "search", ensemble_index, "red") == 0
    assert run_cli(monkeypatch, "search", ensemble_index, "red", "--device", "cpu") == 0
    assert seen == ["cuda", "cpu", "cpu"]


def test_explicit_cuda_without_cuda_is_one_line(
    ensemble_index: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_cli(monkeypatch, "search", ensemble_index, "red", "--device", "cuda:1") == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--device" in err and "Traceback" not in err
    assert run_cli(monkeypatch, "search", ensemble_index, "red", "--device", "tpu9") == 2
    assert "unknown device 'tpu9'" in capsys.readouterr().err
