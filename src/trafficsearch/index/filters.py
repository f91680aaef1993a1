"""Filters written on a command line -> the `where` format every backend takes (Metadata.rows_where):
`camera=c1,c2` (any of), `time>=2024-05-01`, `color!=red`, plus --time-from/--time-to."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from trafficsearch.errors import TrafficSearchError
from trafficsearch.index.timefmt import normalize_time

_ITEM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|!=|=|>|<)\s*(.*?)\s*$")
_OP = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt", "!=": "ne"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
INT_COLUMNS = frozenset({"id", "row", "width", "height"})


def _value(column: str, text: str) -> Any:
    if column in INT_COLUMNS:
        try:
            return int(text)
        except ValueError:
            raise TrafficSearchError(f"{column} takes a whole number, not {text!r}", field=column) from None
    return text


def parse_where(items: Sequence[str] = (), time_from: str | None = None, time_to: str | None = None) -> dict:
    """{column: value | [values] | {op: value}}; a clear error naming the bad item."""
    where: dict[str, Any] = {}
    for item in items:
        match = _ITEM.match(item)
        if not match or not match.group(3):
            raise TrafficSearchError(
                f"filter {item!r} is not COLUMN=VALUE[,VALUE...] or COLUMN>=VALUE (>, <, <=, != too)",
                field="where",
            )
        column, op, text = match.groups()
        if op == "=":
            values = [_value(column, v.strip()) for v in text.split(",") if v.strip()]
            if column in where:
                raise TrafficSearchError(f"{column} is given twice", field=column)
            where[column] = values[0] if len(values) == 1 else values
        else:
            bounds = where.setdefault(column, {})
            if not isinstance(bounds, dict):
                raise TrafficSearchError(f"{column} has both = and a comparison", field=column)
            bounds[_OP[op]] = _value(column, text)
    for op, value in (("gte", time_from), ("lte", time_to)):
        if value is not None:
            bounds = where.setdefault("time", {})
            if not isinstance(bounds, dict):
                raise TrafficSearchError("time has both = and --time-from/--time-to", field="time")
            if op == "lte" and _DATE.match(value.strip()):  # --time-to DAY includes that whole day
                day = dt.date.fromisoformat(value.strip()) + dt.timedelta(days=1)
                bounds["lt"] = normalize_time(day.isoformat(), field="time-to")
            else:
                bounds[op] = normalize_time(value, field="time-from" if op == "gte" else "time-to")
    return where
