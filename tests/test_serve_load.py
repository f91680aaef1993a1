"""Bounded load test: 2,000 searches at concurrency 32 against uvicorn on loopback, zero 5xx.

Latency percentiles are printed (run with -s to see them), never asserted: timing belongs in
benchmarks/load_test.py.
"""

from __future__ import annotations

import asyncio

import pytest

from trafficsearch.serve.app import create_app
from trafficsearch.serve.server import serve_in_thread
from trafficsearch.testing.fake_engine import FakeEngine
from trafficsearch.testing.loadgen import run_load

TOTAL = 2000
CONCURRENCY = 32


@pytest.mark.slow
def test_two_thousand_requests_at_concurrency_32(tmp_path) -> None:  # noqa: ANN001
    engine = FakeEngine.create(tmp_path / "gallery", count=40, seed=11)
    bodies = [
        {
            "text": f"This is a {color} {vtype}.",
            "k": 1 + i % 10,
            "kind": (None, "vehicle", "pedestrian")[i % 3],
        }
        for i, (color, vtype) in enumerate(
            (c, t) for c in ("red", "white", "grey", "blue") for t in ("Sedan", "SUV", "Bus")
        )
    ]
    app = create_app(engine, batch_window_ms=2, max_batch=32)
    with serve_in_thread(app) as url:
        result = asyncio.run(run_load(url, bodies, total=TOTAL, concurrency=CONCURRENCY, budget_s=150))
        stats = app.state.batcher.stats
    summary = result.summary()
    print(
        f"\nload: {result.done}/{TOTAL} requests, concurrency {CONCURRENCY}, "
        f"p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, "
        f"{summary['throughput_rps']} req/s, {stats.batches} batches (largest {stats.largest_batch})"
    )
    assert result.server_errors == 0
    assert not result.failures, result.failures
    assert result.not_sent == 0 and result.done == TOTAL
    assert dict(result.statuses) == {200: TOTAL}
    assert stats.requests == TOTAL
    assert sum(len(texts) for texts, *_ in engine.calls) == TOTAL  # every query reached the engine once
