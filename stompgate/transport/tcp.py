"""Plain STOMP over TCP (as RabbitMQ and ActiveMQ serve on 61613), same sessions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..broker.session import Session
from . import slow_consumer
from .limits import ConnectionGate, GateProtocol, stomp_refusal

if TYPE_CHECKING:
    from ..broker import Broker

log = logging.getLogger(__name__)


class StompTcpProtocol(asyncio.Protocol):
    """One TCP connection; it is also the session's Outbound."""

    def __init__(
        self, broker: Broker, max_outbound_buffer: int, on_lost: Callable[[], None] | None = None
    ) -> None:
        self._broker = broker
        self._limit = max_outbound_buffer
        self._on_lost = on_lost  # gives the connection's slot back to the gate
        self._transport: asyncio.Transport | None = None
        self.session: Session | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.session = Session(
            self._broker,
            self,
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

    # Outbound
    def send(self, data: bytes, binary: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        unsent = transport.get_write_buffer_size()
        if unsent > self._limit and self.session is not None:
            slow_consumer(self.session, unsent, self._limit)
            return
        transport.write(data)

    def close(self, code: int, reason: str) -> None:
        if self._transport is not None:
            self._transport.close()  # flushes what is buffered, then closes

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0


async def start_tcp_server(
    broker: Broker,
    host: str,
    port: int,
    max_outbound_buffer: int,
    reuse_port: bool = False,
    gate: ConnectionGate | None = None,
) -> asyncio.Server:
    """The listener; with a ``gate``, a connection past its caps gets an ERROR frame and no session."""
    loop = asyncio.get_running_loop()
    factory: Callable[[], asyncio.Protocol]
    if gate is None:
        factory = lambda: StompTcpProtocol(broker, max_outbound_buffer)  # noqa: E731
    else:

        def admitted(release: Callable[[], None]) -> asyncio.Protocol:
            return StompTcpProtocol(broker, max_outbound_buffer, release)

        factory = lambda: GateProtocol(gate, admitted, stomp_refusal)  # noqa: E731
    return await loop.create_server(factory, host, port, reuse_address=True, reuse_port=reuse_port)
