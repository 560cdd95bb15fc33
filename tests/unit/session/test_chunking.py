"""Hypothesis: chunking of the input never changes the output."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stompgate.broker.session import CLOSE_NORMAL
from stompgate.stomp import Frame, serialize

from .harness import make_env


def _conversation() -> bytes:
    frames = [
        Frame("CONNECT", {"accept-version": "1.2", "login": "bob", "heart-beat": "0,0"}),
        Frame("SUBSCRIBE", {"id": "s:1", "destination": "/topic/a", "receipt": "r1"}),
        Frame("SEND", {"destination": "/topic/a", "x": "a:b"}, b"one\0with nul"),
        Frame("BEGIN", {"transaction": "t"}),
        Frame("SEND", {"destination": "/topic/a", "transaction": "t"}, b"two"),
        Frame("COMMIT", {"transaction": "t", "receipt": "r2"}),
        Frame("SEND", {"destination": "/user/bob/queue/x"}, "é".encode()),
        Frame("DISCONNECT", {"receipt": "bye"}),
    ]
    return b"\n".join(serialize(f, "1.2") for f in frames) + b"\r\n"


CONVERSATION = _conversation()


def _run_conversation(cuts: list[int]) -> tuple[list[Frame], list[tuple[int, str]]]:
    env = make_env()
    client = env.client()
    client.version = "1.2"  # for parsing the output; CONNECTED is never escaped anyway
    prev = 0
    for cut in [*sorted(set(cuts)), len(CONVERSATION)]:
        client.session.receive_data(CONVERSATION[prev:cut])
        prev = cut
    frames = client.frames()
    for f in frames:
        f.headers.pop("session", None)
        f.headers.pop("message-id", None)
        f.headers.pop("ack", None)
    return frames, client.out.closes


REFERENCE_CONVERSATION = _run_conversation([])


@settings(max_examples=150, database=None, deadline=None)
@given(st.lists(st.integers(0, len(CONVERSATION)), max_size=30))
def test_chunking_never_changes_the_output(cuts: list[int]) -> None:
    """Any split of the same byte stream yields the same frames and the same close."""
    assert _run_conversation(cuts) == REFERENCE_CONVERSATION


def test_reference_conversation() -> None:
    """What the conversation above is expected to produce (guards the property's reference)."""
    frames, closes = REFERENCE_CONVERSATION
    assert [f.command for f in frames] == ["CONNECTED", "RECEIPT", "MESSAGE", "MESSAGE", "RECEIPT", "RECEIPT"]
    assert frames[2].body == b"one\0with nul" and frames[2].headers["x"] == "a:b"
    assert frames[2].headers["subscription"] == "s:1"
    assert frames[3].body == b"two"
    assert frames[5].headers == {"receipt-id": "bye"}
    assert closes == [(CLOSE_NORMAL, "disconnect")]
