"""Log lines an attacker cannot forge, a log a flood cannot fill, and lines no level hides.

User names, destinations, header values, SockJS session ids and remote
addresses reach log lines in many modules. Rather than trusting every call
site to quote them, the formatter installed by ``stompgate serve`` escapes
control characters in the formatted line, so one record is always one line:
a newline in a user's text cannot start a forged record, an ESC cannot
rewrite a terminal, a lone surrogate cannot make the handler fail.
Tracebacks keep their own lines; the messages of their exceptions are escaped too.

Stdlib only: ``broker/`` (sans-I/O) uses :class:`RateLimitedLog` too.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

# C0 controls (tab and newline included), DEL, C1 controls, U+2028/U+2029 (line
# breaks to many readers and to str.splitlines) and UTF-16 surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Within a traceback, newlines are its structure: everything else above is escaped.
_UNSAFE_IN_TRACEBACK = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` on one line: control characters and surrogates as Python-style escapes."""
    return _UNSAFE.sub(_escape_char, text) if _UNSAFE.search(text) else text


class SafeFormatter(logging.Formatter):
    """A Formatter whose every record is one line of printable text (plus its traceback)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        """The traceback's own lines as they are; an exception's message (user text, often) on one line."""
        value = ei[1]
        if not isinstance(value, BaseException):
            return super().formatException(ei)
        exc = traceback.TracebackException(type(value), value, ei[2], compact=True)
        messages = set(_messages(exc))
        out = []
        for chunk in exc.format():
            if chunk in messages:
                out.append(escape_controls(chunk.removesuffix("\n")) + "\n")
            else:
                out.append(_UNSAFE_IN_TRACEBACK.sub(_escape_char, chunk))
        return "".join(out).removesuffix("\n")

    def formatStack(self, stack_info: str) -> str:
        return _UNSAFE_IN_TRACEBACK.sub(_escape_char, super().formatStack(stack_info))


def _messages(exc: traceback.TracebackException) -> Iterator[str]:
    """The "Type: message" chunks of an exception and of those chained to it."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield from current.format_exception_only()
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += getattr(current, "exceptions", None) or []


def setup(level: str, fmt: str) -> None:
    """The process's logging: one stderr handler with :class:`SafeFormatter`."""
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(fmt))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def always(logger: logging.Logger, level: int, msg: str, *args: Any) -> None:
    """Log whatever ``logging.level`` is: for what an operator must not miss (dev mode).

    The record skips the logger's level check but goes through its filters and
    handlers as any other, so it is formatted (and escaped) the same way.
    """
    if logger.disabled:
        return
    logger.handle(logger.makeRecord(logger.name, level, "(always)", 0, msg, args, None))


class RateLimitedLog:
    """At most ``burst`` lines per ``interval_s``; the rest are counted and summed up.

    For events a client can cause at will (failed logins): each is worth a
    line, but a flood must not fill the disk or bury the rest of the log. The
    first line past the burst says that lines are being held back; the first
    event after the interval logs how many were, and from how many distinct
    ``key``s (remote addresses, say), before it is logged itself. Nothing is
    scheduled: a flood that stops is summed up by the next event.
    """

    MAX_KEYS = 1000  # distinct keys remembered per interval (bounded memory)

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        level: int = logging.WARNING,
        burst: int = 20,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.level = level
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._start = clock()
        self._logged = 0
        self._held = 0
        self._keys: set[str] = set()

    def log(self, msg: str, *args: Any, key: str = "", extra: dict[str, object] | None = None) -> None:
        now = self._clock()
        if now - self._start >= self.interval_s:
            self._summarize(now)
        if self._logged < self.burst:
            self._logged += 1
            self.logger.log(self.level, msg, *args, extra=extra)
            return
        if self._held == 0:
            self.logger.log(
                self.level,
                "more than %d %s in %g s: the next ones are counted, and summed up later",
                self.burst,
                self.what,
                self.interval_s,
            )
        self._held += 1
        if len(self._keys) < self.MAX_KEYS:
            self._keys.add(key)

    def _summarize(self, now: float) -> None:
        if self._held:
            distinct = len(self._keys)
            self.logger.log(
                self.level,
                "and %d more %s not logged in the last %.3g s (from %s%d distinct sources)",
                self._held,
                self.what,
                now - self._start,
                "at least " if distinct >= self.MAX_KEYS else "",
                distinct,
            )
        self._start = now
        self._logged = 0
        self._held = 0
        self._keys = set()
