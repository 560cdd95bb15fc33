"""Why a session ended: each way to end maps to one reason (broker/closes.py), recorded once,
counted in ``BrokerStats.closes`` and written on the ``session.close`` log line."""

from __future__ import annotations

import logging
import time

import jwt
import pytest

from stompgate.broker import JwtAuthenticator, SessionLimits, StaticAuthenticator
from stompgate.broker.closes import bus_refusal_reason
from stompgate.broker.session import CLOSE_NORMAL
from stompgate.broker.settings import HeartbeatSettings, RateLimit

from .harness import Env, make_env
from .test_authorization import CHAT

SECRET = "s" * 32


def closes(env: Env) -> dict[str, int]:
    return {reason: n for reason, n in env.broker.stats.closes.items() if n}


def test_disconnect_and_peer_gone_are_client() -> None:
    env = make_env()
    env.connected("a").send("DISCONNECT")
    env.connected("b").session.connection_lost()
    env.client().session.connection_lost()  # before CONNECT too
    assert closes(env) == {"client": 3}


def test_protocol_errors() -> None:
    env = make_env()
    env.connected().session.receive_data(b"BOGUS\n\n\0")
    env.connected().send("SUBSCRIBE", {"destination": "/topic/a"})  # no id
    env.client().session.receive_data(b"SEND\ndestination:/topic/a\n\n\0")  # before CONNECT
    assert closes(env) == {"protocol": 3}


def test_connect_timeout_is_protocol() -> None:
    env = make_env()
    env.client()
    env.clock.advance(env.broker.limits.connect_timeout_s + 1)
    assert closes(env) == {"protocol": 1}


def test_refused_login_is_auth() -> None:
    env = make_env(StaticAuthenticator({"alice": "pw"}))
    env.client().send(
        "CONNECT", {"accept-version": "1.2", "host": "h", "login": "alice", "passcode": "wrong"}
    )
    assert closes(env) == {"auth": 1}


def test_authorization_refusal_is_denied() -> None:
    env = make_env(authorizer=CHAT)
    env.connected("bob").subscribe("/topic/admin/x")
    assert closes(env) == {"denied": 1}


@pytest.mark.parametrize(
    ("limits", "act"),
    [
        (SessionLimits(max_subscriptions=1), lambda c: [c.subscribe(f"/topic/{i}", str(i)) for i in (1, 2)]),
        (SessionLimits(max_frame_size=1024), lambda c: c.publish("/topic/a", b"x" * 2000)),
        (SessionLimits(max_transactions=1), lambda c: [c.send("BEGIN", {"transaction": t}) for t in "ab"]),
        (
            SessionLimits(rate_limit=RateLimit(frames_per_s=1, burst_s=1, policy="close")),
            lambda c: [c.publish("/topic/a", b"x") for _ in range(5)],
        ),
    ],
    ids=["subscriptions", "frame-size", "transactions", "rate"],
)  # fmt: skip
def test_limits(limits: SessionLimits, act: object) -> None:
    env = make_env(limits=limits)
    client = env.connected()
    act(client)  # type: ignore[operator]
    assert closes(env) == {"limit": 1}


def test_too_many_unacked_is_limit() -> None:
    env = make_env(limits=SessionLimits(max_unacked=1))
    client = env.connected()
    client.subscribe("/topic/a", ack="client")
    sender = env.connected("s")
    sender.publish("/topic/a", b"1")
    sender.publish("/topic/a", b"2")
    assert closes(env) == {"limit": 1}


def test_slow_consumer_drop() -> None:
    env = make_env()
    client = env.connected()
    client.session.drop("slow consumer: too much unsent data")
    assert client.out.aborted
    assert closes(env) == {"slow-consumer": 1}


def test_silent_client_is_heartbeat() -> None:
    env = make_env(heartbeat=HeartbeatSettings(send_ms=0, receive_ms=1000))
    env.connected(heart_beat="1000,0")
    env.clock.advance(10)
    assert closes(env) == {"heartbeat": 1}


def test_expired_token_and_refused_refresh() -> None:
    env = make_env(JwtAuthenticator(algorithm="HS256", key=SECRET))
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    env.client().connect(None, passcode=token)
    env.clock.advance(61)
    assert closes(env) == {"token-expired": 1}
    session = env.client()
    session.connect(None, passcode=token)
    session.send("SUBSCRIBE", {"destination": "/topic/a", "id": "1", "refresh-token": "junk"})
    assert closes(env) == {"token-expired": 1, "auth": 1}


def test_shutdown() -> None:
    env = make_env()
    env.connected("a")
    env.client()
    env.broker.shutdown()
    assert closes(env) == {"shutdown": 2}


def test_first_reason_wins_and_counts_once() -> None:
    env = make_env()
    client = env.connected()
    client.session.fail("limit reached", cause="limit")
    client.session.close(CLOSE_NORMAL, "later")
    client.session.connection_lost()
    assert closes(env) == {"limit": 1}


def test_admin_reason_passes_through() -> None:
    """Other modules (admin disconnects, drain) name their reason when they end a session."""
    env = make_env()
    env.connected().session.fail("disconnected by an operator", cause="admin")
    assert closes(env) == {"admin": 1}


@pytest.mark.parametrize(
    ("error", "reason"),
    [("STOREFULL alice has 10 stored messages", "limit"), ("TOOBIG x", "limit"), ("OOM", "limit"),
     ("redis went away", "internal")],
)  # fmt: skip
def test_bus_refusals(error: str, reason: str) -> None:
    assert bus_refusal_reason(error) == reason


def test_close_log_line_reads_alone_and_carries_fields(caplog: pytest.LogCaptureFixture) -> None:
    env = make_env()
    with caplog.at_level(logging.INFO, logger="stompgate.sessions"):
        client = env.client(remote="10.0.0.5")
        client.connect("alice")
        client.session.drop("slow consumer: too much unsent data")
    opened, closed = [r for r in caplog.records if r.name == "stompgate.sessions"]
    sid = client.session.id
    assert opened.getMessage() == f"session {sid} (alice, 10.0.0.5, websocket) opened"
    who = f"session {sid} (alice, 10.0.0.5, websocket)"
    assert closed.getMessage() == f"{who} closed: slow-consumer: slow consumer: too much unsent data"
    assert (opened.event, closed.event) == ("session.open", "session.close")  # type: ignore[attr-defined]
    fields = {k: getattr(closed, k) for k in ("session", "user", "remote", "reason", "transport")}
    assert fields == {
        "session": sid, "user": "alice", "remote": "10.0.0.5", "reason": "slow-consumer",
        "transport": "websocket",
    }  # fmt: skip
