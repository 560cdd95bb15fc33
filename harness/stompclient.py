"""A small STOMP-over-WebSocket client for tests and benchmarks, built on our codec and ``websockets``.

Third-party clients (stomp.py, @stomp/stompjs, stompjs 2.3.3) cover real-world
behaviour elsewhere; this one exists to send exactly the bytes a test wants,
including malformed ones, and to read frames precisely.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import websockets
from websockets.typing import Subprotocol

from stompgate.stomp import ALL_COMMANDS, Frame, FrameParser, serialize


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class WsStomp:
    # Every client opened, so a fixture can close them while the test's loop still runs
    # (a client left open does not answer the node's closing handshake at shutdown).
    opened: list[WsStomp] = []

    def __init__(self, ws: Any, version: str = "1.2") -> None:
        WsStomp.opened.append(self)
        self.ws = ws
        self.version = version
        self.parser = FrameParser(commands=ALL_COMMANDS, version=version, max_frame_size=64 * 1024 * 1024)
        self.raw: list[str | bytes] = []  # every WebSocket message received, in order

    @classmethod
    async def open(cls, url: str, subprotocols: list[str] | None = None, **kw: Any) -> WsStomp:
        offered = [Subprotocol(p) for p in subprotocols or ["v12.stomp", "v11.stomp", "v10.stomp"]]
        ws = await websockets.connect(url, subprotocols=offered, max_size=None, **kw)
        return cls(ws)

    @classmethod
    async def connect(
        cls,
        url: str,
        login: str | None = "alice",
        version: str = "1.2",
        heart_beat: str = "0,0",
        **headers: str,
    ) -> WsStomp:
        client = await cls.open(url)
        h = {"accept-version": version, "heart-beat": heart_beat, **headers}
        if login is not None:
            h["login"] = login
        await client.send(Frame("CONNECT", h))
        frame = await client.recv()
        assert frame.command == "CONNECTED", frame
        client.version = frame.headers["version"]
        client.parser.version = client.version
        return client

    async def send(self, frame: Frame) -> None:
        await self.ws.send(serialize(frame, self.version))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float = 5.0) -> Frame:
        """Next frame (heart-beat EOLs skipped); raises Closed when the socket closes."""
        while True:
            frame = self.parser.next_frame()
            if frame is not None:
                return frame
            try:
                data = await asyncio.wait_for(self.ws.recv(), timeout)
            except websockets.ConnectionClosed as exc:
                raise Closed(
                    exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else ""
                ) from None
            self.raw.append(data)
            self.parser.feed(data.encode() if isinstance(data, str) else data)

    async def subscribe(self, destination: str, sub_id: str = "0", **headers: str) -> None:
        await self.send(
            Frame(
                "SUBSCRIBE",
                {"id": sub_id, "destination": destination, "receipt": f"sub-{sub_id}", **headers},
            )
        )
        receipt = await self.recv()
        assert receipt.command == "RECEIPT" and receipt.headers["receipt-id"] == f"sub-{sub_id}", receipt

    async def publish(
        self, destination: str, body: bytes | str = b"", receipt: bool = True, **headers: str
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        h = {"destination": destination, **headers}
        if receipt:
            h["receipt"] = "send"
        await self.send(Frame("SEND", h, data))
        if receipt:
            frame = await self.recv()
            assert frame.command == "RECEIPT", frame

    async def expect_closed(self, timeout: float = 5.0) -> Closed:
        try:
            frame = await self.recv(timeout)
        except Closed as exc:
            return exc
        raise AssertionError(f"expected the connection to close, got {frame}")

    async def close(self) -> None:
        await self.ws.close()

    @classmethod
    async def close_all(cls) -> None:
        clients, cls.opened = cls.opened, []
        await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)


def stuck_subscriber(tcp_port: int, destination: str, login: str = "stuck") -> socket.socket:
    """A STOMP-over-TCP subscriber to ``destination`` that then reads nothing more, with a
    4 KB receive buffer: a slow consumer, once the node writes to it faster than that."""
    stuck = socket.create_connection(("127.0.0.1", tcp_port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(
        serialize(Frame("CONNECT", {"accept-version": "1.2", "login": login, "heart-beat": "0,0"}))
        + serialize(Frame("SUBSCRIBE", {"id": "1", "destination": destination, "receipt": "r"}))
    )
    stuck.settimeout(5)
    got = b""
    while b"receipt-id:r" not in got:
        data = stuck.recv(4096)
        if not data:
            raise Closed(None, f"the node closed the subscriber: {got!r}")
        got += data
    return stuck
