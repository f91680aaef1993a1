"""Helpers shared by benchmarks/service_overhead.py and benchmarks/load_test.py.

The server runs in its own process (spawned, so it has its own interpreter and GIL) and the load
comes from the benchmark process: numbers then measure the service, not two event loops fighting
over one GIL. The engine is either a real index (`--index DIR`) or the fake engine.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from trafficsearch.benchmarking import machine_info
from trafficsearch.serve.server import LOOPBACK


@dataclass(frozen=True)
class EngineSpec:
    """How to build the engine in any process: a real index dir, or a fake gallery of `count` images."""

    index_dir: str | None = None
    fake_dir: str | None = None
    count: int = 200
    model: str | None = None
    device: str = "cpu"

    def build(self) -> Any:
        if self.index_dir:
            from trafficsearch.search.opener import open_engine

            return open_engine(self.index_dir, model=self.model, device=self.device)
        from trafficsearch.testing.fake_engine import FakeEngine

        assert self.fake_dir, "EngineSpec needs index_dir or fake_dir"
        return FakeEngine.create(self.fake_dir, count=self.count)

    def describe(self) -> str:
        return f"index {self.index_dir}" if self.index_dir else f"fake engine, {self.count} images"


def _serve_child(spec: EngineSpec, port: int, app_kwargs: dict[str, Any], threads: int) -> None:
    with contextlib.suppress(Exception):
        import torch

        torch.set_num_threads(threads)
    from trafficsearch.serve.app import create_app
    from trafficsearch.serve.server import serve_forever

    serve_forever(
        create_app(spec.build(), **app_kwargs), LOOPBACK, port, log_level="warning", access_log=False
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_in_subprocess(
    spec: EngineSpec, app_kwargs: dict[str, Any] | None = None, threads: int = 2, startup_timeout: float = 300
) -> Iterator[str]:
    """Run the service in a child interpreter; yields its base URL once /healthz answers."""
    port = free_port()
    config = json.dumps({"spec": asdict(spec), "port": port, "app": app_kwargs or {}, "threads": threads})
    process = subprocess.Popen([sys.executable, "-m", "trafficsearch.testing.service", config])
    with running_service(process, f"http://{LOOPBACK}:{port}", startup_timeout) as url:
        yield url


@contextlib.contextmanager
def running_service(process: subprocess.Popen, url: str, startup_timeout: float = 300) -> Iterator[str]:
    """Wait until the started service `process` answers /healthz at `url`, yield `url`, then stop it.

    RuntimeError when the process exits first or does not answer within `startup_timeout` seconds.
    """
    deadline = time.monotonic() + startup_timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"service process exited with code {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("service did not start in time")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class CheckoutVariant:
    """One side of a same-run comparison of checkouts (benchmarks/cold_query_cpu.py, service_baseline.py):
    the source tree to put on PYTHONPATH, the index it searches, and optionally the query encoder."""

    name: str
    src: Path
    index: Path
    encoder: str | None

    @classmethod
    def parse(cls, text: str) -> CheckoutVariant:
        """NAME=SRC:INDEX[:ENCODER]; SystemExit naming the argument when malformed or a path is missing."""
        name, sep, rest = text.partition("=")
        parts = rest.split(":")
        if not sep or len(parts) not in (2, 3) or not name:
            raise SystemExit(f"--variant {text!r}: expected NAME=SRC:INDEX[:ENCODER]")
        src, index = Path(parts[0]).resolve(), Path(parts[1]).resolve()
        for path in (src, index):
            if not path.exists():
                raise SystemExit(f"--variant {text!r}: {path} does not exist")
        return cls(name, src, index, parts[2] if len(parts) == 3 else None)


machine = machine_info  # benchmarks/load_test.py and service_overhead.py import it from here


FALLBACK_QUERIES = [
    "This is a white Audi.",
    "A red Sedan.",
    "A walking woman who is between 18 and 60 years old, with her body facing the camera.",
    "A male pedestrian who is aged over 60 and with a backpack. He is in a long sleeve shirt.",
]


def load_queries(path: Path | None, limit: int = 64) -> list[str]:
    """Up to `limit` distinct query texts spread over a label file (image$attrs$text) or a text file."""
    if path is None or not path.is_file():
        return list(FALLBACK_QUERIES)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    step = max(1, len(lines) // (limit * 2))
    texts: list[str] = []
    for line in lines[::step]:
        text = line.split("$")[2] if line.count("$") >= 2 else line
        if text not in texts:
            texts.append(text)
        if len(texts) >= limit:
            break
    return texts or list(FALLBACK_QUERIES)


def write_result(path: Path, payload: dict[str, Any]) -> None:
    from trafficsearch.ioutil import atomic_write_json

    atomic_write_json(path, json.loads(json.dumps(payload, default=str)))


if __name__ == "__main__":  # the child started by serve_in_subprocess
    _config = json.loads(sys.argv[1])
    _serve_child(EngineSpec(**_config["spec"]), _config["port"], _config["app"], _config["threads"])
