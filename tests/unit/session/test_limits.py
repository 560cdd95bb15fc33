"""What one session may hold and do, without a network: issue 11's limits in the sans-I/O core.

Same harness as the other modules here (harness.py: recording transport,
manual clock). Each test states the attack, then what the session does about it:

1. bounded work per loop turn (packed frames)
2. rate limits (throttle and close)
3. flow control: publishes the bus has not taken, a congested bus
4. transactions bounded in bytes
5. destinations, header names, reserved headers (however spelled), patterns
6. NUL in bodies towards browser clients that split at NUL (stompjs 2.x)
7. memory accounting for the node's budget
"""

from __future__ import annotations

from typing import Any

import pytest

from stompgate.broker import SessionLimits
from stompgate.broker.message import Message
from stompgate.broker.session import CLOSE_POLICY
from stompgate.broker.settings import HeartbeatSettings, RateLimit
from stompgate.stomp import Frame, serialize

from .harness import Env, make_env


def rated(**rate: Any) -> SessionLimits:
    """Default limits but for the rate limit."""
    return SessionLimits(rate_limit=RateLimit(**rate))


UNLIMITED = dict(rate_limit=RateLimit(frames_per_s=0.0, bytes_per_s=0.0))


def packed_sends(count: int, destination: str = "/topic/a", body: bytes = b"x") -> bytes:
    return b"".join(serialize(Frame("SEND", {"destination": destination}, body), "1.2") for _ in range(count))


class TestPerTurnBudget:
    """Bounded work per loop turn (packed frames)."""

    def test_packed_frames_are_handled_in_bounded_batches_per_turn(self) -> None:
        """300 SENDs in one WebSocket message: 64 now, the rest on later loop turns, reading paused
        meanwhile."""
        env = make_env(limits=SessionLimits(**UNLIMITED))
        bob = env.connected("bob")
        bob.subscribe("/topic/a")
        alice = env.connected("alice")
        alice.session.receive_data(packed_sends(300))
        assert len(bob.messages()) == 64
        assert alice.out.reading is False and not alice.session.reading
        turns = 1
        while env.clock.soon:
            env.clock.run_soon()
            turns += 1
        assert len(bob.messages()) == 300 - 64
        assert turns == 5  # ceil(300 / 64)
        assert alice.out.reading is True and alice.session.reading

    def test_few_frames_never_pause(self) -> None:
        env = make_env(limits=SessionLimits(**UNLIMITED))
        alice = env.connected("alice")
        alice.session.receive_data(packed_sends(64))
        assert alice.out.reading and not env.clock.soon


class TestRateLimits:
    """Rate limits (throttle and close)."""

    def test_throttle_pauses_reading_until_the_bucket_refills(self) -> None:
        """A burst past frames_per_s x burst_s: the session stops reading, then goes on; nothing is lost."""
        rate = RateLimit(frames_per_s=10, bytes_per_s=0, burst_s=1)
        env = make_env(limits=SessionLimits(rate_limit=rate, frames_per_turn=1000))
        bob = env.connected("bob")
        bob.subscribe("/topic/a")
        alice = env.connected("alice")
        alice.session.receive_data(packed_sends(30))
        assert len(bob.messages()) == 11  # the bucket (10) and one frame of debt
        assert alice.out.reading is False
        [timer] = [t for t in env.clock.pending() if t.delay < 1]
        assert timer.delay == pytest.approx(0.1)
        env.clock.advance(0.1)
        assert len(bob.messages()) == 1  # one frame per refill of 0.1 s
        env.clock.advance(2)
        assert len(bob.messages()) == 18
        assert alice.out.reading is True

    def test_throttled_session_is_not_closed_for_silence(self) -> None:
        """While the node does not read a throttled session, the client's heart-beats are not seen:
        not its fault."""
        env = make_env(
            limits=rated(frames_per_s=1, bytes_per_s=0, burst_s=1),
            heartbeat=HeartbeatSettings(receive_ms=1000),
        )
        alice = env.client()
        alice.connect("alice", heart_beat="1000,0")
        alice.session.receive_data(packed_sends(20))
        env.clock.advance(10)  # well past 1.5 s without a byte read
        assert not alice.session.closed

    def test_byte_rate_counts_frame_sizes(self) -> None:
        env = make_env(limits=rated(frames_per_s=0, bytes_per_s=1000, burst_s=1))
        alice = env.connected("alice")
        alice.session.receive_data(packed_sends(3, body=b"x" * 600))
        assert not alice.out.reading  # 3 x ~630 bytes: over 1000 after the second
        assert alice.session.inflight == 0

    def test_close_policy_errors_instead(self) -> None:
        env = make_env(limits=rated(frames_per_s=5, bytes_per_s=0, burst_s=1, policy="close"))
        alice = env.connected("alice")
        alice.session.receive_data(packed_sends(10))
        alice.expect_error(CLOSE_POLICY, contains="rate limit exceeded")

    def test_connect_is_not_charged(self) -> None:
        env = make_env(limits=rated(frames_per_s=1, bytes_per_s=1, burst_s=1, policy="close"))
        alice = env.connected("alice")
        assert not alice.session.closed


class SlowBus:
    """A bus that takes messages only when the test says so."""

    def __init__(self) -> None:
        self.congested = False
        self.held: list[tuple[Message, Any]] = []

    def publish(self, message: Message, delivered_here: int, done: Any, sender: Any = None) -> None:
        self.held.append((message, sender))
        if done is not None:
            done(None)

    def take_all(self) -> None:
        held, self.held = self.held, []
        for message, sender in held:
            if sender is not None:
                sender.settle(message.size)

    def user_sessions(self, user: str, count: int) -> None:
        pass


class TestFlowControl:
    """Flow control: publishes the bus has not taken, a congested bus."""

    def test_a_flooder_stops_being_read_at_its_inflight_share(self) -> None:
        """SENDs without receipts faster than the bus takes them: the flooder pauses itself, others do not."""
        env = make_env(limits=SessionLimits(max_inflight_bytes=2000, **UNLIMITED))
        bus = env.broker.bus = SlowBus()  # type: ignore[assignment]
        flooder = env.connected("flooder")
        flooder.session.receive_data(packed_sends(40, body=b"y" * 100))
        assert not flooder.out.reading
        taken = len(bus.held)
        assert 2000 < flooder.session.inflight < 2000 + 400  # one message past the share at most
        innocent = env.connected("innocent")
        innocent.publish("/topic/a", b"hi")
        assert innocent.out.reading and len(bus.held) == taken + 1
        bus.take_all()
        assert flooder.out.reading is False or flooder.session.inflight <= 2000
        while env.clock.soon or bus.held:
            env.clock.run_soon()
            bus.take_all()
        assert flooder.out.reading and flooder.session.inflight == 0

    def test_a_congested_bus_pauses_its_big_senders_until_it_has_room(self) -> None:
        """Congested (Redis slow or away): who holds an eighth of its share or more waits; an occasional
        sender does not."""
        env = make_env(limits=SessionLimits(max_inflight_bytes=2400, **UNLIMITED))
        bus = env.broker.bus = SlowBus()  # type: ignore[assignment]
        alice = env.connected("alice")
        occasional = env.connected("occasional")
        bus.congested = True
        occasional.send("SEND", {"destination": "/topic/a"})
        assert occasional.out.reading  # ~270 bytes held: under 2400 / 8 = 300
        bus.take_all()
        alice.publish("/topic/a", b"one")
        alice.publish("/topic/a", b"two")  # read before the transport stopped: waits in the session
        assert not alice.out.reading and len(bus.held) == 1
        bus.congested = False
        bus.take_all()
        env.broker.room()
        assert alice.out.reading and [m.body for m, _ in bus.held] == [b"two"]

    def test_subscribers_are_never_paused_by_flow_control(self) -> None:
        env = make_env(limits=SessionLimits(max_inflight_bytes=10, **UNLIMITED))
        env.broker.bus = SlowBus()  # type: ignore[assignment]
        bob = env.connected("bob")
        bob.subscribe("/topic/a")
        env.connected("alice").publish("/topic/a", b"x" * 100)
        assert bob.out.reading and len(bob.messages()) == 1


class TestTransactionBytes:
    """Transactions bounded in bytes."""

    def test_open_transactions_are_bounded_in_bytes(self) -> None:
        """16 transactions x 1,000 frames x 1 MB was 16 GB; now all of a session's open transactions
        share one byte cap."""
        env = make_env(limits=SessionLimits(max_transaction_bytes=10_000, **UNLIMITED))
        alice = env.connected("alice")
        alice.send("BEGIN", {"transaction": "t1"})
        alice.send("BEGIN", {"transaction": "t2"})
        for tx in ("t1", "t2"):
            for _ in range(2):
                alice.publish("/topic/a", b"z" * 2000, transaction=tx)
        assert not alice.session.closed
        alice.publish("/topic/a", b"z" * 2000, transaction="t1")
        alice.expect_error(contains="more than 10000 bytes")

    def test_transaction_bytes_are_given_back_at_commit_and_abort(self) -> None:
        env = make_env(limits=SessionLimits(max_transaction_bytes=5_000, **UNLIMITED))
        alice = env.connected("alice")
        for round_ in range(5):
            alice.send("BEGIN", {"transaction": "t"})
            alice.publish("/topic/a", b"z" * 4000, transaction="t")
            alice.send("COMMIT" if round_ % 2 else "ABORT", {"transaction": "t"})
        assert not alice.session.closed and alice.session.memory() == 0


class TestText:
    """What text may hold: destinations, header names, reserved headers, patterns."""

    @pytest.mark.parametrize(
        "destination, problem",
        [
            ("/topic/" + "a" * 2000, "longer than 1024 bytes"),
            ("/topic/é" * 300, "longer than 1024 bytes"),  # 300 x 9 bytes: counted in bytes, not characters
            ("/topic/a\x01b", "control character"),
            ("/topic/a\x85b", "control character"),  # C1: a line break to some log readers
            ("/user/bob%0A/queue/x", "control character"),  # decoded from the user destination
            ("/user/%00/queue/x", "control character"),
            ("/user/" + "b" * 300 + "/queue/x", "longer than 256 characters"),  # a name, however plain
        ],
    )
    def test_bad_destinations_are_refused_at_the_edge(self, env: Env, destination: str, problem: str) -> None:
        alice = env.connected("alice")
        alice.publish(destination, b"x")
        alice.expect_error(contains=problem)

    def test_subscribe_checks_the_destination_too(self, env: Env) -> None:
        alice = env.connected("alice")
        alice.subscribe("/topic/" + "b" * 1100)
        alice.expect_error(contains="longer than")

    @pytest.mark.parametrize(
        "name", ["message-id ", " subscription", "Message-Id", "DESTINATION", "\ufeffack", "content-length\t"]
    )
    def test_reserved_headers_are_dropped_however_spelled(self, env: Env, name: str) -> None:
        """stompjs 2.x trims header names and keeps the last value: 'message-id ' would win over ours."""
        bob = env.connected("bob", version="1.1")
        bob.subscribe("/topic/a", "s1")
        env.connected("alice").publish("/topic/a", b"x", **{name: "forged"})
        raw = bob.received()[0].raw.decode()
        assert "forged" not in raw

    @pytest.mark.parametrize("name", ["a\x01b", "x\x7f", "x:y"])
    def test_header_names_with_controls_or_colons_are_refused(self, env: Env, name: str) -> None:
        """A ':' in a name (sent escaped) would split differently at a 1.0 peer: 'message-id:x' becomes
        message-id."""
        alice = env.connected("alice")
        alice.publish("/topic/a", b"x", **{name: "v"})
        alice.expect_error(contains="header name")

    def test_header_values_keep_line_breaks(self, env: Env) -> None:
        bob = env.connected("bob")
        bob.subscribe("/topic/a")
        env.connected("alice").publish("/topic/a", b"x", note="a\nb")
        assert bob.message().headers["note"] == "a\nb"

    def test_two_globstars_are_refused(self, env: Env) -> None:
        alice = env.connected("alice")
        alice.subscribe("/topic/**/x/**")
        alice.expect_error(contains="'**' more than once")

    def test_consecutive_globstars_count_once(self, env: Env) -> None:
        alice = env.connected("alice")
        alice.subscribe("/topic/**/**/x", receipt="r")
        alice.receipt("r")

    def test_distinct_patterns_per_user_are_capped_across_sessions(self) -> None:
        env = make_env(limits=SessionLimits(max_user_patterns=3, **UNLIMITED))
        one, two = env.connected("mallory"), env.connected("mallory")
        one.subscribe("/topic/a*", "1")
        two.subscribe("/topic/b*", "1")
        two.subscribe("/topic/a*", "2")  # shared with the other session: not a new pattern
        one.subscribe("/topic/c*", "2", receipt="r")
        one.receipt("r")
        two.subscribe("/topic/d*", "3")
        two.expect_error(contains="3 distinct wildcard patterns")
        # Freed when the subscriptions go (the closed session's, and one unsubscribed).
        assert env.broker.users["mallory"].patterns == {"/topic/a*": 1, "/topic/c*": 1}
        one.send("UNSUBSCRIBE", {"id": "2"})
        three = env.connected("mallory")
        three.subscribe("/topic/e*", "1", receipt="r2")
        three.receipt("r2")
        assert env.broker.users["mallory"].patterns == {"/topic/a*": 1, "/topic/e*": 1}

    def test_pattern_counts_follow_subscriptions(self) -> None:
        env = make_env(limits=SessionLimits(max_user_patterns=2, **UNLIMITED))
        one = env.connected("mallory")
        one.subscribe("/topic/a*", "1")
        one.subscribe("/topic/a*", "2")
        one.subscribe("/topic/b*", "3")
        assert env.broker.users["mallory"].patterns == {"/topic/a*": 2, "/topic/b*": 1}
        one.send("UNSUBSCRIBE", {"id": "1"})
        one.send("UNSUBSCRIBE", {"id": "3"})
        assert env.broker.users["mallory"].patterns == {"/topic/a*": 1}
        one.subscribe("/topic/c*", "4", receipt="r")
        one.receipt("r")


FORGERY = b"hi\0MESSAGE\nsubscription:s1\nmessage-id:evil\ndestination:/topic/a\n\nforged"


class TestNulInBodies:
    """NUL in bodies towards browser clients that split at NUL (stompjs 2.x)."""

    @pytest.mark.parametrize(
        "version, transport, text_only, intact",
        [
            ("1.1", "websocket", False, False),  # stompjs 2.x speaks 1.1 at most
            ("1.0", "websocket", False, False),
            ("1.1", "sockjs-xhr-streaming", True, False),  # the seed's page
            ("1.2", "websocket", False, True),  # @stomp/stompjs honours content-length
            ("1.2", "sockjs-websocket", True, True),
            ("1.1", "tcp", False, True),  # backend clients: stomp.py defaults to 1.1
        ],
    )
    def test_nul_in_a_body_reaches_only_clients_that_honour_content_length(
        self, version: str, transport: str, text_only: bool, intact: bool
    ) -> None:
        env = make_env()
        bob = env.client(transport=transport, text_only=text_only)
        bob.connect("bob", version)
        bob.subscribe("/topic/a", "s1")
        env.connected("mallory").publish("/topic/a", FORGERY)
        [received] = bob.received()
        if intact:
            assert received.frame.body == FORGERY
        else:
            assert b"\0" not in received.raw[:-1]  # only the frame's own terminator
            assert received.frame.body == FORGERY.replace(b"\0", "\ufffd".encode())

    def test_binary_bodies_stay_binary_for_nul_safe_sessions(self) -> None:
        env = make_env()
        bob = env.client(transport="websocket")
        bob.connect("bob", "1.1")
        bob.subscribe("/topic/a", "s1")
        env.connected("alice").publish(
            "/topic/a", b"\xff\0\xfe", **{"content-type": "application/octet-stream"}
        )
        [received] = bob.received()
        assert received.binary and received.frame.body == b"\xff\xef\xbf\xbd\xfe"


class TestMemory:
    """Memory accounting for the node's budget."""

    def test_memory_counts_unread_input_open_transactions_and_unsent_output(self) -> None:
        env = make_env(limits=SessionLimits(**UNLIMITED))
        alice = env.connected("alice")
        assert alice.session.memory() == 0
        alice.session.receive_data(b"SEND\ndestination:/topic/a\n\nhalf")
        assert alice.session.memory() == len(b"SEND\ndestination:/topic/a\n\nhalf")
        alice.session.receive_data(b"\0")
        alice.send("BEGIN", {"transaction": "t"})
        alice.publish("/topic/a", b"q" * 1000, transaction="t")
        assert 1000 < alice.session.memory() < 1100
        alice.out.unsent = 5000
        assert 6000 < alice.session.memory() < 6100

    def test_heaviest_sessions_are_picked_first_until_within_nine_tenths(self) -> None:
        env = make_env(limits=SessionLimits(**UNLIMITED))
        clients = [env.connected(f"u{i}") for i in range(5)]
        for i, client in enumerate(clients):
            client.out.unsent = (i + 1) * 1000  # 1000 .. 5000: 15000 in all
        assert env.broker.heaviest(15_000) == []
        picked = env.broker.heaviest(10_000)
        assert [size for size, _ in picked] == [5000, 4000]  # 15000 -> 6000, under 9000
        assert [s for _, s in picked] == [clients[4].session, clients[3].session]
