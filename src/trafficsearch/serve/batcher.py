"""Micro-batching of search requests: one engine call serves many concurrent HTTP requests.

Encoding a batch of texts costs little more than encoding one, and the engine (torch, FAISS) is not
meant to be driven from many threads at once. So requests wait on an asyncio queue for a few
milliseconds; one worker drains it, groups the pending queries by (kind, where, rerank), calls
`engine.search` once per group with the largest k asked for in a worker thread, and cuts each
answer back to the k its request asked for. While one batch runs, the next one collects.
The window is only waited for when there is company (more queries queued, or the previous batch
held several): a lone query on an idle service goes straight to the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol


class Engine(Protocol):
    """What the service needs from `trafficsearch.search.engine.SearchEngine`."""

    def search(
        self,
        texts: Any,
        k: int = 10,
        kind: str | None = None,
        where: dict | None = None,
        rerank: bool = False,
    ) -> list[list[Any]]: ...

    def image_path(self, image_id: int) -> Any: ...

    def info(self) -> dict: ...


@dataclass
class _Pending:
    text: str
    k: int
    kind: str | None
    rerank: bool
    future: asyncio.Future[list[Any]]
    where: dict[str, Any] | None = None


@dataclass
class BatchStats:
    """Counters shown by /healthz, so batching under load can be checked from outside."""

    requests: int = 0
    batches: int = 0
    engine_calls: int = 0
    largest_batch: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "engine_calls": self.engine_calls,
            "largest_batch": self.largest_batch,
            "errors": self.errors,
        }


class MicroBatcher:
    """Collects concurrent queries for `window_ms` (or until `max_batch`) and searches them together."""

    def __init__(self, engine: Engine, *, window_ms: float = 5.0, max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.engine = engine
        self.window = max(0.0, window_ms) / 1000.0
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: list[_Pending] = []
        self._last_size = 0
        # Held around every engine call: other engine users (search by example) take it too.
        self.engine_lock = threading.Lock()

    def _ensure_worker(self) -> asyncio.Queue[_Pending]:
        # Started lazily on the serving loop: works the same under uvicorn and under test clients.
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue), name="trafficsearch-batcher")
        return self._queue

    async def search(
        self,
        text: str,
        k: int,
        kind: str | None = None,
        rerank: bool = False,
        where: dict[str, Any] | None = None,
    ) -> list[Any]:
        """Queue one query and wait for its hits (at most k)."""
        queue = self._ensure_worker()
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.stats.requests += 1
        queue.put_nowait(_Pending(text, k, kind, rerank, future, where))
        return await future

    async def close(self) -> None:
        """Stop the worker; queries still waiting fail instead of hanging."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await worker
        queue, self._queue = self._queue, None
        leftovers = list(self._inflight)
        while queue is not None and not queue.empty():
            leftovers.append(queue.get_nowait())
        for item in leftovers:
            if not item.future.done():
                item.future.set_exception(RuntimeError("search service is shutting down"))

    async def _collect(self, queue: asyncio.Queue[_Pending]) -> list[_Pending]:
        # Poll the queue instead of cancelling `queue.get()` on a timeout: a cancelled get can race
        # with a put on Python 3.11, and a lost query would hang its client.
        batch = [await queue.get()]
        await asyncio.sleep(0)  # let requests that are already being handled enqueue too
        if queue.empty() and self._last_size <= 1:
            return batch  # a lone query on an idle service: waiting would only add latency
        deadline = time.monotonic() + self.window
        while True:
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            remaining = deadline - time.monotonic()
            if len(batch) >= self.max_batch or remaining <= 0:
                return batch
            await asyncio.sleep(min(remaining, 0.0005))

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        while True:
            batch = await self._collect(queue)
            live = [item for item in batch if not item.future.done()]  # drop requests whose client left
            if not live:
                continue
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(live))
            self._inflight = live
            self._last_size = len(live)
            try:
                results = await asyncio.to_thread(self._search_groups, live)
            except Exception as exc:  # one bad batch must not kill the worker
                self.stats.errors += 1
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, hits in zip(live, results, strict=True):
                if not item.future.done():
                    item.future.set_result(hits)

    def _search_groups(self, batch: list[_Pending]) -> list[list[Any]]:
        """Runs in a worker thread: one engine call per (kind, where, rerank) group, hits cut to each k."""
        groups: dict[tuple[str | None, str, bool], list[int]] = defaultdict(list)
        for position, item in enumerate(batch):
            where = json.dumps(item.where, sort_keys=True, default=str) if item.where else ""
            groups[(item.kind, where, item.rerank)].append(position)
        out: list[list[Any]] = [[] for _ in batch]
        for (kind, _, rerank), positions in groups.items():
            k = max(batch[p].k for p in positions)
            texts = [batch[p].text for p in positions]
            where_of_group = batch[positions[0]].where
            self.stats.engine_calls += 1
            with self.engine_lock:
                if where_of_group:
                    answers = self.engine.search(texts, k=k, kind=kind, where=where_of_group, rerank=rerank)
                else:
                    answers = self.engine.search(texts, k=k, kind=kind, rerank=rerank)
            if len(answers) != len(texts):
                raise RuntimeError(f"engine returned {len(answers)} result lists for {len(texts)} queries")
            for p, hits in zip(positions, answers, strict=True):
                out[p] = list(hits)[: batch[p].k]
        return out
