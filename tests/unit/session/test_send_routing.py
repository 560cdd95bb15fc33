"""SEND and routing: topics, queues, wildcards, user destinations, MESSAGE headers."""

from __future__ import annotations

import pytest

from stompgate.broker import encode_user
from stompgate.broker.session import CLOSE_PROTOCOL_ERROR

from .harness import VERSIONS, Env, raw_header_lines


class TestRouting:
    """SEND to topics and queues, with and without wildcards."""

    def test_send_requires_destination(self, env: Env) -> None:
        """A SEND without destination is refused, and the ERROR names its receipt."""
        client = env.connected()
        client.send("SEND", {"receipt": "r"}, b"x")
        error = client.expect_error(contains="destination")
        assert error.headers["receipt-id"] == "r"

    @pytest.mark.parametrize(
        "destination", ["/app/x", "/foo", "queue/a", "/user/bob", "/user//queue/x", "/user/bob/app/x"]
    )
    def test_send_to_unroutable_destination_is_an_error(self, env: Env, destination: str) -> None:
        """Error messages name the destination the client got wrong."""
        client = env.connected()
        client.publish(destination, b"x")
        error = client.expect_error()
        assert repr(destination) in error.headers["message"]

    @pytest.mark.parametrize("destination", ["/topic/news", "/queue/work"])
    def test_send_reaches_every_subscriber(self, env: Env, destination: str) -> None:
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

    def test_send_without_subscribers_is_unrouted(self, env: Env) -> None:
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
    def test_wildcard_subscriptions(self, env: Env, pattern: str, destination: str, matches: bool) -> None:
        """Ant-style patterns in SUBSCRIBE; the MESSAGE shows the concrete destination."""
        client = env.connected()
        client.subscribe(pattern)
        env.connected("bob").publish(destination, b"x")
        messages = client.messages()
        if matches:
            assert [m.headers["destination"] for m in messages] == [destination]
        else:
            assert messages == []

    def test_messages_arrive_in_publish_order(self, env: Env) -> None:
        """One publisher, one subscriber: order is kept."""
        sub = env.connected("sub")
        sub.subscribe("/queue/q")
        sender = env.connected("s")
        for i in range(20):
            sender.publish("/queue/q", b"%d" % i)
        assert sub.bodies() == [b"%d" % i for i in range(20)]


class TestUserDestinations:
    """SEND /user/{name}/... to every session of that user."""

    def test_user_destination_reaches_all_sessions_of_that_user(self, env: Env) -> None:
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
    def test_user_destination_wildcard_subscription_is_refused(self, env: Env, destination: str) -> None:
        """A user destination is one exact (user, destination) pair, which is what the cluster
        routes on and what offline messages are stored under; a pattern cannot be either."""
        bob = env.connected("bob")
        bob.send("SUBSCRIBE", {"id": "1", "destination": destination})
        bob.expect_error(CLOSE_PROTOCOL_ERROR, contains="no wildcards")

    def test_user_destination_for_offline_user_is_unrouted(self, env: Env) -> None:
        """A user with no session here is not an error for the sender."""
        sender = env.connected("dave")
        sender.publish("/user/nobody/queue/x", b"m", receipt="r")
        sender.receipt("r")
        assert env.broker.stats.messages_unrouted == 1

    @pytest.mark.parametrize("name", ["dept/bob", "50%off", "a/b%2Fc", "ünï"])
    def test_user_names_are_percent_encoded_in_send_destinations(self, env: Env, name: str) -> None:
        """A '/' in a user name is sent as %2F (and '%' as %25), as Spring does."""
        target = env.connected(name)
        target.subscribe("/user/queue/x")
        decoy = env.connected(name.split("/")[0] + "x")
        decoy.subscribe("/user/queue/x")
        env.connected("sender").publish(f"/user/{encode_user(name)}/queue/x", b"m")
        assert target.message().headers["destination"] == "/user/queue/x"
        assert decoy.frames() == []


class TestMessageHeaders:
    """What a MESSAGE carries, escaped for each subscriber's version."""

    def test_controlled_headers_are_not_copied(self, env: Env) -> None:
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
                "sender",  # written by the broker: the sender's user name
            ]
        )
        headers = received.frame.headers
        assert headers["subscription"] == "real-sub"
        assert headers["message-id"] != "forged" and headers["ack"] == headers["message-id"]
        assert headers["destination"] == "/topic/a"
        assert headers["content-length"] == "3"
        assert headers["x-custom"] == "yes"
        assert received.frame.body == b"abc"

    def test_message_content_length_is_the_real_body_length(self, env: Env) -> None:
        """content-length is computed by the broker, and bodies with NUL survive."""
        sub = env.connected("sub")
        sub.subscribe("/topic/a")
        env.connected("s").publish("/topic/a", b"a\0b\0")
        msg = sub.message()
        assert msg.headers["content-length"] == "4"
        assert msg.body == b"a\0b\0"

    @pytest.mark.parametrize("version", VERSIONS)
    def test_every_message_has_message_id_subscription_content_length(self, env: Env, version: str) -> None:
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
        [
            ("1.0", "subscription:a:b\\c"),
            ("1.1", "subscription:a\\cb\\\\c"),
            ("1.2", "subscription:a\\cb\\\\c"),
        ],
    )
    def test_subscription_id_escaped_per_subscriber_version(
        self, env: Env, version: str, raw_line: str
    ) -> None:
        """1.0 has no escaping; 1.1 and 1.2 escape ':' and '\\'."""
        client = env.connected(version=version)
        client.subscribe("/topic/a", "a:b\\c")
        env.connected("s").publish("/topic/a", b"m")
        (received,) = client.received()
        assert raw_header_lines(received.raw)[0] == raw_line
        assert received.frame.headers["subscription"] == "a:b\\c"

    def test_mixed_version_subscribers_get_correctly_escaped_headers(self, env: Env) -> None:
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


class TestBinaryFlag:
    """Which frames go out as binary WebSocket messages."""

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
    def test_binary_flag(self, env: Env, headers: dict[str, str], body: bytes, binary: bool) -> None:
        """octet-stream and non-UTF-8 bodies must go out as binary WebSocket messages."""
        sub = env.connected("sub")
        sub.subscribe("/topic/a")
        env.connected("s").publish("/topic/a", body, **headers)
        (received,) = sub.received()
        assert received.binary is binary
        assert received.frame.body == body

    def test_control_frames_are_text(self, env: Env) -> None:
        """CONNECTED, RECEIPT and ERROR are always text."""
        client = env.client()
        client.send("CONNECT", {"accept-version": "1.2", "login": "a"})
        client.send("SUBSCRIBE", {"id": "0", "destination": "/topic/a", "receipt": "r"})
        client.send("SUBSCRIBE", {"id": "0", "destination": "/topic/a"})
        assert [binary for _, binary in client.out.writes] == [False, False, False]
