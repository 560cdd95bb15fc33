"""Network-free tests of the STOMP session state machine and the broker core.

In the style of h11's and websockets' protocol-layer tests: a :class:`Session` is
driven with bytes made by our serializer, writes go to a recording fake
transport, timers to a manual clock fired by hand, and every frame written is
parsed back with our own parser.

Layout:

1. CONNECT / STOMP and version negotiation
2. heart-beats and the connect timeout
3. SUBSCRIBE / UNSUBSCRIBE
4. SEND and routing (topics, queues, wildcards, user destinations, headers)
5. RECEIPT
6. ACK / NACK
7. transactions
8. DISCONNECT, close and connection loss
9. protocol errors and internal errors
10. authentication (dev, static, JWT HS256 / RS256)
11. broker shutdown
12. hypothesis: chunking of the input never changes the output
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stompgate.broker import (
    AuthError,
    Broker,
    BrokerSettings,
    Credentials,
    DevAuthenticator,
    JwtAuthenticator,
    Session,
    SessionLimits,
    StaticAuthenticator,
    encode_user,
)
from stompgate.broker.message import Message
from stompgate.broker.session import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_RESTART,
)
from stompgate.stomp import ALL_COMMANDS, Frame, FrameParser, serialize

# --------------------------------------------------------------------------- harness


class RecordingOutbound:
    """Fake transport: records every ``(data, binary)`` write and every close."""

    def __init__(self) -> None:
        self.writes: list[tuple[bytes, bool]] = []
        self.closes: list[tuple[int, str]] = []
        self.writes_after_close: list[bytes] = []

    def send(self, data: bytes, binary: bool) -> None:
        if self.closes:
            # Not an assert: the session would swallow it as an internal error.
            self.writes_after_close.append(data)
        self.writes.append((data, binary))

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    # Flow control: recorded; the session keeps its unread input itself.
    reading = True
    unsent = 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def buffered(self) -> int:
        return self.unsent

    aborted = False

    def abort(self) -> None:
        self.aborted = True


class Timer:
    def __init__(self, when: float, delay: float, callback: Callable[[], Any]) -> None:
        self.when = when
        self.delay = delay
        self.callback = callback
        self.cancelled = False
        self.fired = False

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def pending(self) -> bool:
        return not (self.cancelled or self.fired)


class ManualClock:
    """Fake scheduler: ``call_later`` records timers; :meth:`advance` fires them in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Timer] = []
        self.soon: list[Timer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Timer:
        assert delay > 0, delay
        timer = Timer(self.now + delay, delay, callback)
        self.timers.append(timer)
        return timer

    def call_soon(self, callback: Callable[[], Any]) -> Timer:
        """Due at the next advance(), before any timer (a loop runs ready callbacks first)."""
        timer = Timer(self.now, 0.0, callback)
        self.soon.append(timer)
        return timer

    def run_soon(self) -> None:
        """One loop turn: the callbacks queued before it (those they queue wait for the next)."""
        ready, self.soon = self.soon, []
        for timer in ready:
            if timer.pending:
                timer.fired = True
                timer.callback()

    def run_all_soon(self) -> None:
        while self.soon:
            self.run_soon()

    def pending(self) -> list[Timer]:
        return [t for t in self.timers if t.pending]

    def pending_delays(self) -> list[float]:
        return sorted(t.delay for t in self.pending())

    def advance(self, seconds: float) -> None:
        self.run_all_soon()
        target = self.now + seconds
        while True:
            due = [t for t in self.pending() if t.when <= target + 1e-9]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self.now = timer.when
            timer.fired = True
            timer.callback()
            self.run_all_soon()
        self.now = target


@dataclass
class Received:
    frame: Frame
    binary: bool
    raw: bytes


def parse_write(data: bytes, version: str | None) -> Frame:
    """One write must be exactly one complete frame."""
    parser = FrameParser(commands=ALL_COMMANDS, version=version, max_frame_size=1 << 30)
    parser.feed(data)
    frames = parser.frames()
    assert len(frames) == 1 and parser.buffered == 0, (data, frames)
    return frames[0]


def raw_header_lines(data: bytes) -> list[str]:
    """Header lines of a written frame exactly as sent (no unescaping)."""
    return data.split(b"\n\n", 1)[0].decode("utf-8").split("\n")[1:]


class Client:
    """One session plus the client-side view of it."""

    def __init__(self, env: Env, **session_kwargs: Any) -> None:
        self.env = env
        self.out = RecordingOutbound()
        self.session = Session(env.broker, self.out, env.clock, **session_kwargs)
        self.version: str | None = None  # negotiated, from CONNECTED
        self._seen = 0
        self.heartbeats = 0

    # input
    def encode(self, command: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
        return serialize(Frame(command, dict(headers or {}), body), self.version)

    def send(self, command: str, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.session.receive_data(self.encode(command, headers, body))

    def connect(
        self,
        login: str | None = "alice",
        version: str | None = "1.2",
        heart_beat: str | None = "0,0",
        command: str = "CONNECT",
        **extra: str,
    ) -> Frame:
        headers = {"host": "localhost"}
        if version is not None:
            headers["accept-version"] = version
        if heart_beat is not None:
            headers["heart-beat"] = heart_beat
        if login is not None:
            headers["login"] = login
        headers.update(extra)
        self.send(command, headers)
        frame = self.frame()
        assert frame.command == "CONNECTED", frame
        self.version = frame.headers["version"]
        return frame

    def subscribe(
        self, destination: str, sub_id: str | None = "0", ack: str | None = None, **extra: str
    ) -> None:
        headers = {"destination": destination}
        if sub_id is not None:
            headers["id"] = sub_id
        if ack is not None:
            headers["ack"] = ack
        headers.update(extra)
        self.send("SUBSCRIBE", headers)

    def publish(self, destination: str, body: bytes = b"", **extra: str) -> None:
        self.send("SEND", {"destination": destination, **extra}, body)

    def ack(self, message: Frame, command: str = "ACK", **extra: str) -> None:
        """ACK/NACK ``message`` the way its version says."""
        if self.version == "1.2":
            # auto-mode MESSAGEs have no ack header; their message-id is the same value
            headers = {"id": message.headers.get("ack", message.headers["message-id"])}
        elif self.version == "1.1":
            headers = {
                "message-id": message.headers["message-id"],
                "subscription": message.headers["subscription"],
            }
        else:
            headers = {"message-id": message.headers["message-id"]}
        self.send(command, {**headers, **extra})

    # output
    def received(self) -> list[Received]:
        """Frames written since the last call (heart-beat EOLs are counted, not returned)."""
        new = self.out.writes[self._seen :]
        self._seen = len(self.out.writes)
        out = []
        for data, binary in new:
            if data == b"\n":
                self.heartbeats += 1
                continue
            out.append(Received(parse_write(data, self.version), binary, data))
        return out

    def frames(self) -> list[Frame]:
        return [r.frame for r in self.received()]

    def commands(self) -> list[str]:
        return [f.command for f in self.frames()]

    def frame(self) -> Frame:
        frames = self.frames()
        assert len(frames) == 1, frames
        return frames[0]

    def messages(self) -> list[Frame]:
        frames = self.frames()
        assert all(f.command == "MESSAGE" for f in frames), frames
        return frames

    def message(self) -> Frame:
        frames = self.messages()
        assert len(frames) == 1, frames
        return frames[0]

    def bodies(self) -> list[bytes]:
        return [f.body for f in self.messages()]

    def receipt(self, receipt_id: str) -> None:
        frame = self.frame()
        assert frame.command == "RECEIPT" and frame.headers == {"receipt-id": receipt_id}, frame

    def expect_error(self, code: int = CLOSE_PROTOCOL_ERROR, contains: str = "") -> Frame:
        """Exactly one ERROR, then exactly one close with ``code``; nothing after it."""
        frames = self.frames()
        assert [f.command for f in frames] == ["ERROR"], frames
        error = frames[0]
        assert error.headers.get("message"), error
        assert contains in error.headers["message"] or contains in error.body.decode(), error
        assert self.out.closes == [(code, self.out.closes[0][1])], self.out.closes
        assert self.out.writes_after_close == []
        assert self.session.closed
        assert self.session not in self.env.broker.open_sessions
        assert self.session.id not in self.env.broker.sessions
        return error

    @property
    def close_code(self) -> int | None:
        return self.out.closes[0][0] if self.out.closes else None


@dataclass
class Env:
    broker: Broker
    clock: ManualClock = field(default_factory=ManualClock)

    def client(self, **session_kwargs: Any) -> Client:
        return Client(self, **session_kwargs)

    def connected(self, login: str | None = "alice", version: str | None = "1.2", **kw: Any) -> Client:
        client = self.client()
        client.connect(login, version, **kw)
        return client

    def assert_empty(self) -> None:
        """No trace of any session left in the broker."""
        broker = self.broker
        assert broker.open_sessions == {}
        assert broker.sessions == {}
        assert broker.users == {}
        assert len(broker.topics) == 0 and not broker.topics


def make_env(authenticator: Any = None, limits: SessionLimits | None = None, **settings_kw: Any) -> Env:
    settings_obj = BrokerSettings(**settings_kw)
    if limits is not None:
        settings_obj.limits = limits
    return Env(Broker(settings_obj, authenticator or DevAuthenticator()))


@pytest.fixture
def env() -> Env:
    return make_env()


VERSIONS = ("1.0", "1.1", "1.2")


# --------------------------------------------------------------------------- 1. CONNECT


@pytest.mark.parametrize("command", ["CONNECT", "STOMP"])
def test_connect_and_stomp_are_both_accepted(env: Env, command: str) -> None:
    """STOMP 1.1+ clients may open with STOMP instead of CONNECT."""
    client = env.client()
    client.connect("alice", command=command)
    assert client.session.connected
    assert env.broker.sessions == {client.session.id: client.session}


def test_connected_headers(env: Env) -> None:
    """CONNECTED tells version, the server's heart-beat, the session id, server and user name."""
    client = env.client()
    frame = client.connect("alice", "1.0,1.1,1.2", heart_beat="0,0")
    assert frame.headers == {
        "version": "1.2",
        "heart-beat": "10000,10000",
        "session": client.session.id,
        "server": "stompgate",
        "user-name": "alice",
    }
    assert frame.body == b""


def test_connected_reports_configured_server_name_and_heartbeat() -> None:
    """server and heart-beat come from the broker's settings, not constants."""
    env = make_env(heartbeat_send_ms=3000, heartbeat_receive_ms=0)
    env.broker.server_name = "gw/1"
    frame = env.client().connect("bob")
    assert frame.headers["heart-beat"] == "3000,0"
    assert frame.headers["server"] == "gw/1"


def test_connected_headers_are_not_escaped(env: Env) -> None:
    """CONNECTED is never escaped (1.0 compatibility): a ':' in the user name stays raw."""
    client = env.client()
    client.send("CONNECT", {"accept-version": "1.2", "login": "a:b\\c", "heart-beat": "0,0"})
    data = client.out.writes[0][0]
    assert "user-name:a:b\\c" in raw_header_lines(data)


@pytest.mark.parametrize(
    "accept, expected",
    [
        (None, "1.0"),
        ("", "1.0"),
        ("1.0", "1.0"),
        ("1.1", "1.1"),
        ("1.2", "1.2"),
        ("1.0,1.1,1.2", "1.2"),
        ("1.2,1.0", "1.2"),
        ("1.0,1.1", "1.1"),
        ("1.0, 1.1", "1.1"),
        ("1.1,2.0", "1.1"),
    ],
)
def test_version_negotiation(env: Env, accept: str | None, expected: str) -> None:
    """The highest version both sides support wins; no accept-version means 1.0."""
    client = env.client()
    headers = {"login": "alice"}
    if accept is not None:
        headers["accept-version"] = accept
    client.send("CONNECT", headers)
    frame = client.frame()
    assert frame.command == "CONNECTED"
    assert frame.headers["version"] == expected
    assert client.session.version == expected


@pytest.mark.parametrize("accept", ["2.0", "0.9,2.0", "1.3"])
def test_no_common_version_is_an_error(env: Env, accept: str) -> None:
    """ERROR lists the supported versions in a version header, then the session closes."""
    client = env.client()
    client.send("CONNECT", {"accept-version": accept, "login": "alice"})
    error = client.expect_error()
    assert error.headers["version"] == "1.0,1.1,1.2"
    assert "1.0,1.1,1.2" in error.headers["message"]
    assert not client.session.connected
    env.assert_empty()


@pytest.mark.parametrize(
    "command, headers",
    [
        ("SEND", {"destination": "/topic/a"}),
        ("SUBSCRIBE", {"id": "0", "destination": "/topic/a"}),
        ("UNSUBSCRIBE", {"id": "0"}),
        ("ACK", {"id": "x"}),
        ("BEGIN", {"transaction": "t"}),
        ("DISCONNECT", {}),
    ],
)
def test_frame_before_connect_is_an_error(env: Env, command: str, headers: dict[str, str]) -> None:
    """Nothing but CONNECT/STOMP is accepted first: ERROR + close 1002."""
    client = env.client()
    client.send(command, headers)
    error = client.expect_error(CLOSE_PROTOCOL_ERROR)
    assert "CONNECT" in error.headers["message"]
    env.assert_empty()


@pytest.mark.parametrize("second", ["CONNECT", "STOMP"])
def test_connect_twice_is_an_error(env: Env, second: str) -> None:
    """A second CONNECT/STOMP on a connected session is refused."""
    client = env.connected()
    client.send(second, {"accept-version": "1.2", "login": "alice"})
    client.expect_error(CLOSE_PROTOCOL_ERROR, contains=second)
    env.assert_empty()


def test_connect_fed_byte_by_byte(env: Env) -> None:
    """Chunking does not matter: a CONNECT fed one byte at a time gives one CONNECTED."""
    client = env.client()
    data = serialize(Frame("CONNECT", {"accept-version": "1.2", "login": "a", "heart-beat": "0,0"}))
    for i in range(len(data)):
        assert client.out.writes == []
        client.session.receive_data(data[i : i + 1])
    assert client.commands() == ["CONNECTED"]


def test_frames_after_connect_in_the_same_chunk_use_the_negotiated_version(env: Env) -> None:
    """CONNECT + SUBSCRIBE in one chunk: the SUBSCRIBE is unescaped as 1.2."""
    client = env.client()
    data = serialize(Frame("CONNECT", {"accept-version": "1.2", "login": "a", "heart-beat": "0,0"}))
    data += serialize(Frame("SUBSCRIBE", {"id": "a:b", "destination": "/topic/x", "receipt": "r"}), "1.2")
    client.session.receive_data(data)
    assert client.commands() == ["CONNECTED", "RECEIPT"]
    assert "a:b" in client.session.subscriptions


def test_sessions_opened_counts_connects(env: Env) -> None:
    """broker.stats.sessions_opened counts successful CONNECTs only."""
    env.connected("a")
    env.connected("b")
    env.client()  # never connects
    assert env.broker.stats.sessions_opened == 2
    assert len(env.broker.open_sessions) == 3
    assert len(env.broker.sessions) == 2


# --------------------------------------------------------------------------- 2. heart-beats


@pytest.mark.parametrize(
    "client_hb, server, send_s, recv_s",
    [
        ("0,0", (10_000, 10_000), None, None),
        ("5000,20000", (10_000, 10_000), 20.0, 15.0),  # send max(10000,20000); expect max(5000,10000)*1.5
        ("20000,5000", (10_000, 10_000), 10.0, 30.0),
        ("0,5000", (10_000, 10_000), 10.0, None),  # client never sends: nothing expected
        ("5000,0", (10_000, 10_000), None, 15.0),  # client wants none: nothing sent
        ("5000,5000", (0, 0), None, None),  # server does no heart-beats
        ("5000,5000", (0, 3000), None, 7.5),
        ("5000,5000", (3000, 0), 5.0, None),
        ("1000,1000", (10_000, 10_000), 10.0, 15.0),
    ],
)
def test_heartbeat_negotiation(
    client_hb: str, server: tuple[int, int], send_s: float | None, recv_s: float | None
) -> None:
    """STOMP's rule: each direction is max(of the two), or 0 if either side says 0."""
    env = make_env(heartbeat_send_ms=server[0], heartbeat_receive_ms=server[1])
    client = env.connected(heart_beat=client_hb)
    connect_timer = env.clock.timers[0]
    assert connect_timer.cancelled
    # the send side ticks every half interval (see test_send_ticks_keep_gaps_within_the_interval)
    half = send_s / 2 if send_s is not None else None
    assert env.clock.pending_delays() == sorted(d for d in (half, recv_s) if d is not None)
    assert client.session.connected


def test_no_heart_beat_header_means_none(env: Env) -> None:
    """A 1.1+ CONNECT without heart-beat is 0,0: no timers at all."""
    env.connected(heart_beat=None)
    assert env.clock.pending() == []


def test_read_margin_setting() -> None:
    """The receive timeout is the negotiated interval times heartbeat_read_margin."""
    env = make_env(heartbeat_read_margin=2.0)
    env.connected(heart_beat="20000,0")
    assert env.clock.pending_delays() == [40.0]


def write_times(client: Client, env: Env, until: float, step: float = 0.5) -> list[float]:
    """Advance the clock to ``until`` in steps, noting when the session wrote anything."""
    times = [env.clock.now]
    seen = len(client.out.writes)
    while env.clock.now < until:
        env.clock.advance(step)
        if len(client.out.writes) > seen:
            seen = len(client.out.writes)
            times.append(env.clock.now)
    return times


def test_send_ticks_keep_gaps_within_the_interval(env: Env) -> None:
    """The server writes something at least once per negotiated interval, from CONNECTED on.

    Clients close a connection silent for about 2x the interval, so a first EOL
    after 2x (a tick per interval that skips when CONNECTED was written) races them.
    """
    client = env.connected(heart_beat="0,20000")
    times = write_times(client, env, 200)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps and max(gaps) <= 20, gaps
    client.frames()
    assert client.heartbeats == len(gaps)
    assert client.out.closes == []


def test_traffic_replaces_heartbeats(env: Env) -> None:
    """An EOL is only sent when nothing else was written in the last half interval."""
    client = env.connected(heart_beat="0,20000")
    client.subscribe("/topic/t")
    other = env.connected("bob")
    for _ in range(20):  # a MESSAGE every 5 s: never idle for a half interval
        env.clock.advance(5)
        other.publish("/topic/t", b"hi")
    client.frames()
    assert client.heartbeats == 0
    env.clock.advance(20)  # idle: now heart-beats come
    client.frames()
    assert client.heartbeats >= 1
    assert client.out.closes == []


def test_receipt_counts_as_traffic_for_send_ticks(env: Env) -> None:
    """Any frame the server writes (here a RECEIPT) makes the next tick silent."""
    client = env.connected(heart_beat="0,20000")
    env.clock.advance(9)
    client.send("SUBSCRIBE", {"id": "0", "destination": "/topic/a", "receipt": "r"})
    env.clock.advance(1)  # tick at 10 s: the RECEIPT was written since the last one
    client.frames()
    assert client.heartbeats == 0


def test_silent_client_is_closed_interval_times_margin_after_its_last_byte(env: Env) -> None:
    """A client silent for the whole receive window (max(5, 10) s x 1.5) gets ERROR and is closed."""
    client = env.connected(heart_beat="5000,0")
    assert env.clock.pending_delays() == [15.0]
    env.clock.advance(3)
    client.session.receive_data(b"\n")  # last byte at t=3
    env.clock.advance(14.9)  # t=17.9: silent for 14.9 s
    assert client.out.closes == []
    env.clock.advance(0.1)  # t=18: silent for 15 s
    error = client.expect_error(CLOSE_POLICY)
    assert "heart-beat" in error.headers["message"]
    assert env.clock.pending() == []
    env.assert_empty()


@pytest.mark.parametrize("data", [b"\n", b"\r\n", b"SEND\ndestination:/topic/a\n\nx\0"])
def test_any_data_resets_the_receive_timer(env: Env, data: bytes) -> None:
    """EOL heart-beats and frames prove the client is alive, tick after tick."""
    client = env.connected(heart_beat="5000,0")
    for _ in range(5):
        env.clock.advance(14)
        client.session.receive_data(data)
    assert client.out.closes == []
    assert client.session.connected and not client.session.closed


def test_partial_frame_resets_the_receive_timer(env: Env) -> None:
    """Bytes of a frame that is not complete yet still count as data."""
    client = env.connected(heart_beat="5000,0")
    frame = client.encode("SEND", {"destination": "/topic/a"}, b"x" * 10)
    for i in range(6):
        env.clock.advance(14)
        client.session.receive_data(frame[i : i + 1])
    assert client.out.closes == []


def test_version_10_gets_no_heartbeats(env: Env) -> None:
    """STOMP 1.0 has no heart-beating, whatever the client writes in the header."""
    client = env.connected(version="1.0", heart_beat="5000,5000")
    assert client.version == "1.0"
    assert env.clock.pending() == []
    env.clock.advance(3600)
    assert client.out.closes == [] and client.heartbeats == 0


def test_version_10_ignores_invalid_heartbeat_header(env: Env) -> None:
    """heart-beat is not a 1.0 header, so its value is not checked."""
    client = env.connected(version="1.0", heart_beat="nonsense")
    assert client.session.connected


@pytest.mark.parametrize("value", ["", "abc", "1", "1,2,3", "-1,0", "0,-5", "1.5,2", "a,b", ","])
def test_invalid_heartbeat_header_is_an_error(env: Env, value: str) -> None:
    """A malformed heart-beat is refused at CONNECT."""
    client = env.client()
    client.send("CONNECT", {"accept-version": "1.2", "login": "a", "heart-beat": value})
    client.expect_error(CLOSE_PROTOCOL_ERROR, contains="heart-beat")
    env.assert_empty()


def test_timers_are_cancelled_on_close(env: Env) -> None:
    """After DISCONNECT no heart-beat timer is left to fire."""
    client = env.connected(heart_beat="5000,5000")
    assert len(env.clock.pending()) == 2
    client.send("DISCONNECT")
    assert env.clock.pending() == []


def test_connect_timeout_fires_before_connect(env: Env) -> None:
    """No CONNECT within connect_timeout_s: ERROR + close."""
    client = env.client()
    assert env.clock.pending_delays() == [10.0]
    env.clock.advance(9.9)
    assert client.out.writes == []
    env.clock.advance(0.1)
    error = client.expect_error(CLOSE_POLICY)
    assert "CONNECT" in error.headers["message"]
    env.assert_empty()


def test_connect_timeout_is_configurable() -> None:
    """connect_timeout_s is the delay of the first timer."""
    env = make_env(connect_timeout_s=2.5)
    env.client()
    assert env.clock.pending_delays() == [2.5]


def test_connect_timeout_cancelled_by_connect(env: Env) -> None:
    """After CONNECT the timer is cancelled, and even if it fires anyway it does nothing."""
    client = env.client()
    (timer,) = env.clock.pending()
    client.connect()
    assert timer.cancelled
    timer.callback()  # a scheduler that loses a cancel race
    env.clock.advance(100)
    assert client.out.closes == []
    assert client.frames() == []


def test_connect_timeout_cancelled_by_failed_connect(env: Env) -> None:
    """A session closed for another reason leaves no connect timer behind."""
    client = env.client()
    client.session.receive_data(b"GARBAGE\n\n\0")
    client.expect_error()
    assert env.clock.pending() == []


# --------------------------------------------------------------------------- 3. SUBSCRIBE


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_subscribe_id_required_in_11_and_12(env: Env, version: str) -> None:
    """id is a required SUBSCRIBE header since 1.1."""
    client = env.connected(version=version)
    client.subscribe("/topic/a", sub_id=None)
    client.expect_error(contains="id")
    env.assert_empty()


def test_subscribe_id_optional_in_10(env: Env) -> None:
    """1.0 SUBSCRIBE without id: the destination is the subscription id."""
    client = env.connected(version="1.0")
    client.subscribe("/topic/a", sub_id=None, receipt="r")
    client.receipt("r")
    env.connected("bob").publish("/topic/a", b"x")
    msg = client.message()
    assert msg.headers["subscription"] == "/topic/a"


def test_subscribe_without_destination_is_an_error(env: Env) -> None:
    """destination is a required SUBSCRIBE header in every version."""
    client = env.connected()
    client.send("SUBSCRIBE", {"id": "0"})
    client.expect_error(contains="destination")


def test_duplicate_subscription_id_is_an_error(env: Env) -> None:
    """Subscription ids are unique within a session."""
    client = env.connected()
    client.subscribe("/topic/a", "s")
    client.subscribe("/topic/b", "s")
    client.expect_error(contains="'s'")
    env.assert_empty()


def test_same_id_in_two_sessions_is_fine(env: Env) -> None:
    """Ids are per session: two sessions may both use id 0."""
    a, b = env.connected("a"), env.connected("b")
    a.subscribe("/topic/x", "0")
    b.subscribe("/topic/x", "0")
    env.connected("c").publish("/topic/x", b"m")
    assert a.bodies() == [b"m"] and b.bodies() == [b"m"]


def test_two_subscriptions_to_one_destination_each_get_a_message(env: Env) -> None:
    """A session subscribed twice receives one MESSAGE per subscription."""
    client = env.connected()
    client.subscribe("/topic/a", "one")
    client.subscribe("/topic/*", "two")
    env.connected("bob").publish("/topic/a", b"m")
    messages = client.messages()
    assert sorted(m.headers["subscription"] for m in messages) == ["one", "two"]
    assert len({m.headers["message-id"] for m in messages}) == 2


@pytest.mark.parametrize("ack", ["AUTO", "none", "", "client_individual"])
def test_invalid_ack_mode_is_an_error(env: Env, ack: str) -> None:
    """Only auto, client and client-individual exist (case-sensitive)."""
    client = env.connected()
    client.subscribe("/topic/a", ack=ack)
    client.expect_error(contains="ack")


@pytest.mark.parametrize("destination", ["/app/x", "/foo", "topic/a", "", "/user", "/users/queue/x"])
def test_subscribe_outside_broker_prefixes_is_an_error(env: Env, destination: str) -> None:
    """Only /topic, /queue and own /user/... destinations may be subscribed to."""
    client = env.connected()
    client.subscribe(destination, "0", receipt="r")
    error = client.expect_error()
    assert (repr(destination) if destination else "the destination is empty") in error.headers["message"]
    assert error.headers["receipt-id"] == "r"


def test_subscribe_own_user_destination(env: Env) -> None:
    """/user/queue/x is the session user's private queue."""
    client = env.connected("alice")
    client.subscribe("/user/queue/x", receipt="r")
    client.receipt("r")
    assert len(env.broker.users["alice"].subscriptions) == 1
    assert len(env.broker.topics) == 0


@pytest.mark.parametrize("destination", ["/user/bob/queue/x", "/user/alice/queue/x", "/user/app/x"])
def test_subscribe_another_users_destination_is_an_error(env: Env, destination: str) -> None:
    """/user/{name}/... is for SEND only; subscribing to it (even one's own name) is refused."""
    client = env.connected("alice")
    client.subscribe(destination)
    error = client.expect_error()
    assert repr(destination) in error.headers["message"]


def test_user_subscription_without_a_user_is_an_error() -> None:
    """An anonymous session has no /user/queue/... of its own."""

    class Anonymous:
        def authenticate(self, creds: Credentials) -> str | None:
            return None

    env = make_env(Anonymous())
    client = env.client()
    frame = client.connect(login=None)
    assert "user-name" not in frame.headers
    client.subscribe("/topic/a", "0")
    client.subscribe("/user/queue/x", "1")
    client.expect_error(contains="/user/queue/x")
    env.assert_empty()


def test_max_subscriptions() -> None:
    """limits.max_subscriptions per session; UNSUBSCRIBE frees a slot."""
    env = make_env(limits=SessionLimits(max_subscriptions=2))
    client = env.connected()
    client.subscribe("/topic/a", "1")
    client.subscribe("/topic/b", "2")
    client.send("UNSUBSCRIBE", {"id": "1"})
    client.subscribe("/topic/c", "3", receipt="r")
    client.receipt("r")
    client.subscribe("/topic/d", "4")
    client.expect_error(contains="2")
    env.assert_empty()


def test_unsubscribe_stops_messages(env: Env) -> None:
    """After UNSUBSCRIBE no more MESSAGEs for that subscription."""
    client = env.connected()
    sender = env.connected("bob")
    client.subscribe("/topic/a", "0")
    client.subscribe("/topic/a", "1")
    sender.publish("/topic/a", b"1")
    assert len(client.messages()) == 2
    client.send("UNSUBSCRIBE", {"id": "0", "receipt": "u"})
    client.receipt("u")
    sender.publish("/topic/a", b"2")
    assert [m.headers["subscription"] for m in client.messages()] == ["1"]
    client.send("UNSUBSCRIBE", {"id": "1"})
    sender.publish("/topic/a", b"3")
    assert client.messages() == []
    assert len(env.broker.topics) == 0


def test_unsubscribe_pattern_subscription(env: Env) -> None:
    """Pattern subscriptions are removed from the index too."""
    client = env.connected()
    client.subscribe("/topic/**", "p")
    env.connected("bob").publish("/topic/a/b", b"1")
    assert client.bodies() == [b"1"]
    client.send("UNSUBSCRIBE", {"id": "p"})
    env.connected("carol").publish("/topic/a/b", b"2")
    assert client.messages() == []
    assert len(env.broker.topics) == 0


def test_unsubscribe_user_destination(env: Env) -> None:
    """A /user/queue/x subscription is removed from the user's index."""
    client = env.connected("alice")
    client.subscribe("/user/queue/x", "0")
    client.send("UNSUBSCRIBE", {"id": "0"})
    env.connected("bob").publish("/user/alice/queue/x", b"1")
    assert client.messages() == []
    assert len(env.broker.users["alice"].subscriptions) == 0


def test_unsubscribe_unknown_id_is_harmless(env: Env) -> None:
    """Unsubscribing an unknown (or already removed) id is not an error."""
    client = env.connected()
    client.send("UNSUBSCRIBE", {"id": "nope", "receipt": "r"})
    client.receipt("r")
    client.subscribe("/topic/a", "0")
    client.send("UNSUBSCRIBE", {"id": "0"})
    client.send("UNSUBSCRIBE", {"id": "0", "receipt": "r2"})
    client.receipt("r2")
    assert client.out.closes == []


def test_unsubscribe_by_destination_in_10(env: Env) -> None:
    """1.0 may UNSUBSCRIBE by destination (for a SUBSCRIBE without id)."""
    client = env.connected(version="1.0")
    client.subscribe("/topic/a", sub_id=None)
    client.send("UNSUBSCRIBE", {"destination": "/topic/a", "receipt": "r"})
    client.receipt("r")
    env.connected("bob").publish("/topic/a", b"x")
    assert client.messages() == []
    assert len(env.broker.topics) == 0


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_unsubscribe_without_id_is_an_error_in_11_and_12(env: Env, version: str) -> None:
    """Since 1.1 UNSUBSCRIBE names the subscription by id; destination is not enough."""
    client = env.connected(version=version)
    client.subscribe("/topic/a", "0")
    client.send("UNSUBSCRIBE", {"destination": "/topic/a"})
    client.expect_error(contains="id")


def test_unsubscribe_without_id_or_destination_is_an_error_in_10(env: Env) -> None:
    """Even 1.0 must say what to unsubscribe."""
    client = env.connected(version="1.0")
    client.send("UNSUBSCRIBE", {})
    client.expect_error()


# --------------------------------------------------------------------------- 4. SEND and routing


def test_send_requires_destination(env: Env) -> None:
    """A SEND without destination is refused, and the ERROR names its receipt."""
    client = env.connected()
    client.send("SEND", {"receipt": "r"}, b"x")
    error = client.expect_error(contains="destination")
    assert error.headers["receipt-id"] == "r"


@pytest.mark.parametrize(
    "destination", ["/app/x", "/foo", "queue/a", "/user/bob", "/user//queue/x", "/user/bob/app/x"]
)
def test_send_to_unroutable_destination_is_an_error(env: Env, destination: str) -> None:
    """Error messages name the destination the client got wrong."""
    client = env.connected()
    client.publish(destination, b"x")
    error = client.expect_error()
    assert repr(destination) in error.headers["message"]


@pytest.mark.parametrize("destination", ["/topic/news", "/queue/work"])
def test_send_reaches_every_subscriber(env: Env, destination: str) -> None:
    """Topics and queues are both publish-subscribe, as in Spring's simple broker."""
    subs = [env.connected(name) for name in ("a", "b", "c")]
    for sub in subs:
        sub.subscribe(destination)
    other = env.connected("d")
    other.subscribe(destination + "/other")
    subs[0].publish(destination, b"hello")
    for sub in subs:  # including the sender's own subscription
        msg = sub.message()
        assert msg.body == b"hello"
        assert msg.headers["destination"] == destination
    assert other.frames() == []
    assert env.broker.stats.messages_published == 1
    assert env.broker.stats.messages_delivered == 3


def test_send_without_subscribers_is_unrouted(env: Env) -> None:
    """Publishing to nobody is fine (still receipted) and counted as unrouted."""
    client = env.connected()
    client.publish("/topic/nobody", b"x", receipt="r")
    client.receipt("r")
    assert env.broker.stats.messages_unrouted == 1
    assert env.broker.stats.messages_delivered == 0


@pytest.mark.parametrize(
    "pattern, destination, matches",
    [
        ("/topic/*", "/topic/a", True),
        ("/topic/*", "/topic/a/b", False),
        ("/topic/*", "/topic", False),
        ("/topic/**", "/topic/a/b/c", True),
        ("/topic/**", "/topic", True),
        ("/topic/**", "/topicx", False),
        ("/topic/a?c", "/topic/abc", True),
        ("/topic/a?c", "/topic/ac", False),
        ("/topic/a?c", "/topic/a/c", False),
        ("/queue/*/x", "/queue/q/x", True),
        ("/queue/*/x", "/queue/q/y", False),
        ("/topic/**/z", "/topic/z", True),
        ("/topic/**/z", "/topic/a/b/z", True),
        ("/topic/pre*", "/topic/prefix", True),
        ("/topic/pre*", "/topic/xprefix", False),
    ],
)
def test_wildcard_subscriptions(env: Env, pattern: str, destination: str, matches: bool) -> None:
    """Ant-style patterns in SUBSCRIBE; the MESSAGE shows the concrete destination."""
    client = env.connected()
    client.subscribe(pattern)
    env.connected("bob").publish(destination, b"x")
    messages = client.messages()
    if matches:
        assert [m.headers["destination"] for m in messages] == [destination]
    else:
        assert messages == []


def test_user_destination_reaches_all_sessions_of_that_user(env: Env) -> None:
    """SEND /user/bob/queue/x reaches each bob session on /user/queue/x, shown as /user/queue/x."""
    bob1, bob2 = env.connected("bob"), env.connected("bob", version="1.0")
    bob1.subscribe("/user/queue/x", "a")
    bob2.subscribe("/user/queue/x", "b")
    bob3 = env.connected("bob")
    bob3.subscribe("/user/queue/y")
    alice = env.connected("alice")
    alice.subscribe("/user/queue/x")
    plain = env.connected("carol")
    plain.subscribe("/queue/x")
    sender = env.connected("dave")
    sender.publish("/user/bob/queue/x", b"for bob", receipt="r")
    sender.receipt("r")
    for bob, sub in ((bob1, "a"), (bob2, "b")):
        msg = bob.message()
        assert msg.body == b"for bob"
        assert msg.headers["destination"] == "/user/queue/x"
        assert msg.headers["subscription"] == sub
    assert bob3.frames() == []
    assert alice.frames() == []
    assert plain.frames() == []
    assert env.broker.online("bob") == 3


@pytest.mark.parametrize("destination", ["/user/queue/*", "/user/queue/**", "/user/queue/q?"])
def test_user_destination_wildcard_subscription_is_refused(env: Env, destination: str) -> None:
    """A user destination is one exact (user, destination) pair, which is what the cluster
    routes on and what offline messages are stored under; a pattern cannot be either."""
    bob = env.connected("bob")
    bob.send("SUBSCRIBE", {"id": "1", "destination": destination})
    bob.expect_error(CLOSE_PROTOCOL_ERROR, contains="no wildcards")


def test_user_destination_for_offline_user_is_unrouted(env: Env) -> None:
    """A user with no session here is not an error for the sender."""
    sender = env.connected("dave")
    sender.publish("/user/nobody/queue/x", b"m", receipt="r")
    sender.receipt("r")
    assert env.broker.stats.messages_unrouted == 1


@pytest.mark.parametrize("name", ["dept/bob", "50%off", "a/b%2Fc", "ünï"])
def test_user_names_are_percent_encoded_in_send_destinations(env: Env, name: str) -> None:
    """A '/' in a user name is sent as %2F (and '%' as %25), as Spring does."""
    target = env.connected(name)
    target.subscribe("/user/queue/x")
    decoy = env.connected(name.split("/")[0] + "x")
    decoy.subscribe("/user/queue/x")
    env.connected("sender").publish(f"/user/{encode_user(name)}/queue/x", b"m")
    assert target.message().headers["destination"] == "/user/queue/x"
    assert decoy.frames() == []


def test_controlled_headers_are_not_copied(env: Env) -> None:
    """The sender cannot forge broker headers; its own custom headers are passed on."""
    sub = env.connected("sub")
    sub.subscribe("/topic/a", "real-sub", ack="client")
    sender = env.connected("s")
    sender.send("BEGIN", {"transaction": "tx"})
    sender.send(
        "SEND",
        {
            "destination": "/topic/a",
            "message-id": "forged",
            "subscription": "forged",
            "content-length": "3",
            "ack": "forged",
            "receipt": "rcpt",
            "transaction": "tx",
            "x-custom": "yes",
            "content-type": "text/plain",
            "priority": "4",
        },
        b"abc",
    )
    sender.send("COMMIT", {"transaction": "tx"})
    (received,) = sub.received()
    names = [line.split(":", 1)[0] for line in raw_header_lines(received.raw)]
    assert sorted(names) == sorted(
        [
            "subscription",
            "message-id",
            "ack",
            "destination",
            "x-custom",
            "content-type",
            "priority",
            "content-length",
        ]
    )
    headers = received.frame.headers
    assert headers["subscription"] == "real-sub"
    assert headers["message-id"] != "forged" and headers["ack"] == headers["message-id"]
    assert headers["destination"] == "/topic/a"
    assert headers["content-length"] == "3"
    assert headers["x-custom"] == "yes"
    assert received.frame.body == b"abc"


def test_message_content_length_is_the_real_body_length(env: Env) -> None:
    """content-length is computed by the broker, and bodies with NUL survive."""
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    env.connected("s").publish("/topic/a", b"a\0b\0")
    msg = sub.message()
    assert msg.headers["content-length"] == "4"
    assert msg.body == b"a\0b\0"


@pytest.mark.parametrize("version", VERSIONS)
def test_every_message_has_message_id_subscription_content_length(env: Env, version: str) -> None:
    """Required MESSAGE headers, in every version, with ids unique across sessions."""
    a, b = env.connected("a", version=version), env.connected("b", version=version)
    a.subscribe("/topic/t", "sa")
    b.subscribe("/topic/t", "sb")
    sender = env.connected("s")
    for i in range(3):
        sender.publish("/topic/t", b"%d" % i)
    ids = []
    for client, sub_id in ((a, "sa"), (b, "sb")):
        for msg in client.messages():
            assert msg.headers["subscription"] == sub_id
            assert msg.headers["content-length"] == str(len(msg.body))
            assert msg.headers["destination"] == "/topic/t"
            ids.append(msg.headers["message-id"])
    assert len(ids) == len(set(ids)) == 6


@pytest.mark.parametrize(
    "version, raw_line",
    [("1.0", "subscription:a:b\\c"), ("1.1", "subscription:a\\cb\\\\c"), ("1.2", "subscription:a\\cb\\\\c")],
)
def test_subscription_id_escaped_per_subscriber_version(env: Env, version: str, raw_line: str) -> None:
    """1.0 has no escaping; 1.1 and 1.2 escape ':' and '\\'."""
    client = env.connected(version=version)
    client.subscribe("/topic/a", "a:b\\c")
    env.connected("s").publish("/topic/a", b"m")
    (received,) = client.received()
    assert raw_header_lines(received.raw)[0] == raw_line
    assert received.frame.headers["subscription"] == "a:b\\c"


def test_mixed_version_subscribers_get_correctly_escaped_headers(env: Env) -> None:
    """One publish, encoded once per version: each subscriber parses the same values back."""
    old = env.connected("old", version="1.0")
    mid = env.connected("mid", version="1.1")
    new = env.connected("new", version="1.2")
    for client in (old, mid, new):
        client.subscribe("/topic/a", "s")
    sender = env.connected("s")
    custom = {"x-colon": "k:v", "x-back": "a\\b", "x-nl": "l1\nl2"}
    sender.publish("/topic/a", b"body", **custom)
    msg_old, msg_mid, msg_new = old.message(), mid.message(), new.message()
    for msg in (msg_mid, msg_new):
        assert msg.headers["x-colon"] == "k:v"
        assert msg.headers["x-back"] == "a\\b"
        assert msg.headers["x-nl"] == "l1\nl2"
    # 1.0: values sent raw; a newline cannot be, so it is flattened
    assert msg_old.headers["x-colon"] == "k:v"
    assert msg_old.headers["x-back"] == "a\\b"
    assert msg_old.headers["x-nl"] == "l1 l2"
    for msg in (msg_old, msg_mid, msg_new):
        assert msg.body == b"body"


@pytest.mark.parametrize(
    "headers, body, binary",
    [
        ({"content-type": "application/octet-stream"}, b"bytes", True),
        ({"content-type": "application/octet-stream"}, b"", True),
        ({"content-type": "application/octet-stream;foo=bar"}, b"\x00\x01", True),
        ({"content-type": "text/plain;charset=UTF-8"}, "héllo".encode(), False),
        ({"content-type": "application/json"}, b'{"a":1}', False),
        ({}, b"plain", False),
        ({}, b"", False),
        ({}, b"\xff\xfe not utf-8", True),
        ({"content-type": "text/plain"}, b"\xc3\x28", True),
    ],
)
def test_binary_flag(env: Env, headers: dict[str, str], body: bytes, binary: bool) -> None:
    """octet-stream and non-UTF-8 bodies must go out as binary WebSocket messages."""
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    env.connected("s").publish("/topic/a", body, **headers)
    (received,) = sub.received()
    assert received.binary is binary
    assert received.frame.body == body


def test_control_frames_are_text(env: Env) -> None:
    """CONNECTED, RECEIPT and ERROR are always text."""
    client = env.client()
    client.send("CONNECT", {"accept-version": "1.2", "login": "a"})
    client.send("SUBSCRIBE", {"id": "0", "destination": "/topic/a", "receipt": "r"})
    client.send("SUBSCRIBE", {"id": "0", "destination": "/topic/a"})
    assert [binary for _, binary in client.out.writes] == [False, False, False]


def test_messages_arrive_in_publish_order(env: Env) -> None:
    """One publisher, one subscriber: order is kept."""
    sub = env.connected("sub")
    sub.subscribe("/queue/q")
    sender = env.connected("s")
    for i in range(20):
        sender.publish("/queue/q", b"%d" % i)
    assert sub.bodies() == [b"%d" % i for i in range(20)]


# --------------------------------------------------------------------------- 5. RECEIPT


def _setup_for(command: str, client: Client) -> dict[str, str]:
    """Headers making ``command`` valid on a connected 1.2 ``client``."""
    if command == "SUBSCRIBE":
        return {"id": "new", "destination": "/topic/r"}
    if command == "UNSUBSCRIBE":
        client.subscribe("/topic/r", "old")
        return {"id": "old"}
    if command == "SEND":
        return {"destination": "/topic/r"}
    if command in ("ACK", "NACK"):
        client.subscribe("/topic/r", "c", ack="client-individual")
        client.env.connected("other").publish("/topic/r", b"x")
        return {"id": client.message().headers["ack"]}
    if command == "BEGIN":
        return {"transaction": "t"}
    if command in ("COMMIT", "ABORT"):
        client.send("BEGIN", {"transaction": "t"})
        return {"transaction": "t"}
    raise AssertionError(command)


@pytest.mark.parametrize(
    "command", ["SUBSCRIBE", "UNSUBSCRIBE", "SEND", "ACK", "NACK", "BEGIN", "COMMIT", "ABORT"]
)
def test_receipt_for_every_frame(env: Env, command: str) -> None:
    """Every client frame with a receipt header is answered with RECEIPT receipt-id."""
    client = env.connected()
    headers = _setup_for(command, client)
    client.frames()
    client.send(command, {**headers, "receipt": f"r-{command}"})
    client.receipt(f"r-{command}")
    assert client.out.closes == []


def test_receipt_for_disconnect_then_close(env: Env) -> None:
    """DISCONNECT receipt: RECEIPT, then close 1000, nothing else."""
    client = env.connected()
    client.send("DISCONNECT", {"receipt": "bye"})
    client.receipt("bye")
    assert client.out.closes == [(CLOSE_NORMAL, client.out.closes[0][1])]
    assert client.out.writes_after_close == []
    env.assert_empty()


def test_receipt_id_escaped(env: Env) -> None:
    """receipt-id is escaped like any other 1.2 header."""
    client = env.connected()
    client.send("BEGIN", {"transaction": "t", "receipt": "a:b\nc"})
    client.receipt("a:b\nc")


def test_receipt_inside_transaction_is_immediate(env: Env) -> None:
    """A transactional SEND is receipted when buffered, not at COMMIT."""
    client = env.connected()
    client.subscribe("/topic/a")
    client.send("BEGIN", {"transaction": "t"})
    client.publish("/topic/a", b"x", transaction="t", receipt="r")
    client.receipt("r")
    client.send("COMMIT", {"transaction": "t"})
    assert client.bodies() == [b"x"]


def test_receipt_follows_the_messages_the_frame_caused(env: Env) -> None:
    """A SEND to one's own subscription: MESSAGE first, then RECEIPT."""
    client = env.connected()
    client.subscribe("/topic/a")
    client.publish("/topic/a", b"x", receipt="r")
    assert client.commands() == ["MESSAGE", "RECEIPT"]


@pytest.mark.parametrize(
    "command, headers",
    [
        ("SUBSCRIBE", {"destination": "/topic/a"}),
        ("SEND", {"destination": "/nowhere"}),
        ("ACK", {"id": "never"}),
        ("COMMIT", {"transaction": "nope"}),
        ("NACK", {}),
    ],
)
def test_error_carries_receipt_id(env: Env, command: str, headers: dict[str, str]) -> None:
    """An ERROR caused by a frame with a receipt names it in receipt-id; no RECEIPT follows."""
    client = env.connected()
    client.send(command, {**headers, "receipt": "r77"})
    error = client.expect_error()
    assert error.headers["receipt-id"] == "r77"


def test_error_before_connect_carries_receipt_id(env: Env) -> None:
    """receipt-id is set even for the 'expected CONNECT' ERROR."""
    client = env.client()
    client.send("SEND", {"destination": "/topic/a", "receipt": "r1"})
    error = client.expect_error()
    assert error.headers["receipt-id"] == "r1"


def test_error_without_receipt_has_no_receipt_id(env: Env) -> None:
    """A receipt of an earlier frame must not leak into a later ERROR."""
    client = env.connected()
    client.send("BEGIN", {"transaction": "t", "receipt": "old"})
    client.receipt("old")
    client.send("SEND", {"destination": "/nowhere"})
    error = client.expect_error()
    assert "receipt-id" not in error.headers


# --------------------------------------------------------------------------- 6. ACK / NACK


def _deliver(env: Env, destination: str, n: int, start: int = 0) -> None:
    sender = env.connected(f"sender{env.clock.now}{start}")
    for i in range(start, start + n):
        sender.publish(destination, b"%d" % i)
    sender.send("DISCONNECT")


def test_auto_mode_needs_no_ack() -> None:
    """auto: no ack header, nothing pending, max_unacked does not apply."""
    env = make_env(limits=SessionLimits(max_unacked=2))
    client = env.connected()
    client.subscribe("/topic/a")
    _deliver(env, "/topic/a", 10)
    messages = client.messages()
    assert len(messages) == 10
    assert all("ack" not in m.headers for m in messages)
    assert client.out.closes == []


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_ack_of_auto_message_is_harmless(env: Env, version: str) -> None:
    """ACKing a message that needed none is not an error and counts nothing."""
    client = env.connected(version=version)
    client.subscribe("/topic/a")
    _deliver(env, "/topic/a", 1)
    msg = client.message()
    client.ack(msg, receipt="r")
    client.receipt("r")
    assert env.broker.stats.acked == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_client_ack_is_cumulative(version: str) -> None:
    """client mode: ACK of the 3rd message acknowledges 1-3; a later ACK of the 2nd is harmless."""
    env = make_env(limits=SessionLimits(max_unacked=3))
    client = env.connected(version=version)
    client.subscribe("/topic/a", "s", ack="client")
    _deliver(env, "/topic/a", 3)
    m1, m2, m3 = client.messages()
    client.ack(m3, receipt="r3")
    client.receipt("r3")
    assert env.broker.stats.acked == 1
    client.ack(m2, receipt="r2")  # already covered
    client.receipt("r2")
    client.ack(m1)
    assert env.broker.stats.acked == 1
    _deliver(env, "/topic/a", 3, start=3)  # room for three more: all were acked
    assert len(client.messages()) == 3
    assert client.out.closes == []


def test_client_ack_of_middle_message_leaves_later_ones_pending() -> None:
    """Cumulative means up to and including, not everything."""
    env = make_env(limits=SessionLimits(max_unacked=3))
    client = env.connected()
    client.subscribe("/topic/a", "s", ack="client")
    _deliver(env, "/topic/a", 3)
    _, m2, _ = client.messages()
    client.ack(m2)
    _deliver(env, "/topic/a", 2, start=3)  # pending: 3, 4, 5 = 3
    assert len(client.messages()) == 2
    _deliver(env, "/topic/a", 1, start=5)  # a fourth pending
    client.expect_error(contains="unacknowledged")


def test_client_ack_is_per_subscription() -> None:
    """A cumulative ACK covers only the messages of its own subscription."""
    env = make_env(limits=SessionLimits(max_unacked=4))
    client = env.connected()
    client.subscribe("/topic/a", "A", ack="client")
    client.subscribe("/topic/b", "B", ack="client")
    _deliver(env, "/topic/a", 2)
    _deliver(env, "/topic/b", 2, start=2)
    messages = client.messages()
    b_last = [m for m in messages if m.headers["subscription"] == "B"][-1]
    client.ack(b_last)  # pending now: the two of A
    _deliver(env, "/topic/b", 2, start=4)
    assert len(client.messages()) == 2
    _deliver(env, "/topic/b", 1, start=6)
    client.expect_error(contains="unacknowledged")


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_client_individual_ack(version: str) -> None:
    """client-individual: ACK of the 3rd acknowledges only the 3rd."""
    env = make_env(limits=SessionLimits(max_unacked=3))
    client = env.connected(version=version)
    client.subscribe("/topic/a", "s", ack="client-individual")
    _deliver(env, "/topic/a", 3)
    _, _, m3 = client.messages()
    client.ack(m3)
    assert env.broker.stats.acked == 1
    _deliver(env, "/topic/a", 1, start=3)
    assert len(client.messages()) == 1
    _deliver(env, "/topic/a", 1, start=4)  # 1, 2, 4 pending + 5 -> over the limit
    client.expect_error(contains="unacknowledged")


@pytest.mark.parametrize("ack_mode", ["client", "client-individual"])
def test_12_message_carries_ack_header(env: Env, ack_mode: str) -> None:
    """1.2 MESSAGEs in client modes carry ack (= message-id); 1.1 ones do not."""
    new = env.connected("new", version="1.2")
    old = env.connected("old", version="1.1")
    new.subscribe("/topic/a", ack=ack_mode)
    old.subscribe("/topic/a", ack=ack_mode)
    _deliver(env, "/topic/a", 1)
    msg_new, msg_old = new.message(), old.message()
    assert msg_new.headers["ack"] == msg_new.headers["message-id"]
    assert "ack" not in msg_old.headers


def test_12_ack_uses_id_header(env: Env) -> None:
    """In 1.2 ACK's id header is required; message-id alone is refused."""
    client = env.connected()
    client.subscribe("/topic/a", ack="client")
    _deliver(env, "/topic/a", 1)
    msg = client.message()
    client.send("ACK", {"message-id": msg.headers["message-id"], "subscription": "0"})
    client.expect_error(contains="id")


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_10_and_11_ack_use_message_id(env: Env, version: str) -> None:
    """Before 1.2, ACK names the message by message-id."""
    client = env.connected(version=version)
    client.subscribe("/topic/a", ack="client")
    _deliver(env, "/topic/a", 1)
    msg = client.message()
    client.send("ACK", {"message-id": msg.headers["message-id"], "subscription": "0", "receipt": "r"})
    client.receipt("r")
    assert env.broker.stats.acked == 1
    client.send("ACK", {"id": msg.headers["message-id"]})
    client.expect_error(contains="message-id")


def test_nack_in_10_is_an_error(env: Env) -> None:
    """NACK was introduced in 1.1."""
    client = env.connected(version="1.0")
    client.subscribe("/topic/a", ack="client")
    _deliver(env, "/topic/a", 1)
    client.ack(client.message(), command="NACK")
    client.expect_error(contains="NACK")
    assert env.broker.stats.nacked == 0


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_releases_and_counts(version: str) -> None:
    """NACK settles a message like ACK but counts as nacked."""
    env = make_env(limits=SessionLimits(max_unacked=1))
    client = env.connected(version=version)
    client.subscribe("/topic/a", ack="client-individual")
    _deliver(env, "/topic/a", 1)
    client.ack(client.message(), command="NACK")
    _deliver(env, "/topic/a", 1, start=1)
    client.ack(client.message(), command="ACK")
    assert (env.broker.stats.acked, env.broker.stats.nacked) == (1, 1)
    assert client.out.closes == []


@pytest.mark.parametrize(
    "suffix",
    [
        "99",  # not yet issued
        "x",
        "",
        "-1",
        "0",  # numbering starts at 1: "<session>-0" is never issued
        "01",  # only "<session>-1" was issued, not this spelling of it
    ],
)
def test_ack_for_never_issued_id_is_an_error(env: Env, suffix: str) -> None:
    """An id the session never sent cannot be acknowledged (one message, "<session>-1", was sent)."""
    client = env.connected()
    client.subscribe("/topic/a", ack="client")
    _deliver(env, "/topic/a", 1)
    client.messages()
    client.send("ACK", {"id": f"{client.session.id}-{suffix}"})
    client.expect_error(contains="unknown")


@pytest.mark.parametrize("mid", ["bogus", "", "-1"])
def test_ack_for_foreign_id_is_an_error(env: Env, mid: str) -> None:
    """Ids that do not even look like this session's are refused."""
    client = env.connected()
    client.send("ACK", {"id": mid})
    client.expect_error(contains="unknown")


def test_ack_for_another_sessions_message_is_an_error(env: Env) -> None:
    """A message id issued to another session is unknown here."""
    a, b = env.connected("a"), env.connected("b")
    a.subscribe("/topic/a", ack="client")
    _deliver(env, "/topic/a", 1)
    b.ack(a.message())
    b.expect_error(contains="unknown")
    assert a.out.closes == []


def test_ack_without_id_is_an_error(env: Env) -> None:
    """A 1.2 ACK must carry id."""
    client = env.connected()
    client.send("ACK", {})
    client.expect_error(contains="id")


def test_max_unacked_is_an_error_for_the_subscriber_only() -> None:
    """A subscriber over limits.max_unacked is closed; the publisher is unaffected."""
    env = make_env(limits=SessionLimits(max_unacked=2))
    slow = env.connected("slow")
    slow.subscribe("/topic/a", ack="client")
    fast = env.connected("fast")
    fast.subscribe("/topic/a")
    sender = env.connected("s")
    for i in range(3):
        sender.publish("/topic/a", b"%d" % i)
    frames = slow.frames()
    assert [f.command for f in frames] == ["MESSAGE", "MESSAGE", "ERROR"]
    assert "2" in frames[-1].headers["message"]
    assert slow.close_code == CLOSE_PROTOCOL_ERROR
    assert len(fast.messages()) == 3
    assert sender.out.closes == []
    assert slow.session.id not in env.broker.sessions


def test_unsubscribe_forgets_pending_acks() -> None:
    """Unacked messages of a removed subscription no longer count against the limit."""
    env = make_env(limits=SessionLimits(max_unacked=2))
    client = env.connected()
    client.subscribe("/topic/a", "s", ack="client")
    _deliver(env, "/topic/a", 2)
    old = client.messages()
    client.send("UNSUBSCRIBE", {"id": "s"})
    client.subscribe("/topic/a", "s2", ack="client")
    _deliver(env, "/topic/a", 2, start=2)
    assert len(client.messages()) == 2
    client.ack(old[0], receipt="r")  # issued earlier, now just harmless
    client.receipt("r")


# --------------------------------------------------------------------------- 7. transactions


def test_transaction_delivers_in_order_at_commit(env: Env) -> None:
    """BEGIN, SEND, SEND: nothing until COMMIT, then both, in order."""
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    sender = env.connected("s")
    sender.send("BEGIN", {"transaction": "t"})
    sender.publish("/topic/a", b"1", transaction="t")
    sender.publish("/topic/b", b"x", transaction="t")
    sender.publish("/topic/a", b"2", transaction="t")
    assert sub.frames() == []
    assert env.broker.stats.messages_published == 0
    sender.send("COMMIT", {"transaction": "t"})
    assert sub.bodies() == [b"1", b"2"]


def test_non_transactional_send_is_immediate_during_a_transaction(env: Env) -> None:
    """Only frames that name the transaction are buffered."""
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    sender = env.connected("s")
    sender.send("BEGIN", {"transaction": "t"})
    sender.publish("/topic/a", b"tx", transaction="t")
    sender.publish("/topic/a", b"now")
    assert sub.bodies() == [b"now"]
    sender.send("COMMIT", {"transaction": "t"})
    assert sub.bodies() == [b"tx"]


def test_abort_delivers_nothing(env: Env) -> None:
    """ABORT drops the buffered SENDs and ends the transaction."""
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    sender = env.connected("s")
    sender.send("BEGIN", {"transaction": "t"})
    sender.publish("/topic/a", b"1", transaction="t")
    sender.send("ABORT", {"transaction": "t", "receipt": "r"})
    sender.receipt("r")
    assert sub.frames() == []
    sender.send("COMMIT", {"transaction": "t"})  # gone
    sender.expect_error(contains="'t'")
    assert sub.frames() == []


def test_interleaved_transactions(env: Env) -> None:
    """Two open transactions are independent."""
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    s = env.connected("s")
    s.send("BEGIN", {"transaction": "t1"})
    s.send("BEGIN", {"transaction": "t2"})
    s.publish("/topic/a", b"1a", transaction="t1")
    s.publish("/topic/a", b"2a", transaction="t2")
    s.publish("/topic/a", b"1b", transaction="t1")
    s.send("COMMIT", {"transaction": "t2"})
    assert sub.bodies() == [b"2a"]
    s.send("ABORT", {"transaction": "t1"})
    assert sub.bodies() == []


def test_transaction_id_reusable_after_commit(env: Env) -> None:
    """A committed transaction id is free again."""
    s = env.connected()
    for _ in range(3):
        s.send("BEGIN", {"transaction": "t"})
        s.send("COMMIT", {"transaction": "t", "receipt": "r"})
        s.receipt("r")


@pytest.mark.parametrize("command", ["ACK", "NACK"])
def test_ack_inside_transaction_takes_effect_at_commit(command: str) -> None:
    """A transactional ACK/NACK is applied at COMMIT, and never after ABORT."""
    env = make_env(limits=SessionLimits(max_unacked=10))
    client = env.connected()
    client.subscribe("/topic/a", ack="client-individual")
    _deliver(env, "/topic/a", 2)
    m1, m2 = client.messages()
    stat = "acked" if command == "ACK" else "nacked"
    client.send("BEGIN", {"transaction": "t"})
    client.ack(m1, command=command, transaction="t")
    assert getattr(env.broker.stats, stat) == 0
    client.send("COMMIT", {"transaction": "t"})
    assert getattr(env.broker.stats, stat) == 1
    client.send("BEGIN", {"transaction": "u"})
    client.ack(m2, command=command, transaction="u")
    client.send("ABORT", {"transaction": "u"})
    assert getattr(env.broker.stats, stat) == 1
    assert client.out.closes == []


@pytest.mark.parametrize(
    "command, headers",
    [
        ("SEND", {"destination": "/topic/a", "transaction": "nope"}),
        ("ACK", {"id": "x", "transaction": "nope"}),
        ("COMMIT", {"transaction": "nope"}),
        ("ABORT", {"transaction": "nope"}),
    ],
)
def test_unknown_transaction_is_an_error(env: Env, command: str, headers: dict[str, str]) -> None:
    """A transaction never begun cannot be used, committed or aborted."""
    client = env.connected()
    client.send(command, headers)
    client.expect_error(contains="nope")


@pytest.mark.parametrize("command", ["BEGIN", "COMMIT", "ABORT"])
def test_transaction_header_required(env: Env, command: str) -> None:
    """BEGIN, COMMIT and ABORT all need a transaction header."""
    client = env.connected()
    client.send(command, {})
    client.expect_error(contains="transaction")


def test_duplicate_begin_is_an_error(env: Env) -> None:
    """BEGIN of an open transaction is refused, and its buffered SEND never goes out."""
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    client = env.connected()
    client.send("BEGIN", {"transaction": "t"})
    client.publish("/topic/a", b"x", transaction="t")
    client.send("BEGIN", {"transaction": "t"})
    client.expect_error(contains="'t'")
    assert sub.frames() == []


def test_max_transactions() -> None:
    """limits.max_transactions open at once; COMMIT frees a slot."""
    env = make_env(limits=SessionLimits(max_transactions=2))
    client = env.connected()
    client.send("BEGIN", {"transaction": "a"})
    client.send("BEGIN", {"transaction": "b"})
    client.send("COMMIT", {"transaction": "a"})
    client.send("BEGIN", {"transaction": "c", "receipt": "r"})
    client.receipt("r")
    client.send("BEGIN", {"transaction": "d"})
    client.expect_error(contains="2")


def test_max_transaction_frames() -> None:
    """limits.max_transaction_frames per transaction; nothing buffered is delivered."""
    env = make_env(limits=SessionLimits(max_transaction_frames=2))
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    client = env.connected()
    client.send("BEGIN", {"transaction": "t"})
    client.publish("/topic/a", b"1", transaction="t")
    client.publish("/topic/a", b"2", transaction="t")
    client.publish("/topic/a", b"3", transaction="t")
    client.expect_error(contains="2")
    assert sub.frames() == []


def test_bad_destination_in_transaction_fails_at_send(env: Env) -> None:
    """A transactional SEND is validated when it arrives, not at COMMIT."""
    client = env.connected()
    client.send("BEGIN", {"transaction": "t"})
    client.publish("/nowhere", b"x", transaction="t")
    client.expect_error(contains="/nowhere")


def test_failed_commit_delivers_nothing(env: Env) -> None:
    """A transaction is all or nothing: an invalid ACK in it must not let the SENDs before it out.

    SEND destinations are validated when buffered so a bad one fails before COMMIT;
    a transactional ACK for a message never issued must not half-commit either.
    """
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    client = env.connected()
    client.send("BEGIN", {"transaction": "t"})
    client.publish("/topic/a", b"1", transaction="t")
    client.send("ACK", {"id": "never-issued", "transaction": "t"})
    client.publish("/topic/a", b"2", transaction="t")
    client.send("COMMIT", {"transaction": "t"})
    client.expect_error(contains="never-issued")
    assert sub.frames() == []


@pytest.mark.parametrize("ending", ["disconnect", "connection_lost", "close"])
def test_open_transactions_discarded_at_end(env: Env, ending: str) -> None:
    """Whatever ends the session, an open transaction is not delivered."""
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    client = env.connected()
    client.send("BEGIN", {"transaction": "t"})
    client.publish("/topic/a", b"x", transaction="t")
    if ending == "disconnect":
        client.send("DISCONNECT", {"receipt": "r"})
    elif ending == "connection_lost":
        client.session.connection_lost()
    else:
        client.session.close()
    client.session.receive_data(client.encode("COMMIT", {"transaction": "t"}))
    assert sub.frames() == []
    assert env.broker.stats.messages_published == 0


# --------------------------------------------------------------------------- 8. DISCONNECT and close


def test_disconnect_without_receipt_closes_normally(env: Env) -> None:
    """DISCONNECT alone: no frame, close 1000, broker clean."""
    client = env.connected()
    client.send("DISCONNECT")
    assert client.frames() == []
    assert client.close_code == CLOSE_NORMAL
    env.assert_empty()


def test_frames_after_disconnect_in_same_chunk_are_ignored(env: Env) -> None:
    """Frames packed after DISCONNECT in one chunk must not be acted on."""
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    client = env.connected()
    data = client.encode("DISCONNECT", {"receipt": "r"})
    data += client.encode("SEND", {"destination": "/topic/a"}, b"x")
    client.session.receive_data(data)
    client.receipt("r")
    assert sub.frames() == []
    assert len(client.out.closes) == 1


def test_input_after_close_is_ignored(env: Env) -> None:
    """Once closed, bytes (even garbage) produce nothing: no ERROR, no second close."""
    client = env.connected()
    client.send("DISCONNECT")
    client.session.receive_data(b"GARBAGE\n\n\0")
    client.send("SEND", {"destination": "/topic/a"}, b"x")
    assert client.out.writes[1:] == []
    assert len(client.out.closes) == 1


def test_no_deliveries_after_close(env: Env) -> None:
    """A closed session is out of every index: topics and user destinations."""
    client = env.connected()
    client.subscribe("/topic/a")
    client.subscribe("/user/queue/x", "u")
    client.send("DISCONNECT")
    sender = env.connected("s")
    sender.publish("/topic/a", b"x")
    sender.publish("/user/alice/queue/x", b"x")
    assert client.frames() == []
    assert client.out.writes_after_close == []


def test_connection_lost_cleans_the_broker(env: Env) -> None:
    """Peer gone: subscriptions, the user entry and the session leave the broker."""
    a1 = env.connected("alice")
    a1.subscribe("/topic/a", "1")
    a1.subscribe("/topic/**", "2")
    a1.subscribe("/user/queue/x", "3")
    a1.subscribe("/user/queue/y", "4")
    unconnected = env.client()
    a1.session.connection_lost()
    unconnected.session.connection_lost()
    env.assert_empty()
    assert a1.out.closes == []  # the transport is already gone
    assert env.clock.pending() == []
    a1.session.receive_data(b"\n")
    a1.session.connection_lost()  # twice is harmless
    env.connected("x").publish("/topic/a", b"m")
    assert a1.out.writes_after_close == [] and a1.frames() == []


def test_user_entry_survives_while_another_session_remains(env: Env) -> None:
    """Closing one of a user's sessions keeps the others routable."""
    a1, a2 = env.connected("alice"), env.connected("alice")
    a1.subscribe("/user/queue/x")
    a2.subscribe("/user/queue/x")
    a1.session.connection_lost()
    assert env.broker.online("alice") == 1
    env.connected("bob").publish("/user/alice/queue/x", b"m")
    assert a2.bodies() == [b"m"]
    assert a1.frames() == []
    assert len(env.broker.users["alice"].subscriptions) == 1
    a2.send("DISCONNECT")
    assert "alice" not in env.broker.users


def test_close_is_idempotent(env: Env) -> None:
    """Only the first close/fail reaches the transport."""
    client = env.connected()
    client.session.close(CLOSE_NORMAL, "one")
    client.session.close(CLOSE_POLICY, "two")
    client.session.fail("three")
    assert client.out.closes == [(CLOSE_NORMAL, "one")]
    assert client.frames() == []


# --------------------------------------------------------------------------- 9. protocol and internal errors


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\n\n\0",
        b"SEND\nno colon here\n\n\0",
        b"SEND\n:empty-name\n\n\0",
        b"SEND\ndestination:/topic/a\nx:\\q\n\n\0",  # undefined escape in 1.2
        b"SUBSCRIBE\nid:0\ndestination:/topic/a\n\nbody\0",  # body not allowed
        b"SEND\ndestination:/topic/a\ncontent-length:abc\n\n\0",
        b"SEND\ndestination:/topic/a\ncontent-length:1\n\nxx\0",
        b"SEND\n\xff\xfe:x\n\n\0",
        b"MESSAGE\ndestination:/topic/a\n\n\0",  # a server command from a client
    ],
)
def test_codec_errors_are_one_error_then_close_1002(env: Env, data: bytes) -> None:
    """Malformed input: exactly one ERROR with a message header, then close 1002."""
    client = env.connected()
    client.session.receive_data(data)
    client.session.receive_data(data)  # more garbage after the error is ignored
    client.expect_error(CLOSE_PROTOCOL_ERROR)
    env.assert_empty()


def test_codec_error_before_connect(env: Env) -> None:
    """The codec rejects unknown commands even before CONNECT."""
    client = env.client()
    client.session.receive_data(b"HELLO\n\n\0")
    client.expect_error(CLOSE_PROTOCOL_ERROR)


def test_valid_frames_before_garbage_in_one_chunk_are_processed(env: Env) -> None:
    """Frames before the bad bytes of a chunk take effect, then ERROR."""
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    client = env.connected()
    data = client.encode("SEND", {"destination": "/topic/a", "receipt": "r"}, b"ok") + b"JUNK\n\n\0"
    data += client.encode("SEND", {"destination": "/topic/a"}, b"late")
    client.session.receive_data(data)
    frames = client.frames()
    assert [f.command for f in frames] == ["RECEIPT", "ERROR"]
    assert "receipt-id" not in frames[1].headers
    assert client.close_code == CLOSE_PROTOCOL_ERROR
    assert sub.bodies() == [b"ok"]


@pytest.mark.parametrize(
    "limits, data",
    [
        (
            SessionLimits(max_frame_size=256),
            b"SEND\ndestination:/topic/a\ncontent-length:1000\n\n" + b"x" * 1000 + b"\0",
        ),
        (SessionLimits(max_frame_size=256), b"SEND\ndestination:/topic/a\n\n" + b"x" * 1000 + b"\0"),
        # never terminated
        (SessionLimits(max_frame_size=256), b"SEND\ndestination:/topic/a\n\n" + b"x" * 1000),
        # endless headers
        (SessionLimits(max_frame_size=256), b"SEND\ndestination:/topic/a\n" + b"x:y\n" * 100),
        (SessionLimits(max_headers=4), b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(5)) + b"\n\0"),
        (SessionLimits(max_header_length=64), b"SEND\ndestination:/topic/" + b"a" * 100 + b"\n\n\0"),
    ],
)
def test_oversize_frames_per_session_limits(limits: SessionLimits, data: bytes) -> None:
    """The broker's SessionLimits reach the session's parser."""
    env = make_env(limits=limits)
    sub = env.connected("sub")
    sub.subscribe("/topic/a")
    client = env.connected()
    client.session.receive_data(data)
    error = client.expect_error(CLOSE_PROTOCOL_ERROR)
    assert error.headers["message"]
    assert sub.frames() == []


def test_frame_at_the_size_limit_is_accepted() -> None:
    """The limit is inclusive of a frame exactly max_frame_size bytes long."""
    env = make_env(limits=SessionLimits(max_frame_size=200))
    client = env.connected()
    client.subscribe("/topic/a")
    head = b"SEND\ndestination:/topic/a\n\n"
    data = head + b"x" * (200 - len(head) - 1) + b"\0"
    assert len(data) == 200
    client.session.receive_data(data)
    assert len(client.messages()) == 1


def test_internal_error_is_error_and_close_1011(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the broker never escapes receive_data: ERROR 'internal server error', close 1011."""
    client = env.connected()
    client.subscribe("/topic/a")

    def boom(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(env.broker, "publish", boom)
    client.publish("/topic/a", b"x", receipt="r")  # must not raise
    error = client.expect_error(CLOSE_INTERNAL)
    assert error.headers["message"] == "internal server error"
    assert b"secret" not in error.body
    env.assert_empty()


def test_authenticator_crash_is_internal_error() -> None:
    """An authenticator bug (not AuthError) is an internal error, not a login failure."""
    class Broken:
        def authenticate(self, creds: Credentials) -> str | None:
            raise KeyError("oops")

    env = make_env(Broken())
    client = env.client()
    client.send("CONNECT", {"accept-version": "1.2", "login": "a"})
    error = client.expect_error(CLOSE_INTERNAL)
    assert error.headers["message"] == "internal server error"


def test_errors_are_counted(env: Env) -> None:
    """broker.stats.errors counts every ERROR sent."""
    env.client().session.receive_data(b"JUNK\n\n\0")
    env.connected().send("SEND", {})
    assert env.broker.stats.errors == 2


# --------------------------------------------------------------------------- 10. authentication


@pytest.mark.parametrize("login", [None, "", "   "])
def test_dev_mode_requires_login(env: Env, login: str | None) -> None:
    """Dev mode trusts login as the user name, but there must be one: ERROR + close 1008."""
    client = env.client()
    headers = {"accept-version": "1.2"}
    if login is not None:
        headers["login"] = login
    client.send("CONNECT", headers)
    error = client.expect_error(CLOSE_POLICY)
    assert error.headers["message"].startswith("authentication failed")
    assert b"login" in error.body
    env.assert_empty()


def test_dev_mode_strips_login(env: Env) -> None:
    """Surrounding blanks are not part of the dev-mode user name."""
    frame = env.client().connect("  bob  ")
    assert frame.headers["user-name"] == "bob"


@pytest.fixture
def static_env() -> Env:
    return make_env(StaticAuthenticator({"alice": "s3cret", "bob": "pw"}))


def test_static_good_password(static_env: Env) -> None:
    """StaticAuthenticator: the right passcode logs in as that user."""
    frame = static_env.client().connect("alice", passcode="s3cret")
    assert frame.headers["user-name"] == "alice"


@pytest.mark.parametrize(
    "login, passcode",
    [
        ("alice", "wrong"),
        ("alice", ""),
        ("alice", None),
        ("alice", "pw"),  # bob's password
        ("carol", "s3cret"),  # unknown user
        (None, "s3cret"),
    ],
)
def test_static_bad_credentials(static_env: Env, login: str | None, passcode: str | None) -> None:
    """Wrong password, unknown user, another user's password: all the same ERROR, close 1008."""
    client = static_env.client()
    headers = {"accept-version": "1.2"}
    if login is not None:
        headers["login"] = login
    if passcode is not None:
        headers["passcode"] = passcode
    client.send("CONNECT", headers)
    error = client.expect_error(CLOSE_POLICY)
    assert b"invalid login or passcode" in error.body
    static_env.assert_empty()


SECRET = "0123456789abcdef0123456789abcdef-test-secret"


def hs256(claims: dict[str, Any], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def exp(seconds: float = 300) -> int:
    return int(time.time() + seconds)


def jwt_connect(env: Env, *, connect: dict[str, str] | None = None, **session_kwargs: Any) -> Client:
    client = env.client(**session_kwargs)
    client.send("CONNECT", {"accept-version": "1.2", **(connect or {})})
    return client


@pytest.fixture
def jwt_env() -> Env:
    return make_env(JwtAuthenticator(algorithm="HS256", key=SECRET))


@pytest.mark.parametrize("where", ["passcode", "authorization", "Authorization", "handshake", "query"])
def test_jwt_hs256_token_sources(jwt_env: Env, where: str) -> None:
    """The token is found in the CONNECT passcode or Authorization, the handshake, or ?access_token."""
    token = hs256({"sub": "alice", "exp": exp()})
    kwargs: dict[str, Any] = {}
    if where == "passcode":
        kwargs["connect"] = {"login": "ignored", "passcode": token}
    elif where in ("authorization", "Authorization"):
        kwargs["connect"] = {where: f"Bearer {token}"}
    elif where == "handshake":
        kwargs["handshake_headers"] = {"authorization": f"Bearer {token}"}
    else:
        kwargs["query"] = {"access_token": token}
    client = jwt_connect(jwt_env, **kwargs)
    frame = client.frame()
    assert frame.command == "CONNECTED", frame
    assert frame.headers["user-name"] == "alice"
    assert jwt_env.broker.online("alice") == 1


def test_jwt_connect_header_wins_over_handshake(jwt_env: Env) -> None:
    """The CONNECT frame's token is used before the handshake's."""
    good = hs256({"sub": "alice", "exp": exp()})
    other = hs256({"sub": "mallory", "exp": exp()})
    client = jwt_connect(
        jwt_env, connect={"passcode": good}, handshake_headers={"authorization": f"Bearer {other}"}
    )
    assert client.frame().headers["user-name"] == "alice"


def _jwt_refused(env: Env, token: str | None, contains: str) -> None:
    client = jwt_connect(env, connect={"passcode": token} if token else {})
    error = client.expect_error(CLOSE_POLICY)
    assert error.headers["message"].startswith("authentication failed")
    assert contains in error.body.decode(), error.body


def test_jwt_expired(jwt_env: Env) -> None:
    """exp in the past is refused with a clear message."""
    _jwt_refused(jwt_env, hs256({"sub": "alice", "exp": exp(-60)}), "token expired")


def test_jwt_wrong_key(jwt_env: Env) -> None:
    """A token signed with another key is refused."""
    token = hs256({"sub": "alice", "exp": exp()}, key="another-key-of-sufficient-length-123456")
    _jwt_refused(jwt_env, token, "invalid token")


def test_jwt_missing_exp(jwt_env: Env) -> None:
    """exp is required by default."""
    _jwt_refused(jwt_env, hs256({"sub": "alice"}), "exp")


def test_jwt_garbage_token(jwt_env: Env) -> None:
    """A token that is not a JWT is refused, not a crash."""
    _jwt_refused(jwt_env, "not.a.jwt", "invalid token")


def test_jwt_no_token(jwt_env: Env) -> None:
    """No token anywhere: the ERROR says where to put one."""
    _jwt_refused(jwt_env, None, "no token")


def test_jwt_non_bearer_authorization_is_not_a_token(jwt_env: Env) -> None:
    """Authorization: Basic ... is not mistaken for a JWT."""
    client = jwt_connect(jwt_env, connect={"Authorization": "Basic " + hs256({"sub": "a", "exp": exp()})})
    client.expect_error(CLOSE_POLICY, contains="authentication failed")


def test_jwt_missing_sub(jwt_env: Env) -> None:
    """Without the user claim there is no user name."""
    _jwt_refused(jwt_env, hs256({"exp": exp(), "name": "alice"}), "sub")


def test_jwt_custom_user_claim() -> None:
    """user_claim picks the claim that names the user; it must be a non-empty string."""
    env = make_env(JwtAuthenticator(algorithm="HS256", key=SECRET, user_claim="preferred_username"))
    token = hs256({"sub": "id-1", "preferred_username": "alice", "exp": exp()})
    client = jwt_connect(env, connect={"passcode": token})
    assert client.frame().headers["user-name"] == "alice"
    _jwt_refused(env, hs256({"sub": "id-1", "exp": exp()}), "preferred_username")
    _jwt_refused(env, hs256({"preferred_username": 42, "exp": exp()}), "preferred_username")


def test_jwt_audience_and_issuer() -> None:
    """Configured aud and iss are enforced."""
    env = make_env(JwtAuthenticator(algorithm="HS256", key=SECRET, audience="gw", issuer="idp"))
    ok = hs256({"sub": "a", "exp": exp(), "aud": "gw", "iss": "idp"})
    assert jwt_connect(env, connect={"passcode": ok}).frame().command == "CONNECTED"
    _jwt_refused(env, hs256({"sub": "a", "exp": exp(), "aud": "other", "iss": "idp"}), "invalid token")
    _jwt_refused(env, hs256({"sub": "a", "exp": exp(), "aud": "gw", "iss": "evil"}), "invalid token")


def test_jwt_require_exp_off() -> None:
    """require_exp=False accepts tokens without exp."""
    env = make_env(JwtAuthenticator(algorithm="HS256", key=SECRET, require_exp=False))
    assert jwt_connect(env, connect={"passcode": hs256({"sub": "a"})}).frame().command == "CONNECTED"


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str, str]:
    """(private PEM, public PEM, another private PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    def pair() -> tuple[str, str]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        return private, public

    private, public = pair()
    other_private, _ = pair()
    return private, public, other_private


def test_jwt_rs256(rsa_keys: tuple[str, str, str]) -> None:
    """RS256: signed with the private key, verified with the configured public key."""
    private, public, other_private = rsa_keys
    env = make_env(JwtAuthenticator(algorithm="RS256", key=public))
    token = jwt.encode({"sub": "alice", "exp": exp()}, private, algorithm="RS256")
    client = jwt_connect(env, connect={"Authorization": f"Bearer {token}"})
    assert client.frame().headers["user-name"] == "alice"
    forged = jwt.encode({"sub": "alice", "exp": exp()}, other_private, algorithm="RS256")
    _jwt_refused(env, forged, "invalid token")
    expired = jwt.encode({"sub": "alice", "exp": exp(-10)}, private, algorithm="RS256")
    _jwt_refused(env, expired, "token expired")
    # an HS256 token is refused outright when RS256 is configured
    _jwt_refused(env, hs256({"sub": "alice", "exp": exp()}), "invalid token")


def test_auth_failure_closes_with_policy_and_frees_nothing_else(jwt_env: Env) -> None:
    """A refused CONNECT leaves the other sessions alone."""
    good = jwt_connect(jwt_env, connect={"passcode": hs256({"sub": "alice", "exp": exp()})})
    good.frames()
    bad = jwt_connect(jwt_env, connect={"passcode": "bad"})
    bad.expect_error(CLOSE_POLICY)
    assert jwt_env.broker.online("alice") == 1


def test_authenticator_sees_all_credentials() -> None:
    """CONNECT headers, handshake headers and the query all reach the authenticator."""
    seen: list[Credentials] = []

    class Spy:
        def authenticate(self, creds: Credentials) -> str | None:
            seen.append(creds)
            raise AuthError("nope")

    env = make_env(Spy())
    client = env.client(handshake_headers={"authorization": "Bearer h"}, query={"access_token": "q"})
    client.send("CONNECT", {"accept-version": "1.2", "login": "l", "passcode": "p"})
    client.expect_error(CLOSE_POLICY, contains="nope")
    (creds,) = seen
    assert creds.connect_headers["login"] == "l" and creds.connect_headers["passcode"] == "p"
    assert creds.handshake_headers == {"authorization": "Bearer h"}
    assert creds.query == {"access_token": "q"}


# --------------------------------------------------------------------------- 11. shutdown


def test_shutdown_errors_and_closes_every_session(env: Env) -> None:
    """Connected or not, each session gets ERROR 'server shutting down' and close 1012."""
    new = env.connected("a", version="1.2", heart_beat="5000,5000")
    new.subscribe("/topic/a")
    old = env.connected("b", version="1.0")
    old.subscribe("/user/queue/x")
    waiting = env.client()
    gone = env.connected("c")
    gone.send("DISCONNECT")
    env.broker.shutdown()
    for client in (new, old, waiting):
        error = client.expect_error(CLOSE_RESTART)
        assert error.headers["message"] == "server shutting down"
    assert gone.out.closes == [(CLOSE_NORMAL, "disconnect")] and gone.frames() == []
    env.assert_empty()
    assert env.clock.pending() == []


def test_shutdown_custom_message(env: Env) -> None:
    """shutdown() passes its message to the ERROR."""
    client = env.connected()
    env.broker.shutdown("maintenance")
    assert client.expect_error(CLOSE_RESTART).headers["message"] == "maintenance"


# --------------------------------------------------------------------------- 12. chunking property


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


# ------------------------------------------------- the bus seam: replay and recovery


class HeldBus:
    """A bus whose stored-message fetches the test completes by hand."""

    congested = False

    def __init__(self) -> None:
        self.fetches: list[tuple[str, str, Callable[[list[Message]], None]]] = []
        self.published: list[Message] = []

    def publish(self, message: Message, delivered_here: int, done: Any, sender: Any = None) -> None:
        self.published.append(message)
        if done is not None:
            done(None)
        if sender is not None:
            sender.settle(message.size)

    def user_sessions(self, user: str, count: int) -> None:
        pass

    def user_subscribed(self, user: str, destination: str, replay: Callable[[list[Message]], None]) -> None:
        self.fetches.append((user, destination, replay))

    def user_unsubscribed(self, user: str, destination: str) -> None:
        pass


def test_user_subscription_receipt_waits_for_the_bus_then_stored_before_live() -> None:
    env = make_env()
    bus = env.broker.bus = HeldBus()
    bob = env.connected("bob")
    alice = env.connected("alice")
    bob.subscribe("/user/queue/in", receipt="r")
    assert bob.frames() == []  # not live cluster-wide yet: no RECEIPT
    alice.publish("/user/bob/queue/in", b"live")
    assert bob.frames() == []  # waits behind what was stored
    [(user, destination, replay)] = bus.fetches
    assert (user, destination) == ("bob", "/queue/in")
    replay([env.broker.message("/queue/in", {}, b"stored", "bob")])
    frames = bob.frames()
    assert [f.command for f in frames] == ["RECEIPT", "MESSAGE", "MESSAGE"]
    assert [f.body for f in frames[1:]] == [b"stored", b"live"]


def test_recovery_after_a_bus_gap_puts_stored_messages_before_live_ones() -> None:
    env = make_env()
    bus = env.broker.bus = HeldBus()
    bob = env.connected("bob")
    bob.subscribe("/user/queue/in")
    bus.fetches.pop()[2]([])
    assert env.broker.begin_recovery("carol", "/queue/in") is None  # nobody here to recover for
    recovered = env.broker.begin_recovery("bob", "/queue/in")
    assert recovered is not None
    env.broker.dispatch(env.broker.message("/queue/in", {}, b"live", "bob"))
    assert bob.frames() == []
    recovered([env.broker.message("/queue/in", {}, b"gap", "bob")])
    assert bob.bodies() == [b"gap", b"live"]
    env.broker.dispatch(env.broker.message("/queue/in", {}, b"after", "bob"))
    assert bob.bodies() == [b"after"]
