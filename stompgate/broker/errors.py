"""The session's refusal: a frame it will not take becomes one ERROR and a close."""

from __future__ import annotations

from ..stomp import Frame
from .closes import PROTOCOL


class StompSessionError(Exception):
    """A frame the session refuses; becomes ERROR + close (``cause``: the close reason, broker/closes.py)."""

    def __init__(
        self, message: str, detail: str = "", headers: dict[str, str] | None = None, *, cause: str = PROTOCOL
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers or {}
        self.cause = cause


def required(frame: Frame, name: str) -> str:
    """The value of a header the frame must have."""
    value = frame.headers.get(name)
    if value is None:
        raise StompSessionError(f"{frame.command} frame has no {name} header")
    return value
