"""Heart-beats (negotiation, the send ticks, the receive timeout) and the connect timeout."""

from __future__ import annotations

import pytest

from stompgate.broker import SessionLimits
from stompgate.broker.session import CLOSE_POLICY, CLOSE_PROTOCOL_ERROR
from stompgate.broker.settings import HeartbeatSettings

from .harness import Client, Env, make_env


class TestNegotiation:
    """Which heart-beat timers a CONNECT sets, and that close leaves none."""

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
        self, client_hb: str, server: tuple[int, int], send_s: float | None, recv_s: float | None
    ) -> None:
        """STOMP's rule: each direction is max(of the two), or 0 if either side says 0."""
        env = make_env(heartbeat=HeartbeatSettings(send_ms=server[0], receive_ms=server[1]))
        client = env.connected(heart_beat=client_hb)
        connect_timer = env.clock.timers[0]
        assert connect_timer.cancelled
        # the send side ticks every half interval (see test_send_ticks_keep_gaps_within_the_interval)
        half = send_s / 2 if send_s is not None else None
        assert env.clock.pending_delays() == sorted(d for d in (half, recv_s) if d is not None)
        assert client.session.connected

    def test_no_heart_beat_header_means_none(self, env: Env) -> None:
        """A 1.1+ CONNECT without heart-beat is 0,0: no timers at all."""
        env.connected(heart_beat=None)
        assert env.clock.pending() == []

    def test_read_margin_setting(self) -> None:
        """The receive timeout is the negotiated interval times stomp.heartbeat.read_margin."""
        env = make_env(heartbeat=HeartbeatSettings(read_margin=2.0))
        env.connected(heart_beat="20000,0")
        assert env.clock.pending_delays() == [40.0]

    def test_version_10_gets_no_heartbeats(self, env: Env) -> None:
        """STOMP 1.0 has no heart-beating, whatever the client writes in the header."""
        client = env.connected(version="1.0", heart_beat="5000,5000")
        assert client.version == "1.0"
        assert env.clock.pending() == []
        env.clock.advance(3600)
        assert client.out.closes == [] and client.heartbeats == 0

    def test_version_10_ignores_invalid_heartbeat_header(self, env: Env) -> None:
        """heart-beat is not a 1.0 header, so its value is not checked."""
        client = env.connected(version="1.0", heart_beat="nonsense")
        assert client.session.connected

    @pytest.mark.parametrize("value", ["", "abc", "1", "1,2,3", "-1,0", "0,-5", "1.5,2", "a,b", ","])
    def test_invalid_heartbeat_header_is_an_error(self, env: Env, value: str) -> None:
        """A malformed heart-beat is refused at CONNECT."""
        client = env.client()
        client.send("CONNECT", {"accept-version": "1.2", "login": "a", "heart-beat": value})
        client.expect_error(CLOSE_PROTOCOL_ERROR, contains="heart-beat")
        env.assert_empty()

    def test_timers_are_cancelled_on_close(self, env: Env) -> None:
        """After DISCONNECT no heart-beat timer is left to fire."""
        client = env.connected(heart_beat="5000,5000")
        assert len(env.clock.pending()) == 2
        client.send("DISCONNECT")
        assert env.clock.pending() == []


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


class TestServerHeartbeats:
    """The server's side: an EOL whenever it has been quiet too long."""

    def test_send_ticks_keep_gaps_within_the_interval(self, env: Env) -> None:
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

    def test_traffic_replaces_heartbeats(self, env: Env) -> None:
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

    def test_receipt_counts_as_traffic_for_send_ticks(self, env: Env) -> None:
        """Any frame the server writes (here a RECEIPT) makes the next tick silent."""
        client = env.connected(heart_beat="0,20000")
        env.clock.advance(9)
        client.send("SUBSCRIBE", {"id": "0", "destination": "/topic/a", "receipt": "r"})
        env.clock.advance(1)  # tick at 10 s: the RECEIPT was written since the last one
        client.frames()
        assert client.heartbeats == 0


class TestClientSilence:
    """The client's side: a silent client is closed; any byte counts."""

    def test_silent_client_is_closed_interval_times_margin_after_its_last_byte(self, env: Env) -> None:
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
    def test_any_data_resets_the_receive_timer(self, env: Env, data: bytes) -> None:
        """EOL heart-beats and frames prove the client is alive, tick after tick."""
        client = env.connected(heart_beat="5000,0")
        for _ in range(5):
            env.clock.advance(14)
            client.session.receive_data(data)
        assert client.out.closes == []
        assert client.session.connected and not client.session.closed

    def test_partial_frame_resets_the_receive_timer(self, env: Env) -> None:
        """Bytes of a frame that is not complete yet still count as data."""
        client = env.connected(heart_beat="5000,0")
        frame = client.encode("SEND", {"destination": "/topic/a"}, b"x" * 10)
        for i in range(6):
            env.clock.advance(14)
            client.session.receive_data(frame[i : i + 1])
        assert client.out.closes == []


class TestConnectTimeout:
    """A connection that never sends CONNECT is closed."""

    def test_connect_timeout_fires_before_connect(self, env: Env) -> None:
        """No CONNECT within connect_timeout_s: ERROR + close."""
        client = env.client()
        assert env.clock.pending_delays() == [10.0]
        env.clock.advance(9.9)
        assert client.out.writes == []
        env.clock.advance(0.1)
        error = client.expect_error(CLOSE_POLICY)
        assert "CONNECT" in error.headers["message"]
        env.assert_empty()

    def test_connect_timeout_is_configurable(self) -> None:
        """connect_timeout_s is the delay of the first timer."""
        env = make_env(limits=SessionLimits(connect_timeout_s=2.5))
        env.client()
        assert env.clock.pending_delays() == [2.5]

    def test_connect_timeout_cancelled_by_connect(self, env: Env) -> None:
        """After CONNECT the timer is cancelled, and even if it fires anyway it does nothing."""
        client = env.client()
        (timer,) = env.clock.pending()
        client.connect()
        assert timer.cancelled
        timer.callback()  # a scheduler that loses a cancel race
        env.clock.advance(100)
        assert client.out.closes == []
        assert client.frames() == []

    def test_connect_timeout_cancelled_by_failed_connect(self, env: Env) -> None:
        """A session closed for another reason leaves no connect timer behind."""
        client = env.client()
        client.session.receive_data(b"GARBAGE\n\n\0")
        client.expect_error()
        assert env.clock.pending() == []
