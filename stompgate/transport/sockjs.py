"""STOMP over SockJS: the same sessions as over a WebSocket, carried by :mod:`stompgate.sockjs`.

Each SockJS session gets one STOMP :class:`~stompgate.broker.session.Session`.
SockJS carries text only, so frames travel as strings and bodies that are not
UTF-8 are delivered with the invalid bytes replaced. SockJS's own ``h`` frames
stop once STOMP heart-beats from the server are negotiated (as Spring does):
one keep-alive is enough.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING

from ..broker.session import Session
from ..sockjs import Connection, SockJSEndpoint, SockJSOptions
from . import slow_consumer

if TYPE_CHECKING:
    from ..broker import Broker

log = logging.getLogger(__name__)


class SockJSOutbound:
    """A STOMP session's Outbound over one SockJS connection."""

    __slots__ = ("_conn", "_limit", "session")

    def __init__(self, conn: Connection, limit: int) -> None:
        self._conn = conn
        self._limit = limit
        self.session: Session | None = None

    def send(self, data: bytes, binary: bool) -> None:
        conn = self._conn
        unsent = conn.buffered()
        if unsent > self._limit and self.session is not None:
            slow_consumer(self.session, unsent, self._limit)
            return
        conn.send(data.decode("utf-8", "replace"))

    def close(self, code: int, reason: str) -> None:
        self._conn.close(code, reason)

    def abort(self) -> None:
        self._conn.abort()

    def pause_reading(self) -> None:
        self._conn.pause_reading()

    def resume_reading(self) -> None:
        self._conn.resume_reading()

    def buffered(self) -> int:
        return self._conn.buffered()

    def heartbeats(self, send_ms: int, receive_ms: int) -> None:
        if send_ms > 0:
            self._conn.disable_heartbeat()


_SURROGATE = re.compile("[\ud800-\udfff]")


class StompOverSockJS:
    """The SockJS handler of one session: text in, STOMP session, text out."""

    __slots__ = ("session", "_high")

    def __init__(self, broker: Broker, conn: Connection, limit: int) -> None:
        out = SockJSOutbound(conn, limit)
        info = conn.info
        self.session = Session(
            broker,
            out,
            asyncio.get_running_loop(),
            handshake_headers=info.headers,
            query=info.query,
            transport=f"sockjs-{info.transport}",
            remote=info.remote,
            text_only=True,
        )
        out.session = self.session
        self._high = ""  # the first half of a surrogate pair that ended the last message

    def on_message(self, text: str) -> None:
        if self._high or _SURROGATE.search(text):
            text = self._join_surrogates(text)
        self.session.receive_data(text.encode("utf-8", "replace"))

    def _join_surrogates(self, text: str) -> str:
        """Rejoin surrogate pairs that a client split across messages.

        JavaScript strings are UTF-16; stompjs 2.x cuts large frames every 16384
        code units, sometimes between the two halves of an emoji. Joined, the
        halves are one character again; a half that stays alone becomes U+FFFD.
        """
        text = self._high + text
        self._high = ""
        if "\ud800" <= text[-1] <= "\udbff":
            self._high, text = text[-1], text[:-1]
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")

    def on_close(self) -> None:
        self.session.connection_lost()


def stomp_sockjs_endpoint(
    broker: Broker, path: str, options: SockJSOptions, max_outbound_buffer: int
) -> SockJSEndpoint:
    """A SockJS endpoint at ``path`` whose sessions speak STOMP."""
    return SockJSEndpoint(path, lambda conn: StompOverSockJS(broker, conn, max_outbound_buffer), options)


def sockjs_message_limit(max_frame_size: int) -> int:
    """Bytes one SockJS message may take: a frame JSON-escapes to up to 6 bytes per byte (\\u0000)."""
    return 6 * max_frame_size + 64 * 1024
