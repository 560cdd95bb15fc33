"""The ports a session is plugged into: its transport, the event loop, close codes.

Transports (WebSocket, SockJS, TCP) implement :class:`Outbound`; an asyncio loop
is a :class:`Scheduler` as it is, and tests pass a manual clock. Nothing here
does I/O: these are the only ways the sans-I/O core reaches the world.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

# WebSocket close codes (RFC 6455 section 7.4.1), used by every transport.
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012


class Outbound(Protocol):
    """What a transport gives a session: write bytes, close, and stop or resume reading."""

    def send(self, data: bytes, binary: bool) -> None:
        """Queue one STOMP frame (or heart-beat EOL) for the peer, in order."""

    def close(self, code: int, reason: str) -> None:
        """Close after everything already sent has been flushed."""

    def pause_reading(self) -> None:
        """Hand the session no more input until :meth:`resume_reading` (at most what is in flight)."""

    def resume_reading(self) -> None:
        """Input may come again."""

    def buffered(self) -> int:
        """Bytes written to this peer and not yet taken by the kernel (the node's memory budget)."""

    def abort(self) -> None:
        """Close now, dropping what is unsent: for a peer that does not read (its buffers go at once)."""


@runtime_checkable
class HeartbeatAware(Protocol):
    """An Outbound that wants to know the negotiated heart-beats (SockJS turns its own off)."""

    def heartbeats(self, send_ms: int, receive_ms: int) -> None: ...


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """An event loop's clock and timers (``asyncio`` loops fit as they are)."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], Any]) -> TimerHandle: ...

    def call_soon(self, callback: Callable[[], Any]) -> TimerHandle:
        """Run ``callback`` on the next turn of the loop, after what is ready now."""
