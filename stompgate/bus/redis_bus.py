"""The cluster bus over Redis (standalone or Cluster): the parts wired together.

The parts live in their own modules (the outbox and its writer, the pub/sub
listeners, the heartbeat and cluster view) and talk to the bus through small
callback interfaces; what is left here is what ties them: health, user
subscriptions and the recovery of what was stored while one was gone.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..broker.broker import Done, Sender
from ..broker.message import Message
from ..buckets import Histogram
from .address import Address
from .admin import AdminCommand, AdminHandler, AdminReplies, BadCommand, parse_request, request_payload
from .base import BusStats, BusUnavailable, OfflineLimits, decode, encode
from .keys import Keys
from .listener import Listener, Replay
from .outbox import Command, Outbox, PresenceResync, PresenceUpdate, TopicPublish, UserPublish
from .presence import ClusterView, Heartbeat
from .redis_outbox import BATCH, CONNECTION_ERRORS, OutboxWriter, Scripts
from .resp import RespConnection

if TYPE_CHECKING:
    from ..config import BusConfig
    from .contract import BrokerPort

log = logging.getLogger(__name__)

# Stored-message fetches in flight at once. Each takes a pooled redis-py connection:
# a burst of subscriptions (a node restarted, its users coming back) must not open
# one per subscription (redis-py refuses past 100, and file descriptors run out).
_TAKE_CONCURRENCY = 16
# An admin command's reply list outlives its asker's wait by this much, then Redis drops it.
_ADMIN_REPLY_TTL_MS = 30_000


class RedisBus:
    """A :class:`~.contract.ClusterBus` over Redis, standalone or Cluster.

    Outgoing traffic goes through one ordered outbox (:mod:`.outbox`) drained by
    a single writer task in pipelined batches (:mod:`.redis_outbox`), so messages
    from one sender keep their order and a burst costs one round trip per batch.
    While Redis is unreachable the outbox holds up to ``outbox_limit`` messages
    and sends them when it is back; RECEIPTs wait for that. Incoming traffic
    arrives on pub/sub connections (:mod:`.listener`): the main one, and on a
    Redis Cluster one per shard holding a subscribed user channel. The heartbeat
    (:mod:`.presence`) keeps this node in the registry and probes the main
    connection, so one Redis silently dropped is noticed and replaced.

    The outbox (on a standalone Redis) and the pub/sub connections use the lean
    connection of :mod:`.resp`; redis-py does the rest, and routes the outbox's
    commands on a Redis Cluster.

    It implements the callbacks of its parts (:class:`~.listener.ListenerEvents`,
    :class:`~.redis_outbox.WriterEvents`, :class:`~.presence.HeartbeatEvents`).
    """

    def __init__(self, config: BusConfig, limits: OfflineLimits, node_id: str, broker: BrokerPort) -> None:
        self.config = config
        self.limits = limits
        self.node_id = node_id
        self.broker = broker
        self.directed = config.routing == "directed"
        self.keys = Keys(config.redis.prefix)
        self.stats = BusStats()
        self.redis: Any = None
        # Built at start, on the redis client.
        self._scripts: Scripts
        self._writer: OutboxWriter
        self._view: ClusterView
        self._heartbeat: Heartbeat | None = None
        self._take_slots = asyncio.Semaphore(_TAKE_CONCURRENCY)
        self._probe_channel = self.keys.probe(node_id).encode()
        self._admin_channel = self.keys.admin.encode()
        self._admin: AdminHandler | None = None
        self._outbox = Outbox(
            config.outbox_limit, config.outbox_max_bytes, config.outbox_stall_s, broker.room
        )
        self._wake = asyncio.Event()
        # The main listener takes topics, the probe and (broadcast) the user pattern;
        # on a Redis Cluster each shard also gets a listener for its shard channels.
        self._main: Listener | None = None
        self._shards: dict[str, Listener] = {}
        # user channel -> (user, destination, its listener), while subscribed here
        self._user_channels: dict[str, tuple[str, str, Listener]] = {}
        # User channels the broker wants, from user_subscribed to user_unsubscribed: a
        # fetch that starts after the broker gave it up must not subscribe it.
        self._wanted: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        # Short-lived tasks (stored-message fetches, recoveries), kept until done: the
        # loop holds only weak references, so an unreferenced task can vanish mid-run.
        self._background: set[asyncio.Task[Any]] = set()
        self._commands_ok = False
        self._down_since: float | None = time.time()
        self._was_up = False
        self._last_error = "not connected yet"
        self._resync = True  # this node's users are to be written to the registry again
        self._user_root = broker.rules.user_root

    # ------------------------------------------------------------ lifecycle

    def _client(self) -> Any:
        r = self.config.redis
        if r.cluster_nodes:
            nodes = [ClusterNode(h, int(p)) for h, _, p in (s.rpartition(":") for s in r.cluster_nodes)]
            return RedisCluster(startup_nodes=nodes, socket_timeout=5, socket_connect_timeout=3)
        return aioredis.Redis.from_url(r.url, socket_timeout=5, socket_connect_timeout=3, retry=_no_retry())

    async def start(self) -> None:
        config = self.config
        self.redis = self._client()
        self._scripts = Scripts(self.redis)
        self._view = ClusterView(self.redis, self.keys, config.node_timeout_s)
        self._writer = OutboxWriter(
            self._outbox,
            self._wake,
            self.redis,
            self._scripts,
            config,
            self.limits,
            self.keys,
            self.node_id,
            self.stats,
            self.broker.session_counts,
            self,
        )
        channels = [self.keys.topics, self.keys.probe(self.node_id), self.keys.admin]
        patterns = [] if self.directed else [self.keys.user_pattern]
        self._main = Listener(self, self._main_connection, channels, patterns)
        self._heartbeat = Heartbeat(
            self.redis,
            self.keys,
            self.node_id,
            config.node_heartbeat_s,
            config.node_timeout_s,
            self._main,
            self,
        )
        self._tasks = [
            asyncio.create_task(self._writer.run(), name="bus-writer"),
            asyncio.create_task(self._heartbeat.run(), name="bus-heartbeat"),
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
        if self._heartbeat is not None:
            await _bounded("leaving the registry", self._heartbeat.leave())
        for listener in [self._main, *self._shards.values()]:
            if listener is not None:
                await _bounded("closing a pub/sub connection", listener.stop())
        self._writer.close()
        await _bounded("closing the redis client", self.redis.aclose())

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

    async def _listener_for(self, channel: str) -> Listener:
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

            listener = Listener(self, connect, [], [])
            self._shards[node.name] = listener
            listener.start()
        return listener

    # ------------------------------------------------------------ health

    @property
    def _reader_ok(self) -> bool:
        listeners = [self._main, *self._shards.values()]
        return all(listener is not None and listener.ok for listener in listeners)

    @property
    def healthy(self) -> bool:
        """Redis takes commands, every pub/sub connection is up, and the outbox drains."""
        return self._commands_ok and self._reader_ok and not self._outbox.stalled()

    @property
    def batch_seconds(self) -> Histogram | None:
        """Round trips of the outbox's command batches (None before start)."""
        writer: OutboxWriter | None = getattr(self, "_writer", None)
        return writer.batch_seconds if writer is not None else None

    @property
    def outbox_depth(self) -> tuple[int, int]:
        """Entries and bytes waiting to be sent to Redis."""
        return len(self._outbox), self._outbox.bytes

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
        if self._heartbeat is not None and self._heartbeat.oom_since is not None:
            out["redis_out_of_memory_since"] = self._heartbeat.oom_since
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
        errors = self.stats.redis_errors
        errors[where] = errors.get(where, 0) + 1

    def _recovered(self) -> None:
        if self.healthy and self._down_since is not None:
            if self._was_up:
                self.stats.redis_reconnects += 1
                log.info("redis reachable again after %.1f s", time.time() - self._down_since)
            else:
                log.info("connected to redis (%s routing)", self.config.routing)
            self._was_up = True
            self._down_since = None

    def commands_up(self) -> None:
        """Redis took a batch or a heartbeat (:class:`~.redis_outbox.WriterEvents`)."""
        if not self._commands_ok:
            self._commands_ok = True
            self._recovered()

    def commands_down(self, where: str, exc: BaseException) -> None:
        """Redis did not take a batch or a heartbeat."""
        self._commands_ok = False
        self._failed(where, exc)

    def on_beat(self) -> None:
        """A heartbeat went through (:class:`~.presence.HeartbeatEvents`)."""
        if self._resync:
            # After an outage (or at start) Redis may have lost everything: write
            # this node's users again. Through the outbox, so that session
            # changes queued before or after it apply in their order.
            self._resync = False
            if self._outbox.put(PresenceResync()):
                self._wake.set()
            else:
                self._resync = True  # next heartbeat
        self.commands_up()

    # ------------------------------------------------------------ bus calls

    def publish(
        self, message: Message, delivered_here: int, done: Done | None, sender: Sender | None = None
    ) -> None:
        # Redis hands this node its own messages back too; they are skipped as delivered
        # here already. A user message no session here had when it was sent carries no
        # origin instead: a subscription made here before Redis routes it (the user
        # connecting to this node just then) gets it from Redis, which counted it.
        origin = self.node_id if message.user is None or delivered_here else ""
        payload = encode(message, origin)
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

    def user_subscribed(self, user: str, destination: str, replay: Replay) -> None:
        self._wanted.add(self.keys.user_channel(user, destination))
        self.spawn(self._subscribe_then_take(user, destination, replay))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task the bus keeps until it ends (and waits for at stop)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _subscribe_then_take(self, user: str, destination: str, replay: Replay) -> None:
        channel = self.keys.user_channel(user, destination)
        stored: list[Message] = []
        try:
            # Live delivery first (Redis counts this node from now on), then what
            # was stored before that: each message is in exactly one of the two.
            await self._subscribe(user, destination, channel)
            if channel not in self._wanted:
                raise _GivenUp(channel)  # unsubscribed meanwhile: the store stays for the next one
            stored = self._not_delivered_here(await self._take(user, destination))
        except _GivenUp:
            pass
        except Exception as exc:  # noqa: BLE001 - the subscription goes live regardless
            # What is stored stays stored: the next (re)subscription recovers it.
            log.warning("stored messages of %s %s not fetched: %s", user, destination, exc)
        replay(stored)

    def _not_delivered_here(self, raw: list[bytes]) -> list[Message]:
        """Stored messages to replay here, less those this node delivered when they were sent.

        Those carry this node as origin, like the copies Redis echoes (skipped in
        on_message): a subscription here had them, but Redis ran their publish
        before it counted this node (the SSUBSCRIBE not confirmed yet, or gone
        since), so it stored them too. They wait in that subscription's replay
        already, or were delivered: handed over again they would arrive twice.
        """
        stored = []
        for item in raw:
            origin, message = decode(item, self._user_root)
            if origin != self.node_id:
                stored.append(message)
        self.stats.replayed += len(stored)
        return stored

    async def _take(self, user: str, destination: str) -> list[bytes]:
        """What is stored for (user, destination), removed from the store."""
        async with self._take_slots:
            keys = [self.keys.store(user, destination), self.keys.store_index(user)]
            taken: list[bytes] = await self._scripts.take_stored(keys=keys, args=[destination])
            return taken

    async def _subscribe(self, user: str, destination: str, channel: str) -> None:
        listener = await self._listener_for(channel)
        if channel not in self._wanted:
            # Unsubscribed before this fetch began: subscribing now would have Redis route
            # the user's messages here for no one (not stored). Nothing is taken either.
            raise _GivenUp(channel)
        self._user_channels[channel] = (user, destination, listener)
        await listener.add(channel)

    def user_unsubscribed(self, user: str, destination: str) -> None:
        channel = self.keys.user_channel(user, destination)
        self._wanted.discard(channel)
        found = self._user_channels.pop(channel, None)
        if found is not None:
            found[2].remove(channel)

    # ------------------------------------------------------------ pub/sub

    # What the listeners report (:class:`~.listener.ListenerEvents`).

    @property
    def reachable(self) -> bool:
        return self._commands_ok

    def on_message(self, channel: bytes, data: bytes) -> None:
        if channel == self._probe_channel:
            if self._heartbeat is not None:
                self._heartbeat.probe_seen()
            return
        if channel == self._admin_channel:
            self._answer_admin(data)
            return
        self.stats.received += 1
        origin, msg = decode(data, self._user_root)
        if origin == self.node_id:
            self.stats.ignored += 1  # delivered here before it was published
            return
        if not self.broker.dispatch(msg):
            self.stats.ignored += 1
    async def release(self, users: Collection[str], timeout_s: float) -> bool:
        """Take this node out of the routing of these users' messages, before their
        sessions here close (a drain): unsubscribe their channels and wait, at most
        ``timeout_s``, until Redis confirms it and their stored-message fetches are
        handed over. Until then what comes still reaches the open sessions; from then
        on it is stored or goes to the users' other nodes. Closing first would leave
        a round trip in which Redis counts this node for a subscription that is gone
        (docs/cluster.md, "Limits we know of"). True when all that happened in time.
        """
        wanted = set(users)
        released = [(ch, found[2]) for ch, found in self._user_channels.items() if found[0] in wanted]
        for channel, listener in released:
            del self._user_channels[channel]
            self._wanted.discard(channel)
            listener.remove(channel)
        deadline = time.monotonic() + timeout_s
        while self._background or any(channel in listener.leaving for channel, listener in released):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def settle(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until nothing of this node is in flight to or
        from the cluster: stored-message fetches handed over, unsubscriptions
        confirmed by Redis (so nothing more is routed here), the outbox sent."""
        deadline = time.monotonic() + timeout_s
        while True:
            listeners = [self._main, *self._shards.values()]
            leaving = any(listener is not None and listener.leaving for listener in listeners)
            if not (self._background or leaving or self._outbox):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)

    def on_subscribed(self, channel: str) -> Replay | None:
        """A (re)subscription was confirmed: hold live deliveries until the stored ones are in."""
        found = self._user_channels.get(channel)
        if found is None:
            return None
        return self.broker.begin_recovery(found[0], found[1])

    def on_resubscribed(self, resume: list[tuple[str, Replay]]) -> None:
        self.spawn(self._recover(resume))

    def on_up(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.probe_seen()
        self._resync = True
        self._recovered()

    def on_lost(self, listener: Listener, exc: Exception) -> None:
        self._failed("subscribe", exc)
        if listener is self._main and not self.directed:
            # Broadcast on a Cluster: user messages come in on this connection but
            # the shard subscriptions that make senders count this node live on
            # others. Drop those too, so that meanwhile messages are stored
            # (and recovered) rather than sent to a node that cannot hear them.
            for shard in list(self._shards.values()):
                shard.restart()

    async def _recover(self, resume: list[tuple[str, Replay]]) -> None:
        """Resubscribed: hand over what was stored while the subscription was gone, then go live."""
        scripts = self._scripts
        sha = scripts.take_stored.sha
        batch: list[tuple[str, Replay]] = []
        try:
            if not scripts.loaded:
                await scripts.load()
            while resume:
                batch, resume = resume[:BATCH], resume[BATCH:]
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
                    stored = self._not_delivered_here(next(results) if found is not None else [])
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
        except CONNECTION_ERRORS as exc:
            raise BusUnavailable(f"redis unreachable: {exc}") from None
        self.stats.replayed += len(raw)
        return [decode(item, self._user_root)[1] for item in raw]

    async def live_nodes(self) -> list[str]:
        return await self._view.live_nodes()

    async def user_nodes(self, user: str, sessions_here: int) -> dict[str, int]:
        return await self._view.user_nodes(user)

    async def online_users(self) -> list[str]:
        return await self._view.online_users()

    # ------------------------------------------------------- admin commands

    def serve_admin(self, handler: AdminHandler) -> None:
        self._admin = handler

    def _answer_admin(self, data: bytes) -> None:
        """An admin command from any node (this one too): answer it on its reply list."""
        if self._admin is None:
            return
        try:
            reply_key, command = parse_request(data)
        except BadCommand as exc:
            log.warning("ignored an admin command on the bus: %s", exc)
            return
        try:
            answer = self._admin(command)
        except Exception as exc:  # the asking node hears of it instead of waiting
            log.exception("admin command %s failed", command.op)
            answer = {"node": self.node_id, "error": f"{type(exc).__name__}: {exc}"}
        self.spawn(self._reply_admin(reply_key, orjson.dumps(answer)))

    async def _reply_admin(self, reply_key: str, answer: bytes) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.rpush(reply_key, answer)
            pipe.pexpire(reply_key, _ADMIN_REPLY_TTL_MS)
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the asker times out and names this node
            log.warning("admin reply not written: %s", exc)

    async def admin_call(self, command: AdminCommand, timeout_s: float = 2.0) -> AdminReplies:
        """Published to every node; each pushes its answer to a list this call pops from.

        Bounded: one answer per live node (each bounded by ``command.limit``), for
        at most ``timeout_s``. BusUnavailable while Redis cannot be reached.
        """
        nodes = await self.live_nodes()
        request_id = secrets.token_hex(8)
        reply_key = self.keys.admin_reply(request_id)
        got = AdminReplies()
        try:
            await self.redis.execute_command(
                "SPUBLISH", self.keys.admin, request_payload(request_id, reply_key, command)
            )
            deadline = time.monotonic() + timeout_s
            answered: set[str] = set()
            while not answered.issuperset(nodes) and len(got.replies) < len(nodes) + 16:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                popped = await self.redis.blpop([reply_key], timeout=max(left, 0.01))
                if popped is None:
                    break
                answer = orjson.loads(popped[1])
                answered.add(str(answer.get("node")))
                got.replies.append(answer)
            await self.redis.delete(reply_key)
        except CONNECTION_ERRORS as exc:
            raise BusUnavailable(f"redis unreachable: {exc}") from None
        got.missing = [node for node in nodes if node not in answered]
        return got


class _GivenUp(Exception):
    """A stored-message fetch whose subscription ended before it began."""


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
