"""A tiny raw HTTP/1.x client for the SockJS protocol tests.

The SockJS transports need things a regular HTTP client hides: the exact bytes of
a streaming body as they arrive, requests that are sent but never read, aborted
connections, HTTP/1.0 requests and exact control over request headers. Every
network wait here is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

TIMEOUT = 5.0


class BodyEnded(AssertionError):
    """The response body ended before the expected data arrived."""


@dataclass
class Head:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        """First value of a header (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key.lower() == name]

    def has(self, name: str) -> bool:
        return self.get(name) is not None


@dataclass
class Response(Head):
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class Connection:
    """One TCP connection; requests are written by hand, bodies read incrementally."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int):
        self.reader = reader
        self.writer = writer
        self.host = host
        self.port = port
        self.head: Head | None = None
        self._buf = bytearray()  # decoded body bytes not consumed yet
        self._mode = "none"  # "chunked", "length", "close" or "none"
        self._left = 0  # bytes left in the current chunk / content-length body
        self._ended = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
        return cls(reader, writer, host, port)

    # -- writing ---------------------------------------------------------------

    async def send(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        body: bytes | str | None = None,
        version: str = "1.1",
    ) -> None:
        if isinstance(body, str):
            body = body.encode("utf-8")
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        names = {k.lower() for k, _ in items}
        lines = [f"{method} {path} HTTP/{version}"]
        if "host" not in names:
            lines.append(f"Host: {self.host}:{self.port}")
        lines += [f"{k}: {v}" for k, v in items]
        if body is not None or method in ("POST", "PUT"):
            if "content-length" not in names:
                lines.append(f"Content-Length: {len(body or b'')}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        self.head = None
        self._buf.clear()
        self._ended = False
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), TIMEOUT)

    async def request(self, method: str, path: str, headers=None, body=None, version: str = "1.1",
                      timeout: float = TIMEOUT) -> Head:
        await self.send(method, path, headers, body, version)
        return await self.read_head(method, timeout)

    # -- reading ---------------------------------------------------------------

    async def read_head(self, method: str = "GET", timeout: float = TIMEOUT) -> Head:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = raw.decode("latin-1").split("\r\n")
        proto, status, *reason = lines[0].split(" ", 2)
        assert proto.startswith("HTTP/"), f"bad status line {lines[0]!r}"
        head = Head(proto[5:], int(status), reason[0] if reason else "")
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                head.headers.append((key.strip(), value.strip()))
        self.head = head
        te = (head.get("transfer-encoding") or "").lower()
        if method == "HEAD" or head.status in (204, 304) or 100 <= head.status < 200:
            self._mode, self._ended = "none", True
        elif "chunked" in te:
            self._mode, self._left = "chunked", 0
        elif head.get("content-length") is not None:
            self._mode, self._left = "length", int(head.get("content-length") or 0)
            self._ended = self._left == 0
        else:
            self._mode = "close"
        return head

    async def _more(self, timeout: float) -> bool:
        """Append more decoded body bytes to the buffer; False once the body has ended."""
        if self._ended:
            return False

        async def step() -> bool:
            if self._mode == "close":
                data = await self.reader.read(65536)
                if not data:
                    self._ended = True
                    return False
                self._buf += data
                return True
            if self._mode == "length":
                data = await self.reader.read(min(self._left, 65536))
                if not data:
                    raise BodyEnded(f"connection closed with {self._left} body bytes missing")
                self._buf += data
                self._left -= len(data)
                self._ended = self._left == 0
                return True
            # chunked
            if self._left == 0:
                line = await self.reader.readuntil(b"\r\n")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await self.reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    self._ended = True
                    return False
                self._left = size
            data = await self.reader.read(self._left)
            if not data:
                raise BodyEnded("connection closed inside a chunk")
            self._buf += data
            self._left -= len(data)
            if self._left == 0:
                assert await self.reader.readexactly(2) == b"\r\n", "chunk not followed by CRLF"
            return True

        try:
            return await asyncio.wait_for(step(), timeout)
        except asyncio.IncompleteReadError as exc:
            raise BodyEnded(f"connection closed mid-body after {bytes(self._buf)!r}") from exc

    async def read_exact(self, n: int, timeout: float = TIMEOUT) -> bytes:
        async def run() -> bytes:
            while len(self._buf) < n:
                if not await self._more(timeout):
                    raise BodyEnded(f"body ended after {bytes(self._buf)!r}, wanted {n} bytes")
            out = bytes(self._buf[:n])
            del self._buf[:n]
            return out

        return await asyncio.wait_for(run(), timeout)

    async def read_until(self, sep: bytes, timeout: float = TIMEOUT) -> bytes:
        """Body bytes up to and including `sep`."""

        async def run() -> bytes:
            while (i := self._buf.find(sep)) < 0:
                if not await self._more(timeout):
                    raise BodyEnded(f"body ended after {bytes(self._buf)!r}, waiting for {sep!r}")
            out = bytes(self._buf[: i + len(sep)])
            del self._buf[: i + len(sep)]
            return out

        return await asyncio.wait_for(run(), timeout)

    async def read_body(self, timeout: float = TIMEOUT) -> bytes:
        """All the rest of the body, until it ends."""

        async def run() -> bytes:
            while await self._more(timeout):
                pass
            out = bytes(self._buf)
            self._buf.clear()
            return out

        return await asyncio.wait_for(run(), timeout)

    async def body_ends(self, timeout: float = TIMEOUT) -> bytes:
        """Wait for the end of the body; returns the bytes that came before it (should be none)."""
        return await self.read_body(timeout)

    async def closed_by_peer(self, timeout: float = TIMEOUT) -> bool:
        """True once the server closes the TCP connection (after the current body)."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except (ConnectionError, asyncio.IncompleteReadError):
            return True
        return data == b""

    def abort(self) -> None:
        """Drop the connection abruptly, like a browser aborting a request."""
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (TimeoutError, Exception):  # noqa: BLE001 - closing is best effort: the peer may be gone
            pass


async def fetch(host: str, port: int, method: str, path: str, headers=None, body=None,
                version: str = "1.1", timeout: float = TIMEOUT) -> Response:
    """One complete request/response on a fresh connection."""
    conn = await Connection.open(host, port)
    try:
        head = await conn.request(method, path, headers, body, version, timeout)
        data = await conn.read_body(timeout)
        return Response(head.version, head.status, head.reason, head.headers, data)
    finally:
        await conn.close()
