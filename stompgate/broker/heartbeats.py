"""Heart-beats (STOMP 1.1+): what is negotiated at CONNECT, and the two timers after it.

Outgoing: a flag the session sets on every write, checked every half interval,
so the longest silence is one interval at no per-message clock cost. Incoming:
the time of the last read, so a silent peer is closed exactly interval x margin
after its last byte, and not while the session itself is not reading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .closes import HEARTBEAT
from .errors import StompSessionError
from .ports import CLOSE_POLICY, Scheduler, TimerHandle
from .settings import HeartbeatSettings

if TYPE_CHECKING:
    from .session import Session


def parse_heartbeat(value: str) -> tuple[int, int]:
    """The client's ``heart-beat: cx,cy`` header."""
    parts = value.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        cx, cy = int(parts[0]), int(parts[1])
        if cx < 0 or cy < 0:
            raise ValueError
    except ValueError:
        raise StompSessionError(
            f"invalid heart-beat header {value!r}: expected two non-negative integers"
        ) from None
    return cx, cy


def negotiate(version: str, header: str, settings: HeartbeatSettings) -> tuple[int, int]:
    """(send_ms, receive_ms) for the session, per STOMP 1.2 section "Heart-beating"; 0 is none."""
    if version == "1.0":
        return 0, 0
    cx, cy = parse_heartbeat(header)
    sx, sy = settings.send_ms, settings.receive_ms
    send_ms = 0 if sx == 0 or cy == 0 else max(sx, cy)
    recv_ms = 0 if cx == 0 or sy == 0 else max(cx, sy)
    return send_ms, recv_ms


class Heartbeats:
    """The timers of one connected session; made only when one direction is on."""

    __slots__ = ("_session", "_scheduler", "_send_timer", "_recv_timer", "last_read")

    def __init__(self, session: Session, scheduler: Scheduler) -> None:
        self._session = session
        self._scheduler = scheduler
        self._send_timer: TimerHandle | None = None
        self._recv_timer: TimerHandle | None = None
        self.last_read = 0.0

    def start(self, send_ms: int, recv_ms: int, read_margin: float) -> None:
        if send_ms:
            half = send_ms / 2000
            self._send_timer = self._scheduler.call_later(half, lambda: self._send_tick(half))
        if recv_ms:
            wait = recv_ms * read_margin / 1000
            self.last_read = self._scheduler.time()
            self._recv_timer = self._scheduler.call_later(wait, lambda: self._recv_tick(wait))

    def read(self) -> None:
        """The peer sent something (a frame or an EOL)."""
        if self._recv_timer is not None:
            self.last_read = self._scheduler.time()

    def cancel(self) -> None:
        for timer in (self._send_timer, self._recv_timer):
            if timer is not None:
                timer.cancel()
        self._send_timer = self._recv_timer = None

    def _send_tick(self, half_s: float) -> None:
        """Every half interval: an EOL unless something was written in the last half."""
        session = self._session
        if session.closed:
            return
        if not session.wrote:
            session.out.send(b"\n", False)
        session.wrote = False
        self._send_timer = self._scheduler.call_later(half_s, lambda: self._send_tick(half_s))

    def _recv_tick(self, wait_s: float) -> None:
        """Close a client that sent nothing, not even a heart-beat, for ``wait_s``."""
        session = self._session
        if session.closed:
            return
        now = self._scheduler.time()
        if not session.reading:
            self.last_read = now  # not reading it is not the client's silence
        silent = now - self.last_read
        if silent >= wait_s:
            session.fail(
                f"no data or heart-beat from the client for {wait_s:g} s", code=CLOSE_POLICY, cause=HEARTBEAT
            )
            return
        self._recv_timer = self._scheduler.call_later(wait_s - silent, lambda: self._recv_tick(wait_s))
