"""Plain STOMP over TCP (as RabbitMQ and ActiveMQ serve on 61613), same sessions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from ..broker.session import Session
from ..tls import ServerTls
from ..wsio import reset
from .batching import TurnBatcher
from .limits import ConnectionGate, GateProtocol, stomp_refusal

if TYPE_CHECKING:
    from ..broker import Broker

log = logging.getLogger(__name__)


class TcpOutbound(TurnBatcher):
    """The :class:`~stompgate.broker.session.Outbound` of one TCP connection: frames
    batched per loop turn (:class:`~.batching.TurnBatcher`), as over WebSocket."""

    __slots__ = ()

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self._flush()  # an ERROR frame goes out before the close
        self.closing = True
        self._transport.close()  # flushes what is buffered, then closes

    def abort(self) -> None:
        self._drop_pending()
        self.closing = True
        reset(self._transport)

    def pause_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.resume_reading()


class StompTcpProtocol(asyncio.Protocol):
    """One TCP connection: bytes in to its session; the session writes through a :class:`TcpOutbound`."""

    def __init__(
        self, broker: Broker, max_outbound_buffer: int, on_lost: Callable[[], None] | None = None
    ) -> None:
        self._broker = broker
        self._limit = max_outbound_buffer
        self._on_lost = on_lost  # gives the connection's slot back to the gate
        self.session: Session | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        # uvloop's transports implement asyncio.Transport without subclassing it
        out = TcpOutbound(cast(asyncio.Transport, transport), self._limit)
        self.session = out.session = Session(
            self._broker,
            out,
            asyncio.get_running_loop(),
            transport="tcp",
            remote=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or ""),
        )

    def data_received(self, data: bytes) -> None:
        assert self.session is not None
        self.session.receive_data(data)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._on_lost is not None:
            self._on_lost()
            self._on_lost = None
        if self.session is not None:
            self.session.connection_lost()


async def start_tcp_server(
    broker: Broker,
    host: str,
    port: int,
    max_outbound_buffer: int,
    reuse_port: bool = False,
    gate: ConnectionGate | None = None,
    tls: ServerTls | None = None,
) -> asyncio.Server:
    """The listener; with a ``gate``, a connection past its caps gets an ERROR frame and no session.

    With ``tls``, STOMP over TLS (RabbitMQ's 61614): the gate sees a connection once its handshake is done."""
    loop = asyncio.get_running_loop()
    factory: Callable[[], asyncio.Protocol]
    if gate is None:
        factory = lambda: StompTcpProtocol(broker, max_outbound_buffer)  # noqa: E731
    else:

        def admitted(release: Callable[[], None]) -> asyncio.Protocol:
            return StompTcpProtocol(broker, max_outbound_buffer, release)

        factory = lambda: GateProtocol(gate, admitted, stomp_refusal)  # noqa: E731
    tls_kwargs = tls.server_kwargs() if tls is not None else {}
    return await loop.create_server(
        factory, host, port, reuse_address=True, reuse_port=reuse_port, **tls_kwargs
    )  # fmt: skip
