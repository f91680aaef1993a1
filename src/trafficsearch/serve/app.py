"""The search service: a FastAPI app over one `SearchEngine` (the same engine the CLI uses).

Routes: POST /search (micro-batched), GET /images/{id}, GET /thumbs/{id}?size=, GET /healthz,
GET / (the web page) and /docs (OpenAPI). Image ids are integers resolved through the engine and the
resolved file must lie inside the gallery root, so no request can read a file outside the gallery.
"""

from __future__ import annotations

import json
import mimetypes
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from trafficsearch import __version__
from trafficsearch.errors import ConfigError, TrafficSearchError
from trafficsearch.serve.batcher import Engine, MicroBatcher
from trafficsearch.serve.schemas import Health, SearchResponse, describe_errors, search_request_model
from trafficsearch.serve.thumbs import DEFAULT_SIZE, MAX_SIZE, MIN_SIZE, ThumbnailCache

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 64 * 1024
_ID_RE = re.compile(r"[0-9]{1,18}")
# The page loads nothing from elsewhere; forbid it so an injected name could not either.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


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


def _hit_dict(hit: Any, prefix: str) -> dict[str, Any]:
    return {
        "id": int(hit.id),
        "name": str(hit.name),
        "score": float(hit.score),
        "kind": str(hit.kind),
        "thumb_url": f"{prefix}/thumbs/{int(hit.id)}",
        "image_url": f"{prefix}/images/{int(hit.id)}",
    }


async def _read_body(request: Request) -> bytes:
    """The whole body, refusing more than MAX_BODY_BYTES before reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"request body too large (limit {MAX_BODY_BYTES} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body too large (limit {MAX_BODY_BYTES} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise HTTPException(400, 'empty request body; send JSON like {"text": "This is a white Audi."}')
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"request body is not valid UTF-8 (bad byte at offset {exc.start})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPException(
            400, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc


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


def create_app(
    engine: Engine,
    *,
    max_k: int = 100,
    max_text_len: int = 500,
    batch_window_ms: float = 5,
    max_batch: int = 32,
    gallery_root: str | Path | None = None,
    thumb_cache_bytes: int = 64 * 1024 * 1024,
    rerank_default: bool = True,
) -> FastAPI:
    """Build the service for `engine`; `gallery_root` defaults to the engine's (see gallery_root_of).

    A request without `rerank` re-ranks when `rerank_default` is on and the engine has a re-ranker."""
    if max_k < 1 or max_text_len < 1:
        raise ConfigError("max_k and max_text_len must be at least 1")
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
    request_model = search_request_model(max_k, max_text_len)
    allowed_fields = list(request_model.model_fields)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await batcher.close()

    app = FastAPI(
        title="trafficsearch",
        summary="Find pedestrians and vehicles in traffic-camera crops from a text description.",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served below from the bundled Swagger UI: offline-first, no CDN
        redoc_url=None,
    )
    _mount_offline_docs(app)
    app.state.engine = engine
    app.state.batcher = batcher
    app.state.thumbs = thumbs
    app.state.gallery_root = root

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return JSONResponse(
            {"detail": describe_errors(errors), "errors": _jsonable_errors(errors)}, status_code=422
        )

    def resolve_image(image_id: str) -> Path:
        """Integer id -> file inside the gallery root, or 404 (never a path taken from the request)."""
        not_found = HTTPException(404, f"no image with id '{image_id[:40]}'")
        if not _ID_RE.fullmatch(image_id):
            raise not_found
        try:
            path = Path(engine.image_path(int(image_id))).resolve(strict=True)
        except Exception as exc:  # unknown id, missing file, broken link: all "no such image"
            raise not_found from exc
        if not path.is_relative_to(root) or not path.is_file():
            raise not_found
        return path

    @app.post(
        "/search",
        response_model=SearchResponse,
        summary="Rank gallery images for one text query",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request_model.model_json_schema()}},
            }
        },
        responses={400: {"description": "Body is not UTF-8 JSON"}, 422: {"description": "Invalid field"}},
    )
    async def search(request: Request) -> JSONResponse:
        payload = _parse_json(await _read_body(request))
        try:
            query = request_model.model_validate(payload)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            return JSONResponse(
                {"detail": describe_errors(errors, allowed_fields), "errors": _jsonable_errors(errors)},
                status_code=422,
            )
        started = time.perf_counter()
        try:
            rerank = default_rerank if query.rerank is None else query.rerank
            hits = await batcher.search(query.text, query.k, query.kind, rerank)
        except TrafficSearchError as exc:
            raise HTTPException(400, exc.one_line()) from exc
        except Exception as exc:
            raise HTTPException(500, f"search failed: {type(exc).__name__}: {exc}") from exc
        prefix = request.scope.get("root_path", "").rstrip("/")
        return JSONResponse(
            {
                "text": query.text,
                "k": query.k,
                "kind": query.kind,
                "rerank": rerank,
                "took_ms": round((time.perf_counter() - started) * 1000.0, 3),
                "hits": [_hit_dict(hit, prefix) for hit in hits],
            }
        )

    @app.get("/images/{image_id}", summary="The original image file", response_class=FileResponse)
    def image(image_id: str) -> FileResponse:
        path = resolve_image(image_id)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/thumbs/{image_id}", summary="A JPEG thumbnail (cached)", response_class=Response)
    def thumb(
        image_id: str,
        size: int = Query(DEFAULT_SIZE, ge=MIN_SIZE, le=MAX_SIZE, description="Longest side in pixels."),
    ) -> Response:
        path = resolve_image(image_id)
        try:
            data = thumbs.get(path, size)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # unreadable, not an image, huge
            raise HTTPException(404, f"image {image_id} cannot be decoded") from exc
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/healthz", response_model=Health, summary="Liveness, gallery size and model")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "count": count, "model": model_name, "batching": batcher.stats.as_dict()}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"},
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _jsonable_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Error entries without the raw input/ctx objects (which may not be JSON-serialisable)."""
    out = []
    for error in errors:
        out.append(
            {
                "loc": [str(p) for p in error.get("loc", ())],
                "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return out
