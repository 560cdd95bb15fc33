"""A lean Redis connection for the bus's two hot paths: the outbox and pub/sub.

redis-py spends about 20 us of Python per command on a pipeline (packing each
argument, a timeout context and a retry wrapper per reply) and about as much
per pub/sub message (one coroutine and ``asyncio.timeout`` per read). Under
load that was 40 % of a node (docs/benchmarks.md). Here commands are packed by
hiredis in C and written as one block per batch; replies are parsed by a
hiredis reader fed straight from ``data_received``, so one socket read yields
every message it holds, without a coroutine per message. redis-py keeps
everything that is not hot (scripts, heartbeat, queries, Redis Cluster routing).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis

from .address import Address

log = logging.getLogger(__name__)


def pack(command: tuple[Any, ...]) -> bytes:
    """One command in RESP, packed by hiredis in C (its stub types the tuple too narrowly)."""
    return cast(bytes, hiredis.pack_command(command))


ReplyError = hiredis.ReplyError


class RespConnectionError(ConnectionError):
    """The connection could not be made, or was lost."""


class RespConnection(asyncio.Protocol):
    """One connection. ``request`` pipelines commands and returns their replies in
    order; on a subscribed connection every reply goes to ``on_push`` instead.

    ``closed`` resolves (with the error, if any) when the connection is gone;
    requests still waiting then fail with :class:`RespConnectionError`.
    """

    def __init__(self, on_push: Callable[[Any], None] | None = None) -> None:
        self.on_push = on_push
        self._reader = hiredis.Reader(replyError=ReplyError)
        self._transport: asyncio.Transport | None = None
        # Each waiting request: [replies still expected, replies so far, future].
        self._waiting: deque[list[Any]] = deque()
        self.closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(
        cls, address: Address, on_push: Callable[[Any], None] | None = None, timeout: float = 3.0
    ) -> RespConnection:
        """Connect, authenticate and select the database; raises RespConnectionError."""
        loop = asyncio.get_running_loop()
        conn = cls()
        try:
            async with asyncio.timeout(timeout):
                if address.path is not None:
                    await loop.create_unix_connection(lambda: conn, address.path)
                else:
                    server_hostname = address.host if address.tls else None
                    await loop.create_connection(
                        lambda: conn,
                        address.host,
                        address.port,
                        ssl=address.tls_context(),
                        server_hostname=server_hostname,
                    )
                hello = []
                if address.password is not None:
                    auth = (address.username, address.password) if address.username else (address.password,)
                    hello.append(pack(("AUTH", *auth)))
                if address.db:
                    hello.append(pack(("SELECT", address.db)))
                if hello:
                    for reply in await conn.request(b"".join(hello), len(hello)):
                        if isinstance(reply, ReplyError):
                            raise RespConnectionError(f"redis refused the connection: {reply}")
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            conn.close()
            where = address.path or f"{address.host}:{address.port}"
            raise RespConnectionError(f"cannot connect to redis at {where}: {exc or 'timed out'}") from None
        except BaseException:
            conn.close()
            raise
        conn.on_push = on_push
        return conn

    # ------------------------------------------------------------ sending

    def request(self, data: bytes, replies: int) -> asyncio.Future[list[Any]]:
        """Write packed commands; the future gets their ``replies`` replies (errors
        as :class:`ReplyError` values, for the caller to judge one by one)."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if self.closed.done() or self._transport is None:
            future.set_exception(RespConnectionError("redis connection closed"))
            return future
        self._waiting.append([replies, [], future])
        self._transport.write(data)
        return future

    def send(self, data: bytes) -> None:
        """Write packed commands whose answers come as pushes (SUBSCRIBE and friends)."""
        if self._transport is not None and not self.closed.done():
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._lost(None)

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                self._reply(reply)
        except hiredis.ProtocolError as exc:
            log.warning("redis sent what is not RESP: %s; closing the connection", exc)
            self._transport.close()  # type: ignore[union-attr]
            self._lost(RespConnectionError(f"protocol error: {exc}"))

    def _reply(self, reply: Any) -> None:
        waiting = self._waiting
        if waiting:
            head = waiting[0]
            head[1].append(reply)
            head[0] -= 1
            if head[0] == 0:
                waiting.popleft()
                if not head[2].done():
                    head[2].set_result(head[1])
        elif self.on_push is not None:
            try:
                self.on_push(reply)
            except Exception:  # one bad message must not end the connection
                log.exception("handling a message from redis failed")
        else:
            log.warning("unexpected reply from redis: %r", reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(
            RespConnectionError(f"redis connection lost: {exc}")
            if exc
            else RespConnectionError("redis closed the connection")
        )

    def _lost(self, exc: BaseException | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        error = exc or RespConnectionError("redis connection closed")
        while self._waiting:
            future = self._waiting.popleft()[2]
            if not future.done():
                future.set_exception(error)
