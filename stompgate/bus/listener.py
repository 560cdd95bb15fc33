"""One pub/sub connection to Redis, kept up, and the channels it should hold.

Its own module so that what it does with the bus is a short, named interface
(:class:`ListenerEvents`) rather than the bus's internals: it reports messages,
confirmed (re)subscriptions and the connection's ups and downs, and the bus
decides what they mean.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..broker.message import Message
from .redis_outbox import CONNECTION_ERRORS
from .resp import RespConnection, RespConnectionError, pack

log = logging.getLogger(__name__)

Replay = Callable[[list[Message]], None]
# Opens a connection whose pushes (messages, confirmations) go to the given callback.
Connect = Callable[[Callable[[Any], None]], Awaitable[RespConnection]]


class ListenerEvents(Protocol):
    """What a listener tells its owner, and the one thing it asks."""

    @property
    def reachable(self) -> bool:
        """Redis takes commands: a listener still reconnecting is worth a short wait."""
        ...

    def on_message(self, channel: bytes, data: bytes) -> None:
        """A message came in (as it was parsed)."""
        ...

    def on_subscribed(self, channel: str) -> Replay | None:
        """A user channel's (re)subscription was confirmed on a new connection: from here
        on its live messages wait for the ones stored meanwhile, which the returned
        callable takes (None: nothing to recover)."""
        ...

    def on_resubscribed(self, resume: list[tuple[str, Replay]]) -> None:
        """Every channel of a new connection is subscribed: recover what was stored for
        these, then hand it to each one's replay (exactly once, ``[]`` on failure)."""
        ...

    def on_up(self) -> None:
        """The connection is up, every wanted channel subscribed."""
        ...

    def on_lost(self, listener: Listener, exc: Exception) -> None:
        """The connection failed or could not be made; the listener retries by itself."""
        ...


class Listener:
    """One pub/sub connection and the channels it should hold, re-established on failure.

    Whenever a connection is (re)made, every wanted user channel is subscribed
    again and what was stored for it while it had no subscriber here is
    recovered, before the live messages that follow. Messages are handled as
    they are parsed, in the connection's ``data_received``.
    """

    def __init__(
        self, events: ListenerEvents, connect: Connect, channels: list[str], patterns: list[str]
    ) -> None:
        self.events = events
        self.connect = connect
        self.patterns = patterns
        self.shard_channels: set[str] = set(channels)
        self.ok = False
        self._ready = asyncio.Event()  # set while ok
        self.conn: RespConnection | None = None
        self._confirm: dict[str, list[asyncio.Future[None]]] = {}
        # While (re)subscribing: channels whose confirmation starts their recovery,
        # and the recoveries so started.
        self._recovering: set[str] = set()
        self._resume: list[tuple[str, Replay]] = []
        self._task: asyncio.Task[None] | None = None
        # Channels whose SUNSUBSCRIBE Redis has not confirmed: it may still count this
        # node for them (a drain waits for them, RedisBus.release).
        self.leaving: set[str] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bus-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.conn is not None:
            self.conn.close()

    def restart(self) -> None:
        """Drop the connection; the run loop opens a new one and subscribes again."""
        self.ok = False
        if self.conn is not None:
            self.conn.close()

    async def add(self, channel: str) -> None:
        """SSUBSCRIBE and wait until Redis confirms it (from then on, Redis counts us).

        Without a connection it returns at once: the next connection subscribes
        the channel and recovers what was stored for it meanwhile. Only a listener
        reconnecting to a reachable Redis is worth a short wait.
        """
        self.shard_channels.add(channel)
        if not self.ok:
            if self.events.reachable:
                try:
                    await asyncio.wait_for(self._ready.wait(), 2)
                except TimeoutError:
                    return
            # Ready: the new connection subscribed every wanted channel, this one too,
            # before it was; or it was removed meanwhile and must not be subscribed again.
            return
        assert self.conn is not None
        waiter = self._waiter(channel)
        self.conn.send(pack(("SSUBSCRIBE", channel)))
        await asyncio.wait_for(waiter, 5)

    def remove(self, channel: str) -> None:
        self.shard_channels.discard(channel)
        # Also while a new connection subscribes its channels (not ok yet): this one's
        # SSUBSCRIBE may be on its way, and would otherwise stay.
        conn = self.conn
        if conn is not None and not conn.closed.done():
            self.leaving.add(channel)
            conn.send(pack(("SUNSUBSCRIBE", channel)))

    def _waiter(self, channel: str) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, []).append(waiter)
        return waiter

    def _on_push(self, reply: Any) -> None:
        kind = reply[0] if type(reply) is list else None
        if kind == b"smessage" or kind == b"message":
            self.events.on_message(reply[1], reply[2])
        elif kind == b"pmessage":
            self.events.on_message(reply[2], reply[3])
        elif kind == b"ssubscribe":
            channel = reply[1].decode("utf-8")
            if channel in self._recovering:
                # From here on live messages of the channel wait for the stored ones.
                self._recovering.discard(channel)
                replay = self.events.on_subscribed(channel)
                if replay is not None:
                    self._resume.append((channel, replay))
            for waiter in self._confirm.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)
        elif kind == b"sunsubscribe":
            if reply[1] is not None:
                self.leaving.discard(reply[1].decode("utf-8"))
        elif kind not in (b"psubscribe", b"subscribe", b"pong"):
            log.warning("unexpected reply on the pub/sub connection: %r", reply)

    async def _subscribe_shards(self, conn: RespConnection) -> None:
        """SSUBSCRIBE every wanted channel (also those wanted meanwhile), confirmed, then recover them."""
        done: set[str] = set()
        self._resume = []
        try:
            while missing := self.shard_channels - done:
                self._recovering = set(missing)
                waiters = [self._waiter(channel) for channel in missing]
                conn.send(pack(("SSUBSCRIBE", *missing)))
                try:
                    await asyncio.wait_for(asyncio.gather(*waiters), 5)
                except TimeoutError:
                    raise TimeoutError("shard channel subscriptions not confirmed") from None
                done |= missing
        except BaseException:
            for _channel, replay in self._resume:  # live deliveries must not wait for a connection
                replay([])
            raise
        finally:
            resume, self._resume, self._recovering = self._resume, [], set()
        if resume:
            self.events.on_resubscribed(resume)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            conn = None
            try:
                conn = self.conn = await self.connect(self._on_push)
                if self.patterns:
                    conn.send(pack(("PSUBSCRIBE", *self.patterns)))
                await self._subscribe_shards(conn)
                log.debug(
                    "pub/sub connection up: %d shard channels, %d patterns",
                    len(self.shard_channels),
                    len(self.patterns),
                )
                self.ok = True
                self._ready.set()
                self.events.on_up()
                backoff = 0.1
                raise (await conn.closed) or RespConnectionError("pub/sub connection closed")
            except Exception as exc:  # the listener must survive anything
                if not isinstance(exc, CONNECTION_ERRORS):
                    log.exception("redis pub/sub failed")
                self.ok = False
                self.events.on_lost(self, exc)
            self._ready.clear()
            self.leaving.clear()  # Redis dropped every subscription of the connection
            for waiters in self._confirm.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(ConnectionError("pub/sub connection lost"))
            self._confirm.clear()
            if conn is not None:
                conn.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
