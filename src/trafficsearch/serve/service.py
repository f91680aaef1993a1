"""What every search route shares: who is asking (auth), how often (rate limit), what was asked (audit),
and running a query (the micro-batcher for plain text, search by example for images and mixes).

Kept apart from the routes so the clip-retrieval compatible routes (serve/clip_compat.py) go through
exactly the same checks as /search.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from PIL import Image

from trafficsearch.errors import TrafficSearchError
from trafficsearch.serve.audit import AuditLog
from trafficsearch.serve.batcher import Engine, MicroBatcher
from trafficsearch.serve.errors import ApiError
from trafficsearch.serve.security import RateLimiter, TokenCheck, UrlSigner

MAX_IMAGE_PIXELS = 40_000_000  # a camera crop is far smaller; refuse decompression bombs early


@dataclass
class Query:
    """One search, whatever route it came from."""

    text: str | None = None
    image: Image.Image | None = None
    image_sha256: str | None = None
    image_id: int | None = None
    image_weight: float = 0.5
    boost: list[str] = field(default_factory=list)
    boost_weight: float = 0.3
    embedding: list[float] | None = None
    k: int = 10
    offset: int = 0
    kind: str | None = None
    where: dict[str, Any] | None = None
    rerank: bool = False

    def plain_text(self) -> bool:
        return (
            self.text is not None
            and self.image is None
            and self.image_id is None
            and not self.boost
            and self.embedding is None
        )


def decode_image(data: str, field_name: str = "image") -> tuple[Image.Image, str]:
    """base64 text -> (decoded RGB image, sha256 of the file bytes); 422 naming the field otherwise."""
    loc = ["body", field_name]
    try:
        raw = base64.b64decode(data.split(",", 1)[1] if data.startswith("data:") else data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(
            422, f"field '{field_name}': not valid base64 ({exc})", loc=loc, type="base64"
        ) from exc
    digest = hashlib.sha256(raw).hexdigest()
    try:
        with Image.open(io.BytesIO(raw)) as probe:
            if probe.width * probe.height > MAX_IMAGE_PIXELS:
                raise ApiError(
                    422,
                    f"field '{field_name}': image is {probe.width}x{probe.height}, too many pixels",
                    loc=loc,
                    type="image_too_large",
                )
            image = probe.convert("RGB")
    except ApiError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ApiError(
            422, f"field '{field_name}': not a decodable image ({type(exc).__name__})", loc=loc, type="image"
        ) from exc
    return image, digest


class Service:
    """Shared state of one app: engine, batcher, auth, limits, audit, URL signing."""

    def __init__(
        self,
        engine: Engine,
        batcher: MicroBatcher,
        tokens: TokenCheck,
        limiter: RateLimiter | None,
        audit: AuditLog | None,
        signer: UrlSigner,
    ) -> None:
        self.engine, self.batcher = engine, batcher
        self.tokens, self.limiter, self.audit, self.signer = tokens, limiter, audit, signer
        self.engine_lock: threading.Lock = batcher.engine_lock

    @property
    def auth(self) -> bool:
        return bool(self.tokens)

    # -- who and how often ------------------------------------------------------------------------------
    def identify(self, request: Request) -> str | None:
        """The caller's token id (None when auth is off); 401 with WWW-Authenticate when it is wrong."""
        if not self.auth:
            return None
        token_id = self.tokens.identify(request.headers.get("authorization"))
        if token_id is None:
            given = "authorization" in request.headers
            raise ApiError(
                401,
                "invalid bearer token" if given else "this service needs 'Authorization: Bearer <token>'",
                loc=["header", "authorization"],
                type="unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="trafficsearch"'},
            )
        return token_id

    def limit(self, request: Request, token_id: str | None) -> None:
        if self.limiter is None:
            return
        key = token_id or (request.client.host if request.client else "?")
        wait = self.limiter.take(key)
        if wait > 0:
            raise ApiError(
                429,
                f"rate limit exceeded ({self.limiter.burst} searches, refilled at "
                f"{self.limiter.rate:g}/s); retry in {math.ceil(wait)} s",
                type="rate_limited",
                headers={"Retry-After": str(math.ceil(wait))},
            )

    # -- running a query --------------------------------------------------------------------------------
    async def run(self, query: Query) -> list[Any]:
        """Hits ranked offset+1 .. offset+k."""
        depth = query.offset + query.k
        try:
            if query.plain_text():
                assert query.text is not None
                hits = await self.batcher.search(query.text, depth, query.kind, query.rerank, query.where)
            else:
                hits = await asyncio.to_thread(self._example, query, depth)
        except TrafficSearchError as exc:
            raise ApiError(400, exc.one_line(), loc=["body", exc.field] if exc.field else ["body"]) from exc
        except (OverflowError, ValueError) as exc:  # e.g. a filter value sqlite cannot hold
            raise ApiError(400, f"cannot search with this request: {exc}", loc=["body"]) from exc
        except ApiError:
            raise
        except Exception as exc:  # the engine failed (out of memory, ...): not the request's fault
            raise ApiError(500, f"search failed: {type(exc).__name__}: {exc}", type="engine_error") from exc
        return list(hits)[query.offset : depth]

    def _example(self, query: Query, depth: int) -> list[Any]:
        from trafficsearch.search.example import ExampleQuery, search_example

        example = ExampleQuery()
        has_example = query.image is not None or query.image_id is not None
        if query.text is not None:
            example.texts.append((query.text, 1.0 - query.image_weight if has_example else 1.0))
        example.texts += [(b, query.boost_weight) for b in query.boost]
        if query.image is not None:
            example.images.append((query.image, query.image_weight))
        if query.image_id is not None:
            example.ids.append((query.image_id, query.image_weight))
        if query.embedding is not None:
            import numpy as np

            example.embedding = np.asarray(query.embedding, dtype=np.float32)
        search = getattr(self.engine, "search_example", None)
        with self.engine_lock:  # the batcher's worker thread uses the engine too
            if search is not None:
                return search(example, k=depth, kind=query.kind, where=query.where)
            return search_example(self.engine, example, k=depth, kind=query.kind, where=query.where)

    def check_image_id(self, image_id: int, loc: list[str | int]) -> None:
        try:
            self.engine.image_path(image_id)
        except Exception as exc:
            raise ApiError(404, f"no image with id {image_id}", loc=loc, type="not_found") from exc

    # -- what was asked ---------------------------------------------------------------------------------
    def record(self, request: Request, token_id: str | None, query: Query, n: int, route: str) -> None:
        if self.audit is None:
            return
        self.audit.write(
            client=request.client.host if request.client else None,
            token=token_id,
            route=route,
            text=query.text,
            image_sha256=query.image_sha256,
            image_id=query.image_id,
            boost=query.boost or None,
            kind=query.kind,
            where=query.where,
            k=query.k,
            offset=query.offset,
            results=n,
        )

    def image_query(self, image_id: int, token_id: str | None) -> str:
        """The query string an image URL needs ('' when auth is off)."""
        return "" if token_id is None else "?" + self.signer.query(image_id, token_id)


def where_key(where: dict[str, Any] | None) -> str:
    return json.dumps(where or {}, sort_keys=True, default=str)
