"""Per-session rate limits: token buckets for frames and bytes that may go into debt.

A frame is never held back once parsed; when a bucket is empty the session
pauses until it has refilled (policy ``throttle``), or is closed (``close``).
"""

from __future__ import annotations

from .settings import RateLimit


class TokenBuckets:
    """Made only for sessions with a rate limit (``frames_per_s`` or ``bytes_per_s`` not 0)."""

    __slots__ = ("_limits", "_frames", "_bytes", "_time")

    def __init__(self, limits: RateLimit, now: float) -> None:
        self._limits = limits
        self._frames = limits.frames_per_s * limits.burst_s
        self._bytes = limits.bytes_per_s * limits.burst_s
        self._time = now

    def charge(self, now: float, size: int) -> float:
        """Take one frame of ``size`` bytes; the seconds until the buckets are out of debt (0: none)."""
        limits = self._limits
        elapsed = now - self._time
        self._time = now
        wait = 0.0
        rate = limits.frames_per_s
        if rate:
            tokens = min(self._frames + elapsed * rate, rate * limits.burst_s) - 1
            self._frames = tokens
            if tokens < 0:
                wait = -tokens / rate
        rate = limits.bytes_per_s
        if rate:
            tokens = min(self._bytes + elapsed * rate, rate * limits.burst_s) - size
            self._bytes = tokens
            if tokens < 0 and -tokens / rate > wait:
                wait = -tokens / rate
        return wait
