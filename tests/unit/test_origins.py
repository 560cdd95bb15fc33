"""The Origin check (stompgate.origins): same origin by default, as Spring's."""

from __future__ import annotations

import pytest

from stompgate.origins import OriginPolicy, origin_problem


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        (None, "node:8080", True),  # not a browser page: stomp.py, a backend
        ("http://node:8080", "node:8080", True),
        ("https://chat.example.com", "chat.example.com", True),  # TLS ended by a proxy that passes Host
        ("http://chat.example.com", "chat.example.com", True),
        ("http://chat.example.com:8080", "chat.example.com", False),  # another port is another origin
        ("http://evil.example", "node:8080", False),
        ("http://node:8080.evil.example", "node:8080", False),
        ("null", "node:8080", False),
        ("not an origin", "node:8080", False),
        ("http://node:8080", None, False),
    ],
)
def test_same_origin_only_by_default(origin: str | None, host: str | None, ok: bool) -> None:
    assert OriginPolicy([]).allows(origin, host) is ok


def test_lists_and_patterns() -> None:
    policy = OriginPolicy(["https://app.example.com", "https://*.example.org", "http://localhost:3000"])
    host = "node:8080"
    assert policy.allows("https://app.example.com", host)
    assert policy.allows("https://APP.example.com:443", host)
    assert not policy.allows("http://app.example.com", host)  # scheme counts for listed origins
    assert policy.allows("https://a.example.org", host)
    assert policy.allows("https://a.b.example.org", host)
    assert not policy.allows("https://example.org", host)
    assert not policy.allows("https://a.example.org.evil.example", host)
    assert not policy.allows("https://a.example.org:8443", host)
    assert policy.allows("http://localhost:3000", host)
    assert not policy.allows("http://localhost:3001", host)
    assert policy.allows("http://node:8080", host)  # the same origin stays allowed


def test_any_and_null() -> None:
    assert OriginPolicy(["*"]).allows("http://anything.example", "node")
    assert OriginPolicy(["*"]).allows("null", "node")
    assert OriginPolicy(["null"]).allows("null", "node")


@pytest.mark.parametrize("entry", ["*", "null", "https://a.example", "http://*.example.com:8080", "http://localhost"])
def test_good_entries(entry: str) -> None:
    assert origin_problem(entry) is None


@pytest.mark.parametrize("entry", ["example.com", "https://a.example/path", "https://a.example?x", "://x"])
def test_bad_entries(entry: str) -> None:
    assert origin_problem(entry) is not None
