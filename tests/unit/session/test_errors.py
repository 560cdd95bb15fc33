"""Protocol errors (codec errors, frame size limits) and internal errors."""

from __future__ import annotations

from typing import Any

import pytest

from stompgate.broker import Credentials, SessionLimits
from stompgate.broker.session import CLOSE_INTERNAL, CLOSE_PROTOCOL_ERROR

from .harness import Env, make_env


class TestProtocolErrors:
    """Malformed input: one ERROR, then close 1002."""

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
    def test_codec_errors_are_one_error_then_close_1002(self, env: Env, data: bytes) -> None:
        """Malformed input: exactly one ERROR with a message header, then close 1002."""
        client = env.connected()
        client.session.receive_data(data)
        client.session.receive_data(data)  # more garbage after the error is ignored
        client.expect_error(CLOSE_PROTOCOL_ERROR)
        env.assert_empty()

    def test_codec_error_before_connect(self, env: Env) -> None:
        """The codec rejects unknown commands even before CONNECT."""
        client = env.client()
        client.session.receive_data(b"HELLO\n\n\0")
        client.expect_error(CLOSE_PROTOCOL_ERROR)

    def test_valid_frames_before_garbage_in_one_chunk_are_processed(self, env: Env) -> None:
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

    def test_errors_are_counted(self, env: Env) -> None:
        """broker.stats.errors counts every ERROR sent."""
        env.client().session.receive_data(b"JUNK\n\n\0")
        env.connected().send("SEND", {})
        assert env.broker.stats.errors == 2


class TestFrameSizeLimits:
    """The broker's SessionLimits in the session's parser."""

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
    def test_oversize_frames_per_session_limits(self, limits: SessionLimits, data: bytes) -> None:
        """The broker's SessionLimits reach the session's parser."""
        env = make_env(limits=limits)
        sub = env.connected("sub")
        sub.subscribe("/topic/a")
        client = env.connected()
        client.session.receive_data(data)
        error = client.expect_error(CLOSE_PROTOCOL_ERROR)
        assert error.headers["message"]
        assert sub.frames() == []

    def test_frame_at_the_size_limit_is_accepted(self) -> None:
        """The limit is inclusive of a frame exactly max_frame_size bytes long."""
        env = make_env(limits=SessionLimits(max_frame_size=200))
        client = env.connected()
        client.subscribe("/topic/a")
        head = b"SEND\ndestination:/topic/a\n\n"
        data = head + b"x" * (200 - len(head) - 1) + b"\0"
        assert len(data) == 200
        client.session.receive_data(data)
        assert len(client.messages()) == 1


class TestInternalErrors:
    """A bug in the broker: ERROR 'internal server error', close 1011."""

    def test_internal_error_is_error_and_close_1011(self, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
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

    def test_authenticator_crash_is_internal_error(self) -> None:
        """An authenticator bug (not AuthError) is an internal error, not a login failure."""
        class Broken:
            def authenticate(self, creds: Credentials) -> str | None:
                raise KeyError("oops")

        env = make_env(Broken())
        client = env.client()
        client.send("CONNECT", {"accept-version": "1.2", "login": "a"})
        error = client.expect_error(CLOSE_INTERNAL)
        assert error.headers["message"] == "internal server error"
