"""Running the app with uvicorn: in the foreground (the CLI) or in a background thread (tests, benchmarks).

The background server binds its own socket first, so port 0 gives a free port with no race between
"find a free port" and "bind it".
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

LOOPBACK = "127.0.0.1"


def _config(app: FastAPI, host: str, port: int, log_level: str, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        timeout_keep_alive=30,
        backlog=2048,
    )


def serve_forever(
    app: FastAPI, host: str = LOOPBACK, port: int = 8000, log_level: str = "info", access_log: bool = True
) -> None:
    """Serve until Ctrl-C (uvicorn handles the signals and a graceful shutdown)."""
    uvicorn.Server(_config(app, host, port, log_level, access_log)).run()


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI,
    host: str = LOOPBACK,
    port: int = 0,
    log_level: str = "warning",
    startup_timeout: float = 30.0,
) -> Iterator[str]:
    """Start uvicorn in a daemon thread; yields the base URL ("http://127.0.0.1:PORT"), stops on exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets of an explicit
    # TCP socket, and without it every response (headers, then body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, host, bound_port, log_level, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn")
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"uvicorn did not start on {host}:{bound_port}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound_port}" if family == socket.AF_INET else f"http://[{host}]:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
