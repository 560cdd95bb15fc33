"""Incremental STOMP frame parser (sans-I/O).

Feed it bytes in any chunking -- a frame split over many WebSocket messages, many
frames packed in one, EOL heart-beats in between -- and pull frames out one at a
time with :meth:`FrameParser.next_frame`. Frames are parsed lazily so the caller
can switch :attr:`FrameParser.version` (and with it header unescaping) between
the CONNECT frame and the frames that follow it in the same chunk.

Any malformed input raises a :class:`~stompgate.stomp.errors.ProtocolError`
subclass, never another exception; after one, the parser refuses further use.
"""

from __future__ import annotations

from .errors import (
    BodyNotAllowed,
    FrameTooLarge,
    HeaderTooLong,
    MalformedFrame,
    ProtocolError,
    TooManyHeaders,
    UnknownCommand,
)
from .frame import BODY_COMMANDS, CLIENT_COMMANDS, UNESCAPED_COMMANDS, Frame
from .headers import unescape

DEFAULT_MAX_FRAME_SIZE = 1024 * 1024
DEFAULT_MAX_HEADERS = 64
DEFAULT_MAX_HEADER_LENGTH = 8192

_EOL = (10, 13)


class FrameParser:
    """Turns a byte stream into :class:`Frame` objects."""

    __slots__ = (
        "version",
        "commands",
        "max_frame_size",
        "max_headers",
        "max_header_length",
        "_buf",
        "_pos",
        "_head",
        "_body_start",
        "_length",
        "_scanned",
        "_head_scanned",
        "_failed",
        "consumed",
    )

    def __init__(
        self,
        *,
        commands: frozenset[str] = CLIENT_COMMANDS,
        version: str | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_header_length: int = DEFAULT_MAX_HEADER_LENGTH,
    ) -> None:
        self.version = version
        self.commands = commands
        self.max_frame_size = max_frame_size
        self.max_headers = max_headers
        self.max_header_length = max_header_length
        self._buf: bytes | bytearray = b""
        self._pos = 0
        # State of a frame whose header block is parsed but whose body is incomplete.
        self._head: Frame | None = None
        self._body_start = 0
        self._length: int | None = None
        self._scanned = 0
        # How far a search for the end of an incomplete header block has looked:
        # the next search starts there, so a header block fed a byte at a time
        # is scanned once, not once per byte.
        self._head_scanned = 0
        self._failed: ProtocolError | None = None
        # Bytes of complete frames returned so far (heart-beat EOLs included).
        self.consumed = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if type(data) is not bytes:
            data = bytes(data)  # never keep (and later grow) a caller's mutable buffer
        if self._pos >= len(self._buf):
            # Nothing pending: parse straight from the caller's bytes, no copy.
            self._buf = data
            self._pos = 0
            self._scanned = 0
            self._head_scanned = 0
            return
        if not isinstance(self._buf, bytearray):
            self._buf = bytearray(self._buf)
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            self._rebase()
        self._buf += data

    def _rebase(self) -> None:
        pos = self._pos
        del self._buf[:pos]  # type: ignore[union-attr]
        self._pos = 0
        self._head_scanned = max(self._head_scanned - pos, 0)
        if self._head is not None:
            self._body_start -= pos
            self._scanned = max(self._scanned - pos, 0)

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or None until more bytes arrive."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._next()
        except ProtocolError as exc:
            self._failed = exc
            raise

    def frames(self) -> list[Frame]:
        """All complete frames now available (convenience for tests and clients)."""
        out = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out

    def _next(self) -> Frame | None:
        buf = self._buf
        if self._head is None:
            pos = self._pos
            end = len(buf)
            while pos < end and buf[pos] in _EOL:  # heart-beats and 1.2 trailing EOLs
                pos += 1
            self.consumed += pos - self._pos
            self._pos = pos
            if pos >= end:
                return None
            if not self._parse_head(buf, pos):
                return None
        return self._parse_body(buf)

    def _parse_head(self, buf: bytes | bytearray, pos: int) -> bool:
        # Every search is bounded: where an earlier call stopped, and no further
        # than this frame's own header block. An unbounded search for "\n\r\n"
        # read the whole buffer once per frame: quadratic for packed frames.
        start = self._head_scanned - 2
        if start < pos:
            start = pos
        nn = buf.find(b"\n\n", start)
        nrn = buf.find(b"\n\r\n", start, nn + 2 if nn >= 0 else len(buf))
        if nrn >= 0:
            nn = nrn
            sep = 3
        else:
            sep = 2
        if nn < 0:
            pending = len(buf) - pos
            if pending > self.max_frame_size:
                raise FrameTooLarge(f"frame larger than {self.max_frame_size} bytes")
            limit = self.max_header_length
            if pending > limit and buf.find(b"\n", pos, pos + limit + 1) < 0:
                raise HeaderTooLong(f"command line longer than {self.max_header_length} bytes")
            self._head_scanned = len(buf)
            return False
        self._head_scanned = 0
        head_end = nn + 1  # keep the newline that ends the last line
        try:
            text = bytes(buf[pos:head_end]).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedFrame("frame headers are not valid UTF-8") from None
        if "\0" in text:
            # stompjs 2.x splits what it receives at every NUL: a NUL in a header
            # value would end the frame there and start a forged one.
            raise MalformedFrame("NUL character in the frame's headers")
        lines = text.split("\n")
        lines.pop()  # empty string after the final newline
        command = lines[0].rstrip("\r")
        if command not in self.commands:
            shown = command if len(command) <= 40 else command[:40] + "..."
            raise UnknownCommand(f"unknown command {shown!r}")
        if len(lines) - 1 > self.max_headers:
            raise TooManyHeaders(f"more than {self.max_headers} headers")
        version = None if command in UNESCAPED_COMMANDS else self.version
        # Most frames have neither CRs nor escapes: skip that work per line then.
        has_cr = "\r" in text
        escaped = version is not None and "\\" in text
        max_len = self.max_header_length
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if has_cr and line.endswith("\r"):
                line = line[:-1]
            if len(line) > max_len:
                raise HeaderTooLong(f"header line longer than {max_len} characters")
            name, colon, value = line.partition(":")
            if not colon:
                raise MalformedFrame(f"header line without ':': {line[:60]!r}")
            if not name:
                raise MalformedFrame("header line with an empty name")
            if escaped:
                name = unescape(name, version)
                value = unescape(value, version)
            if name not in headers:
                headers[name] = value
        length: int | None = None
        raw_length = headers.get("content-length")
        if raw_length is not None:
            stripped = raw_length.strip()
            if not stripped.isdigit() or not stripped.isascii():
                raise MalformedFrame(f"invalid content-length {raw_length[:30]!r}")
            try:
                length = int(stripped)
            except ValueError:  # only possible past int()'s 4300-digit limit
                raise FrameTooLarge(f"frame larger than {self.max_frame_size} bytes") from None
            if length and command not in BODY_COMMANDS:
                raise BodyNotAllowed(f"{command} frame must not have a body")
        body_start = nn + sep
        head_size = body_start - pos
        if length is not None and head_size + length + 1 > self.max_frame_size:
            raise FrameTooLarge(f"frame larger than {self.max_frame_size} bytes")
        self._head = Frame(command, headers)
        self._body_start = body_start
        self._length = length
        self._scanned = body_start
        return True

    def _parse_body(self, buf: bytes | bytearray) -> Frame | None:
        frame = self._head
        assert frame is not None
        start = self._body_start
        length = self._length
        if length is not None:
            end = start + length
            if len(buf) <= end:
                return None
            if buf[end] != 0:
                raise MalformedFrame("frame body longer than its content-length")
        else:
            end = buf.find(b"\0", self._scanned)
            if end < 0:
                self._scanned = len(buf)
                if len(buf) - self._pos > self.max_frame_size:
                    raise FrameTooLarge(f"frame larger than {self.max_frame_size} bytes")
                return None
            if end - self._pos + 1 > self.max_frame_size:
                raise FrameTooLarge(f"frame larger than {self.max_frame_size} bytes")
            if end > start and frame.command not in BODY_COMMANDS:
                raise BodyNotAllowed(f"{frame.command} frame must not have a body")
        if end > start:
            frame.body = bytes(buf[start:end])
        self._head = None
        self.consumed += end + 1 - self._pos
        self._pos = end + 1
        if self._pos >= len(buf):
            self._buf = b""
            self._pos = 0
        return frame
