"""STOMP over WebSocket on aiohttp.

Outgoing frames are written to the socket synchronously, with the WebSocket
frame header built here, so a fan-out to N sessions costs N ``transport.write``
calls and no task or coroutine per message. aiohttp keeps the handshake, the
reading side and the closing handshake.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from ..broker.session import CLOSE_POLICY, Session

if TYPE_CHECKING:
    from ..broker import Broker

log = logging.getLogger(__name__)

SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")

_OP_TEXT = 0x81  # FIN + text
_OP_BINARY = 0x82  # FIN + binary
_LEN16 = struct.Struct("!BBH").pack
_LEN64 = struct.Struct("!BBQ").pack
_SMALL_WRITE = 16 * 1024


class WebSocketOutbound:
    """The :class:`~stompgate.broker.session.Outbound` of one WebSocket connection."""

    __slots__ = ("_ws", "_transport", "_limit", "_closing", "session", "close_task")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, limit: int) -> None:
        self._ws = ws
        self._transport = transport
        self._limit = limit
        self._closing = False
        self.session: Session | None = None
        self.close_task: asyncio.Task[bool] | None = None

    def send(self, data: bytes, binary: bool) -> None:
        transport = self._transport
        if self._closing or transport.is_closing():
            return
        n = len(data)
        first = _OP_BINARY if binary else _OP_TEXT
        if n < 126:
            header = bytes((first, n))
        elif n < 65536:
            header = _LEN16(first, 126, n)
        else:
            header = _LEN64(first, 127, n)
        if n <= _SMALL_WRITE:
            transport.write(header + data)
        else:
            transport.write(header)
            transport.write(data)
        if transport.get_write_buffer_size() > self._limit and self.session is not None:
            log.warning(
                "session %s (%s): slow consumer, %d bytes unsent; closing",
                self.session.id,
                self.session.user or "-",
                transport.get_write_buffer_size(),
            )
            self.session.close(CLOSE_POLICY, "slow consumer: too much unsent data")

    def close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        message = reason.encode("utf-8")[:123]  # a close reason must fit in 123 bytes
        self.close_task = asyncio.ensure_future(self._ws.close(code=code, message=message))


def websocket_handler(broker: Broker, max_outbound_buffer: int, open_outbounds: set[WebSocketOutbound]):
    """An aiohttp handler running one STOMP session per WebSocket."""
    max_msg = broker.limits.max_frame_size + 64 * 1024

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            protocols=SUBPROTOCOLS, compress=False, max_msg_size=max_msg, autoping=True
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
        out = WebSocketOutbound(ws, transport, max_outbound_buffer)  # type: ignore[arg-type]
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
        try:
            while True:
                msg = await ws.receive()
                kind = msg.type
                if kind is WSMsgType.TEXT:
                    receive(msg.data.encode("utf-8"))
                elif kind is WSMsgType.BINARY:
                    receive(msg.data)
                else:
                    if kind is WSMsgType.ERROR:
                        log.debug("session %s: websocket error %s", session.id, ws.exception())
                    break
        finally:
            session.connection_lost()
            open_outbounds.discard(out)
            if out.close_task is not None:
                await asyncio.shield(out.close_task)
            elif not ws.closed:
                await ws.close()
        return ws

    return handle
