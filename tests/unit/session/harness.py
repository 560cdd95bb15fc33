"""The harness of the network-free tests of the STOMP session state machine and the broker core.

In the style of h11's and websockets' protocol-layer tests: a :class:`Session` is
driven with bytes made by our serializer, writes go to a recording fake
transport, timers to a manual clock fired by hand, and every frame written is
parsed back with our own parser.

The tests are split by topic into the modules next to this one:

1. test_connect.py: CONNECT / STOMP and version negotiation
2. test_heartbeats.py: heart-beats and the connect timeout
3. test_subscribe.py: SUBSCRIBE / UNSUBSCRIBE
4. test_send_routing.py: SEND and routing (topics, queues, wildcards, user destinations, headers)
5. test_receipts.py: RECEIPT
6. test_acks.py: ACK / NACK
7. test_transactions.py: transactions
8. test_close.py: DISCONNECT, close and connection loss; broker shutdown
9. test_errors.py: protocol errors and internal errors
10. test_auth.py: authentication (dev, static, JWT HS256 / RS256)
11. test_chunking.py: hypothesis: chunking of the input never changes the output
12. test_bus_seam.py: the bus seam: replay and recovery
13. test_limits.py: issue 11's limits (what one session may hold and do)

conftest.py gives every module the ``env`` fixture (a broker with default settings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stompgate.broker import (
    Broker,
    BrokerSettings,
    DevAuthenticator,
    Session,
    SessionLimits,
)
from stompgate.broker.session import CLOSE_PROTOCOL_ERROR
from stompgate.broker.settings import DestinationSettings, HeartbeatSettings
from stompgate.stomp import ALL_COMMANDS, Frame, FrameParser, serialize


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


def make_env(
    authenticator: Any = None,
    limits: SessionLimits | None = None,
    heartbeat: HeartbeatSettings | None = None,
    destinations: DestinationSettings | None = None,
    **broker_kw: Any,
) -> Env:
    settings_obj = BrokerSettings()
    if limits is not None:
        settings_obj.limits = limits
    if heartbeat is not None:
        settings_obj.heartbeat = heartbeat
    if destinations is not None:
        settings_obj.destinations = destinations
    return Env(Broker(settings_obj, authenticator or DevAuthenticator(), **broker_kw))


VERSIONS = ("1.0", "1.1", "1.2")


def deliver(env: Env, destination: str, n: int, start: int = 0) -> None:
    """Publish ``n`` numbered bodies to ``destination`` from a new session, which then disconnects."""
    sender = env.connected(f"sender{env.clock.now}{start}")
    for i in range(start, start + n):
        sender.publish(destination, b"%d" % i)
    sender.send("DISCONNECT")
