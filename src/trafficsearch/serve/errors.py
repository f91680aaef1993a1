"""One error body for every 4xx/5xx the service sends, published in the OpenAPI schema.

The shape is FastAPI's own validation-error list, `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`,
used for every status (400, 401, 404, 413, 422, 429, ...) so that one client parser handles them all and
generated FastAPI clients read 422s as they expect. `msg` is always one readable line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from trafficsearch.serve.schemas import describe_errors


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="Where: ['body', 'k'], ['path', 'image_id'], ['header', ...]")
    msg: str = Field(description="One readable line.")
    type: str = Field(description="Machine-readable kind, e.g. 'int_parsing', 'not_found', 'unauthorized'.")


class ErrorResponse(BaseModel):
    """Every error response of this service."""

    detail: list[ErrorItem]


class ApiError(HTTPException):
    """An HTTP error with the location and type of its one error item."""

    def __init__(
        self,
        status: int,
        msg: str,
        *,
        loc: Sequence[str | int] = (),
        type: str = "http_error",  # noqa: A002 - the field is called type in FastAPI's shape
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, msg, headers=headers)
        self.loc = list(loc)
        self.type = type


_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    429: "rate_limited",
}


def error_body(msg: str, loc: Sequence[str | int] = (), type: str = "http_error") -> dict[str, Any]:  # noqa: A002
    return {"detail": [{"loc": list(loc), "msg": msg, "type": type}]}


def error_response(
    status: int,
    msg: str,
    loc: Sequence[str | int] = (),
    type: str | None = None,  # noqa: A002
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(msg, loc, type or _TYPES.get(status, "http_error")), status_code=status, headers=headers
    )


def validation_items(errors: Sequence[Any], allowed: list[str] | None = None) -> list[dict[str, Any]]:
    """pydantic errors -> items whose msg is one readable line (no raw input/ctx: may not be JSON)."""
    out = []
    for error in errors:
        loc = [p if isinstance(p, int) else str(p) for p in error.get("loc", ())]
        if not loc or loc[0] not in ("body", "query", "path", "header"):
            loc = ["body", *loc]
        out.append({"loc": loc, "msg": describe_errors([error], allowed), "type": str(error.get("type", ""))})
    return out


def validation_response(errors: Sequence[Any], allowed: list[str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": validation_items(errors, allowed)}, status_code=422)


def install_handlers(app: FastAPI) -> None:
    """Route every error FastAPI or Starlette raises through the one shape."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(list(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        loc = getattr(exc, "loc", [])
        kind = getattr(exc, "type", None)
        kind = None if kind in (None, "http_error") else kind
        return error_response(exc.status_code, str(exc.detail), loc, kind, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: still one line in the one shape, never a bare "Internal Server Error".
        return error_response(500, f"internal error: {type(exc).__name__}", type="internal_error")


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, all with ErrorResponse."""
    text = {
        400: "Bad request: not UTF-8 JSON, a number too large, a filter the index cannot apply, or a "
        "Host header not in the allow-list",
        401: "Missing or wrong bearer token (when the service requires one)",
        404: "No such image",
        413: "Request body too large",
        422: "A field is invalid (FastAPI's list form, one item per problem)",
        429: "Rate limit exceeded for this token; see Retry-After",
        500: "The engine failed (e.g. out of memory): not caused by the request",
    }
    return {s: {"model": ErrorResponse, "description": text.get(s, "Error")} for s in statuses}


__all__ = [
    "ApiError",
    "ErrorItem",
    "ErrorResponse",
    "error_body",
    "error_response",
    "install_handlers",
    "responses",
    "validation_items",
    "validation_response",
]
