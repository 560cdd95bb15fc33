"""One SockJS session: the queue of outgoing messages and the receiving request that drains it.

A session outlives the HTTP requests that carry it. Messages the application
sends wait in the queue until a *receiver* (a polling or streaming response, or
the WebSocket) takes them. At most one receiver is attached at a time; a second
one gets ``c[2010,...]``. When no receiver is attached for the disconnect delay,
the session is over. After a close, the close frame is served to whoever asks
until the session is forgotten, one disconnect delay later.

The application sees a :class:`Connection` (send, close, disable_heartbeat) and
gives a :class:`Handler` (on_message, on_close). Nothing here knows what the
messages mean.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..wsio import ReadGate
from .frames import HEARTBEAT, OPEN, close_frame, encode_messages

log = logging.getLogger(__name__)

ANOTHER_CONNECTION = close_frame(2010, "Another connection still open")

# Messages queued within one loop turn travel together, in frames of about this
# many characters at most: fewer writes under load, without one huge frame the
# browser must parse at once (or a poll that grows without bound).
FRAME_CHARS = 64 * 1024


class Receiver(Protocol):
    """The transport end of a session: one HTTP response or one WebSocket."""

    def send_frame(self, frame: str) -> bool:
        """Write one frame; True when this receiver takes no more (a poll answered, a stream full)."""

    def end(self) -> None:
        """Finish the response (or close the WebSocket) once what was written is flushed."""

    def buffered(self) -> int:
        """Bytes written but not yet handed to the kernel."""

    def abort(self) -> None:
        """Drop what is unwritten and close the connection now."""


class Handler(Protocol):
    """What the application gives for each session."""

    def on_message(self, text: str) -> None: ...

    def on_close(self) -> None:
        """The session is over, whoever ended it; called once."""


@dataclass(slots=True)
class RequestInfo:
    """The request that opened the session, for authentication and logs."""

    # "websocket", "xhr-streaming", "xhr-polling", "eventsource", "htmlfile", "jsonp-polling",
    # "raw-websocket"
    transport: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    query: dict[str, str] = field(default_factory=dict)
    remote: str = ""


class State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class Session:
    __slots__ = (
        "id",
        "info",
        "state",
        "handler",
        "receiver",
        "_queue",
        "_queued",
        "_factory",
        "_loop",
        "_heartbeat_s",
        "_delay_s",
        "_heartbeats",
        "_last_write",
        "_hb_timer",
        "_gc_timer",
        "_flush_handle",
        "_close_frame",
        "_on_gone",
        "_input",
    )

    def __init__(
        self,
        session_id: str,
        info: RequestInfo,
        factory: Callable[[Connection], Handler],
        loop: asyncio.AbstractEventLoop,
        *,
        heartbeat_s: float,
        disconnect_delay_s: float,
        on_gone: Callable[[Session], None] | None = None,
    ) -> None:
        self.id = session_id
        self.info = info
        self.state = State.NEW
        self.handler: Handler | None = None
        self.receiver: Receiver | None = None
        self._queue: list[str] = []
        self._queued = 0  # characters waiting in _queue
        self._factory = factory
        self._loop = loop
        self._heartbeat_s = heartbeat_s
        self._delay_s = disconnect_delay_s
        self._heartbeats = heartbeat_s > 0
        self._last_write = 0.0
        self._hb_timer: asyncio.TimerHandle | None = None
        self._gc_timer: asyncio.TimerHandle | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._close_frame = ""
        self._on_gone = on_gone
        # Set while the application takes messages; senders wait on it (flow control).
        self._input = ReadGate()

    # ------------------------------------------------------------ receivers

    def attach(self, receiver: Receiver) -> None:
        """A receiving request arrived: open the session, or drain the queue into it."""
        if self.state is State.CLOSED:
            if self.receiver is None:  # what was sent before the close (an ERROR), then the close frame
                self._cancel_gc()
                self.receiver = receiver
                self._flush()
            else:
                receiver.send_frame(self._close_frame)
                receiver.end()
            return
        if self.receiver is not None:
            receiver.send_frame(ANOTHER_CONNECTION)
            receiver.end()
            return
        self._cancel_gc()
        self._last_write = self._loop.time()
        self.receiver = receiver
        if self.state is State.NEW:
            self.state = State.OPEN
            if receiver.send_frame(OPEN):
                self._detach()  # a poll: answered with the open frame alone
            self._schedule_heartbeat()
            try:
                self.handler = self._factory(Connection(self))
            except Exception:
                log.exception("sockjs session %s: the application refused the session", self.id)
                self.close(3000, "Internal error")
                return
        self._flush()

    def _detach(self) -> None:
        receiver = self.receiver
        self.receiver = None
        if receiver is not None:
            receiver.end()
        self._start_gc()

    def receiver_lost(self, receiver: Receiver) -> None:
        """The receiving request's connection broke before it was answered."""
        if self.receiver is not receiver:
            return
        self.receiver = None
        self._close(1002, "Connection interrupted")
        self._start_gc()

    # ------------------------------------------------------------- outgoing

    def send(self, text: str) -> None:
        if self.state is not State.OPEN:
            return
        self._queue.append(text)
        self._queued += len(text)
        if self.receiver is not None and self._flush_handle is None:
            # Coalesce what is sent within one loop iteration into one frame.
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        receiver = self.receiver
        if receiver is None:
            return
        queue = self._queue
        if queue:
            self._last_write = self._loop.time()
            start, count = 0, len(queue)
            while start < count:
                end, size = start + 1, len(queue[start])  # at least one message per frame
                while end < count and size + len(queue[end]) <= FRAME_CHARS:
                    size += len(queue[end])
                    end += 1
                frame = encode_messages(queue[start:end])
                start = end
                self._queued -= size
                if receiver.send_frame(frame):  # a poll takes one frame; the rest waits for the next
                    self._queue = queue[start:]
                    self._detach()
                    return
            self._queue = []
            self._queued = 0
        if self.state is State.CLOSED:
            receiver.send_frame(self._close_frame)
            self._detach()

    def buffered(self) -> int:
        """Characters queued plus bytes the current receiver has not flushed."""
        receiver = self.receiver
        return self._queued + (receiver.buffered() if receiver is not None else 0)

    # ---------------------------------------------------------------- close

    def close(self, code: int, reason: str) -> None:
        """Closed by the application: queued messages first, then the close frame."""
        if self.state is State.CLOSED:
            return
        self._close(code, reason)
        if self.receiver is not None:
            self._flush()
        else:
            self._start_gc()

    def _close(self, code: int, reason: str) -> None:
        if self.state is State.CLOSED:
            return
        opened = self.state is State.OPEN
        self.state = State.CLOSED
        self._input.resume()  # nobody waits on a closed session
        self._close_frame = close_frame(code, reason)
        if self._hb_timer is not None:
            self._hb_timer.cancel()
            self._hb_timer = None
        handler = self.handler
        if opened and handler is not None:
            try:
                handler.on_close()
            except Exception:
                log.exception("sockjs session %s: on_close failed", self.id)

    def on_message(self, text: str) -> None:
        handler = self.handler
        if self.state is State.OPEN and handler is not None:
            handler.on_message(text)

    def abort(self) -> None:
        self._queue = []
        self._queued = 0
        receiver = self.receiver
        self._close(1002, "Connection aborted")
        if receiver is not None:
            receiver.abort()
            self.receiver = None
            self._start_gc()

    # ---------------------------------------------------------- flow control

    def pause_reading(self) -> None:
        self._input.pause()

    def resume_reading(self) -> None:
        self._input.resume()

    async def input_ready(self) -> None:
        """Wait while the application takes no input; a closed session never waits."""
        if not self._input.is_open and self.state is State.OPEN:
            await self._input.wait()

    # --------------------------------------------------------------- timers

    def disable_heartbeat(self) -> None:
        self._heartbeats = False
        if self._hb_timer is not None:
            self._hb_timer.cancel()
            self._hb_timer = None

    def _schedule_heartbeat(self) -> None:
        if self._heartbeats and self.state is State.OPEN:
            delay = max(0.0, self._last_write + self._heartbeat_s - self._loop.time())
            self._hb_timer = self._loop.call_later(delay, self._heartbeat_tick)

    def _heartbeat_tick(self) -> None:
        self._hb_timer = None
        if not self._heartbeats or self.state is not State.OPEN:
            return
        receiver = self.receiver
        if receiver is not None and self._loop.time() >= self._last_write + self._heartbeat_s - 0.001:
            self._last_write = self._loop.time()
            if receiver.send_frame(HEARTBEAT):
                self._detach()
        elif receiver is None:
            self._last_write = self._loop.time()  # the next receiver restarts the clock anyway
        self._schedule_heartbeat()

    def _start_gc(self) -> None:
        self._cancel_gc()
        self._gc_timer = self._loop.call_later(self._delay_s, self._gc)

    def _cancel_gc(self) -> None:
        if self._gc_timer is not None:
            self._gc_timer.cancel()
            self._gc_timer = None

    def _gc(self) -> None:
        """No receiver for the disconnect delay: the client is gone, or the close frame was served."""
        self._gc_timer = None
        if self.receiver is not None:
            return
        self._close(1002, "Connection interrupted")  # a no-op when already closed
        self.forget()

    def forget(self) -> None:
        self._cancel_gc()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._on_gone is not None:
            self._on_gone(self)
            self._on_gone = None


class Connection:
    """The application's handle on one SockJS session (like a WebSocket: send, close)."""

    __slots__ = ("_session",)

    def __init__(self, session: Session) -> None:
        self._session = session

    @property
    def info(self) -> RequestInfo:
        return self._session.info

    @property
    def transport(self) -> str:
        return self._session.info.transport

    @property
    def closed(self) -> bool:
        return self._session.state is State.CLOSED

    def send(self, text: str) -> None:
        """Queue one message; messages sent within one loop iteration travel in one frame."""
        self._session.send(text)

    def close(self, code: int = 3000, reason: str = "Go away!") -> None:
        self._session.close(code, reason)

    def disable_heartbeat(self) -> None:
        """Stop the ``h`` frames, e.g. because the application protocol has its own heart-beats."""
        self._session.disable_heartbeat()

    def buffered(self) -> int:
        """Outgoing data not yet handed to the kernel: a measure of how slow the client reads."""
        return self._session.buffered()

    def abort(self) -> None:
        """Close at once, dropping what was queued and not yet sent (a client that does not read)."""
        self._session.abort()

    def pause_reading(self) -> None:
        """Hold further client messages (the application is busy, or over a limit)."""
        self._session.pause_reading()

    def resume_reading(self) -> None:
        self._session.resume_reading()
