"""STOMP over WebSocket on aiohttp.

Outgoing frames get their WebSocket header here and are written from plain
callbacks, batched per session and loop turn: no task or coroutine per message.
aiohttp keeps the handshake, the reading side and the closing handshake.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from ..broker.session import Session
from ..wsio import WAKE, ReadGate, close_reason, frame_header, wake, write_message
from . import slow_consumer

if TYPE_CHECKING:
    from ..broker import Broker

log = logging.getLogger(__name__)

SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")

# Frames queued within one loop turn are written together up to this size.
_BATCH = 64 * 1024


class WebSocketOutbound:
    """The :class:`~stompgate.broker.session.Outbound` of one WebSocket connection.

    Frames sent within one event-loop turn are written with one ``transport.write``
    at the end of the turn: under load that is one system call for many messages
    instead of one each (bench/sockjs_transports.py), at the cost of one loop
    iteration of latency.

    ``close`` only records the code and wakes the handler task, which then runs
    aiohttp's closing handshake itself (see :func:`stompgate.wsio.wake`).
    """

    __slots__ = (
        "_ws",
        "_transport",
        "_limit",
        "_loop",
        "_pending",
        "_pending_size",
        "_flush_handle",
        "_reading",
        "closing",
        "close_code",
        "close_reason",
        "session",
        "done",
    )

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, limit: int) -> None:
        self._ws = ws
        self._transport = transport
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._flush_handle: asyncio.Handle | None = None
        # Set while the session takes input; the handler reads the socket only then.
        self._reading = ReadGate()
        self.closing = False
        self.close_code = 1000
        self.close_reason = ""
        self.session: Session | None = None
        self.done = self._loop.create_future()  # set when the handler has finished

    def send(self, data: bytes, binary: bool) -> None:
        if self.closing:
            return
        n = len(data)
        if n > _BATCH:  # large: written now, after what is pending, without a copy
            self._flush()
            if not self.closing and not self._slow():
                write_message(self._transport, data, binary)
            return
        self._pending.append(frame_header(n, binary) + data)
        self._pending_size += n
        if self._pending_size >= _BATCH:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush_handle = None
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pending_size = 0
        transport = self._transport
        if transport.is_closing() or self._slow():
            return
        transport.write(data)

    def _slow(self) -> bool:
        """Close the session if what it has not read yet is past the limit (before writing more).

        Checked before each write, so a session holds at most the limit plus one
        batch or one large frame, and any single frame can be written.
        """
        unsent = self._transport.get_write_buffer_size()
        if unsent <= self._limit or self.session is None:
            return False
        slow_consumer(self.session, unsent, self._limit)
        return True

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self._flush()  # an ERROR frame goes out before the close
        self.closing = True
        self.close_code = code
        self.close_reason = reason
        self._reading.resume()
        wake(self._ws)

    def abort(self) -> None:
        self._pending.clear()
        self._pending_size = 0
        self.closing = True
        self._reading.resume()
        self._transport.abort()
        wake(self._ws)

    def pause_reading(self) -> None:
        self._reading.pause()

    def resume_reading(self) -> None:
        self._reading.resume()

    def buffered(self) -> int:
        return self._pending_size + self._transport.get_write_buffer_size()

    async def finish(self) -> None:
        """The closing handshake, from the handler task (a no-op if already closed)."""
        self._flush()
        await self._ws.close(code=self.close_code, message=close_reason(self.close_reason))


def websocket_handler(
    broker: Broker, max_outbound_buffer: int, open_outbounds: set[WebSocketOutbound]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler running one STOMP session per WebSocket."""
    # A frame may span many WebSocket messages; one message may also carry a frame
    # somewhat over the limit, which the parser then refuses with an ERROR. Only
    # far larger messages are cut off by aiohttp itself (close 1009, no ERROR).
    max_msg = 4 * broker.limits.max_frame_size + 64 * 1024

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            protocols=SUBPROTOCOLS, compress=False, max_msg_size=max_msg, autoping=True, timeout=5.0
        )
        if not ws.can_prepare(request).ok:
            return web.json_response(
                {"error": "this is a STOMP-over-WebSocket endpoint: open it with a WebSocket client"},
                status=400,
            )
        await ws.prepare(request)
        transport = request.transport
        if transport is None:
            return ws
        loop = asyncio.get_running_loop()
        out = WebSocketOutbound(ws, transport, max_outbound_buffer)
        session = Session(
            broker,
            out,
            loop,
            handshake_headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query),
            transport="websocket",
            remote=request.remote or "",
        )
        out.session = session
        open_outbounds.add(out)
        receive = session.receive_data
        reading = out._reading
        try:
            while not out.closing:
                if not reading.is_open:  # flow control, rate limit, or a full turn: not read meanwhile
                    await reading.wait()
                    continue
                msg = await ws.receive()
                kind = msg.type
                if kind is WSMsgType.TEXT:
                    receive(msg.data.encode("utf-8"))
                elif kind is WSMsgType.BINARY:
                    receive(msg.data)
                else:
                    if kind is WSMsgType.ERROR and msg is not WAKE:
                        log.debug("session %s: websocket error %s", session.id, ws.exception())
                    break
            await out.finish()
        finally:
            session.connection_lost()
            open_outbounds.discard(out)
            out.done.set_result(None)
        return ws

    return handle
