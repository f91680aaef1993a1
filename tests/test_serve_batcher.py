"""MicroBatcher: concurrent queries share engine calls; each gets its own k and kind; failures propagate."""

from __future__ import annotations

import asyncio
import threading

import pytest

from trafficsearch.serve.batcher import MicroBatcher
from trafficsearch.testing.fake_engine import FakeEngine


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> FakeEngine:
    return FakeEngine.create(tmp_path_factory.mktemp("gallery"), count=20, seed=1)


def _expected(engine: FakeEngine, text: str, k: int, kind: str | None) -> list[int]:
    return [hit.id for hit in engine.search([text], k=k, kind=kind)[0]]


def test_concurrent_queries_share_calls_and_keep_their_own_k_and_kind(engine: FakeEngine) -> None:
    queries = [
        (f"a {color} Sedan", 1 + i % 7, (None, "vehicle", "pedestrian")[i % 3])
        for i, color in enumerate(["red", "white", "blue", "black", "grey", "green"] * 4)
    ]
    expected = [_expected(engine, text, k, kind) for text, k, kind in queries]
    engine.calls.clear()

    async def main() -> list[list[int]]:
        batcher = MicroBatcher(engine, window_ms=50, max_batch=64)
        try:
            answers = await asyncio.gather(*(batcher.search(t, k, kind) for t, k, kind in queries))
        finally:
            await batcher.close()
        assert batcher.stats.requests == len(queries)
        assert batcher.stats.batches == 1
        return [[hit.id for hit in hits] for hits in answers]

    got = asyncio.run(main())
    assert got == expected
    # One call per (kind, rerank) group, each with the group's largest k.
    assert len(engine.calls) == 3
    for texts, k, kind, _ in engine.calls:
        group = [q for q in queries if q[2] == kind]
        assert sorted(texts) == sorted(q[0] for q in group)
        assert k == max(q[1] for q in group)


def test_max_batch_splits_large_bursts(engine: FakeEngine) -> None:
    engine.calls.clear()

    async def main() -> MicroBatcher:
        batcher = MicroBatcher(engine, window_ms=50, max_batch=4)
        await asyncio.gather(*(batcher.search(f"query {i}", 2) for i in range(10)))
        await batcher.close()
        return batcher

    batcher = asyncio.run(main())
    assert all(len(texts) <= 4 for texts, *_ in engine.calls)
    assert sum(len(texts) for texts, *_ in engine.calls) == 10
    assert batcher.stats.largest_batch == 4


def test_rerank_requests_are_searched_apart(engine: FakeEngine) -> None:
    engine.calls.clear()

    async def main() -> None:
        batcher = MicroBatcher(engine, window_ms=50)
        await asyncio.gather(batcher.search("red bus", 3, rerank=True), batcher.search("red bus", 3))
        await batcher.close()

    asyncio.run(main())
    assert sorted(call[3] for call in engine.calls) == [False, True]


class _Failing:
    """Engine that fails for one text and works otherwise."""

    def __init__(self, inner: FakeEngine) -> None:
        self.inner = inner

    def search(self, texts, k=10, kind=None, where=None, rerank=False):  # noqa: ANN001, ANN201
        if "boom" in texts:
            raise RuntimeError("model exploded")
        return self.inner.search(texts, k=k, kind=kind)

    def image_path(self, image_id: int):  # noqa: ANN201
        return self.inner.image_path(image_id)

    def info(self) -> dict:
        return self.inner.info()


def test_engine_failure_reaches_the_caller_and_the_worker_survives(engine: FakeEngine) -> None:
    async def main() -> None:
        batcher = MicroBatcher(_Failing(engine), window_ms=1)
        with pytest.raises(RuntimeError, match="model exploded"):
            await batcher.search("boom", 3)
        hits = await batcher.search("white SUV", 3)
        assert [h.id for h in hits] == _expected(engine, "white SUV", 3, None)
        assert batcher.stats.errors == 1
        await batcher.close()

    asyncio.run(main())


def test_cancelled_request_is_dropped_and_others_still_answered(engine: FakeEngine) -> None:
    gate = threading.Event()

    class Slow(_Failing):
        def search(self, texts, k=10, kind=None, where=None, rerank=False):  # noqa: ANN001, ANN201
            gate.wait(5)
            return self.inner.search(texts, k=k, kind=kind)

    async def main() -> None:
        batcher = MicroBatcher(Slow(engine), window_ms=1)
        first = asyncio.ensure_future(batcher.search("first", 2))
        await asyncio.sleep(0.05)  # first batch is now inside the engine
        doomed = asyncio.ensure_future(batcher.search("doomed", 2))
        kept = asyncio.ensure_future(batcher.search("kept red", 2))
        await asyncio.sleep(0.01)
        doomed.cancel()
        gate.set()
        assert len(await first) == 2
        assert len(await kept) == 2
        assert doomed.cancelled()
        await batcher.close()

    asyncio.run(main())


def test_close_fails_waiting_queries_instead_of_hanging(engine: FakeEngine) -> None:
    gate = threading.Event()

    class Blocked(_Failing):
        def search(self, texts, k=10, kind=None, where=None, rerank=False):  # noqa: ANN001, ANN201
            gate.wait(5)
            return self.inner.search(texts, k=k, kind=kind)

    async def main() -> None:
        batcher = MicroBatcher(Blocked(engine), window_ms=1)
        running = asyncio.ensure_future(batcher.search("a", 1))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(batcher.search("b", 1))
        await asyncio.sleep(0.01)
        await batcher.close()
        gate.set()
        for pending in (running, waiting):  # the batch inside the engine and the one queued behind it
            with pytest.raises(RuntimeError, match="shutting down"):
                await asyncio.wait_for(pending, 2)

    asyncio.run(main())


def test_rejects_bad_max_batch(engine: FakeEngine) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(engine, max_batch=0)
