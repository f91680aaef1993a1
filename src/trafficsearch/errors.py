"""User-facing errors: one exception type, printed by the CLI as one line, never a traceback."""

from __future__ import annotations

from pathlib import Path


class TrafficSearchError(Exception):
    """A failure the user can fix: names the file, the line and the field where known."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
        parts = [p for p in (where, f"field '{self.field}'" if self.field else "") if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class DataError(TrafficSearchError):
    """A label, query or image file that does not follow the competition format."""


class ConfigError(TrafficSearchError):
    """A training/model/ensemble configuration that cannot be used."""


class IndexError_(TrafficSearchError):
    """An index directory that is missing, incomplete or inconsistent."""
