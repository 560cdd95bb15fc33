"""The cluster bus over Redis (standalone or Cluster).

Outgoing traffic goes through one ordered outbox drained by a single writer
task in pipelined batches, so messages from one sender keep their order and a
burst costs one round trip per batch. While Redis is unreachable the outbox
holds up to ``outbox_limit`` messages and sends them when it is back; RECEIPTs
wait for that. Incoming traffic arrives on one pub/sub connection, probed every
heartbeat so a connection Redis silently dropped is noticed and replaced.

The outbox (on a standalone Redis) and the pub/sub connections use the lean
connection of :mod:`.resp`; redis-py does the rest, and routes the outbox's
commands on a Redis Cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, assert_never

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from ..broker.broker import Done, Sender
from ..broker.message import Message
from .address import Address
from .base import BusStats, BusUnavailable, OfflineLimits, decode, encode, reply_text
from .keys import PUBLISH_USER, TAKE_STORED, Keys, publish_user_args
from .outbox import Command, Outbox, PresenceResync, PresenceUpdate, TopicPublish, UserPublish
from .resp import ReplyError, RespConnection, RespConnectionError, pack

if TYPE_CHECKING:
    from ..config import BusConfig
    from .contract import BrokerPort

log = logging.getLogger(__name__)

_BATCH = 512
# ReplyError: an error reply on the lean connection (NOSCRIPT after a Redis restart, OOM...).
_CONNECTION_ERRORS = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError, ReplyError)
_COMMAND_TIMEOUT_S = 5.0
# Stored-message fetches in flight at once. Each takes a pooled redis-py connection:
# a burst of subscriptions (a node restarted, its users coming back) must not open
# one per subscription (redis-py refuses past 100, and file descriptors run out).
_TAKE_CONCURRENCY = 16


class RedisBus:
    def __init__(self, config: BusConfig, limits: OfflineLimits, node_id: str, broker: BrokerPort) -> None:
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
        self._take_slots = asyncio.Semaphore(_TAKE_CONCURRENCY)
        self._conn: RespConnection | None = None  # the outbox's connection (standalone Redis)
        self._probe_channel = self.keys.probe(node_id).encode()
        self._outbox = Outbox(
            config.outbox_limit, config.outbox_max_bytes, config.outbox_stall_s, broker.room
        )
        self._wake = asyncio.Event()
        # The main listener takes topics, the probe and (broadcast) the user pattern;
        # on a Redis Cluster each shard also gets a listener for its shard channels.
        self._main: _Listener | None = None
        self._shards: dict[str, _Listener] = {}
        # user channel -> (user, destination, its listener), while subscribed here
        self._user_channels: dict[str, tuple[str, str, _Listener]] = {}
        self._scripts_loaded = False
        self._tasks: list[asyncio.Task[None]] = []
        # Short-lived tasks (stored-message fetches, recoveries), kept until done: the
        # loop holds only weak references, so an unreferenced task can vanish mid-run.
        self._background: set[asyncio.Task[Any]] = set()
        self._commands_ok = False
        self._down_since: float | None = time.time()
        self._was_up = False
        self._last_error = "not connected yet"
        # When the oldest probe published since the last one seen went out.
        self._probe_unseen_since: float | None = None
        self._resync = True
        self._user_root = broker.rules.user_root
        self._oom_since: float | None = None  # when the heartbeat first met Redis out of memory
        self._oom_logged = -60.0

    # ------------------------------------------------------------ lifecycle

    def _client(self) -> Any:
        r = self.config.redis
        if r.cluster_nodes:
            nodes = [ClusterNode(h, int(p)) for h, _, p in (s.rpartition(":") for s in r.cluster_nodes)]
            return RedisCluster(startup_nodes=nodes, socket_timeout=5, socket_connect_timeout=3)
        return aioredis.Redis.from_url(r.url, socket_timeout=5, socket_connect_timeout=3, retry=_no_retry())

    async def start(self) -> None:
        self.redis = self._client()
        self._publish_user = self.redis.register_script(PUBLISH_USER)
        self._take_stored = self.redis.register_script(TAKE_STORED)
        channels = [self.keys.topics, self.keys.probe(self.node_id)]
        patterns = [] if self.directed else [self.keys.user_pattern]
        self._main = _Listener(self, self._main_connection, channels, patterns)
        self._tasks = [
            asyncio.create_task(self._writer(), name="bus-writer"),
            asyncio.create_task(self._heartbeat(), name="bus-heartbeat"),
        ]
        self._main.start()
        # Give Redis a moment so a healthy start is ready at once; never block on it.
        for _ in range(30):
            if self.healthy:
                break
            await asyncio.sleep(0.05)
        else:
            log.warning(
                "redis not reachable yet (%s); retrying in the background, local traffic goes on, "
                "cluster traffic is queued",
                self._last_error,
            )

    def expire(self) -> None:
        """Nothing to do: Redis expires stored messages itself."""

    async def stop(self) -> None:
        """Flush the outbox, leave the registry, close connections: each step bounded."""
        deadline = time.monotonic() + 2
        while self._outbox and self._commands_ok and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded
            await asyncio.sleep(0.01)
        # Fetches of stored messages finish rather than being cancelled: one cut between
        # taking messages off the store and handing them over would lose them.
        if self._background:
            fetches = asyncio.gather(*self._background, return_exceptions=True)
            await _bounded("finishing stored-message fetches", fetches)
        for task in self._tasks:
            task.cancel()
        await _bounded(
            "stopping the writer and heartbeat", asyncio.gather(*self._tasks, return_exceptions=True)
        )
        await _bounded("leaving the registry", self._leave())
        for listener in [self._main, *self._shards.values()]:
            if listener is not None:
                await _bounded("closing a pub/sub connection", listener.stop())
        if self._conn is not None:
            self._conn.close()
        await _bounded("closing the redis client", self.redis.aclose())

    async def _leave(self) -> None:
        await self.redis.zrem(self.keys.nodes, self.node_id)
        await self.redis.delete(self.keys.node_users(self.node_id))

    @property
    def _cluster(self) -> bool:
        return bool(self.config.redis.cluster_nodes)

    async def _main_connection(self, on_push: Callable[[Any], None]) -> RespConnection:
        if not self._cluster:
            return await RespConnection.open(Address.from_url(self.config.redis.url), on_push)
        # The owner of the topics slot; the broadcast pattern is served by any node.
        await self.redis.initialize()
        node = self.redis.get_node_from_key(self.keys.topics)
        return await RespConnection.open(Address(node.host, node.port), on_push)

    async def _listener_for(self, channel: str) -> _Listener:
        """Where a shard channel is subscribed: the main listener, or its shard's own."""
        assert self._main is not None
        if not self._cluster:
            return self._main
        await self.redis.initialize()
        node = self.redis.get_node_from_key(channel)
        listener = self._shards.get(node.name)
        if listener is None:
            address = Address(node.host, node.port)

            async def connect(on_push: Callable[[Any], None]) -> RespConnection:
                return await RespConnection.open(address, on_push)

            listener = _Listener(self, connect, [], [])
            self._shards[node.name] = listener
            listener.start()
        return listener

    @property
    def _reader_ok(self) -> bool:
        listeners = [self._main, *self._shards.values()]
        return all(listener is not None and listener.ok for listener in listeners)

    @property
    def healthy(self) -> bool:
        """Redis takes commands, every pub/sub connection is up, and the outbox drains."""
        return self._commands_ok and self._reader_ok and not self._outbox.stalled()

    @property
    def congested(self) -> bool:
        return self._outbox.congested

    def status(self) -> dict[str, Any]:
        outbox = self._outbox
        out: dict[str, Any] = {
            "redis": "up" if self._commands_ok and self._reader_ok else "down",
            "outbox": len(outbox),
            "outbox_bytes": outbox.bytes,
        }
        if outbox.stalled():
            out["outbox_stalled_s"] = round(outbox.oldest_age(), 1)
        if self._oom_since is not None:
            out["redis_out_of_memory_since"] = self._oom_since
        if not self.healthy:
            out["since"] = self._down_since
            out["error"] = (
                self._last_error
                if not (self._commands_ok and self._reader_ok)
                else "the outbox is not draining"
            )
        return out

    def _failed(self, where: str, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.time()
            log.warning(
                "redis unreachable (%s): %s; local traffic goes on, cluster traffic is queued", where, exc
            )
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

    def publish(
        self, message: Message, delivered_here: int, done: Done | None, sender: Sender | None = None
    ) -> None:
        payload = encode(message, self.node_id)
        entry: Command
        if message.user is None:
            entry = TopicPublish(payload, done, sender, message.size)
        else:
            entry = UserPublish(message.user, message.destination, payload, done, sender, message.size)
        if not self._outbox.put(entry):
            self.stats.dropped += 1
            outbox = self._outbox
            entry.finish(
                f"the cluster bus's outbox is full ({len(outbox)} messages, {outbox.bytes} bytes): "
                + ("redis is unreachable" if not self._commands_ok else "redis does not keep up")
            )
            return
        self._wake.set()

    def user_sessions(self, user: str, count: int) -> None:
        if self._outbox.put(PresenceUpdate(user, count)):
            self._wake.set()
        else:
            self._resync = True  # the whole registry is written again once the outbox drains

    def user_subscribed(self, user: str, destination: str, replay: Callable[[list[Message]], None]) -> None:
        self.spawn(self._subscribe_then_take(user, destination, replay))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task the bus keeps until it ends (and waits for at stop)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _subscribe_then_take(
        self, user: str, destination: str, replay: Callable[[list[Message]], None]
    ) -> None:
        channel = self.keys.user_channel(user, destination)
        stored: list[Message] = []
        try:
            # Live delivery first (Redis counts this node from now on), then what
            # was stored before that: each message is in exactly one of the two.
            await self._subscribe(user, destination, channel)
            raw = await self._take(user, destination)
            stored = [decode(item, self._user_root)[1] for item in raw]
            self.stats.replayed += len(stored)
        except Exception as exc:  # noqa: BLE001 - the subscription goes live regardless
            # What is stored stays stored: the next (re)subscription recovers it.
            log.warning("stored messages of %s %s not fetched: %s", user, destination, exc)
        replay(stored)

    async def _take(self, user: str, destination: str) -> list[bytes]:
        """What is stored for (user, destination), removed from the store."""
        async with self._take_slots:
            keys = [self.keys.store(user, destination), self.keys.store_index(user)]
            taken: list[bytes] = await self._take_stored(keys=keys, args=[destination])
            return taken

    async def _subscribe(self, user: str, destination: str, channel: str) -> None:
        listener = await self._listener_for(channel)
        self._user_channels[channel] = (user, destination, listener)
        await listener.add(channel)

    def user_unsubscribed(self, user: str, destination: str) -> None:
        channel = self.keys.user_channel(user, destination)
        found = self._user_channels.pop(channel, None)
        if found is not None:
            found[2].remove(channel)

    def _begin_recovery(self, channels: set[str]) -> list[tuple[str, Callable[[list[Message]], None]]]:
        """A (re)subscription was confirmed: hold live deliveries until the stored ones are in."""
        out = []
        for channel in channels:
            found = self._user_channels.get(channel)
            if found is not None:
                replay = self.broker.begin_recovery(found[0], found[1])
                if replay is not None:
                    out.append((channel, replay))
        return out

    async def _recover(self, resume: list[tuple[str, Callable[[list[Message]], None]]]) -> None:
        """Resubscribed: hand over what was stored while the subscription was gone, then go live."""
        sha = self._take_stored.sha
        batch: list[tuple[str, Callable[[list[Message]], None]]] = []
        try:
            if not self._scripts_loaded:
                await self._load_scripts()
            while resume:
                batch, resume = resume[:_BATCH], resume[_BATCH:]
                pipe = self.redis.pipeline(transaction=False)
                # A channel unsubscribed meanwhile keeps its store for the next subscription.
                wanted = [self._user_channels.get(channel) for channel, _replay in batch]
                for found in wanted:
                    if found is not None:
                        user, destination = found[0], found[1]
                        store, index = self.keys.store(user, destination), self.keys.store_index(user)
                        pipe.execute_command("EVALSHA", sha, 2, store, index, destination)
                results = iter(await pipe.execute())
                for (channel, replay), found in zip(batch, wanted):
                    raw = next(results) if found is not None else []
                    stored = [decode(item, self._user_root)[1] for item in raw]
                    self.stats.replayed += len(stored)
                    log.debug("recovered %d stored messages of %s", len(stored), channel)
                    replay(stored)
                batch = []
        except Exception as exc:  # noqa: BLE001 - stored messages stay for the next subscribe
            log.warning("recovering messages stored during the outage failed: %s", exc)
            for _channel, replay in [*batch, *resume]:
                replay([])

    # ------------------------------------------------------- cluster view

    # Answers come from Redis; BusUnavailable (HTTP 503) while it cannot be reached.

    async def pull(self, user: str, destination: str) -> list[Message]:
        try:
            raw = await self._take(user, destination)
        except _CONNECTION_ERRORS as exc:
            raise BusUnavailable(f"redis unreachable: {exc}") from None
        self.stats.replayed += len(raw)
        return [decode(item, self._user_root)[1] for item in raw]

    async def live_nodes(self) -> list[str]:
        cutoff = int(time.time() * 1000) - int(self.config.node_timeout_s * 1000)
        try:
            nodes = await self.redis.zrangebyscore(self.keys.nodes, cutoff, "+inf")
        except _CONNECTION_ERRORS as exc:
            raise BusUnavailable(f"redis unreachable: {exc}") from None
        return sorted(n.decode() for n in nodes)

    async def _per_node(self, command: str, *args: Any) -> list[tuple[str, Any]]:
        """One command on every live node's user hash, in one pipeline."""
        nodes = await self.live_nodes()
        pipe = self.redis.pipeline(transaction=False)
        for node in nodes:
            pipe.execute_command(command, self.keys.node_users(node), *args)
        try:
            results = await pipe.execute()
        except _CONNECTION_ERRORS as exc:
            raise BusUnavailable(f"redis unreachable: {exc}") from None
        return list(zip(nodes, results))

    async def user_nodes(self, user: str, sessions_here: int) -> dict[str, int]:
        return {node: int(n) for node, n in await self._per_node("HGET", user) if n and int(n) > 0}

    async def online_users(self) -> list[str]:
        return sorted({u.decode() for _node, users in await self._per_node("HKEYS") for u in users})

    # ---------------------------------------------------------------- tasks

    async def _writer(self) -> None:
        backoff = 0.1
        outbox = self._outbox
        while True:
            if not outbox:
                self._wake.clear()
                await self._wake.wait()
            batch = outbox.peek(_BATCH)
            try:
                if not self._scripts_loaded:
                    await self._load_scripts()
                results = await self._send(batch)
            except Exception as exc:  # the writer must survive anything
                if not isinstance(exc, _CONNECTION_ERRORS):
                    log.exception("publishing to redis failed")
                self._commands_ok = False
                self._scripts_loaded = False  # a restarted Redis has forgotten them
                if self._conn is not None:  # replies may be out of step with requests now
                    self._conn.close()
                    self._conn = None
                self._failed("publish", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            again = self._settle(outbox.pop(len(batch)), results)
            if again is not None:  # Redis is not ready for some of it: reload scripts, wait a little
                self._scripts_loaded = False
                if not again.startswith("NOSCRIPT") or backoff > 0.1:
                    self._failed("publish", RespConnectionError(again))
                    self._commands_ok = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            if not self._commands_ok:
                self._commands_ok = True
                self._recovered()

    def _settle(self, entries: list[Command], results: list[Any]) -> str | None:
        """Finish each sent entry; put the ones to send again back in front, in order,
        and return why (None when there are none)."""
        again: list[Command] = []
        why = None
        stats = self.stats
        for entry, result in zip(entries, results):
            kind = type(result)
            if kind is _Again:
                again.append(entry)
                why = why or result.error
            elif kind is _Refused:
                stats.refused += 1
                self._outbox.refused(entry, result.error)
            else:
                if type(entry) is UserPublish:
                    stats.published += 1  # counted once sent: a retried batch counts once
                    if result <= 0:
                        stats.stored += 1
                        if result < 0:
                            self._store_dropped(entry, -result)
                elif type(entry) is TopicPublish:
                    stats.published += 1
                entry.finish(None)
        if len(again) < len(entries):
            self._outbox.moved()
        if again:
            self._outbox.requeue(again)
        return why

    def _store_dropped(self, entry: UserPublish, count: int) -> None:
        """Storing this message pushed out ``count`` older ones of that (user, destination)."""
        self.stats.store_dropped += count
        self._outbox.note_dropped(entry.user, entry.destination, count)

    async def _send(self, batch: list[Command]) -> list[Any]:
        """Send the batch in one go; each entry's result: its last command's reply (for user
        messages: how many nodes got it live, 0 stored, -n stored with n older ones dropped),
        a :class:`_Refused` for what Redis refused (or what cannot be encoded), or an
        :class:`_Again` for what it cannot take now.

        Raises only for what concerns the connection, not one message.
        """
        # Packed here for the standalone connection; on a Cluster only to find what cannot
        # be encoded (redis-py would fail the whole pipeline for it, again and again).
        planned: list[list[tuple[Any, ...]] | _Refused] = [self._commands(entry) for entry in batch]
        try:
            data = [pack(command) for commands in planned for command in commands]  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - some entry cannot be encoded: find which, one by one
            data = []
            for i, commands in enumerate(planned):
                try:
                    packed = [pack(command) for command in commands]  # type: ignore[union-attr]
                except Exception as exc:  # noqa: BLE001 - e.g. a lone surrogate in a name
                    planned[i] = _Refused(f"cannot encode: {exc}")
                    continue
                data += packed
        if not data:
            replies: list[Any] = []
        elif self._cluster:  # redis-py routes each command to its slot's owner
            pipe = self.redis.pipeline(transaction=False)
            for item in planned:
                if not isinstance(item, _Refused):
                    for command in item:
                        pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        else:
            conn = self._conn
            if conn is None or conn.closed.done():
                conn = self._conn = await RespConnection.open(Address.from_url(self.config.redis.url))
            replies = await asyncio.wait_for(conn.request(b"".join(data), len(data)), _COMMAND_TIMEOUT_S)
        results: list[Any] = []
        at = 0
        for item in planned:
            if type(item) is _Refused:
                results.append(item)
                continue
            count = len(item)  # type: ignore[arg-type]  # not a _Refused here
            reply = replies[at + count - 1]
            if count == 1 and not isinstance(reply, Exception):
                results.append(reply)  # the common case: one command, no error
            else:
                results.append(_judge(replies[at : at + count]))
            at += count
        return results

    def _commands(self, entry: Command) -> list[tuple[Any, ...]]:
        """The Redis commands of one outbox entry (its result is its last one's)."""
        if type(entry) is TopicPublish:
            return [("SPUBLISH", self.keys.topics, entry.payload)]
        if type(entry) is UserPublish:
            user, destination = entry.user, entry.destination
            keys = self.keys
            bcast = "" if self.directed else keys.user_broadcast(user)
            return [
                (  # EVALSHA: a cluster pipeline routes it by its keys
                    "EVALSHA",
                    self._publish_user.sha,
                    3,
                    *keys.publish_keys(user, destination),
                    entry.payload,
                    *publish_user_args(self.limits, bcast, user, destination),
                )
            ]
        node_users = self.keys.node_users(self.node_id)
        if type(entry) is PresenceUpdate:
            user, count = entry.user, entry.count
            return [("HSET", node_users, user, count) if count else ("HDEL", node_users, user)]
        if type(entry) is PresenceResync:  # this node's users as the broker has them now
            counts = self.broker.session_counts()
            commands: list[tuple[Any, ...]] = [("DEL", node_users)]
            if counts:
                commands.append(("HSET", node_users, *(x for pair in counts for x in pair)))
            return commands
        assert_never(entry)

    async def _load_scripts(self) -> None:
        """SCRIPT LOAD (on every primary of a Cluster), so pipelines can EVALSHA without a check."""
        await self.redis.script_load(PUBLISH_USER)
        await self.redis.script_load(TAKE_STORED)
        self._scripts_loaded = True

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
                pipe.pexpire(users_key, timeout_ms)
                pipe.execute_command("SPUBLISH", self.keys.probe(self.node_id), b"probe")
                self._redis_full(await pipe.execute(raise_on_error=False))
                if self._probe_unseen_since is None:
                    self._probe_unseen_since = time.monotonic()
                if self._resync:
                    # After an outage (or at start) Redis may have lost everything: write
                    # this node's users again. Through the outbox, so that session
                    # changes queued before or after it apply in their order.
                    self._resync = False
                    if self._outbox.put(PresenceResync()):
                        self._wake.set()
                    else:
                        self._resync = True  # next heartbeat
                if not self._commands_ok:
                    self._commands_ok = True
                    self._recovered()
            except Exception as exc:  # the heartbeat must survive anything
                if not isinstance(exc, _CONNECTION_ERRORS):
                    log.exception("heartbeat to redis failed")
                self._commands_ok = False
                self._failed("heartbeat", exc)
            await asyncio.sleep(interval)
            main, unseen = self._main, self._probe_unseen_since
            if (
                main is not None
                and main.ok
                and unseen is not None
                and time.monotonic() - unseen > 3 * interval
            ):
                # Redis took our probes but the connection brought none back: it is dead
                # without having said so (a silent network drop). Replace it.
                log.warning(
                    "pub/sub connection silent for %.1f s: reconnecting it", time.monotonic() - unseen
                )
                self._probe_unseen_since = None
                await main.restart()

    def _redis_full(self, replies: list[Any]) -> None:
        """The heartbeat's replies: an error other than OOM raises. Redis out of memory
        (maxmemory) refuses the registry's writes and stored messages, each sender getting
        an error, but still delivers live: the node stays ready, and says so once a minute."""
        oom = None
        for reply in replies:
            if isinstance(reply, Exception):
                text = reply_text(reply)
                if not (isinstance(reply, (ResponseError, ReplyError)) and text.startswith("OOM ")):
                    raise reply
                oom = text
        if oom is None:
            if self._oom_since is not None:
                log.info("redis takes writes again after %.0f s out of memory", time.time() - self._oom_since)
                self._oom_since = None
            return
        now = time.monotonic()
        if self._oom_since is None:
            self._oom_since = time.time()
        if now - self._oom_logged >= 60.0:
            self._oom_logged = now
            log.warning(
                "redis is out of memory (%s): messages for offline users are refused (their senders get an "
                "error) and the node registry is not updated; live delivery goes on. Raise maxmemory, or "
                "free memory (users reading their stored messages do)",
                oom,
            )

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == self._probe_channel:
            self._probe_unseen_since = None
            return
        self.stats.received += 1
        origin, msg = decode(data, self._user_root)
        if origin == self.node_id:
            self.stats.ignored += 1  # delivered here before it was published
            return
        if not self.broker.dispatch(msg):
            self.stats.ignored += 1


class _Listener:
    """One pub/sub connection and the channels it should hold, re-established on failure.

    Whenever a connection is (re)made, every wanted user channel is subscribed
    again and what was stored for it while it had no subscriber here is
    recovered, before the live messages that follow. Messages are handled as
    they are parsed, in the connection's ``data_received``.
    """

    def __init__(
        self,
        bus: RedisBus,
        connect: Callable[[Callable[[Any], None]], Awaitable[RespConnection]],
        channels: list[str],
        patterns: list[str],
    ) -> None:
        self.bus = bus
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
        self._resume: list[tuple[str, Callable[[list[Message]], None]]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bus-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.conn is not None:
            self.conn.close()

    async def restart(self) -> None:
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
            if self.bus._commands_ok:
                try:
                    await asyncio.wait_for(self._ready.wait(), 2)
                except TimeoutError:
                    return
            if not self.ok:
                return
        assert self.conn is not None
        waiter = self._waiter(channel)
        self.conn.send(pack(("SSUBSCRIBE", channel)))
        await asyncio.wait_for(waiter, 5)

    def remove(self, channel: str) -> None:
        self.shard_channels.discard(channel)
        if self.ok and self.conn is not None:
            self.conn.send(pack(("SUNSUBSCRIBE", channel)))

    def _waiter(self, channel: str) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, []).append(waiter)
        return waiter

    def _on_push(self, reply: Any) -> None:
        kind = reply[0] if type(reply) is list else None
        if kind == b"smessage" or kind == b"message":
            self.bus._on_message(reply[1], reply[2])
        elif kind == b"pmessage":
            self.bus._on_message(reply[2], reply[3])
        elif kind == b"ssubscribe":
            channel = reply[1].decode("utf-8")
            if channel in self._recovering:
                # From here on live messages of the channel wait for the stored ones.
                self._recovering.discard(channel)
                self._resume += self.bus._begin_recovery({channel})
            for waiter in self._confirm.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)
        elif kind not in (b"psubscribe", b"sunsubscribe", b"subscribe", b"pong"):
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
            self.bus.spawn(self.bus._recover(resume))

    async def _run(self) -> None:
        bus = self.bus
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
                bus._probe_unseen_since = None
                bus._resync = True
                bus._recovered()
                backoff = 0.1
                raise (await conn.closed) or RespConnectionError("pub/sub connection closed")
            except Exception as exc:  # the listener must survive anything
                if not isinstance(exc, _CONNECTION_ERRORS):
                    log.exception("redis pub/sub failed")
                bus._failed("subscribe", exc)
            self.ok = False
            if self is bus._main and not bus.directed:
                # Broadcast on a Cluster: user messages come in on this connection but
                # the shard subscriptions that make senders count this node live on
                # others. Drop those too, so that meanwhile messages are stored
                # (and recovered) rather than sent to a node that cannot hear them.
                for shard in list(bus._shards.values()):
                    await shard.restart()
            self._ready.clear()
            for waiters in self._confirm.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(ConnectionError("pub/sub connection lost"))
            self._confirm.clear()
            if conn is not None:
                conn.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


class _Refused:
    """Redis refused one entry (or it could not be encoded): it fails alone."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class _Again:
    """An entry to send again: Redis cannot take it *now* (a script not loaded, a
    cluster resharding or still starting), which says nothing about the message."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


# Error replies that describe Redis's state, not the command: retried, never refused.
# Raw replies (the lean connection) by their first word; redis-py's (a Cluster) by
# class, since it turns some into exceptions without that word ("The cluster is down").
_TRANSIENT = frozenset(
    ("NOSCRIPT", "LOADING", "BUSY", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK")
)
_TRANSIENT_CLASSES = (NoScriptError, ClusterError, TryAgainError, AskError, ReadOnlyError, BusyLoadingError)


def _judge(replies: list[Any]) -> Any:
    """One entry's result from its commands' replies, errors judged in place."""
    for reply in replies:
        if isinstance(reply, (ReplyError, ResponseError)):
            text = reply_text(reply)
            if isinstance(reply, _TRANSIENT_CLASSES) or text.split(" ", 1)[0] in _TRANSIENT:
                return _Again(text)
            return _Refused(text)
        if isinstance(reply, Exception):  # a connection error on a Cluster pipeline: fails the batch
            raise reply
    return replies[-1]


def _no_retry() -> Retry:
    """The bus sees each failure (to recover what was stored meanwhile) and retries
    with its own backoff, rather than redis-py retrying behind its back."""
    return Retry(NoBackoff(), 0)


async def _bounded(what: str, awaitable: Any, timeout: float = 1.0) -> None:
    """At shutdown: give a step a second, and say so when it takes longer or fails."""
    try:
        await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        log.warning("shutdown: %s took over %.0f s; going on", what, timeout)
    except Exception as exc:  # noqa: BLE001 - best effort at exit
        log.debug("shutdown: %s failed: %s", what, exc)
