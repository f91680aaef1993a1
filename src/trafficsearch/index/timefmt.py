"""One normal form for image times (ISO 8601), so SQLite and Milvus compare times as plain text."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from trafficsearch.errors import DataError


def normalize_time(
    value: object, *, path: str | Path | None = None, line: int | None = None, field: str | None = "time"
) -> str:
    """'YYYY-MM-DDTHH:MM:SS[.ffffff]': zoned times converted to UTC, a bare date means its midnight."""
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        text = str(value).strip()
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            raise DataError(
                f"time {text!r} is not ISO 8601 (e.g. 2024-05-01T13:45:00 or 2024-05-01T13:45:00+02:00)",
                path=path,
                line=line,
                field=field,
            ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed.isoformat()


def day_of(time: str | None) -> str:
    """The partition a normalised time falls in ('2024-05-01'), or 'none'."""
    return time[:10] if time else "none"
