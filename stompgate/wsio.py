"""Synchronous WebSocket writes on an aiohttp connection, shared by the STOMP and SockJS transports.

aiohttp's ``send_str`` is a coroutine; a broker fan-out wants to write from plain
callbacks without a task per message. The frame header is built here and written
straight to the transport; aiohttp keeps the handshake, the reading side and the
closing handshake.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from aiohttp import WSMessage, WSMsgType, web

_OP_TEXT = 0x81  # FIN + text
_OP_BINARY = 0x82  # FIN + binary
_LEN16 = struct.Struct("!BBH").pack
_LEN64 = struct.Struct("!BBQ").pack
_SMALL_WRITE = 16 * 1024

# Fed to aiohttp's message queue to wake a handler blocked in receive().
WAKE = WSMessage(WSMsgType.ERROR, None, None)


class ReadGate:
    """Whether a connection's input is read now, and a way to wait until it is.

    An ``asyncio.Event`` would do, but it holds a deque (~600 bytes) for the whole
    life of every connection; this holds a future only while reading is paused.
    """

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None  # set while paused

    @property
    def is_open(self) -> bool:
        return self._waiter is None

    def pause(self) -> None:
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()

    def resume(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Return once reading is resumed (at once if it is not paused)."""
        waiter = self._waiter
        if waiter is not None:
            await waiter


def frame_header(n: int, binary: bool) -> bytes:
    """The header of one unmasked server-to-client message of ``n`` bytes (text unless ``binary``)."""
    first = _OP_BINARY if binary else _OP_TEXT
    if n < 126:
        return bytes((first, n))
    if n < 65536:
        return _LEN16(first, 126, n)
    return _LEN64(first, 127, n)


def write_message(transport: asyncio.Transport, data: bytes, binary: bool) -> None:
    """One unmasked server-to-client message, written now."""
    header = frame_header(len(data), binary)
    if len(data) <= _SMALL_WRITE:
        transport.write(header + data)
    else:
        transport.write(header)
        transport.write(data)


def wake(ws: web.WebSocketResponse) -> None:
    """Make the handler's pending ``ws.receive()`` return :data:`WAKE`.

    aiohttp's ``close()`` called from another task while the handler waits in
    ``receive()`` drops the TCP connection without waiting for the client's close
    frame; with client data still unread, the kernel answers with a reset and the
    client may lose the last frames. So other tasks only wake the handler, which
    then runs the closing handshake itself.
    """
    reader = getattr(ws, "_reader", None)  # aiohttp internals, pinned <4
    if reader is not None:
        reader.feed_data(WAKE, 0)


def close_reason(reason: str) -> bytes:
    """A close reason cut to the 123 bytes a close frame allows, on a character boundary."""
    return reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")



_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() discards unsent data and resets


def reset(transport: asyncio.Transport) -> None:
    """Abort a connection so that the kernel lets go of it too.

    ``transport.abort()`` drops what the loop holds, but the kernel still keeps
    the socket's send buffer (megabytes, autotuned) and trickles it to a peer
    that reads slowly before the FIN: a slow consumer cut off would hold that
    memory and its descriptor for as long as it likes. With a zero linger the
    close sends a reset and frees both at once, as the peer is being dropped anyway.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:  # already closed, or not a TCP socket: a plain abort is all there is
            pass
    transport.abort()
