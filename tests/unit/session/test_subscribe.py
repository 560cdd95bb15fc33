"""SUBSCRIBE and UNSUBSCRIBE."""

from __future__ import annotations

import pytest

from stompgate.broker import Credentials, SessionLimits

from .harness import Env, make_env


class TestSubscribe:
    """SUBSCRIBE's headers, ids and limits."""

    @pytest.mark.parametrize("version", ["1.1", "1.2"])
    def test_subscribe_id_required_in_11_and_12(self, env: Env, version: str) -> None:
        """id is a required SUBSCRIBE header since 1.1."""
        client = env.connected(version=version)
        client.subscribe("/topic/a", sub_id=None)
        client.expect_error(contains="id")
        env.assert_empty()

    def test_subscribe_id_optional_in_10(self, env: Env) -> None:
        """1.0 SUBSCRIBE without id: the destination is the subscription id."""
        client = env.connected(version="1.0")
        client.subscribe("/topic/a", sub_id=None, receipt="r")
        client.receipt("r")
        env.connected("bob").publish("/topic/a", b"x")
        msg = client.message()
        assert msg.headers["subscription"] == "/topic/a"

    def test_subscribe_without_destination_is_an_error(self, env: Env) -> None:
        """destination is a required SUBSCRIBE header in every version."""
        client = env.connected()
        client.send("SUBSCRIBE", {"id": "0"})
        client.expect_error(contains="destination")

    def test_duplicate_subscription_id_is_an_error(self, env: Env) -> None:
        """Subscription ids are unique within a session."""
        client = env.connected()
        client.subscribe("/topic/a", "s")
        client.subscribe("/topic/b", "s")
        client.expect_error(contains="'s'")
        env.assert_empty()

    def test_same_id_in_two_sessions_is_fine(self, env: Env) -> None:
        """Ids are per session: two sessions may both use id 0."""
        a, b = env.connected("a"), env.connected("b")
        a.subscribe("/topic/x", "0")
        b.subscribe("/topic/x", "0")
        env.connected("c").publish("/topic/x", b"m")
        assert a.bodies() == [b"m"] and b.bodies() == [b"m"]

    def test_two_subscriptions_to_one_destination_each_get_a_message(self, env: Env) -> None:
        """A session subscribed twice receives one MESSAGE per subscription."""
        client = env.connected()
        client.subscribe("/topic/a", "one")
        client.subscribe("/topic/*", "two")
        env.connected("bob").publish("/topic/a", b"m")
        messages = client.messages()
        assert sorted(m.headers["subscription"] for m in messages) == ["one", "two"]
        assert len({m.headers["message-id"] for m in messages}) == 2

    @pytest.mark.parametrize("ack", ["AUTO", "none", "", "client_individual"])
    def test_invalid_ack_mode_is_an_error(self, env: Env, ack: str) -> None:
        """Only auto, client and client-individual exist (case-sensitive)."""
        client = env.connected()
        client.subscribe("/topic/a", ack=ack)
        client.expect_error(contains="ack")

    @pytest.mark.parametrize("destination", ["/app/x", "/foo", "topic/a", "", "/user", "/users/queue/x"])
    def test_subscribe_outside_broker_prefixes_is_an_error(self, env: Env, destination: str) -> None:
        """Only /topic, /queue and own /user/... destinations may be subscribed to."""
        client = env.connected()
        client.subscribe(destination, "0", receipt="r")
        error = client.expect_error()
        assert (repr(destination) if destination else "the destination is empty") in error.headers["message"]
        assert error.headers["receipt-id"] == "r"

    def test_max_subscriptions(self) -> None:
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


class TestUserDestinations:
    """/user/queue/... subscriptions: one's own, never another user's."""

    def test_subscribe_own_user_destination(self, env: Env) -> None:
        """/user/queue/x is the session user's private queue."""
        client = env.connected("alice")
        client.subscribe("/user/queue/x", receipt="r")
        client.receipt("r")
        assert len(env.broker.users["alice"].subscriptions) == 1
        assert len(env.broker.topics) == 0

    @pytest.mark.parametrize("destination", ["/user/bob/queue/x", "/user/alice/queue/x", "/user/app/x"])
    def test_subscribe_another_users_destination_is_an_error(self, env: Env, destination: str) -> None:
        """/user/{name}/... is for SEND only; subscribing to it (even one's own name) is refused."""
        client = env.connected("alice")
        client.subscribe(destination)
        error = client.expect_error()
        assert repr(destination) in error.headers["message"]

    def test_user_subscription_without_a_user_is_an_error(self) -> None:
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


class TestUnsubscribe:
    """UNSUBSCRIBE by id (or by destination in 1.0)."""

    def test_unsubscribe_stops_messages(self, env: Env) -> None:
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

    def test_unsubscribe_pattern_subscription(self, env: Env) -> None:
        """Pattern subscriptions are removed from the index too."""
        client = env.connected()
        client.subscribe("/topic/**", "p")
        env.connected("bob").publish("/topic/a/b", b"1")
        assert client.bodies() == [b"1"]
        client.send("UNSUBSCRIBE", {"id": "p"})
        env.connected("carol").publish("/topic/a/b", b"2")
        assert client.messages() == []
        assert len(env.broker.topics) == 0

    def test_unsubscribe_user_destination(self, env: Env) -> None:
        """A /user/queue/x subscription is removed from the user's index."""
        client = env.connected("alice")
        client.subscribe("/user/queue/x", "0")
        client.send("UNSUBSCRIBE", {"id": "0"})
        env.connected("bob").publish("/user/alice/queue/x", b"1")
        assert client.messages() == []
        assert len(env.broker.users["alice"].subscriptions) == 0

    def test_unsubscribe_unknown_id_is_harmless(self, env: Env) -> None:
        """Unsubscribing an unknown (or already removed) id is not an error."""
        client = env.connected()
        client.send("UNSUBSCRIBE", {"id": "nope", "receipt": "r"})
        client.receipt("r")
        client.subscribe("/topic/a", "0")
        client.send("UNSUBSCRIBE", {"id": "0"})
        client.send("UNSUBSCRIBE", {"id": "0", "receipt": "r2"})
        client.receipt("r2")
        assert client.out.closes == []

    def test_unsubscribe_by_destination_in_10(self, env: Env) -> None:
        """1.0 may UNSUBSCRIBE by destination (for a SUBSCRIBE without id)."""
        client = env.connected(version="1.0")
        client.subscribe("/topic/a", sub_id=None)
        client.send("UNSUBSCRIBE", {"destination": "/topic/a", "receipt": "r"})
        client.receipt("r")
        env.connected("bob").publish("/topic/a", b"x")
        assert client.messages() == []
        assert len(env.broker.topics) == 0

    @pytest.mark.parametrize("version", ["1.1", "1.2"])
    def test_unsubscribe_without_id_is_an_error_in_11_and_12(self, env: Env, version: str) -> None:
        """Since 1.1 UNSUBSCRIBE names the subscription by id; destination is not enough."""
        client = env.connected(version=version)
        client.subscribe("/topic/a", "0")
        client.send("UNSUBSCRIBE", {"destination": "/topic/a"})
        client.expect_error(contains="id")

    def test_unsubscribe_without_id_or_destination_is_an_error_in_10(self, env: Env) -> None:
        """Even 1.0 must say what to unsubscribe."""
        client = env.connected(version="1.0")
        client.send("UNSUBSCRIBE", {})
        client.expect_error()
