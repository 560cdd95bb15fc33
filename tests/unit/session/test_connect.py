"""CONNECT / STOMP and version negotiation."""

from __future__ import annotations

import pytest

from stompgate.broker.session import CLOSE_PROTOCOL_ERROR
from stompgate.broker.settings import HeartbeatSettings
from stompgate.stomp import Frame, serialize

from .harness import Env, make_env, raw_header_lines


class TestConnected:
    """CONNECT or STOMP opens a session, and what CONNECTED says."""

    @pytest.mark.parametrize("command", ["CONNECT", "STOMP"])
    def test_connect_and_stomp_are_both_accepted(self, env: Env, command: str) -> None:
        """STOMP 1.1+ clients may open with STOMP instead of CONNECT."""
        client = env.client()
        client.connect("alice", command=command)
        assert client.session.connected
        assert env.broker.sessions == {client.session.id: client.session}

    def test_connected_headers(self, env: Env) -> None:
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

    def test_connected_reports_configured_server_name_and_heartbeat(self) -> None:
        """server and heart-beat come from the broker's settings, not constants."""
        env = make_env(heartbeat=HeartbeatSettings(send_ms=3000, receive_ms=0))
        env.broker.server_name = "gw/1"
        frame = env.client().connect("bob")
        assert frame.headers["heart-beat"] == "3000,0"
        assert frame.headers["server"] == "gw/1"

    def test_connected_headers_are_not_escaped(self, env: Env) -> None:
        """CONNECTED is never escaped (1.0 compatibility): a ':' in the user name stays raw."""
        client = env.client()
        client.send("CONNECT", {"accept-version": "1.2", "login": "a:b\\c", "heart-beat": "0,0"})
        data = client.out.writes[0][0]
        assert "user-name:a:b\\c" in raw_header_lines(data)

    def test_sessions_opened_counts_connects(self, env: Env) -> None:
        """broker.stats.sessions_opened counts successful CONNECTs only."""
        env.connected("a")
        env.connected("b")
        env.client()  # never connects
        assert env.broker.stats.sessions_opened == 2
        assert len(env.broker.open_sessions) == 3
        assert len(env.broker.sessions) == 2


class TestVersionNegotiation:
    """accept-version against the versions the broker speaks."""

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
    def test_version_negotiation(self, env: Env, accept: str | None, expected: str) -> None:
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
    def test_no_common_version_is_an_error(self, env: Env, accept: str) -> None:
        """ERROR lists the supported versions in a version header, then the session closes."""
        client = env.client()
        client.send("CONNECT", {"accept-version": accept, "login": "alice"})
        error = client.expect_error()
        assert error.headers["version"] == "1.0,1.1,1.2"
        assert "1.0,1.1,1.2" in error.headers["message"]
        assert not client.session.connected
        env.assert_empty()


class TestFrameOrder:
    """CONNECT first and once, however the bytes around it are chunked."""

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
    def test_frame_before_connect_is_an_error(self, env: Env, command: str, headers: dict[str, str]) -> None:
        """Nothing but CONNECT/STOMP is accepted first: ERROR + close 1002."""
        client = env.client()
        client.send(command, headers)
        error = client.expect_error(CLOSE_PROTOCOL_ERROR)
        assert "CONNECT" in error.headers["message"]
        env.assert_empty()

    @pytest.mark.parametrize("second", ["CONNECT", "STOMP"])
    def test_connect_twice_is_an_error(self, env: Env, second: str) -> None:
        """A second CONNECT/STOMP on a connected session is refused."""
        client = env.connected()
        client.send(second, {"accept-version": "1.2", "login": "alice"})
        client.expect_error(CLOSE_PROTOCOL_ERROR, contains=second)
        env.assert_empty()

    def test_connect_fed_byte_by_byte(self, env: Env) -> None:
        """Chunking does not matter: a CONNECT fed one byte at a time gives one CONNECTED."""
        client = env.client()
        data = serialize(Frame("CONNECT", {"accept-version": "1.2", "login": "a", "heart-beat": "0,0"}))
        for i in range(len(data)):
            assert client.out.writes == []
            client.session.receive_data(data[i : i + 1])
        assert client.commands() == ["CONNECTED"]

    def test_frames_after_connect_in_the_same_chunk_use_the_negotiated_version(self, env: Env) -> None:
        """CONNECT + SUBSCRIBE in one chunk: the SUBSCRIBE is unescaped as 1.2."""
        client = env.client()
        data = serialize(Frame("CONNECT", {"accept-version": "1.2", "login": "a", "heart-beat": "0,0"}))
        data += serialize(Frame("SUBSCRIBE", {"id": "a:b", "destination": "/topic/x", "receipt": "r"}), "1.2")
        client.session.receive_data(data)
        assert client.commands() == ["CONNECTED", "RECEIPT"]
        assert "a:b" in client.session.subscriptions
