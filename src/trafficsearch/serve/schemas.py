"""Request and response bodies of the HTTP API (pydantic), so /docs shows exactly what is accepted.

Integers follow JSON Schema: `83.0` is an integer (the schema says `type: integer`, and JSON Schema counts
a number with a zero fractional part as one), so it is accepted as 83; `83.5`, `"83"` and `true` are not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

Kind = Literal["pedestrian", "vehicle"]
# Metadata columns a `where` filter may name (index/metadata.py COLUMNS, less the internal row/path); an index
# built with a metadata file adds its extra columns (Metadata.extra_keys, `where_type`).
FilterColumn = Literal["id", "name", "kind", "width", "height", "camera", "time"]
MAX_ID = 2**63 - 1
MAX_FILTER_INT = 2**53  # sqlite holds 64-bit ints; JSON clients lose precision past 2**53 anyway
MAX_OFFSET = 10_000
MAX_IMAGE_B64 = 8 * 1024 * 1024
_NON_SPACE = re.compile(r"\S")


def _integral(value: Any) -> Any:
    """83.0 -> 83 (JSON Schema's integer); other values pass on to the strict int check."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_integral)]


def json_int(ge: int, le: int) -> Any:
    """An integer in [ge, le] that also takes 83.0. (Bounds must sit in the same Annotated as the
    validator: nested, pydantic writes them to the schema as unknown 'ge'/'le' keys.)"""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_integral)]


Scalar = (
    Annotated[str, Field(max_length=200)]
    | json_int(-MAX_FILTER_INT, MAX_FILTER_INT)
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
    | None
)


class Range(BaseModel):
    """A comparison filter, e.g. {"gte": 1000, "lt": 2000} on `time`."""

    model_config = ConfigDict(extra="forbid", strict=True)
    eq: Scalar = None
    ne: Scalar = None
    gt: Scalar = None
    gte: Scalar = None
    lt: Scalar = None
    lte: Scalar = None

    def as_condition(self) -> dict[str, Any]:
        return {op: v for op, v in self.model_dump().items() if op in self.model_fields_set}


Condition = Scalar | Annotated[list[Scalar], Field(max_length=100)] | Range
_WHERE_HELP = (
    "Metadata filter: {column: value | [any of] | {gte, lte, gt, lt, eq, ne}}, "
    'e.g. {"camera": ["c001", "c002"], "time": {"gte": 0, "lt": 3600}}.'
)
Where = Annotated[dict[FilterColumn, Condition], Field(max_length=8, description=_WHERE_HELP)]


def where_type(extra_columns: Sequence[str] = ()) -> Any:
    """`Where` over the standard columns plus an index's extra metadata columns (so /docs lists them and
    an unknown column is a 422 naming the allowed ones)."""
    if not extra_columns:
        return Where
    columns = tuple(dict.fromkeys((*get_args(FilterColumn), *extra_columns)))
    return Annotated[dict[Literal[columns], Condition], Field(max_length=8, description=_WHERE_HELP)]  # type: ignore[valid-type]


def where_conditions(where: dict[str, Any] | None) -> dict[str, Any] | None:
    """The validated filter in the engine's `rows_where` format (plain dicts and lists)."""
    if not where:
        return None
    return {col: c.as_condition() if isinstance(c, Range) else c for col, c in where.items()}


def _check_text(value: str | None) -> str | None:
    if value is None:
        return None
    if not _NON_SPACE.search(value):
        raise ValueError("text is empty or only whitespace")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise ValueError("text holds an unpaired UTF-16 surrogate")
    return value


class SearchRequestBase(BaseModel):
    """Fields of POST /search; limits are filled in per app by `search_request_model`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = None
    image: str | None = None
    image_id: JsonInt | None = None
    image_weight: float = 0.5
    boost: list[str] = []
    boost_weight: float = 0.3
    k: JsonInt = 10
    offset: JsonInt = 0
    kind: Kind | None = None
    where: Where | None = None
    rerank: bool | None = None

    @field_validator("text")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return _check_text(value)

    @field_validator("boost")
    @classmethod
    def _boosts(cls, value: list[str]) -> list[str]:
        for item in value:
            _check_text(item)
        return value

    @model_validator(mode="after")
    def _something_to_search(self) -> SearchRequestBase:
        if self.text is None and self.image is None and self.image_id is None:
            raise ValueError("give at least one of text, image (base64) or image_id")
        return self

    def has_example(self) -> bool:
        return self.image is not None or self.image_id is not None


def search_request_model(
    max_k: int, max_text_len: int, extra_columns: Sequence[str] = ()
) -> type[SearchRequestBase]:
    """A request model with this app's limits, so they are enforced and documented in one place;
    `extra_columns`: the index's extra metadata columns `where` may also name."""
    where_field = where_type(extra_columns)

    text_field = Annotated[str, Field(min_length=1, max_length=max_text_len, pattern=r"\S")]

    class SearchRequest(SearchRequestBase):
        model_config = ConfigDict(
            extra="forbid",
            strict=True,
            regex_engine="python-re",  # the same regex dialect as the schema's generators and Python's re
            title="SearchRequest",
            json_schema_extra={
                "anyOf": [{"required": ["text"]}, {"required": ["image"]}, {"required": ["image_id"]}],
                "examples": [
                    {"text": "This is a white Audi.", "k": 10, "kind": None},
                    {"image_id": 3, "k": 10},
                    {"text": "a red car", "image_id": 3, "image_weight": 0.5},
                ],
            },
        )

        text: text_field | None = Field(
            None, description="Query sentence, as in test_text.txt. At least one of text/image/image_id."
        )
        image: Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_B64)] | None = Field(
            None, description="Search by example: a JPEG/PNG file, base64-encoded (as clip-retrieval sends)."
        )
        image_id: json_int(0, MAX_ID) | None = Field(
            None, description='"More like this": the id of a gallery image (its stored vectors are used).'
        )
        image_weight: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
            0.5, description="With text and an image: the image's share of the weighted sum of embeddings."
        )
        boost: Annotated[list[text_field], Field(max_length=8)] = Field(
            [], description='Extra phrases added to the query embedding, e.g. ["with a backpack"].'
        )
        boost_weight: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
            0.3, description="Weight of each boost phrase relative to the query."
        )
        k: json_int(1, max_k) = Field(10, description="How many images to return.")
        offset: json_int(0, MAX_OFFSET) = Field(0, description="Skip this many results first (paging).")
        kind: Kind | None = Field(None, description="Only pedestrians or only vehicles; null for both.")
        where: where_field | None = Field(None)  # type: ignore[valid-type]
        rerank: bool | None = Field(
            None,
            description="Re-rank the top candidates with the ITM head (text only; slower); null: the "
            "server's default (on when the index has a re-ranker, unless started with --no-rerank).",
        )

    return SearchRequest


class HitOut(BaseModel):
    id: int
    name: str
    score: float
    kind: str
    rank: int = Field(description="1-based rank in the whole result list (offset included).")
    thumb_url: str
    image_url: str


class VehicleOut(BaseModel):
    color: str | None
    brand: str | None
    type: str | None


class AttributeOut(BaseModel):
    index: int = Field(description="Position in the competition's 21-attribute vector.")
    name: str
    value: int = Field(description="1: stated present, 0: stated or implied absent.")


class ParsedOut(BaseModel):
    """What the query text was understood as (data/query_parse.py)."""

    kind: Kind | None
    vehicle: VehicleOut | None
    attributes: list[AttributeOut]
    boots: bool | None


class SearchResponse(BaseModel):
    text: str | None
    image_sha256: str | None = Field(description="SHA-256 of the uploaded example image, if any.")
    image_id: int | None
    k: int
    offset: int
    kind: Kind | None
    where: dict[str, Any] | None
    rerank: bool
    took_ms: float
    parsed: ParsedOut | None
    hits: list[HitOut]


class Health(BaseModel):
    ok: bool
    count: int | None
    model: str | None
    auth: bool
    rerank_default: bool  # what a search without `rerank` does
    batching: dict[str, int]


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` inlined, for a route's `openapi_extra` request body: there a
    `#/$defs/...` reference would point at the OpenAPI document's root and resolve to nothing."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(
                    {**defs[ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
                )
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """A route's `openapi_extra` for a required JSON body of `model` (routes that read the body themselves,
    so FastAPI does not document it)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": body_schema(model)}},
        }
    }


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
        pattern = (error.get("ctx") or {}).get("pattern")
        if error.get("type") == "string_pattern_mismatch" and pattern == r"\S":
            message = "text is empty or only whitespace"
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
    "ParsedOut",
    "SearchRequestBase",
    "SearchResponse",
    "body_schema",
    "describe_errors",
    "json_body",
    "search_request_model",
    "where_conditions",
]
