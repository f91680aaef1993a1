"""Request and response bodies of the HTTP API (pydantic), so /docs shows exactly what is accepted."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Kind = Literal["pedestrian", "vehicle"]


class SearchRequestBase(BaseModel):
    """Fields of POST /search; limits are filled in per app by `search_request_model`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str
    k: int = 10
    kind: Kind | None = None
    rerank: bool | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty or only whitespace")
        return value


def search_request_model(max_k: int, max_text_len: int) -> type[SearchRequestBase]:
    """A request model with this app's limits, so they are enforced and documented in one place."""

    class SearchRequest(SearchRequestBase):
        model_config = ConfigDict(
            extra="forbid",
            strict=True,
            title="SearchRequest",
            json_schema_extra={"examples": [{"text": "This is a white Audi.", "k": 10, "kind": None}]},
        )

        text: str = Field(
            min_length=1, max_length=max_text_len, description="Query sentence, as in test_text.txt."
        )
        k: int = Field(10, ge=1, le=max_k, description="How many images to return.")
        kind: Kind | None = Field(None, description="Only pedestrians or only vehicles; null for both.")
        rerank: bool | None = Field(
            None,
            description="Re-rank the top candidates with the ITM head (slower); null: the server's default "
            "(on when the index has a re-ranker, unless started with --no-rerank).",
        )

    return SearchRequest


class HitOut(BaseModel):
    id: int
    name: str
    score: float
    kind: str
    thumb_url: str
    image_url: str


class SearchResponse(BaseModel):
    text: str
    k: int
    kind: Kind | None
    rerank: bool
    took_ms: float
    hits: list[HitOut]


class Health(BaseModel):
    ok: bool
    count: int | None
    model: str | None
    batching: dict[str, int]


def describe_errors(errors: list[dict], allowed: list[str] | None = None) -> str:
    """pydantic/FastAPI error list -> one readable line ("field 'k': Input should be ...; ...")."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ())]
        source = loc.pop(0) if loc and loc[0] in ("body", "query", "path", "header") else "body"
        where = ".".join(loc)
        if source in ("query", "path", "header") and where:
            parts.append(f"{source} parameter '{where}': {error.get('msg', 'invalid value')}")
            continue
        if error.get("type") == "extra_forbidden":
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            parts.append(f"unknown field '{where}'{hint}")
            continue
        message = str(error.get("msg", "invalid value"))
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if error.get("type") in ("model_type", "dict_type") and not where:
            message = "the request body must be a JSON object"
        parts.append(f"field '{where}': {message}" if where else message)
    return "; ".join(parts) or "invalid request"


__all__ = [
    "Health",
    "HitOut",
    "Kind",
    "SearchRequestBase",
    "SearchResponse",
    "describe_errors",
    "search_request_model",
]
