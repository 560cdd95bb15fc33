"""A message on its way to subscribers, encoded once per protocol version."""

from __future__ import annotations

from ..stomp.headers import escape
from ..stomp.serializer import encode_headers

OCTET_STREAM = "application/octet-stream"


class Message:
    """Destination, user headers and body of one published message.

    ``user`` is set for user destinations (``/user/{user}/queue/x`` has
    ``destination="/queue/x"``). ``shown`` is the destination subscribers see.
    The part of the MESSAGE frame shared by every subscriber is built once per
    version, so a fan-out to N sessions costs N joins, not N encodings.
    """

    __slots__ = ("destination", "headers", "body", "user", "shown", "_binary", "_tails")

    def __init__(
        self,
        destination: str,
        headers: dict[str, str],
        body: bytes,
        *,
        user: str | None = None,
        shown: str | None = None,
    ) -> None:
        self.destination = destination
        self.headers = headers
        self.body = body
        self.user = user
        self.shown = shown if shown is not None else destination
        self._binary: bool | None = None
        self._tails: dict[str | None, bytes] = {}

    @property
    def binary(self) -> bool:
        """Whether the frame must travel as a binary WebSocket message.

        Declared octet-streams do; so does any body that is not valid UTF-8,
        since a text WebSocket message must be.
        """
        binary = self._binary
        if binary is None:
            ctype = self.headers.get("content-type", "")
            if ctype.startswith(OCTET_STREAM):
                binary = True
            else:
                try:
                    self.body.decode("utf-8")
                    binary = False
                except UnicodeDecodeError:
                    binary = True
            self._binary = binary
        return binary

    def tail(self, version: str | None) -> bytes:
        """Everything after the per-subscriber headers: shared headers, body, NUL."""
        tail = self._tails.get(version)
        if tail is None:
            tail = self._tails[version] = self._encode_tail(version, self.body)
        return tail

    def text_tail(self, version: str | None) -> bytes:
        """:meth:`tail` for a text-only transport: bytes that are not UTF-8 become U+FFFD."""
        key = ("text", version)
        tail = self._tails.get(key)  # type: ignore[call-overload]
        if tail is None:
            body = self.body.decode("utf-8", "replace").encode("utf-8")
            tail = self._tails[key] = self._encode_tail(version, body)  # type: ignore[index]
        return tail

    def _encode_tail(self, version: str | None, body: bytes) -> bytes:
        return b"".join(
            (
                b"destination:",
                escape(self.shown, version).encode("utf-8"),
                b"\n",
                encode_headers(self.headers, version),
                b"content-length:%d\n\n" % len(body),
                body,
                b"\0",
            )
        )
