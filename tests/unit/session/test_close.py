"""DISCONNECT, close, connection loss and broker shutdown."""

from __future__ import annotations

from stompgate.broker.session import CLOSE_NORMAL, CLOSE_POLICY, CLOSE_RESTART

from .harness import Env


class TestDisconnectAndClose:
    """DISCONNECT and close: once, and nothing after."""

    def test_disconnect_without_receipt_closes_normally(self, env: Env) -> None:
        """DISCONNECT alone: no frame, close 1000, broker clean."""
        client = env.connected()
        client.send("DISCONNECT")
        assert client.frames() == []
        assert client.close_code == CLOSE_NORMAL
        env.assert_empty()

    def test_frames_after_disconnect_in_same_chunk_are_ignored(self, env: Env) -> None:
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

    def test_input_after_close_is_ignored(self, env: Env) -> None:
        """Once closed, bytes (even garbage) produce nothing: no ERROR, no second close."""
        client = env.connected()
        client.send("DISCONNECT")
        client.session.receive_data(b"GARBAGE\n\n\0")
        client.send("SEND", {"destination": "/topic/a"}, b"x")
        assert client.out.writes[1:] == []
        assert len(client.out.closes) == 1

    def test_no_deliveries_after_close(self, env: Env) -> None:
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

    def test_close_is_idempotent(self, env: Env) -> None:
        """Only the first close/fail reaches the transport."""
        client = env.connected()
        client.session.close(CLOSE_NORMAL, "one")
        client.session.close(CLOSE_POLICY, "two")
        client.session.fail("three")
        assert client.out.closes == [(CLOSE_NORMAL, "one")]
        assert client.frames() == []


class TestConnectionLost:
    """The peer gone: the broker forgets the session."""

    def test_connection_lost_cleans_the_broker(self, env: Env) -> None:
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

    def test_user_entry_survives_while_another_session_remains(self, env: Env) -> None:
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


class TestShutdown:
    """Broker shutdown closes every session."""

    def test_shutdown_errors_and_closes_every_session(self, env: Env) -> None:
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

    def test_shutdown_custom_message(self, env: Env) -> None:
        """shutdown() passes its message to the ERROR."""
        client = env.connected()
        env.broker.shutdown("maintenance")
        assert client.expect_error(CLOSE_RESTART).headers["message"] == "maintenance"
