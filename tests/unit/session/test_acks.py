"""ACK / NACK in the three ack modes and the three versions."""

from __future__ import annotations

import pytest

from stompgate.broker import SessionLimits
from stompgate.broker.session import CLOSE_PROTOCOL_ERROR

from .harness import VERSIONS, Env, deliver, make_env


class TestAutoMode:
    """ack:auto needs no ACK."""

    def test_auto_mode_needs_no_ack(self) -> None:
        """auto: no ack header, nothing pending, max_unacked does not apply."""
        env = make_env(limits=SessionLimits(max_unacked=2))
        client = env.connected()
        client.subscribe("/topic/a")
        deliver(env, "/topic/a", 10)
        messages = client.messages()
        assert len(messages) == 10
        assert all("ack" not in m.headers for m in messages)
        assert client.out.closes == []

    @pytest.mark.parametrize("version", ["1.1", "1.2"])
    def test_ack_of_auto_message_is_harmless(self, env: Env, version: str) -> None:
        """ACKing a message that needed none is not an error and counts nothing."""
        client = env.connected(version=version)
        client.subscribe("/topic/a")
        deliver(env, "/topic/a", 1)
        msg = client.message()
        client.ack(msg, receipt="r")
        client.receipt("r")
        assert env.broker.stats.acked == 0


class TestClientModes:
    """client (cumulative) and client-individual, ACK and NACK."""

    @pytest.mark.parametrize("version", VERSIONS)
    def test_client_ack_is_cumulative(self, version: str) -> None:
        """client mode: ACK of the 3rd message acknowledges 1-3; a later ACK of the 2nd is harmless."""
        env = make_env(limits=SessionLimits(max_unacked=3))
        client = env.connected(version=version)
        client.subscribe("/topic/a", "s", ack="client")
        deliver(env, "/topic/a", 3)
        m1, m2, m3 = client.messages()
        client.ack(m3, receipt="r3")
        client.receipt("r3")
        assert env.broker.stats.acked == 1
        client.ack(m2, receipt="r2")  # already covered
        client.receipt("r2")
        client.ack(m1)
        assert env.broker.stats.acked == 1
        deliver(env, "/topic/a", 3, start=3)  # room for three more: all were acked
        assert len(client.messages()) == 3
        assert client.out.closes == []

    def test_client_ack_of_middle_message_leaves_later_ones_pending(self) -> None:
        """Cumulative means up to and including, not everything."""
        env = make_env(limits=SessionLimits(max_unacked=3))
        client = env.connected()
        client.subscribe("/topic/a", "s", ack="client")
        deliver(env, "/topic/a", 3)
        _, m2, _ = client.messages()
        client.ack(m2)
        deliver(env, "/topic/a", 2, start=3)  # pending: 3, 4, 5 = 3
        assert len(client.messages()) == 2
        deliver(env, "/topic/a", 1, start=5)  # a fourth pending
        client.expect_error(contains="unacknowledged")

    def test_client_ack_is_per_subscription(self) -> None:
        """A cumulative ACK covers only the messages of its own subscription."""
        env = make_env(limits=SessionLimits(max_unacked=4))
        client = env.connected()
        client.subscribe("/topic/a", "A", ack="client")
        client.subscribe("/topic/b", "B", ack="client")
        deliver(env, "/topic/a", 2)
        deliver(env, "/topic/b", 2, start=2)
        messages = client.messages()
        b_last = [m for m in messages if m.headers["subscription"] == "B"][-1]
        client.ack(b_last)  # pending now: the two of A
        deliver(env, "/topic/b", 2, start=4)
        assert len(client.messages()) == 2
        deliver(env, "/topic/b", 1, start=6)
        client.expect_error(contains="unacknowledged")

    @pytest.mark.parametrize("version", ["1.1", "1.2"])
    def test_client_individual_ack(self, version: str) -> None:
        """client-individual: ACK of the 3rd acknowledges only the 3rd."""
        env = make_env(limits=SessionLimits(max_unacked=3))
        client = env.connected(version=version)
        client.subscribe("/topic/a", "s", ack="client-individual")
        deliver(env, "/topic/a", 3)
        _, _, m3 = client.messages()
        client.ack(m3)
        assert env.broker.stats.acked == 1
        deliver(env, "/topic/a", 1, start=3)
        assert len(client.messages()) == 1
        deliver(env, "/topic/a", 1, start=4)  # 1, 2, 4 pending + 5 -> over the limit
        client.expect_error(contains="unacknowledged")

    @pytest.mark.parametrize("version", ["1.1", "1.2"])
    def test_nack_releases_and_counts(self, version: str) -> None:
        """NACK settles a message like ACK but counts as nacked."""
        env = make_env(limits=SessionLimits(max_unacked=1))
        client = env.connected(version=version)
        client.subscribe("/topic/a", ack="client-individual")
        deliver(env, "/topic/a", 1)
        client.ack(client.message(), command="NACK")
        deliver(env, "/topic/a", 1, start=1)
        client.ack(client.message(), command="ACK")
        assert (env.broker.stats.acked, env.broker.stats.nacked) == (1, 1)
        assert client.out.closes == []


class TestVersions:
    """How each version names the message to ACK."""

    @pytest.mark.parametrize("ack_mode", ["client", "client-individual"])
    def test_12_message_carries_ack_header(self, env: Env, ack_mode: str) -> None:
        """1.2 MESSAGEs in client modes carry ack (= message-id); 1.1 ones do not."""
        new = env.connected("new", version="1.2")
        old = env.connected("old", version="1.1")
        new.subscribe("/topic/a", ack=ack_mode)
        old.subscribe("/topic/a", ack=ack_mode)
        deliver(env, "/topic/a", 1)
        msg_new, msg_old = new.message(), old.message()
        assert msg_new.headers["ack"] == msg_new.headers["message-id"]
        assert "ack" not in msg_old.headers

    def test_12_ack_uses_id_header(self, env: Env) -> None:
        """In 1.2 ACK's id header is required; message-id alone is refused."""
        client = env.connected()
        client.subscribe("/topic/a", ack="client")
        deliver(env, "/topic/a", 1)
        msg = client.message()
        client.send("ACK", {"message-id": msg.headers["message-id"], "subscription": "0"})
        client.expect_error(contains="id")

    @pytest.mark.parametrize("version", ["1.0", "1.1"])
    def test_10_and_11_ack_use_message_id(self, env: Env, version: str) -> None:
        """Before 1.2, ACK names the message by message-id."""
        client = env.connected(version=version)
        client.subscribe("/topic/a", ack="client")
        deliver(env, "/topic/a", 1)
        msg = client.message()
        client.send("ACK", {"message-id": msg.headers["message-id"], "subscription": "0", "receipt": "r"})
        client.receipt("r")
        assert env.broker.stats.acked == 1
        client.send("ACK", {"id": msg.headers["message-id"]})
        client.expect_error(contains="message-id")

    def test_nack_in_10_is_an_error(self, env: Env) -> None:
        """NACK was introduced in 1.1."""
        client = env.connected(version="1.0")
        client.subscribe("/topic/a", ack="client")
        deliver(env, "/topic/a", 1)
        client.ack(client.message(), command="NACK")
        client.expect_error(contains="NACK")
        assert env.broker.stats.nacked == 0


class TestUnknownIds:
    """Only ids this session was sent can be acknowledged."""

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
    def test_ack_for_never_issued_id_is_an_error(self, env: Env, suffix: str) -> None:
        """An id the session never sent cannot be acknowledged (one message, "<session>-1", was sent)."""
        client = env.connected()
        client.subscribe("/topic/a", ack="client")
        deliver(env, "/topic/a", 1)
        client.messages()
        client.send("ACK", {"id": f"{client.session.id}-{suffix}"})
        client.expect_error(contains="unknown")

    @pytest.mark.parametrize("mid", ["bogus", "", "-1"])
    def test_ack_for_foreign_id_is_an_error(self, env: Env, mid: str) -> None:
        """Ids that do not even look like this session's are refused."""
        client = env.connected()
        client.send("ACK", {"id": mid})
        client.expect_error(contains="unknown")

    def test_ack_for_another_sessions_message_is_an_error(self, env: Env) -> None:
        """A message id issued to another session is unknown here."""
        a, b = env.connected("a"), env.connected("b")
        a.subscribe("/topic/a", ack="client")
        deliver(env, "/topic/a", 1)
        b.ack(a.message())
        b.expect_error(contains="unknown")
        assert a.out.closes == []

    def test_ack_without_id_is_an_error(self, env: Env) -> None:
        """A 1.2 ACK must carry id."""
        client = env.connected()
        client.send("ACK", {})
        client.expect_error(contains="id")


class TestPendingLimit:
    """limits.max_unacked, and what counts against it."""

    def test_max_unacked_is_an_error_for_the_subscriber_only(self) -> None:
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

    def test_unsubscribe_forgets_pending_acks(self) -> None:
        """Unacked messages of a removed subscription no longer count against the limit."""
        env = make_env(limits=SessionLimits(max_unacked=2))
        client = env.connected()
        client.subscribe("/topic/a", "s", ack="client")
        deliver(env, "/topic/a", 2)
        old = client.messages()
        client.send("UNSUBSCRIBE", {"id": "s"})
        client.subscribe("/topic/a", "s2", ack="client")
        deliver(env, "/topic/a", 2, start=2)
        assert len(client.messages()) == 2
        client.ack(old[0], receipt="r")  # issued earlier, now just harmless
        client.receipt("r")
