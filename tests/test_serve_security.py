"""Exposing the service: bearer tokens, signed image URLs, the Host allow-list, CORS, rate limits, audit."""

from __future__ import annotations

import hmac
import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from trafficsearch.cli.serve_commands import exposure_options
from trafficsearch.errors import ConfigError
from trafficsearch.serve.app import create_app
from trafficsearch.serve.audit import AuditLog
from trafficsearch.serve.security import RateLimiter, Token, TokenCheck, UrlSigner, load_tokens, parse_rate
from trafficsearch.testing.fake_engine import FakeEngine

ALICE = Token("alice", "a" * 24)
BOB = Token("bob", "b-secret-0123456789")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> FakeEngine:
    return FakeEngine.create(tmp_path_factory.mktemp("sec") / "gallery", count=10, seed=2)


def _client(engine: FakeEngine, **kwargs) -> TestClient:  # noqa: ANN003
    app = create_app(engine, batch_window_ms=0, **kwargs)
    return TestClient(app, base_url="http://localhost")


def _auth(token: Token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.secret}"}


def test_tokens_from_a_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# analysts\nalice:" + "a" * 24 + "\n\nbob " + "b" * 20 + "\n")
    tokens = load_tokens(path, {"TRAFFICSEARCH_TOKENS": "carol:" + "c" * 16})
    assert [t.id for t in tokens] == ["alice", "bob", "carol"]
    assert "a" * 24 not in repr(tokens)  # secrets stay out of logs and tracebacks
    for text, needle in [
        ("alice:short\n", "line 1: token 'alice' is shorter"),
        ("x\n", "line 1: expected"),
        ("a:" + "s" * 16 + "\na:" + "t" * 16, "line 2: token id 'a' appears twice"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=needle) as info:
            load_tokens(path, {})
        assert str(path) in info.value.one_line() and "\n" not in info.value.one_line()


def test_every_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    check = TokenCheck([ALICE, BOB])
    assert check.identify(f"Bearer {ALICE.secret}") == "alice" and len(calls) == 2  # no early exit
    assert check.identify(f"Bearer {BOB.secret}x") is None
    assert check.identify(f"Basic {BOB.secret}") is None and check.identify(None) is None


def test_without_a_token_a_protected_service_answers_401_and_with_one_200(engine: FakeEngine) -> None:
    client = _client(engine, tokens=[ALICE, BOB], require_auth=True)
    for headers in ({}, {"Authorization": "Bearer wrong-wrong-wrong"}, {"Authorization": ALICE.secret}):
        for method, url in [
            ("post", "/search"),
            ("get", "/healthz"),
            ("get", "/images/0"),
            ("get", "/thumbs/0"),
            ("get", "/indices-list"),
            ("post", "/knn-service"),
        ]:
            response = client.request(method, url, json={"text": "a red Sedan"}, headers=headers)
            assert response.status_code == 401, (url, headers)
            assert response.headers["www-authenticate"].startswith("Bearer")
            (item,) = response.json()["detail"]
            assert item["type"] == "unauthorized" and "\n" not in item["msg"]
    assert client.get("/").status_code == 200  # the page itself asks for the token
    assert (
        client.get("/openapi.json").json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"]
        == "bearer"
    )
    ok = client.post("/search", json={"text": "a red Sedan", "k": 2}, headers=_auth(BOB))
    assert ok.status_code == 200
    thumb = ok.json()["hits"][0]["thumb_url"]
    assert "sig=" in thumb and "t=bob" in thumb and BOB.secret not in thumb
    assert client.get(thumb).status_code == 200  # an <img src> needs no header
    assert client.get(ok.json()["hits"][0]["image_url"]).status_code == 200
    other = thumb.replace("/thumbs/" + str(ok.json()["hits"][0]["id"]), "/thumbs/9")
    assert client.get(other).status_code == 401  # a signature is for one image
    assert client.get(thumb.replace("sig=", "sig=0")).status_code == 401


def test_signed_urls_expire() -> None:
    signer = UrlSigner(ttl_s=60)
    query = dict(p.split("=") for p in signer.query(3, "alice", now=1000.0).split("&"))
    assert signer.verify("3", query["t"], query["exp"], query["sig"], now=1059.0) == "alice"
    assert signer.verify("3", query["t"], query["exp"], query["sig"], now=1061.0) is None
    assert signer.verify("3", "bob", query["exp"], query["sig"], now=1000.0) is None


def test_a_non_loopback_bind_needs_tokens(tmp_path: Path, engine: FakeEngine) -> None:
    with pytest.raises(ConfigError, match="tokens"):
        create_app(engine, require_auth=True)
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(ConfigError, match="--token-file"):
            exposure_options(host, None, [], [], None, 10, None, environ={})
    loop = exposure_options("127.0.0.2", None, [], [], None, 10, None, environ={})
    assert loop["require_auth"] is False and "127.0.0.2" in loop["allowed_hosts"]
    lan = exposure_options(
        "192.168.1.20",
        None,
        ["search.lan"],
        ["https://ops.example"],
        tmp_path / "audit.log",
        10,
        "30/min",
        environ={"TRAFFICSEARCH_TOKENS": "ops:" + "o" * 20},
    )
    assert lan["require_auth"] and [t.id for t in lan["tokens"]] == ["ops"]
    assert {"192.168.1.20", "search.lan", "localhost", "127.0.0.1", "::1"} <= set(lan["allowed_hosts"])
    assert lan["rate_limit"] == (0.5, 30) and isinstance(lan["audit_log"], AuditLog)
    with pytest.raises(ConfigError, match="cors-origin"):
        exposure_options("127.0.0.1", None, [], ["*"], None, 10, None, environ={})
    with pytest.raises(ConfigError, match="rate limit"):
        parse_rate("fast")


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost", 200),
        ("localhost:8000", 200),
        ("127.0.0.1:9", 200),
        ("[::1]:8000", 200),
        ("search.lan", 200),
        ("evil.example", 400),
        ("evil.example:8000", 400),
        ("127.0.0.1.evil.example", 400),
        ("", 400),
    ],
)
def test_host_allow_list_stops_dns_rebinding(engine: FakeEngine, host: str, status: int) -> None:
    client = _client(engine, allowed_hosts=["search.lan"])
    response = client.get("/healthz", headers={"Host": host})
    assert response.status_code == status
    if status == 400:
        assert response.json()["detail"][0]["loc"] == ["header", "host"]
        assert client.get("/", headers={"Host": host}).status_code == 400  # the page too


def test_cors_is_off_unless_an_origin_is_listed(engine: FakeEngine) -> None:
    preflight = {
        "Origin": "https://ops.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    closed = _client(engine)
    assert "access-control-allow-origin" not in closed.options("/search", headers=preflight).headers
    assert (
        "access-control-allow-origin"
        not in closed.get("/healthz", headers={"Origin": "https://x.example"}).headers
    )
    opened = _client(engine, cors_origins=["https://ops.example"])
    answer = opened.options("/search", headers=preflight)
    assert (
        answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://ops.example"
    )
    foreign = opened.options("/search", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in foreign.headers


def test_rate_limit_per_token_with_retry_after(engine: FakeEngine) -> None:
    client = _client(engine, tokens=[ALICE, BOB], rate_limit=(0.01, 3))
    codes = [client.post("/search", json={"text": "red"}, headers=_auth(ALICE)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.post("/search", json={"text": "red"}, headers=_auth(ALICE))
    assert int(limited.headers["retry-after"]) >= 1 and limited.json()["detail"][0]["type"] == "rate_limited"
    assert client.post("/search", json={"text": "red"}, headers=_auth(BOB)).status_code == 200  # own bucket


def test_token_bucket_refills() -> None:
    bucket = RateLimiter(rate=2.0, burst=2)
    assert [bucket.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert bucket.take("a", now=0.5) == 0.0 and bucket.take("a", now=0.5) > 0


def test_audit_log_has_one_line_per_search(tmp_path: Path, engine: FakeEngine) -> None:
    audit = AuditLog(tmp_path / "audit" / "searches.jsonl")
    client = _client(engine, tokens=[ALICE], audit_log=audit)
    client.post("/search", json={"text": "a red Sedan", "k": 3, "kind": "vehicle"}, headers=_auth(ALICE))
    client.post("/search", json={"text": "x", "k": 999}, headers=_auth(ALICE))  # refused: not a search
    client.post("/knn-service", json={"text": "blue", "num_images": 2}, headers=_auth(ALICE))
    lines = (tmp_path / "audit" / "searches.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 2
    first = records[0]
    assert first["token"] == "alice" and first["text"] == "a red Sedan" and first["kind"] == "vehicle"
    assert first["k"] == 3 and first["results"] == 3 and first["client"] and first["time"].endswith("+00:00")
    assert records[1]["route"] == "/knn-service" and records[1]["results"] == 2
    assert ALICE.secret not in "".join(lines)


def test_audit_log_rotates_and_never_splits_lines(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "a.jsonl", max_bytes=4096, backups=2)

    def writer(n: int) -> None:
        for i in range(200):
            audit.write(token=f"t{n}", text="x" * 50, i=i)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    files = sorted(tmp_path.glob("a.jsonl*"))
    assert [f.name for f in files] == ["a.jsonl", "a.jsonl.1", "a.jsonl.2"]
    for f in files:
        assert f.stat().st_size <= 4096
        for line in f.read_text().splitlines():
            assert json.loads(line)["text"] == "x" * 50
