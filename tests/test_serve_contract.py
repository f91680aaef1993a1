"""The API keeps its published contract: schemathesis generates requests from our own /openapi.json
(valid and invalid ones, fixed seed, bounded examples) and checks every response against the schema,
with no 5xx; hand-written bad inputs cover what a generator will not think of."""

from __future__ import annotations

import base64
import io
import json
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from PIL import Image
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from trafficsearch.serve.app import create_app
from trafficsearch.serve.security import Token
from trafficsearch.testing.fake_engine import FakeEngine

ROOT = Path(__file__).parent


def _app(tmp: Path):  # noqa: ANN202
    engine = FakeEngine.create(tmp / "gallery", count=12, seed=1)
    # TestClient and schemathesis send "Host: testserver"; the allow-list itself is tested elsewhere.
    return create_app(engine, max_k=50, max_text_len=200, batch_window_ms=0, allowed_hosts=["testserver"])


def _secured_real_app(tmp: Path):  # noqa: ANN202
    """A real (colour-model) index behind a token: example search, sqlite filters, 401s all fuzzed."""
    import torch

    from trafficsearch.index import build_index
    from trafficsearch.search.opener import open_engine
    from trafficsearch.testing.color import ColorModel, make_color_gallery

    torch.set_num_threads(1)
    make_color_gallery(tmp / "g", {f"{c}.jpg": c for c in ("red", "blue", "green", "white")})
    build_index(tmp / "g", tmp / "idx", ColorModel(), workers=0, progress=False)
    engine = open_engine(tmp / "idx", model=ColorModel())
    return create_app(
        engine, max_k=20, batch_window_ms=0, allowed_hosts=["testserver"], tokens=[TOKEN], require_auth=True
    )


TOKEN = Token("fuzz", "fuzz-secret-0123456789")
_TMP = Path(tempfile.mkdtemp(prefix="ts-contract-"))
schema = schemathesis.openapi.from_asgi("/openapi.json", _app(_TMP / "fake"))
secured = schemathesis.openapi.from_asgi("/openapi.json", _secured_real_app(_TMP / "real"))


CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_generated_requests_keep_the_contract(case) -> None:  # noqa: ANN001
    case.call_and_validate(checks=CHECKS)


@secured.parametrize()
@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_generated_requests_keep_the_contract_behind_a_token(case) -> None:  # noqa: ANN001
    headers = {"Authorization": f"Bearer {TOKEN.secret}"}
    case.call_and_validate(checks=CHECKS, headers=headers)
    if case.method.upper() != case.operation.method.upper():
        return  # negative mode tried another method: 405, checked above
    # the same request with a wrong token: a documented 401 in the one error shape
    response = case.call(headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401, (case.method, case.path, response.status_code)
    assert response.json()["detail"][0]["type"] == "unauthorized"


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(_app(Path(tempfile.mkdtemp(prefix="ts-bad-"))), raise_server_exceptions=False)


def _png(size: tuple[int, int], color: tuple[int, int, int] = (200, 40, 40)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_integral_float_k_is_an_integer_as_json_schema_says(client: TestClient) -> None:
    ok = client.post("/search", json={"text": "a red Sedan", "k": 8.0})
    assert ok.status_code == 200 and ok.json()["k"] == 8 and len(ok.json()["hits"]) == 8
    for bad in (8.5, "8", True, float("inf")):
        response = client.post("/search", content=json.dumps({"text": "a red Sedan", "k": bad}))
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["body", "k"]


BAD = [
    ('{"text": "a", "k": ' + "9" * 5000 + "}", 400, ["body"], "too large"),
    ('{"text": "a", "k": -' + "9" * 5000 + "}", 400, ["body"], "too large"),
    ('{"text": "a", "k": 1e999}', 422, ["body", "k"], "integer"),
    ('{"text": "a", "k": NaN}', 422, ["body", "k"], "integer"),
    ('{"text": "a"', 400, ["body"], "malformed JSON"),
    ("[" * 100_000 + "]" * 100_000, 400, ["body"], ""),
    ('{"text": 5}', 422, ["body", "text"], "string"),
    ('{"text": ["a"]}', 422, ["body", "text"], "string"),
    ('{"text": "a", "offset": -1}', 422, ["body", "offset"], "greater than"),
    ('{"text": "a", "where": {"camera": {"gte": ' + "1" * 40 + "}}}", 400, ["body"], "too large"),
    ('{"text": "a", "where": {"camera": [' + ",".join(["1"] * 101) + "]}}", 422, ["body", "where"], ""),
    ('{"text": "a", "where": {"path": "x"}}', 422, ["body", "where"], ""),
    ('{"text": "a", "where": {"time": {"between": 3}}}', 422, ["body", "where"], "unknown field"),
    ('{"text": "a\\ud800"}', 422, ["body", "text"], "unicode"),
    ('{"image": "not base64!!"}', 422, ["body", "image"], "base64"),
    ('{"image": "aGVsbG8="}', 422, ["body", "image"], "not a decodable image"),
    ('{"image_id": 99999}', 404, ["body", "image_id"], "no image"),
    ('{"k": 3}', 422, ["body"], "at least one of text"),
]


@pytest.mark.parametrize(("body", "status", "loc", "needle"), BAD)
def test_bad_input_gets_a_documented_4xx(
    client: TestClient, body: str, status: int, loc: list, needle: str
) -> None:
    response = client.post("/search", content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    assert detail[0]["loc"][: len(loc)] == loc
    assert needle in " ".join(d["msg"] for d in detail)
    assert all("\n" not in d["msg"] and d["type"] for d in detail)


def test_decompression_bomb_upload_is_refused_without_decoding(client: TestClient) -> None:
    response = client.post("/search", json={"image": _png((8000, 6000))})
    assert response.status_code == 422 and "too many pixels" in response.json()["detail"][0]["msg"]


def test_oversized_upload_is_413_before_it_is_read(client: TestClient) -> None:
    big = json.dumps({"image": "A" * (13 * 1024 * 1024)}).encode()
    response = client.post("/search", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["detail"][0]["type"] == "too_large"


@pytest.mark.parametrize(
    "target",
    ["..%2F..%2Fetc%2Fpasswd", "1%00", "0x1", "-1", "1e3", "９", "1" * 40, "%2e%2e"],
)
def test_traversal_in_ids_is_404_in_the_error_shape(client: TestClient, target: str) -> None:
    for route in ("/images/", "/thumbs/"):
        response = client.get(route + target)
        assert response.status_code == 404, (route, target)
        assert response.json()["detail"][0]["type"] in ("not_found", "http_error")


def test_every_error_status_is_documented_with_the_one_shape() -> None:
    spec = _app(Path(tempfile.mkdtemp(prefix="ts-spec-"))).openapi()
    ref = "#/components/schemas/ErrorResponse"
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            codes = {c for c in op["responses"] if c.startswith(("4", "5"))}
            assert "400" in codes, (method, path)
            for code in codes:
                assert op["responses"][code]["content"]["application/json"]["schema"]["$ref"] == ref
    assert "404" in spec["paths"]["/images/{image_id}"]["get"]["responses"]
    assert "404" in spec["paths"]["/thumbs/{image_id}"]["get"]["responses"]
    assert "#/$defs/" not in json.dumps(spec)  # every reference resolves inside the OpenAPI document
    item = spec["components"]["schemas"]["ErrorItem"]
    assert set(item["required"]) == {"loc", "msg", "type"}
