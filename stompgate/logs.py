"""Log lines an attacker cannot forge, a log a flood cannot fill, and lines no level hides.

User names, destinations, header values, SockJS session ids and remote
addresses reach log lines in many modules. Rather than trusting every call
site to quote them, the formatter installed by ``stompgate serve`` escapes
control characters in the formatted line, so one record is always one line:
a newline in a user's text cannot start a forged record, an ESC cannot
rewrite a terminal, a lone surrogate cannot make the handler fail.
Tracebacks keep their own lines; the messages of their exceptions are escaped too.

``logging.format: json`` swaps it for :class:`JsonFormatter`: one JSON object per
line, with the node id and the structured fields call sites pass as ``extra``
(docs/logging.md). There, JSON's escaping keeps a record on one line.

Stdlib and orjson only: ``broker/`` (sans-I/O) uses :class:`RateLimitedLog` too.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, Literal

import orjson

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


# The structured fields a record may carry (``extra=``), in the order a JSON line shows them:
# sessions' and operations' events, then an access line's own (docs/logging.md).
FIELDS = (
    "event", "session", "user", "remote", "transport", "reason",
    "method", "path", "status", "bytes", "duration_ms", "agent",
)  # fmt: skip
# What JSON leaves raw but a terminal or a line reader may act on: C1 controls and
# U+2028/U+2029, as they appear in orjson's UTF-8 output (only ever inside strings).
_RAW_IN_JSON = re.compile(b"\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _json_escape(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode("utf-8"))


def _plain(value: Any) -> Any:
    """``value`` as orjson can write it: text without lone surrogates (escaped as
    text, as the text format shows them), anything unusual as its str()."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else str(value)
    return _SURROGATES.sub(_escape_char, text) if _SURROGATES.search(text) else text


def _iso_utc(record: logging.LogRecord) -> str:
    """The record's time in ISO 8601, UTC, to the millisecond: 2026-12-01T16:17:02.123Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record and line: ts (ISO 8601, UTC), level, logger, msg, node,
    the :data:`FIELDS` present, and ``exception`` / ``stack`` text when there is any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso_utc(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "node": getattr(record, "node", None),
        }
        fields = record.__dict__
        for key in FIELDS:
            value = fields.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:  # not cached on the record: a text handler escapes its own copy
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        try:
            line = orjson.dumps(out)
        except TypeError:  # a lone surrogate (a header's undecodable byte), a type orjson does not know
            line = orjson.dumps({key: _plain(value) for key, value in out.items()})
        return _RAW_IN_JSON.sub(_json_escape, line).decode("utf-8")


class NodeStamp(logging.Filter):
    """Stamps each record with this process's node id (``record.node``), for the JSON lines."""

    def __init__(self) -> None:
        super().__init__()
        self.node: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "node", None) is None:
            record.node = self.node
        return True


_stamp = NodeStamp()


def set_node(node_id: str | None) -> None:
    """The node id this process's records carry from now on (a worker's own, once forked)."""
    _stamp.node = node_id


def setup(level: str, fmt: str, style: Literal["text", "json"] = "text", node: str | None = None) -> None:
    """The process's logging: one stderr handler, :class:`SafeFormatter` with ``fmt`` or
    :class:`JsonFormatter`, its records stamped with ``node``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if style == "json" else SafeFormatter(fmt))
    handler.addFilter(_stamp)
    set_node(node)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def label_worker(index: int, node_id: str, fmt: str) -> None:
    """In worker process ``index``: text lines name the worker, JSON lines carry its node id."""
    set_node(node_id)
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, SafeFormatter):
            handler.setFormatter(SafeFormatter(fmt.replace("%(name)s", f"w{index} %(name)s")))


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
