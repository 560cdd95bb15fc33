"""Typed protocol errors raised by the codec.

Every malformed input maps to one of these, so callers can answer with an ERROR
frame and close, without ever catching a bare ``Exception``.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Input that violates the STOMP protocol; the connection cannot continue."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedFrame(ProtocolError):
    """Bytes that do not form a frame: bad command line, header line or terminator."""


class UnknownCommand(ProtocolError):
    """A command this side of the connection does not accept."""


class InvalidEscape(ProtocolError):
    """An undefined escape sequence in a header (fatal by STOMP 1.1 and 1.2)."""


class BodyNotAllowed(ProtocolError):
    """A body on a command that must not carry one."""


class LimitExceeded(ProtocolError):
    """A configured limit was passed; subclasses say which."""


class FrameTooLarge(LimitExceeded):
    pass


class TooManyHeaders(LimitExceeded):
    pass


class HeaderTooLong(LimitExceeded):
    pass
