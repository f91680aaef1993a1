"""Exposing the service safely: bearer tokens, a Host allow-list, per-token rate limits, signed image URLs.

- Tokens come from a file (`ID:SECRET` or `ID SECRET` per line, `#` comments) or the TRAFFICSEARCH_TOKENS
  environment variable (`id1:secret1,id2:secret2`); the id, never the secret, goes to the audit log.
  Every known token is compared with `hmac.compare_digest`, so timing tells nothing about which is near.
- The Host allow-list stops DNS rebinding: a page on evil.example that resolves its name to 127.0.0.1
  still sends `Host: evil.example`, which is refused with 400 before any route runs.
- Rate limits are token buckets per token id (per client address when auth is off), applied to searches.
- <img> tags cannot send an Authorization header, so with auth on the API hands out image URLs signed with
  HMAC (image id, token id, expiry) under a per-process key; /images and /thumbs accept either.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from trafficsearch.errors import ConfigError

TOKENS_ENV = "TRAFFICSEARCH_TOKENS"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_TOKEN_ID = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_SECRET = 16


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and 'localhost' are loopback; anything else (0.0.0.0, a LAN address) is not."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Token:
    id: str
    secret: str = field(repr=False)


def parse_tokens(text: str, source: str, *, separator: str = "\n") -> list[Token]:
    """`id:secret` entries (one per line in a file, comma-separated in the env var)."""
    tokens: list[Token] = []
    for number, raw in enumerate(text.split(separator), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}" if separator == "\n" else f"{source} entry {number}"
        token_id, sep, secret = line.partition(":") if ":" in line else line.partition(" ")
        token_id, secret = token_id.strip(), secret.strip()
        if not sep or not secret:
            raise ConfigError(f"{where}: expected 'ID:SECRET'")
        if not _TOKEN_ID.fullmatch(token_id):
            raise ConfigError(f"{where}: token id {token_id[:40]!r} must be 1-64 of A-Z a-z 0-9 _ . @ -")
        if len(secret) < MIN_SECRET:
            raise ConfigError(f"{where}: token {token_id!r} is shorter than {MIN_SECRET} characters")
        if any(t.id == token_id for t in tokens):
            raise ConfigError(f"{where}: token id {token_id!r} appears twice")
        tokens.append(Token(token_id, secret))
    return tokens


def load_tokens(token_file: Path | None = None, environ: dict[str, str] | None = None) -> list[Token]:
    """Tokens from `token_file` and/or $TRAFFICSEARCH_TOKENS (ids must not repeat across both)."""
    environ = os.environ if environ is None else environ
    tokens: list[Token] = []
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read token file: {exc}", path=token_file) from exc
        tokens += parse_tokens(text, str(token_file))
        if not tokens:
            raise ConfigError("token file holds no tokens", path=token_file)
    if environ.get(TOKENS_ENV):
        tokens += parse_tokens(environ[TOKENS_ENV], f"${TOKENS_ENV}", separator=",")
    ids = [t.id for t in tokens]
    if len(ids) != len(set(ids)):
        raise ConfigError(f"a token id appears both in the token file and in ${TOKENS_ENV}")
    return tokens


class TokenCheck:
    """Bearer-token lookup in constant time per token (every token is compared, match or not)."""

    def __init__(self, tokens: Iterable[Token]) -> None:
        # Digests, not secrets, are compared: equal lengths, so not even a secret's length leaks.
        self.tokens = [(t.id, hashlib.sha256(t.secret.encode("utf-8")).digest()) for t in tokens]

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def identify(self, authorization: str | None) -> str | None:
        """The token id for an 'Authorization: Bearer SECRET' header, or None."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        offered = hashlib.sha256(value.strip().encode("utf-8", "surrogateescape")).digest()
        found = None
        for token_id, secret in self.tokens:
            if hmac.compare_digest(offered, secret) and found is None:
                found = token_id
        return found


def host_allow_list(bind_host: str | None, extra: Iterable[str] = ()) -> set[str]:
    """Loopback names, the bind address (unless a wildcard) and `extra`, lower-case, without brackets."""
    allowed = set(LOOPBACK_NAMES)
    if bind_host and bind_host not in ("0.0.0.0", "::", ""):
        allowed.add(bind_host.strip("[]").lower())
    allowed.update(h.strip().strip("[]").lower() for h in extra if h.strip())
    return allowed


def host_of(header: str) -> str:
    """'example.org:8000' -> 'example.org'; '[::1]:8000' -> '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class RateLimiter:
    """Token buckets: `burst` requests at once, refilled at `rate` per second, per key."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ConfigError("rate limit must be positive with a burst of at least 1")
        self.rate, self.burst = float(rate), int(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 if allowed (one request taken), else the seconds until the next request is allowed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            level, last = self._buckets.get(key, (float(self.burst), now))
            level = min(float(self.burst), level + (now - last) * self.rate)
            if level >= 1.0:
                self._buckets[key] = (level - 1.0, now)
                return 0.0
            self._buckets[key] = (level, now)
            if len(self._buckets) > 100_000:  # bounded: forget the fullest (idle) buckets
                self._buckets = dict(sorted(self._buckets.items(), key=lambda kv: kv[1][0])[:50_000])
            return (1.0 - level) / self.rate


def parse_rate(spec: str) -> tuple[float, int]:
    """'30/min' -> (0.5 per second, burst 30); '5/s' -> (5.0, 5); also '/h'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*", spec)
    if not match:
        raise ConfigError(
            f"rate limit {spec!r}: expected N/s, N/min or N/hour, e.g. 60/min", field="rate_limit"
        )
    count = float(match.group(1))
    seconds = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
    if count <= 0:
        raise ConfigError(f"rate limit {spec!r} must be positive", field="rate_limit")
    return count / seconds[match.group(2)], max(1, math.ceil(count))


class UrlSigner:
    """Short-lived HMAC signatures for image URLs (so <img src> works when the API needs a token)."""

    def __init__(self, ttl_s: float = 3600.0, key: bytes | None = None) -> None:
        self.ttl_s = ttl_s
        self.key = key or secrets.token_bytes(32)

    def _mac(self, image_id: str, token_id: str, expires: int) -> str:
        message = f"{image_id}\n{token_id}\n{expires}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:32]

    def query(self, image_id: int, token_id: str, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.ttl_s)
        return f"t={token_id}&exp={expires}&sig={self._mac(str(image_id), token_id, expires)}"

    def verify(
        self,
        image_id: str,
        token_id: str | None,
        expires: str | None,
        sig: str | None,
        now: float | None = None,
    ) -> str | None:
        """The token id the URL was signed for, if the signature is good and not expired."""
        if not (token_id and expires and sig and expires.isdigit() and len(expires) < 12):
            return None
        if int(expires) < (time.time() if now is None else now):
            return None
        good = self._mac(image_id, token_id, int(expires))
        return (
            token_id if hmac.compare_digest(good.encode(), sig.encode("utf-8", "surrogateescape")) else None
        )
