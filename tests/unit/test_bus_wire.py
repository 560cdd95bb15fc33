"""The bus wire format: what one node publishes, every other node reads back the same."""

from __future__ import annotations

import json

import pytest

from stompgate.broker.message import Message
from stompgate.bus.base import decode, encode


@pytest.mark.parametrize(
    ("headers", "body", "user"),
    [
        ({"content-type": "text/plain"}, b"hello", None),
        ({"x": "caf\u00e9 \U0001f600", "colon:key": "a\nb"}, b"line1\nline2\x00\xff", "alice"),
        ({"lone": "\ud800 surrogate"}, b"", "bob"),  # UTF-8 cannot carry it; JSON escapes can
        ({}, b"\n", None),
    ],
)
def test_round_trip(headers: dict[str, str], body: bytes, user: str | None) -> None:
    destination = "/queue/in" if user else "/topic/t"
    message = Message(destination, headers, body, user=user, shown=destination)
    origin, back = decode(encode(message, "node-1"), "/user")
    assert origin == "node-1"
    assert (back.destination, back.headers, back.body, back.user) == (destination, headers, body, user)
    assert back.shown == ("/user" + destination if user else destination)


def test_reads_what_the_standard_json_encoder_wrote() -> None:
    """Nodes of an earlier release wrote the head with json.dumps (ASCII escapes)."""
    head = json.dumps(["old-node", "/topic/t", None, {"h": "\u00e9\ud83d"}], separators=(",", ":"))
    origin, message = decode(head.encode() + b"\nbody", "/user")
    assert (origin, message.headers, message.body) == ("old-node", {"h": "\u00e9\ud83d"}, b"body")
