"""Reading request bodies: a size limit enforced before the body is read, UTF-8 JSON with clear errors,
and no number so long that Python's int conversion raises (a 5,000-digit `k` is a 400, not a 500)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from trafficsearch.serve.errors import ApiError


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes before reading it all."""
    declared = request.headers.get("content-length")
    too_large = ApiError(413, f"request body too large (limit {limit} bytes)", loc=["body"], type="too_large")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _big_int(text: str) -> int:
    if len(text.lstrip("-")) > 30:  # Python refuses >4300 digits with a ValueError; refuse far earlier
        raise ApiError(400, f"number too large in the JSON body ({len(text)} digits)", loc=["body"])
    return int(text)


def parse_json(body: bytes, example: str = '{"text": "This is a white Audi."}') -> Any:
    if not body.strip():
        raise ApiError(400, f"empty request body; send JSON like {example}", loc=["body"], type="empty_body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400,
            f"request body is not valid UTF-8 (bad byte at offset {exc.start})",
            loc=["body"],
            type="utf8",
        ) from exc
    try:
        return json.loads(text, parse_int=_big_int)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            loc=["body"],
            type="json_invalid",
        ) from exc
    except RecursionError as exc:
        raise ApiError(400, "JSON nested too deeply", loc=["body"], type="json_invalid") from exc
