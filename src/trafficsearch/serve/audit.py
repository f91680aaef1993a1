"""The audit log: who searched for what, one JSON object per line, rotated by size.

Each line goes to the file in one `os.write` on an O_APPEND descriptor, so concurrent writers (threads
or several server processes) never interleave parts of lines, and a crash leaves whole lines only.
When the file passes `max_bytes` it is renamed to `.1` (`.1` to `.2`, ... up to `backups`) and a new
file is started.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trafficsearch.errors import ConfigError


class AuditLog:
    """Append-only JSON-lines log with size-based rotation."""

    def __init__(self, path: str | Path, max_bytes: int = 10 * 1024 * 1024, backups: int = 5) -> None:
        if max_bytes < 1024 or backups < 1:
            raise ConfigError("audit log: max_bytes must be >= 1024 and backups >= 1", path=path)
        self.path = Path(path)
        self.max_bytes, self.backups = max_bytes, backups
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = self._open()
        except OSError as exc:
            raise ConfigError(f"cannot open the audit log: {exc.strerror}", path=self.path) from exc

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _rotate(self) -> None:
        os.close(self._fd)
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fd = self._open()

    def write(self, **fields: Any) -> None:
        """One line: {"time": ISO-8601 UTC, **fields}."""
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **fields}
        line = (json.dumps(record, ensure_ascii=True, default=str, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if os.fstat(self._fd).st_size + len(line) > self.max_bytes and os.fstat(self._fd).st_size > 0:
                self._rotate()
            os.write(self._fd, line)  # one write(2) of the whole line on an O_APPEND descriptor

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
