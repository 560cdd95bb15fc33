"""Sans-I/O STOMP codec: frames, incremental parser, serializer, typed errors."""

from .errors import (
    BodyNotAllowed,
    FrameTooLarge,
    HeaderTooLong,
    InvalidEscape,
    LimitExceeded,
    MalformedFrame,
    ProtocolError,
    TooManyHeaders,
    UnknownCommand,
)
from .frame import ALL_COMMANDS, BODY_COMMANDS, CLIENT_COMMANDS, SERVER_COMMANDS, VERSIONS, Frame
from .parser import FrameParser
from .serializer import encode_headers, serialize

__all__ = [
    "ALL_COMMANDS",
    "BODY_COMMANDS",
    "CLIENT_COMMANDS",
    "SERVER_COMMANDS",
    "VERSIONS",
    "BodyNotAllowed",
    "Frame",
    "FrameParser",
    "FrameTooLarge",
    "HeaderTooLong",
    "InvalidEscape",
    "LimitExceeded",
    "MalformedFrame",
    "ProtocolError",
    "TooManyHeaders",
    "UnknownCommand",
    "encode_headers",
    "serialize",
]
