"""clip-retrieval's back-end API over our engine, so its ClipClient and its web front work unchanged.

clip-retrieval (PyPI `clip-retrieval`, clip_back.py) serves GET /indices-list, POST /knn-service and
POST /metadata; those paths do not collide with ours. Shapes follow it: /knn-service answers a list of
{"id", "similarity", "url", "caption", ...}, /metadata a list of {"id", "metadata": {...}}. Fields it
sends that mean nothing here (deduplicate, use_safety_model, use_violence_detector, use_mclip,
aesthetic_score, aesthetic_weight) are accepted and ignored. `image_url` is refused: this service never
fetches URLs (it would let any caller make the server reach arbitrary addresses). Only the image modality
exists (there is no caption index), so `modality: "text"` is refused with a clear 400.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trafficsearch.serve.bodies import parse_json, read_body
from trafficsearch.serve.errors import ApiError, responses, validation_response
from trafficsearch.serve.schemas import JsonInt, json_body, json_int
from trafficsearch.serve.service import Query, Service, decode_image

MAX_RESULT_IDS = 100_000
Ignored = JsonInt | float | str | bool | None


def knn_request_model(
    max_k: int, index_name: str = "trafficsearch", dim: int | None = None
) -> type[BaseModel]:
    """The request model with this service's limits: its index name, k, and the embedding size."""
    names = Literal[(index_name, "")]  # type: ignore[valid-type]  # clip-front sends "" before it knows
    dims = {"min_length": dim, "max_length": dim} if dim else {"min_length": 1, "max_length": 4096}

    class KnnRequest(BaseModel):
        """clip-retrieval's /knn-service body (exactly one of text, image, embedding_input is used)."""

        model_config = ConfigDict(extra="ignore", strict=True, title="KnnRequest", regex_engine="python-re")

        text: Annotated[str, Field(max_length=2000)] | None = None
        image: Annotated[str, Field(max_length=8 * 1024 * 1024)] | None = Field(
            None, description="base64 image file"
        )
        image_url: Annotated[str, Field(max_length=2000)] | None = Field(
            None, description="Refused when set: the service never fetches URLs."
        )
        embedding_input: Annotated[list[Annotated[float, Field(ge=-1e30, le=1e30)]], Field(**dims)] | None = (
            None
        )
        modality: Literal["image", "text"] = "image"
        num_images: json_int(1, max_k) = 40
        num_result_ids: json_int(1, MAX_RESULT_IDS) | None = None
        indice_name: names | None = None  # type: ignore[valid-type]
        use_mclip: Ignored = None
        deduplicate: Ignored = None
        use_safety_model: Ignored = None
        use_violence_detector: Ignored = None
        aesthetic_score: Ignored = None
        aesthetic_weight: Ignored = None

    return KnnRequest


def metadata_request_model(index_name: str) -> type[BaseModel]:
    names = Literal[(index_name, "")]  # type: ignore[valid-type]

    class MetadataRequest(BaseModel):
        model_config = ConfigDict(extra="ignore", strict=True, title="MetadataRequest")
        ids: Annotated[list[json_int(0, 2**63 - 1)], Field(max_length=1000)]
        indice_name: names | None = None  # type: ignore[valid-type]

    return MetadataRequest


class KnnResult(BaseModel):
    id: int
    similarity: float
    url: str
    caption: str
    kind: str


class MetadataEntry(BaseModel):
    id: int
    metadata: dict[str, Any]


def add_clip_routes(
    app: FastAPI,
    service: Service,
    *,
    index_name: str,
    max_k: int,
    max_body_bytes: int,
    secured: list[Any],
    hit_dict: Callable[..., dict[str, Any]],
) -> None:
    info_dim = service.engine.info().get("dim")
    single = not hasattr(getattr(service.engine, "first_stage", None), "members")  # not an ensemble
    knn_model = knn_request_model(max_k, index_name, int(info_dim) if info_dim and single else None)
    metadata_model = metadata_request_model(index_name)

    @app.get(
        "/indices-list",
        summary="clip-retrieval: the index names",
        response_model=list[str],
        dependencies=secured,
        responses=responses(400, 401),
    )
    async def indices_list(request: Request) -> list[str]:
        service.identify(request)
        return [index_name]

    @app.post(
        "/knn-service",
        summary="clip-retrieval: nearest images to a text, an image (base64) or an embedding",
        response_model=list[KnnResult],
        dependencies=secured,
        openapi_extra=json_body(knn_model),
        responses=responses(400, 401, 413, 422, 429, 500),
    )
    async def knn_service(request: Request) -> JSONResponse:
        token_id = service.identify(request)
        service.limit(request, token_id)
        payload = parse_json(
            await read_body(request, max_body_bytes), '{"text": "a white car", "num_images": 10}'
        )
        try:
            body: Any = knn_model.model_validate(payload)
        except ValidationError as exc:
            return validation_response(exc.errors(include_url=False))
        if body.modality == "text":
            raise ApiError(
                400,
                "modality 'text' needs a caption index, which this service does not have; use 'image'",
                loc=["body", "modality"],
                type="unsupported",
            )
        query = Query(k=body.num_images)
        # clip-retrieval's back uses the first of text, image, embedding_input that is given.
        if body.text:
            query.text = body.text
        elif body.image:
            query.image, query.image_sha256 = decode_image(body.image)
        elif body.image_url:
            raise ApiError(
                400,
                "image_url is not supported: this service never fetches URLs; "
                "send the file base64 in 'image'",
                loc=["body", "image_url"],
                type="unsupported",
            )
        elif body.embedding_input is not None:
            query.embedding = list(body.embedding_input)
        else:
            raise ApiError(400, "give one of text, image or embedding_input", loc=["body"], type="missing")
        hits = await service.run(query)
        service.record(request, token_id, query, len(hits), "/knn-service")
        base = str(request.base_url).rstrip("/")
        out = []
        for rank, hit in enumerate(hits, start=1):
            d = hit_dict(hit, rank, base, token_id)
            out.append(
                {
                    "id": d["id"],
                    "similarity": d["score"],
                    "url": d["image_url"],
                    "caption": d["name"],
                    "kind": d["kind"],
                }
            )
        return JSONResponse(out)

    @app.post(
        "/metadata",
        summary="clip-retrieval: metadata of result ids",
        response_model=list[MetadataEntry],
        dependencies=secured,
        openapi_extra=json_body(metadata_model),
        responses=responses(400, 401, 413, 422),
    )
    async def metadata(request: Request) -> JSONResponse:
        token_id = service.identify(request)
        payload = parse_json(
            await read_body(request, 1024 * 1024), '{"ids": [0, 1], "indice_name": "trafficsearch"}'
        )
        try:
            body: Any = metadata_model.model_validate(payload)
        except ValidationError as exc:
            return validation_response(exc.errors(include_url=False))
        base = str(request.base_url).rstrip("/")
        out = []
        for image_id in body.ids:
            try:
                path = service.engine.image_path(image_id)
            except Exception:  # unknown ids get no metadata, as clip-retrieval answers
                out.append({"id": image_id, "metadata": {}})
                continue
            signed = service.image_query(image_id, token_id)
            name = getattr(path, "name", str(path))
            out.append(
                {"id": image_id, "metadata": {"url": f"{base}/images/{image_id}{signed}", "caption": name}}
            )
        return JSONResponse(out)


__all__ = ["add_clip_routes", "knn_request_model"]
