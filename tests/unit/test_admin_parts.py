"""The admin parts without a node: the bus command's codec, the sampler's ring, redaction, the guard."""

from __future__ import annotations

import base64

import pytest
from aiohttp.test_utils import make_mocked_request

from stompgate.admin.guard import AdminGuard
from stompgate.admin.redact import REDACTED, redacted_config
from stompgate.admin.sampler import RateSampler
from stompgate.bus.admin import AdminCommand, BadCommand, parse_request, request_payload
from stompgate.config import Config


def test_command_round_trip_and_refusals() -> None:
    command = AdminCommand("sessions", user="bob", limit=7)
    assert parse_request(request_payload("id1", "reply-key", command)) == ("reply-key", command)
    bad = [
        {"op": "drop-tables", "limit": 1},
        {"op": "sessions", "limit": 5000},
        {"op": "sessions", "limit": True},
        {"op": "sessions"},
        {"op": "disconnect", "limit": 1},
        {"op": "disconnect", "user": "a", "session": "b", "limit": 1},
        {"op": "node", "user": 5, "limit": 1},
        ["node"],
    ]
    for data in bad:
        with pytest.raises(BadCommand):
            AdminCommand.from_json(data)
    for payload in (b"not json", b"{}", b'{"reply": "k", "command": null}'):
        with pytest.raises(BadCommand):
            parse_request(payload)


def test_sampler_keeps_a_bounded_ring_and_gives_rates() -> None:
    now = [1000.0]
    count = {"published": 0}
    sampler = RateSampler(lambda: count, lambda: (3, 5), interval_s=5, history=4, clock=lambda: now[0])
    for step in range(10):
        count["published"] = step * 50  # 10 per second
        sampler.sample()
        now[0] += 5
    assert len(sampler.samples) == 4
    rates = sampler.rates()
    assert rates["published"] == [10.0, 10.0, 10.0]
    assert rates["sessions"] == [3, 3, 3] and rates["subscriptions"] == [5, 5, 5]
    assert rates["t"] == [1035.0, 1040.0, 1045.0]
    count["published"] = 0  # a counter that went back (never should): no negative rate
    sampler.sample()
    assert sampler.rates()["published"][-1] == 0


def test_redaction_by_key_name_and_in_urls() -> None:
    config = Config()
    config.auth.users = {"alice": "pw1-alice"}
    config.api.key = "the-api-key"
    config.proxy.secret = "the-proxy-secret"
    config.proxy.connect_url = "https://svc:url-password@backend.example/connect"
    config.bus.redis.url = "redis://default:redis-pw@10.0.0.1:6379/0"
    config.admin.password = "admin-password!"
    shown = redacted_config(config)
    text = repr(shown)
    secrets = ("pw1-alice", "the-api-key", "the-proxy-secret", "url-password", "redis-pw", "admin-password!")
    assert [s for s in secrets if s in text] == []
    assert shown["proxy"]["connect_url"] == f"https://svc:{REDACTED}@backend.example/connect"
    assert shown["api"]["key"] == REDACTED and shown["admin"]["api_key"] is False
    assert shown["auth"]["jwt"]["secret"] is None  # unset stays unset: it says nothing


def _request(**headers: str):  # aiohttp's mocked request
    return make_mocked_request("GET", "/admin/api/info", headers=headers)


def test_guard() -> None:
    basic = "Basic " + base64.b64encode(b"admin:pw-long-enough").decode()
    only_password = AdminGuard("admin", "pw-long-enough", None)
    assert only_password.authorized(_request(Authorization=basic))
    for headers in ({}, {"Authorization": "Bearer "}, {"X-API-Key": ""}, {"Authorization": "Basic"}):
        assert not only_password.authorized(_request(**headers)), headers
    only_key = AdminGuard("admin", None, "k-123")
    assert only_key.authorized(_request(Authorization="Bearer k-123"))
    assert only_key.authorized(_request(**{"X-API-Key": "k-123"}))
    assert not only_key.authorized(_request(Authorization=basic))
    assert not only_key.authorized(_request(Authorization="Basic " + base64.b64encode(b"admin:").decode()))
    host = {"Host": "node.example:8080"}
    assert AdminGuard.cross_origin(_request(**host)) is None
    assert AdminGuard.cross_origin(_request(Origin="http://node.example:8080", **host)) is None
    assert AdminGuard.cross_origin(_request(Origin="http://evil.example", **host)) == "http://evil.example"
    assert AdminGuard.cross_origin(_request(Origin="null", **host)) == "null"
    assert AdminGuard.cross_origin(_request(Origin="http://node.example:9090", **host)) is not None
    # Behind a proxy ending TLS: the page is https, the node is reached over http with the same Host.
    assert AdminGuard.cross_origin(_request(Origin="https://node.example", Host="node.example:443")) is None
    assert AdminGuard.cross_origin(_request(Origin="http://node.example", Host="node.example")) is None
