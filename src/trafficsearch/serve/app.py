"""The search service: a FastAPI app over one `SearchEngine` (the same engine the CLI uses).

Routes: POST /search (text, an example image, a gallery image, or a weighted mix; filters and paging),
GET /images/{id}, GET /thumbs/{id}?size=, GET /healthz, the clip-retrieval compatible /indices-list,
/knn-service and /metadata (serve/clip_compat.py), GET / (the web page) and /docs (OpenAPI).
Image ids are integers resolved through the engine and the resolved file must lie inside the gallery
root, so no request can read a file outside the gallery. Every error has one shape (serve/errors.py).
Exposing the service (serve/security.py): bearer tokens, a Host allow-list, CORS only for listed
origins, per-token rate limits, and an audit log of every search (serve/audit.py).
"""

from __future__ import annotations

import json
import mimetypes
import re
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from trafficsearch import __version__
from trafficsearch.errors import ConfigError
from trafficsearch.serve.audit import AuditLog
from trafficsearch.serve.batcher import Engine, MicroBatcher
from trafficsearch.serve.bodies import parse_json, read_body
from trafficsearch.serve.errors import (
    ApiError,
    error_response,
    install_handlers,
    responses,
    validation_response,
)
from trafficsearch.serve.schemas import (
    Health,
    SearchRequestBase,
    SearchResponse,
    json_body,
    search_request_model,
    where_conditions,
)
from trafficsearch.serve.security import RateLimiter, Token, TokenCheck, UrlSigner, host_allow_list, host_of
from trafficsearch.serve.service import Query as SearchQuery
from trafficsearch.serve.service import Service, decode_image
from trafficsearch.serve.thumbs import DEFAULT_SIZE, MAX_SIZE, MIN_SIZE, ThumbnailCache

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 12 * 1024 * 1024  # an example image travels base64 in the JSON body
_ID_RE = re.compile(r"[0-9]{1,18}")
_DIGITS = re.compile(r"-?[0-9]+")
# The page loads nothing from elsewhere; forbid it so an injected name could not either.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PUBLIC_PATHS = ("/", "/docs", "/openapi.json")
PUBLIC_PREFIXES = ("/static/", "/docs-static/")


def gallery_root_of(engine: Engine) -> Path | None:
    """Where the engine's images live: info()['gallery_root'] (or a similar key/attribute)."""
    info = engine.info()
    for key in ("gallery_root", "image_root", "images_dir", "root"):
        if info.get(key):
            return Path(info[key])
    for attr in ("gallery_root", "image_root", "root"):
        value = getattr(engine, attr, None)
        if value:
            return Path(value)
    return None


class HostAllowList:
    """ASGI middleware: 400 for a Host header not in the allow-list (DNS rebinding), before any route."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {h.lower() for h in allowed}
        self.any = "*" in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.any:
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope.get("headers", []) if k == b"host"), b"")
        host = host_of(raw.decode("latin-1"))
        if host in self.allowed:
            await self.app(scope, receive, send)
            return
        shown = raw.decode("latin-1")[:60]
        response = error_response(
            400,
            f"Host header {shown!r} is not allowed; start the server with "
            f"--allow-host {host_of(shown) or 'NAME'}",
            loc=["header", "host"],
            type="host_not_allowed",
        )
        await response(scope, receive, send)


def _mount_offline_docs(app: FastAPI) -> None:
    """/docs with Swagger UI from the swagger-ui-bundle package, so the API docs work without a network."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-static", StaticFiles(directory=str(swagger_ui_path)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="trafficsearch API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon-32x32.png",
        )


def parsed_of(text: str | None) -> dict[str, Any] | None:
    """What the query text says (data/query_parse.py), as the API returns it."""
    if text is None:
        return None
    from trafficsearch.data.query_parse import parse_query
    from trafficsearch.data.vocab import PEDESTRIAN_ATTRIBUTES

    parsed = parse_query(text)
    vehicle = parsed.vehicle
    return {
        "kind": parsed.kind,
        "vehicle": None
        if vehicle is None
        else {"color": vehicle.color, "brand": vehicle.brand, "type": vehicle.type},
        "attributes": [
            {"index": i, "name": PEDESTRIAN_ATTRIBUTES[i], "value": int(v)}
            for i, v in sorted(parsed.stated.items())
        ]
        if parsed.kind == "pedestrian"
        else [],
        "boots": parsed.boots,
    }


def create_app(
    engine: Engine,
    *,
    max_k: int = 100,
    max_text_len: int = 500,
    batch_window_ms: float = 5,
    max_batch: int = 32,
    gallery_root: str | Path | None = None,
    thumb_cache_bytes: int = 64 * 1024 * 1024,
    tokens: Sequence[Token] = (),
    require_auth: bool = False,
    allowed_hosts: Iterable[str] | None = None,
    cors_origins: Sequence[str] = (),
    audit_log: AuditLog | None = None,
    rate_limit: tuple[float, int] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    index_name: str = "trafficsearch",
    rerank_default: bool = True,
) -> FastAPI:
    """Build the service for `engine`; `gallery_root` defaults to the engine's (see gallery_root_of).

    `tokens` turn bearer authentication on; `require_auth` (what a non-loopback bind sets) refuses to
    build an app without them. `allowed_hosts` defaults to the loopback names; "*" allows any Host.
    A request without `rerank` re-ranks when `rerank_default` is on and the engine has a re-ranker.
    """
    if max_k < 1 or max_text_len < 1:
        raise ConfigError("max_k and max_text_len must be at least 1")
    if require_auth and not tokens:
        raise ConfigError(
            "this bind address is not loopback: give tokens (--token-file or $TRAFFICSEARCH_TOKENS)",
            field="tokens",
        )
    root = Path(gallery_root) if gallery_root is not None else gallery_root_of(engine)
    if root is None:
        raise ConfigError("cannot tell where the gallery images are; pass gallery_root", field="gallery_root")
    root = root.resolve()
    info = engine.info()
    count = info.get("count")
    model = info.get("model")
    model_name = model if isinstance(model, str) or model is None else json.dumps(model, sort_keys=True)

    default_rerank = bool(rerank_default and getattr(engine, "rerank_stages", None))
    batcher = MicroBatcher(engine, window_ms=batch_window_ms, max_batch=max_batch)
    thumbs = ThumbnailCache(thumb_cache_bytes)
    limiter = RateLimiter(*rate_limit) if rate_limit else None
    service = Service(engine, batcher, TokenCheck(tokens), limiter, audit_log, UrlSigner())
    extra_columns = getattr(getattr(getattr(engine, "data", None), "metadata", None), "extra_keys", ())
    request_model = search_request_model(max_k, max_text_len, tuple(extra_columns or ()))
    allowed_fields = list(request_model.model_fields)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await batcher.close()

    app = FastAPI(
        title="trafficsearch",
        summary="Find pedestrians and vehicles in traffic-camera crops from a description or an example.",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served below from the bundled Swagger UI: offline-first, no CDN
        redoc_url=None,
    )
    install_handlers(app)
    _mount_offline_docs(app)
    app.state.engine = engine
    app.state.batcher = batcher
    app.state.thumbs = thumbs
    app.state.gallery_root = root
    app.state.service = service

    async def authorize(request: Request) -> None:
        """Runs before a route's own parameters are validated: no 422 (or 404) leaks to a caller without a
        token. Image routes also take a signed URL (for <img src>)."""
        if not service.auth:
            return
        path_id = request.path_params.get("image_id")
        if path_id is not None:
            q = request.query_params
            if service.signer.verify(str(path_id), q.get("t"), q.get("exp"), q.get("sig")) is not None:
                return
        service.identify(request)

    # Shown in OpenAPI only when tokens are required (else clients and fuzzers would expect a 401).
    bearer = HTTPBearer(auto_error=False, description="A token from --token-file")
    secured = [Depends(bearer), Depends(authorize)] if tokens else []
    errors_common = (400, 401, 422)

    def resolve_image(image_id: str) -> Path:
        """Integer id -> file inside the gallery root, or 404 (never a path taken from the request)."""
        not_found = ApiError(
            404, f"no image with id '{image_id[:40]}'", loc=["path", "image_id"], type="not_found"
        )
        if not _ID_RE.fullmatch(image_id):
            raise not_found
        try:
            path = Path(engine.image_path(int(image_id))).resolve(strict=True)
        except Exception as exc:  # unknown id, missing file, broken link: all "no such image"
            raise not_found from exc
        if not path.is_relative_to(root) or not path.is_file():
            raise not_found
        return path

    def hit_dict(hit: Any, rank: int, prefix: str, token_id: str | None) -> dict[str, Any]:
        signed = service.image_query(int(hit.id), token_id)
        return {
            "id": int(hit.id),
            "name": str(hit.name),
            "score": float(hit.score),
            "kind": str(hit.kind),
            "rank": rank,
            "thumb_url": f"{prefix}/thumbs/{int(hit.id)}{signed}",
            "image_url": f"{prefix}/images/{int(hit.id)}{signed}",
        }

    @app.post(
        "/search",
        response_model=SearchResponse,
        summary="Rank gallery images for a text, an example image, a gallery image, or a mix",
        dependencies=secured,
        openapi_extra=json_body(request_model),
        responses=responses(*errors_common, 404, 413, 429, 500),
    )
    async def search(request: Request) -> JSONResponse:
        token_id = service.identify(request)
        service.limit(request, token_id)
        payload = parse_json(await read_body(request, max_body_bytes))
        try:
            body: SearchRequestBase = request_model.model_validate(payload)
        except ValidationError as exc:
            return validation_response(exc.errors(include_url=False), allowed_fields)
        query = SearchQuery(
            text=body.text,
            image_id=body.image_id,
            image_weight=body.image_weight,
            boost=list(body.boost),
            boost_weight=body.boost_weight,
            k=body.k,
            offset=body.offset,
            kind=body.kind,
            where=where_conditions(body.where),
            rerank=body.rerank,
        )
        if body.image is not None:
            query.image, query.image_sha256 = decode_image(body.image)
        if body.image_id is not None:
            service.check_image_id(body.image_id, ["body", "image_id"])
        started = time.perf_counter()
        if query.rerank is None:
            query.rerank = default_rerank
        hits = await service.run(query)
        service.record(request, token_id, query, len(hits), "/search")
        prefix = request.scope.get("root_path", "").rstrip("/")
        return JSONResponse(
            {
                "text": query.text,
                "image_sha256": query.image_sha256,
                "image_id": query.image_id,
                "k": query.k,
                "offset": query.offset,
                "kind": query.kind,
                "where": query.where,
                "rerank": query.rerank,
                "took_ms": round((time.perf_counter() - started) * 1000.0, 3),
                "parsed": parsed_of(query.text),
                "hits": [hit_dict(h, query.offset + i + 1, prefix, token_id) for i, h in enumerate(hits)],
            }
        )

    signed_params = {
        "t": Query(None, max_length=64, description="Signed URL: token id"),
        "exp": Query(None, max_length=12, description="Signed URL: expiry (unix seconds)"),
        "sig": Query(None, max_length=64, description="Signed URL: signature"),
    }

    @app.get(
        "/images/{image_id}",
        summary="The original image file",
        response_class=FileResponse,
        dependencies=secured,
        responses={
            200: {"content": {"image/*": {}}, "description": "The file"},
            **responses(400, 401, 404, 422),
        },
    )
    def image(
        image_id: str,
        t: str | None = signed_params["t"],
        exp: str | None = signed_params["exp"],
        sig: str | None = signed_params["sig"],
    ) -> FileResponse:
        del t, exp, sig  # checked by `authorize` (header token or signed URL); listed for the schema
        path = resolve_image(image_id)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    @app.get(
        "/thumbs/{image_id}",
        summary="A JPEG thumbnail (cached)",
        response_class=Response,
        dependencies=secured,
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "JPEG"},
            **responses(400, 401, 404, 422),
        },
    )
    def thumb(
        image_id: str,
        size: int = Query(DEFAULT_SIZE, ge=MIN_SIZE, le=MAX_SIZE, description="Longest side in pixels."),
        t: str | None = signed_params["t"],
        exp: str | None = signed_params["exp"],
        sig: str | None = signed_params["sig"],
    ) -> Response:
        del t, exp, sig  # checked by `authorize` (header token or signed URL); listed for the schema
        path = resolve_image(image_id)
        try:
            data = thumbs.get(path, size)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # unreadable, not an image, huge
            raise ApiError(404, f"image {image_id} cannot be decoded", loc=["path", "image_id"]) from exc
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get(
        "/healthz",
        response_model=Health,
        summary="Liveness, gallery size and model",
        dependencies=secured,
        responses=responses(400, 401),
    )
    async def healthz(request: Request) -> dict[str, Any]:
        service.identify(request)
        return {
            "ok": True,
            "count": count,
            "model": model_name,
            "auth": service.auth,
            "rerank_default": default_rerank,
            "batching": batcher.stats.as_dict(),
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"},
        )

    from trafficsearch.serve.clip_compat import add_clip_routes

    add_clip_routes(
        app,
        service,
        index_name=index_name,
        max_k=max_k,
        max_body_bytes=max_body_bytes,
        secured=secured,
        hit_dict=hit_dict,
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(HostAllowList, allowed=host_allow_list(None, allowed_hosts or ()))
    return app
