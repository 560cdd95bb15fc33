"""The cluster bus over Redis (standalone or Cluster).

Outgoing traffic goes through one ordered outbox drained by a single writer
task in pipelined batches, so messages from one sender keep their order and a
burst costs one round trip per batch. While Redis is unreachable the outbox
holds up to ``outbox_limit`` messages and sends them when it is back; RECEIPTs
wait for that. Incoming traffic arrives on one pub/sub connection, probed every
heartbeat so a connection Redis silently dropped is noticed and replaced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError

from ..broker.broker import Done
from ..broker.message import Message
from .base import BusStats, OfflineLimits, decode, encode
from .keys import PUBLISH_USER, TAKE_STORED, Keys

if TYPE_CHECKING:
    from ..broker import Broker
    from ..config import BusConfig

log = logging.getLogger(__name__)

_BATCH = 512
_CONNECTION_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class RedisBus:
    def __init__(self, config: BusConfig, limits: OfflineLimits, node_id: str, broker: Broker) -> None:
        self.config = config
        self.limits = limits
        self.node_id = node_id
        self.broker = broker
        self.directed = config.routing == "directed"
        self.keys = Keys(config.redis.prefix)
        self.stats = BusStats()
        self.redis: Any = None
        self._publish_user: Any = None
        self._take_stored: Any = None
        self._outbox: deque[tuple[str, tuple[Any, ...], Done | None]] = deque()
        self._wake = asyncio.Event()
        self._channels: set[str] = set()  # shard channels this node wants
        self._confirm: dict[str, list[asyncio.Future[None]]] = {}
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._commands_ok = False
        self._reader_ok = False
        self._down_since: float | None = time.time()
        self._was_up = False
        self._last_error = "not connected yet"
        self._probe_seen = time.monotonic()
        self._resync = True
        self._stopping = False
        self._user_root = broker.rules.user_root

    # ------------------------------------------------------------ lifecycle

    def _client(self) -> Any:
        r = self.config.redis
        if r.cluster_nodes:
            nodes = [ClusterNode(h, int(p)) for h, _, p in (s.rpartition(":") for s in r.cluster_nodes)]
            return RedisCluster(startup_nodes=nodes, socket_timeout=5, socket_connect_timeout=3)
        return aioredis.Redis.from_url(r.url, socket_timeout=5, socket_connect_timeout=3)

    async def start(self) -> None:
        self.redis = self._client()
        self._publish_user = self.redis.register_script(PUBLISH_USER)
        self._take_stored = self.redis.register_script(TAKE_STORED)
        self._tasks = [
            asyncio.create_task(self._writer(), name="bus-writer"),
            asyncio.create_task(self._reader(), name="bus-reader"),
            asyncio.create_task(self._heartbeat(), name="bus-heartbeat"),
        ]
        # Give Redis a moment so a healthy start is ready at once; never block on it.
        for _ in range(30):
            if self.healthy:
                break
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stopping = True
        # Flush what is queued (bounded), then leave the registry.
        deadline = time.monotonic() + 2
        while self._outbox and self._commands_ok and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self._leave(), 1)
        except (*_CONNECTION_ERRORS, Exception) as exc:  # noqa: B014 - best effort at exit
            log.debug("leaving the registry failed: %s", exc)
        if self._pubsub is not None:
            await _quietly(self._pubsub.aclose())
        await _quietly(self.redis.aclose())

    async def _leave(self) -> None:
        await self.redis.zrem(self.keys.nodes, self.node_id)
        await self.redis.delete(self.keys.node_users(self.node_id))

    @property
    def healthy(self) -> bool:
        return self._commands_ok and self._reader_ok

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"redis": "up" if self.healthy else "down", "outbox": len(self._outbox)}
        if not self.healthy:
            out["since"] = self._down_since
            out["error"] = self._last_error
        return out

    def _failed(self, where: str, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.time()
            log.warning("redis unreachable (%s): %s; local traffic goes on, cluster traffic is queued", where, exc)
        self._last_error = f"{where}: {exc}"
        self._resync = True

    def _recovered(self) -> None:
        if self.healthy and self._down_since is not None:
            if self._was_up:
                log.info("redis reachable again after %.1f s", time.time() - self._down_since)
            else:
                log.info("connected to redis (%s routing)", self.config.routing)
            self._was_up = True
            self._down_since = None

    # ------------------------------------------------------------ bus calls

    def publish(self, message: Message, delivered_here: int, done: Done | None) -> None:
        payload = encode(message, self.node_id)
        if message.user is None:
            self._enqueue("topic", (payload,), done)
        else:
            self._enqueue("user", (message.user, message.destination, payload), done)

    def _enqueue(self, kind: str, args: tuple[Any, ...], done: Done | None) -> None:
        if len(self._outbox) >= self.config.outbox_limit:
            self.stats.dropped += 1
            if done is not None:
                done("the cluster bus is unavailable and its outbox is full")
            return
        self._outbox.append((kind, args, done))
        self._wake.set()

    def user_sessions(self, user: str, count: int) -> None:
        self._enqueue("sessions", (user, count), None)

    def user_subscribed(self, user: str, destination: str, replay: Callable[[list[Message]], None]) -> None:
        asyncio.get_running_loop().create_task(self._subscribe_then_take(user, destination, replay))

    async def _subscribe_then_take(
        self, user: str, destination: str, replay: Callable[[list[Message]], None]
    ) -> None:
        channel = self.keys.user_channel(user, destination)
        stored: list[Message] = []
        try:
            # Live delivery first (Redis counts this node from now on), then what
            # was stored before that: each message is in exactly one of the two.
            await self._subscribe(channel)
            raw = await self._take_stored(keys=[self.keys.store(user, destination)])
            stored = [decode(item, self._user_root)[1] for item in raw]
            self.stats.replayed += len(stored)
        except _CONNECTION_ERRORS as exc:
            log.warning("stored messages of %s %s not fetched: %s", user, destination, exc)
        replay(stored)

    async def _subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self._pubsub is None or not self._reader_ok:
            return  # subscribed by the reader when it (re)connects
        waiter = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, []).append(waiter)
        await self._pubsub.ssubscribe(channel)
        await asyncio.wait_for(waiter, 5)

    def user_unsubscribed(self, user: str, destination: str) -> None:
        channel = self.keys.user_channel(user, destination)
        self._channels.discard(channel)
        if self._pubsub is not None and self._reader_ok:
            asyncio.get_running_loop().create_task(_quietly(self._pubsub.sunsubscribe(channel)))

    # ------------------------------------------------------- cluster view

    async def pull(self, user: str, destination: str) -> list[Message]:
        raw = await self._take_stored(keys=[self.keys.store(user, destination)])
        self.stats.replayed += len(raw)
        return [decode(item, self._user_root)[1] for item in raw]

    async def live_nodes(self) -> list[str]:
        cutoff = int(time.time() * 1000) - int(self.config.node_timeout_s * 1000)
        nodes = await self.redis.zrangebyscore(self.keys.nodes, cutoff, "+inf")
        return sorted(n.decode() for n in nodes)

    async def user_nodes(self, user: str, sessions_here: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for node in await self.live_nodes():
            count = await self.redis.hget(self.keys.node_users(node), user)
            if count and int(count) > 0:
                out[node] = int(count)
        return out

    async def online_users(self) -> list[str]:
        users: set[str] = set()
        for node in await self.live_nodes():
            users.update(u.decode() for u in await self.redis.hkeys(self.keys.node_users(node)))
        return sorted(users)

    # ---------------------------------------------------------------- tasks

    async def _writer(self) -> None:
        backoff = 0.1
        while True:
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._outbox[i] for i in range(min(_BATCH, len(self._outbox)))]
            try:
                results = await self._send(batch)
            except _CONNECTION_ERRORS as exc:
                self._commands_ok = False
                self._failed("publish", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            if not self._commands_ok:
                self._commands_ok = True
                self._recovered()
            for _ in batch:
                self._outbox.popleft()
            for (kind, _args, done), result in zip(batch, results):
                if kind == "user" and result == 0:
                    self.stats.stored += 1
                if done is not None:
                    done(None)

    async def _send(self, batch: list[tuple[str, tuple[Any, ...], Done | None]]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        keys = self.keys
        ttl_ms = int(self.limits.ttl_s * 1000)
        node_users = keys.node_users(self.node_id)
        for kind, args, _done in batch:
            if kind == "topic":
                pipe.publish(keys.topics, args[0])
                self.stats.published += 1
            elif kind == "user":
                user, destination, payload = args
                bcast = "" if self.directed else keys.user_broadcast(user)
                await self._publish_user(
                    keys=[keys.user_channel(user, destination), keys.store(user, destination)],
                    args=[payload, self.limits.max_messages, ttl_ms, bcast],
                    client=pipe,
                )
                self.stats.published += 1
            else:  # sessions
                user, count = args
                if count:
                    pipe.hset(node_users, user, count)
                else:
                    pipe.hdel(node_users, user)
        return await pipe.execute()

    async def _heartbeat(self) -> None:
        interval = self.config.node_heartbeat_s
        timeout_ms = int(self.config.node_timeout_s * 1000)
        while True:
            try:
                now_ms = int(time.time() * 1000)
                pipe = self.redis.pipeline(transaction=False)
                pipe.zadd(self.keys.nodes, {self.node_id: now_ms})
                pipe.zremrangebyscore(self.keys.nodes, "-inf", now_ms - timeout_ms)
                users_key = self.keys.node_users(self.node_id)
                if self._resync:
                    # After an outage (or at start) Redis may have lost everything:
                    # write this node's users again from the broker's own state.
                    pipe.delete(users_key)
                    counts = {u: len(e.sessions) for u, e in self.broker.users.items()}
                    if counts:
                        pipe.hset(users_key, mapping=counts)
                pipe.pexpire(users_key, timeout_ms)
                pipe.publish(self.keys.probe(self.node_id), b"probe")
                await pipe.execute()
                self._resync = False
                if not self._commands_ok:
                    self._commands_ok = True
                    self._recovered()
            except _CONNECTION_ERRORS as exc:
                self._commands_ok = False
                self._failed("heartbeat", exc)
            await asyncio.sleep(interval)
            if self._reader_ok and time.monotonic() - self._probe_seen > 3 * interval:
                log.warning("pub/sub connection silent for %.1f s: reconnecting it", 3 * interval)
                self._reader_ok = False
                if self._pubsub is not None:
                    await _quietly(self._pubsub.aclose())

    async def _reader(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self.redis.pubsub()
            self._pubsub = pubsub
            try:
                await pubsub.subscribe(self.keys.topics, self.keys.probe(self.node_id))
                if not self.directed:
                    await pubsub.psubscribe(self.keys.user_pattern)
                if self._channels:
                    await pubsub.ssubscribe(*self._channels)
                self._probe_seen = time.monotonic()
                self._reader_ok = True
                self._resync = True
                self._recovered()
                backoff = 0.1
                while self._reader_ok:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._on_pubsub(message)
            except _CONNECTION_ERRORS as exc:
                self._failed("subscribe", exc)
            except asyncio.CancelledError:
                raise
            self._reader_ok = False
            for waiters in self._confirm.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(ConnectionError("pub/sub connection lost"))
            self._confirm.clear()
            await _quietly(pubsub.aclose())
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _on_pubsub(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in (b"message", "message", b"pmessage", "pmessage", b"smessage", "smessage"):
            channel = _text(message["channel"])
            if channel == self.keys.probe(self.node_id):
                self._probe_seen = time.monotonic()
                return
            self.stats.received += 1
            origin, msg = decode(message["data"], self._user_root)
            if origin == self.node_id:
                self.stats.ignored += 1  # delivered here before it was published
                return
            if not self.broker.dispatch(msg):
                self.stats.ignored += 1
        elif kind in (b"ssubscribe", "ssubscribe"):
            for waiter in self._confirm.pop(_text(message["channel"]), ()):
                if not waiter.done():
                    waiter.set_result(None)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as exc:  # noqa: BLE001 - closing a broken connection
        log.debug("ignored while closing: %s", exc)
