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
from ..logs import RateLimitedLog
from ..origins import OriginPolicy
from ..wsio import WAKE, ReadGate, close_reason, frame_header, reset, wake, write_message
from .batching import TurnBatcher

if TYPE_CHECKING:
    from ..broker import Broker

log = logging.getLogger(__name__)
# Any page can make a browser try: a line each, a flood counted.
_refused = RateLimitedLog(log, "refused handshakes", level=logging.INFO, burst=20, interval_s=60.0)

# Highest version first: the order in which a handshake's offers are answered.
SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")


def choose_subprotocol(offered: str | None) -> str | None:
    """The highest STOMP version a handshake's ``Sec-WebSocket-Protocol`` offers, whatever
    their order; None when it offers none of ours.

    aiohttp, as RFC 6455 allows, would take the client's first offer we know:
    webstomp-client offers ``v10.stomp, v11.stomp, v12.stomp`` in that order and
    would then be held to STOMP 1.0 (no heart-beats, no NACK) by a 1.2 server.
    """
    if not offered:
        return None
    # Answered in the client's own spelling: aiohttp accepts only a token the client sent.
    tokens = {token.strip().lower(): token.strip() for token in offered.split(",")}
    return next((tokens[proto] for proto in SUBPROTOCOLS if proto in tokens), None)


class WebSocketOutbound(TurnBatcher):
    """The :class:`~stompgate.broker.session.Outbound` of one WebSocket connection.

    Frames sent within one event-loop turn are written together at the end of the
    turn (:class:`~.batching.TurnBatcher`), each with its WebSocket header.

    ``close`` only records the code and wakes the handler task, which then runs
    aiohttp's closing handshake itself (see :func:`stompgate.wsio.wake`).
    """

    __slots__ = ("_ws", "_reading", "close_code", "close_reason", "done")
    _header = staticmethod(frame_header)

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, limit: int) -> None:
        super().__init__(transport, limit)
        self._ws = ws
        # Open while the session takes input; the handler reads the socket only then.
        self._reading = ReadGate()
        self.close_code = 1000
        self.close_reason = ""
        self.done = self._loop.create_future()  # set when the handler has finished

    def _write_large(self, data: bytes, binary: bool) -> None:
        write_message(self._transport, data, binary)

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
        self._drop_pending()
        self.closing = True
        self._reading.resume()
        reset(self._transport)
        wake(self._ws)

    def pause_reading(self) -> None:
        self._reading.pause()

    def resume_reading(self) -> None:
        self._reading.resume()

    async def finish(self) -> None:
        """The closing handshake, from the handler task (a no-op if already closed)."""
        self._flush()
        await self._ws.close(code=self.close_code, message=close_reason(self.close_reason))


def websocket_handler(
    broker: Broker,
    max_outbound_buffer: int,
    open_outbounds: set[WebSocketOutbound],
    origins: OriginPolicy | None = None,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler running one STOMP session per WebSocket; a page from an
    origin ``origins`` does not allow gets 403 before the handshake."""
    origins = origins or OriginPolicy(["*"])
    # A frame may span many WebSocket messages; one message may also carry a frame
    # somewhat over the limit, which the parser then refuses with an ERROR. Only
    # far larger messages are cut off by aiohttp itself (close 1009, no ERROR).
    max_msg = 4 * broker.limits.max_frame_size + 64 * 1024

    async def handle(request: web.Request) -> web.StreamResponse:
        chosen = choose_subprotocol(request.headers.get("Sec-WebSocket-Protocol"))
        ws = web.WebSocketResponse(
            protocols=(chosen,) if chosen else (),
            compress=False,
            max_msg_size=max_msg,
            autoping=True,
            timeout=5.0,
        )
        if not ws.can_prepare(request).ok:
            return web.json_response(
                {"error": "this is a STOMP-over-WebSocket endpoint: open it with a WebSocket client"},
                status=400,
            )
        origin = request.headers.get("Origin")
        if not origins.allows(origin, request.headers.get("Host")):
            remote = request.remote or ""
            _refused.log("handshake from %s refused: origin %s is not allowed", remote, origin, key=remote)
            return web.json_response({"error": f"origin {origin} is not allowed"}, status=403)
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
