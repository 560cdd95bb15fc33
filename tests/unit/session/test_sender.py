"""Who sent a message: the broker writes the sender's user name on what a client
SENT, under ``stomp.sender_header``; a client cannot set or forge it, however it
spells it, nor pass for the server (``server-sent``)."""

from __future__ import annotations

import pytest

from stompgate.broker import SessionLimits

from .harness import make_env


class TestSender:
    def test_the_sender_is_the_users_name(self) -> None:
        env = make_env()
        alice, bob = env.connected("alice"), env.connected("bob")
        bob.subscribe("/topic/chat")
        alice.publish("/topic/chat", b"hi", **{"content-type": "text/plain"})
        message = bob.message()
        assert message.headers["sender"] == "alice"
        assert "server-sent" not in message.headers
        assert message.headers["content-type"] == "text/plain"

    FORGED = ["sender", "Sender", " sender", "SENDER\t", "server-sent", "Server-Sent "]

    @pytest.mark.parametrize("forged", FORGED)
    def test_a_client_cannot_forge_it(self, forged: str) -> None:
        env = make_env()
        alice, bob = env.connected("alice"), env.connected("bob")
        bob.subscribe("/user/queue/inbox")
        alice.publish("/user/bob/queue/inbox", b"hi", **{forged: "root"})
        message = bob.message()
        assert message.headers["sender"] == "alice"
        assert [n for n in message.headers if n.strip().lower() in ("sender", "server-sent")] == ["sender"]
        assert "root" not in message.headers.values()

    def test_the_header_name_is_configurable(self) -> None:
        env = make_env(limits=SessionLimits(sender_header="x-from"))
        alice, bob = env.connected("alice"), env.connected("bob")
        bob.subscribe("/topic/chat")
        alice.publish("/topic/chat", b"hi", **{"X-From": "root", "sender": "kept"})
        message = bob.message()
        assert message.headers["x-from"] == "alice"
        assert message.headers["sender"] == "kept"  # an ordinary header on this node
        assert "X-From" not in message.headers

    def test_stored_in_a_transaction_too(self) -> None:
        env = make_env()
        alice, bob = env.connected("alice"), env.connected("bob")
        bob.subscribe("/topic/chat")
        alice.send("BEGIN", {"transaction": "t"})
        alice.publish("/topic/chat", b"hi", transaction="t", sender="root")
        alice.send("COMMIT", {"transaction": "t"})
        assert bob.message().headers["sender"] == "alice"
