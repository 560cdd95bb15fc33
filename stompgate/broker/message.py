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

    __slots__ = ("destination", "headers", "body", "user", "shown", "size", "_binary", "_tails")

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
        # Bytes it stands for in buffers and limits: the frame's size when a client sent it.
        self.size = len(body) + len(destination) + 256
        self._binary: bool | None = None
        self._tails: dict[object, bytes] = {}  # by version, or (version, text, nul) for changed bodies

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

    def tail_for(self, version: str | None, text_only: bool, nul_safe: bool) -> tuple[bytes, bool]:
        """:meth:`tail` and the binary flag for a peer that needs the body changed.

        ``text_only`` (SockJS): bytes that are not UTF-8 become U+FFFD and the frame
        travels as text. ``nul_safe`` (STOMP 1.0/1.1 in a browser, where stompjs 2.x
        splits frames at every NUL whatever content-length says): each NUL
        becomes U+FFFD, so no body can end a frame early and forge another.
        """
        binary = self.binary
        text = text_only and binary
        nul = nul_safe and b"\0" in self.body
        if not (text or nul):
            return self.tail(version), binary
        key = (version, text, nul)
        tail = self._tails.get(key)
        if tail is None:
            body = self.body
            if text:
                body = body.decode("utf-8", "replace").encode("utf-8")
            if nul:
                body = body.replace(b"\0", "\ufffd".encode("utf-8"))
            tail = self._tails[key] = self._encode_tail(version, body)
        return tail, binary and not text_only

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
