"""STOMP over WebSocket on aiohttp.

Outgoing frames are written to the socket synchronously, with the WebSocket
frame header built here, so a fan-out to N sessions costs N ``transport.write``
calls and no task or coroutine per message. aiohttp keeps the handshake, the
reading side and the closing handshake.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from ..broker.session import CLOSE_POLICY, Session
from ..wsio import WAKE, close_reason, wake, write_message

if TYPE_CHECKING:
    from ..broker import Broker

log = logging.getLogger(__name__)

SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")

class WebSocketOutbound:
    """The :class:`~stompgate.broker.session.Outbound` of one WebSocket connection.

    ``close`` only records the code and wakes the handler task, which then runs
    aiohttp's closing handshake itself (see :func:`stompgate.wsio.wake`).
    """

    __slots__ = ("_ws", "_transport", "_limit", "closing", "close_code", "close_reason", "session", "done")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, limit: int) -> None:
        self._ws = ws
        self._transport = transport
        self._limit = limit
        self.closing = False
        self.close_code = 1000
        self.close_reason = ""
        self.session: Session | None = None
        self.done = asyncio.get_running_loop().create_future()  # set when the handler has finished

    def send(self, data: bytes, binary: bool) -> None:
        transport = self._transport
        if self.closing or transport.is_closing():
            return
        write_message(transport, data, binary)
        if transport.get_write_buffer_size() > self._limit and self.session is not None:
            log.warning(
                "session %s (%s): slow consumer, %d bytes unsent; closing",
                self.session.id,
                self.session.user or "-",
                transport.get_write_buffer_size(),
            )
            self.session.close(CLOSE_POLICY, "slow consumer: too much unsent data")

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        self.close_reason = reason
        wake(self._ws)

    async def finish(self) -> None:
        """The closing handshake, from the handler task (a no-op if already closed)."""
        await self._ws.close(code=self.close_code, message=close_reason(self.close_reason))


def websocket_handler(broker: Broker, max_outbound_buffer: int, open_outbounds: set[WebSocketOutbound]):
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
            while not out.closing:
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
