"""Writes batched per loop turn, with the slow-consumer rule: shared by the WebSocket and TCP transports.

Frames a session is sent within one event-loop turn go out in one
``transport.write`` at the end of the turn: under load, one system call for many
messages instead of one each (bench/sockjs_transports.py), for one loop iteration
of latency. Before each write, a peer that has left more than the limit unread is
closed (:func:`~stompgate.transport.slow_consumer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import slow_consumer

if TYPE_CHECKING:
    from ..broker.session import Session

# Frames queued within one loop turn are written together up to this size.
BATCH = 64 * 1024


class TurnBatcher:
    """The sending half of an :class:`~stompgate.broker.session.Outbound`: queue, flush at the
    end of the turn, and refuse to feed a peer that does not read.

    A subclass sets ``_header`` when each frame needs one on the wire (WebSocket),
    and overrides :meth:`_write_large` to write a large frame without a copy.
    """

    __slots__ = (
        "_transport", "_limit", "_loop", "_pending", "_pending_size", "_flush_handle", "session", "closing",
    )
    # The wire header of a frame of n bytes (binary or not); None: frames go as they are.
    _header: Callable[[int, bool], bytes] | None = None

    def __init__(self, transport: asyncio.Transport, limit: int) -> None:
        self._transport = transport
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._flush_handle: asyncio.Handle | None = None
        self.session: Session | None = None
        self.closing = False

    def send(self, data: bytes, binary: bool) -> None:
        if self.closing:
            return
        n = len(data)
        if n > BATCH:  # large: written now, after what is pending, without a copy
            self._flush()
            if not self.closing and not self._slow():
                self._write_large(data, binary)
            return
        header = self._header
        self._pending.append(data if header is None else header(n, binary) + data)
        self._pending_size += n
        if self._pending_size >= BATCH:
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

    def _write_large(self, data: bytes, binary: bool) -> None:
        self._transport.write(data)

    def _drop_pending(self) -> None:
        self._pending.clear()
        self._pending_size = 0

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

    def buffered(self) -> int:
        return self._pending_size + self._transport.get_write_buffer_size()
