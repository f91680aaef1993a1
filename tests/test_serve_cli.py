"""`trafficsearch serve INDEX_DIR`: the real command in a subprocess over an index of a saved checkpoint,
and its one-line user errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from trafficsearch.index import build_index
from trafficsearch.search.opener import open_engine
from trafficsearch.testing.color import make_color_gallery
from trafficsearch.testing.service import free_port

torch.set_num_threads(2)
COLORS = ["red", "blue", "green", "white", "black", "yellow"]


@pytest.fixture(scope="module")
def checkpoint_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trafficsearch.models import load_model
    from trafficsearch.models.clip import create_clip, save_checkpoint

    root = tmp_path_factory.mktemp("cli")
    make_color_gallery(root / "gallery", {f"{100_000 + i:06d}.jpg": c for i, c in enumerate(COLORS * 3)})
    torch.manual_seed(0)
    save_checkpoint(root / "ckpt", create_clip("ts-tiny-test"))
    model = load_model(root / "ckpt")  # the model as `serve` will load it, so the fingerprints agree
    build_index(root / "gallery", root / "idx", model, model_spec=root / "ckpt", workers=0, progress=False)
    return root / "idx"


def _cli(*args: str, **kwargs) -> subprocess.Popen:  # noqa: ANN003
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "trafficsearch.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def test_serve_command_serves_the_index_on_loopback(checkpoint_index: Path) -> None:
    port = free_port()
    process = _cli("serve", str(checkpoint_index), "--port", str(port), "--no-access-log")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.3)
        health = httpx.get(f"{url}/healthz").json()
        assert health["count"] == 18 and health["model"] == "ts-tiny-test"
        response = httpx.post(f"{url}/search", json={"text": "This is a red Audi.", "k": 5}, timeout=60)
        assert response.status_code == 200
        expected = open_engine(checkpoint_index).search(["This is a red Audi."], k=5)[0]
        assert [h["name"] for h in response.json()["hits"]] == [h.name for h in expected]
        assert httpx.get(f"{url}/").status_code == 200
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "Traceback" not in err
    assert f"http://127.0.0.1:{port}/" in err  # the banner names the loopback URL


@pytest.mark.parametrize("make", ["missing", "not-an-index"])
def test_serve_command_user_errors_are_one_line(
    tmp_path: Path, make: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trafficsearch.cli import main

    target = tmp_path / "idx"
    if make == "not-an-index":
        target.mkdir()
        (target / "manifest.json").write_text("{broken")
    monkeypatch.setattr(sys, "argv", ["trafficsearch", "serve", str(target), "--port", str(free_port())])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "idx" in lines[0]


@pytest.mark.parametrize("how", ["flag", "environment"])
@pytest.mark.parametrize(
    ("flag", "variable", "value", "choices"),
    [
        ("--query-encoder", "ENV", "fast", "torch, onnx, auto"),
        ("--itm-head", "ITM_ENV", "fp16", "fp32, int8"),
    ],
)
def test_a_bad_encoder_choice_stops_serve_with_one_line_before_the_index_opens(
    tmp_path: Path,
    how: str,
    flag: str,
    variable: str,
    value: str,
    choices: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from trafficsearch.cli import main
    from trafficsearch.models import onnx_text

    variable = getattr(onnx_text, variable)
    argv = ["trafficsearch", "serve", str(tmp_path), "--port", str(free_port())]  # not an index either
    if how == "flag":
        argv += [flag, value]
    else:
        monkeypatch.setenv(variable, value)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    needle = f"{flag}={value!r}" if how == "flag" else f"{variable}={value!r}"
    assert len(lines) == 1 and needle in lines[0] and choices in lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--host", "0.0.0.0"], "--token-file"),
        (["--host", "127.0.0.1", "--rate-limit", "lots"], "rate limit 'lots'"),
        (["--host", "127.0.0.1", "--cors-origin", "*"], "--cors-origin '*'"),
        (["--host", "192.168.7.7", "--token-file", "MISSING"], "cannot read token file"),
    ],
)
def test_serve_exposure_options_fail_with_one_line(
    tmp_path: Path,
    args: list[str],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from trafficsearch.cli import main

    monkeypatch.delenv("TRAFFICSEARCH_TOKENS", raising=False)
    args = [str(tmp_path / "nope") if a == "MISSING" else a for a in args]
    monkeypatch.setattr(sys, "argv", ["trafficsearch", "serve", str(tmp_path), "--port", "0", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines
