"""Frame serializer: the inverse of :class:`~stompgate.stomp.parser.FrameParser`."""

from __future__ import annotations

from .frame import UNESCAPED_COMMANDS, Frame
from .headers import escape


def serialize(frame: Frame, version: str | None = "1.2", *, content_length: bool = True) -> bytes:
    """Encode ``frame`` for a peer speaking ``version``.

    With ``content_length`` a frame with a body gets a ``content-length`` header
    when it has none, so bodies may contain NUL octets.
    """
    hv = None if frame.command in UNESCAPED_COMMANDS else version
    parts = [frame.command]
    for name, value in frame.headers.items():
        parts.append(f"{escape(name, hv)}:{escape(value, hv)}")
    if content_length and frame.body and "content-length" not in frame.headers:
        parts.append(f"content-length:{len(frame.body)}")
    parts.append("\n")
    return "\n".join(parts).encode("utf-8") + frame.body + b"\0"


def encode_headers(headers: dict[str, str], version: str | None) -> bytes:
    """Header lines (each ending in a newline) for pre-encoded frame parts."""
    if not headers:
        return b""
    return "".join(f"{escape(k, version)}:{escape(v, version)}\n" for k, v in headers.items()).encode(
        "utf-8"
    )
