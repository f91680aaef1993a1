"""A small closed-loop HTTP load generator (h11 + asyncio), shared by the load test and benchmarks.

`concurrency` clients each send their next request as soon as the previous answer arrives, until
`total` requests are done or the time budget runs out (then the rest are counted as not sent), so
a slow or hung server makes the run end on time instead of hanging a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11


@dataclass
class LoadResult:
    total: int
    concurrency: int
    wall_s: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # transport errors by exception type
    not_sent: int = 0

    @property
    def done(self) -> int:
        return len(self.latencies_ms)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def percentile(self, q: float) -> float:
        """q in [0, 100], nearest-rank on the sorted latencies (nan when nothing finished)."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
        return ordered[rank - 1]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.total,
            "concurrency": self.concurrency,
            "completed": self.done,
            "not_sent": self.not_sent,
            "status_counts": {str(k): v for k, v in sorted(self.statuses.items())},
            "transport_errors": dict(self.failures),
            "wall_s": round(self.wall_s, 3),
            "throughput_rps": round(self.done / self.wall_s, 1) if self.wall_s > 0 else None,
            "p50_ms": round(self.percentile(50), 3),
            "p90_ms": round(self.percentile(90), 3),
            "p99_ms": round(self.percentile(99), 3),
            "max_ms": round(max(self.latencies_ms), 3) if self.latencies_ms else None,
            "mean_ms": round(statistics.fmean(self.latencies_ms), 3) if self.latencies_ms else None,
        }


class _Connection:
    """One keep-alive HTTP/1.1 connection driven with h11 (the HTTP library uvicorn itself uses).

    httpx's async client costs several milliseconds per request on a busy 2-core machine, so with it
    the benchmark would mostly measure the client; a bare h11 client measures the service.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.h11 = h11.Connection(h11.CLIENT)

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h11 = h11.Connection(h11.CLIENT)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.h11.our_state is not h11.IDLE:
            await self.close()
            await self._connect()
        assert self.reader is not None and self.writer is not None
        headers = [
            ("Host", f"{self.host}:{self.port}"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
        ]
        data = self.h11.send(h11.Request(method="POST", target=path, headers=headers))
        data += self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage())
        self.writer.write(data)
        await self.writer.drain()
        status, chunks = 0, []
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                received = await self.reader.read(65536)
                self.h11.receive_data(received)  # b"" tells h11 the peer closed
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("server closed the connection mid-response")
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        else:
            await self.close()
        return status, b"".join(chunks)


async def run_load(
    base_url: str,
    bodies: Sequence[dict[str, Any]],
    total: int = 2000,
    concurrency: int = 32,
    budget_s: float = 120.0,
    request_timeout_s: float = 30.0,
    path: str = "/search",
) -> LoadResult:
    """POST bodies[i % len(bodies)] to base_url+path `total` times from `concurrency` clients."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ValueError(f"expected http://HOST:PORT, got {base_url!r}")
    encoded = [json.dumps(body).encode() for body in bodies]
    result = LoadResult(total=total, concurrency=concurrency, wall_s=0.0)
    next_index = 0
    deadline = time.monotonic() + budget_s

    async def worker() -> None:
        nonlocal next_index
        connection = _Connection(parts.hostname, parts.port)
        try:
            while next_index < total and time.monotonic() < deadline:
                body = encoded[next_index % len(encoded)]
                next_index += 1
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(request_timeout_s):
                        status, _ = await connection.post(path, body)
                except (OSError, TimeoutError, h11.ProtocolError) as exc:
                    result.failures[type(exc).__name__] += 1
                    await connection.close()
                    continue
                result.latencies_ms.append((time.perf_counter() - started) * 1000.0)
                result.statuses[status] += 1
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - started
    result.not_sent = total - next_index
    return result
