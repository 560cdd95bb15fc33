"""A gate (broker/gate.py) decides on CONNECT, SUBSCRIBE and SEND later: the session
stops reading until it answers, so frames keep their order and none pile up; an
answer given at once pauses nothing; a refusal is an ERROR naming the frame."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stompgate.broker.authz import SEND, SUBSCRIBE, Principal
from stompgate.broker.session import CLOSE_POLICY

from .harness import make_env


class LaterGate:
    """Keeps every question for the test to answer; ``instant`` answers allows at once."""

    def __init__(self, connects: bool = False, checks: frozenset[str] = frozenset({SEND, SUBSCRIBE})) -> None:
        self.connects = connects
        self.checks = checks
        self.instant: set[str] = set()
        self.refused: set[str] = set()
        self.asked: list[tuple[str, Callable[..., None]]] = []

    def connect(self, creds: Any, remote: str, done: Callable[..., None]) -> None:
        self.asked.append((creds.handshake_headers.get("cookie", ""), done))

    def check(self, frame: str, destination: str, principal: Any, session_id: str,
              headers: Any, body: bytes, done: Callable[..., None]) -> None:  # fmt: skip
        if destination in self.instant:
            done(None)
            return
        if destination in self.refused:
            done("refused at once")
            return
        self.asked.append((f"{frame} {destination}", done))


def test_frames_wait_for_the_answer_in_order() -> None:
    gate = LaterGate()
    env = make_env()
    alice = env.connected("alice")
    env.broker.gate = gate
    alice.send("SUBSCRIBE", {"destination": "/topic/t", "id": "1", "receipt": "s"})
    alice.publish("/topic/t", b"first")
    alice.publish("/topic/t", b"second")
    assert [what for what, _ in gate.asked] == ["SUBSCRIBE /topic/t"]  # the rest waits unread
    assert not alice.out.reading and alice.frames() == []
    gate.asked.pop()[1](None)  # allowed: the RECEIPT, then the next frame is asked about
    assert alice.frames()[0].headers["receipt-id"] == "s"
    assert [what for what, _ in gate.asked] == ["SEND /topic/t"]
    gate.instant.add("/topic/t")
    gate.asked.pop()[1](None)
    assert alice.bodies() == [b"first", b"second"]
    assert alice.out.reading


def test_a_refusal_names_the_frame() -> None:
    gate = LaterGate()
    env = make_env()
    alice = env.connected("alice")
    env.broker.gate = gate
    alice.publish("/topic/t", b"x")
    gate.asked.pop()[1]("read only")
    alice.expect_error(contains="access denied: SEND /topic/t: read only")


def test_a_late_refusal_carries_the_frames_receipt() -> None:
    for frame, headers in [
        ("SEND", {"destination": "/topic/t", "receipt": "r-1"}),
        ("SUBSCRIBE", {"destination": "/topic/t", "id": "1", "receipt": "r-1"}),
    ]:
        gate = LaterGate()
        env = make_env()
        alice = env.connected("alice")
        env.broker.gate = gate
        alice.send(frame, headers)
        gate.asked.pop()[1]("no")
        error = alice.expect_error(contains=f"access denied: {frame} /topic/t: no")
        assert error.headers["receipt-id"] == "r-1"


def test_an_immediate_refusal_carries_the_frames_receipt() -> None:
    for frame, headers in [
        ("SEND", {"destination": "/topic/t", "receipt": "r-2"}),
        ("SUBSCRIBE", {"destination": "/topic/t", "id": "1", "receipt": "r-2"}),
        ("SEND", {"destination": "/topic/t", "receipt": "r-2", "transaction": "tx"}),
    ]:
        gate = LaterGate()
        gate.refused.add("/topic/t")
        env = make_env()
        alice = env.connected("alice")
        env.broker.gate = gate
        if "transaction" in headers:
            alice.send("BEGIN", {"transaction": "tx"})
        alice.send(frame, headers)
        error = alice.expect_error(contains=f"access denied: {frame} /topic/t: refused at once")
        assert error.headers["receipt-id"] == "r-2", frame


def test_a_cached_answer_pauses_nothing() -> None:
    gate = LaterGate()
    gate.instant.add("/topic/t")
    env = make_env()
    alice = env.connected("alice")
    env.broker.gate = gate
    alice.subscribe("/topic/t")
    alice.publish("/topic/t", b"x")
    assert alice.bodies() == [b"x"] and gate.asked == []


def test_connect_by_the_gate() -> None:
    gate = LaterGate(connects=True, checks=frozenset())
    env = make_env()
    env.broker.gate = gate
    alice = env.client(handshake_headers={"cookie": "session=1"})
    alice.send("CONNECT", {"accept-version": "1.2"})
    assert alice.frames() == [] and not alice.out.reading
    cookie, done = gate.asked.pop()
    assert cookie == "session=1"
    done(Principal("alice", frozenset({"admin"})), None)
    connected = alice.frame()
    assert connected.command == "CONNECTED" and connected.headers["user-name"] == "alice"
    assert alice.session.principal.roles == frozenset({"admin"})

    refused = env.client()
    refused.send("CONNECT", {"accept-version": "1.2"})
    gate.asked.pop()[1](None, "no such session")
    refused.expect_error(CLOSE_POLICY, "authentication failed: no such session")
