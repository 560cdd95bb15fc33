"""The outbox's writer: one task sending the outbox to Redis in pipelined batches.

Its own module because it is the bus's hot path and its retry rules are subtle:
a failed connection (or a Cluster pipeline's) sends the whole batch again; an
error reply that describes Redis's state (a script not loaded, a resharding, a
Redis still loading) sends that entry again; any other error reply (a store
limit, out of memory), or an entry that cannot be encoded, refuses that entry
alone and the rest goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, assert_never

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

from ..buckets import CALL_BOUNDS, Histogram
from .address import Address
from .base import BusStats, OfflineLimits, reply_text
from .keys import PUBLISH_USER, TAKE_STORED, Keys, publish_user_args
from .outbox import Command, Outbox, PresenceResync, PresenceUpdate, TopicPublish, UserPublish
from .resp import ReplyError, RespConnection, RespConnectionError, pack

if TYPE_CHECKING:
    from ..config import BusConfig

log = logging.getLogger(__name__)

BATCH = 512
# What concerns the connection to Redis, not one message. ReplyError: an error reply
# on the lean connection (NOSCRIPT after a Redis restart, OOM...).
CONNECTION_ERRORS = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError, ReplyError)
_COMMAND_TIMEOUT_S = 5.0


class Scripts:
    """The bus's Lua scripts on one client, and whether Redis has them (pipelines EVALSHA
    them without a check, so they are loaded first, and again after a failure)."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self.publish_user = redis.register_script(PUBLISH_USER)
        self.take_stored = redis.register_script(TAKE_STORED)
        self.loaded = False

    async def load(self) -> None:
        """SCRIPT LOAD (on every primary of a Cluster)."""
        await self._redis.script_load(PUBLISH_USER)
        await self._redis.script_load(TAKE_STORED)
        self.loaded = True


class WriterEvents(Protocol):
    """What the writer tells the bus: whether Redis takes its commands."""

    def commands_up(self) -> None:
        """A batch went through."""
        ...

    def commands_down(self, where: str, exc: BaseException) -> None:
        """A batch did not go through (it stays in the outbox)."""
        ...


class OutboxWriter:
    """Drains the outbox in order, one batch of up to :data:`BATCH` entries at a time."""

    def __init__(
        self,
        outbox: Outbox,
        wake: asyncio.Event,
        redis: Any,
        scripts: Scripts,
        config: BusConfig,
        limits: OfflineLimits,
        keys: Keys,
        node_id: str,
        stats: BusStats,
        session_counts: Callable[[], list[tuple[str, int]]],
        events: WriterEvents,
    ) -> None:
        self._outbox = outbox
        self._wake = wake
        self._redis = redis
        self._scripts = scripts
        self._url = config.redis.url
        self._cluster = bool(config.redis.cluster_nodes)
        self._directed = config.routing == "directed"
        self._limits = limits
        self._keys = keys
        self._node_users = keys.node_users(node_id)
        self._stats = stats
        self._session_counts = session_counts
        self._events = events
        self._conn: RespConnection | None = None  # the lean connection (standalone Redis)
        self.batch_seconds = Histogram(CALL_BOUNDS)  # round trips of command batches (metrics)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    async def run(self) -> None:
        backoff = 0.1
        outbox = self._outbox
        scripts = self._scripts
        while True:
            if not outbox:
                self._wake.clear()
                await self._wake.wait()
            batch = outbox.peek(BATCH)
            try:
                if not scripts.loaded:
                    await scripts.load()
                started = time.perf_counter()
                results = await self._send(batch)
                self.batch_seconds.observe(time.perf_counter() - started)
            except Exception as exc:  # the writer must survive anything
                if not isinstance(exc, CONNECTION_ERRORS):
                    log.exception("publishing to redis failed")
                scripts.loaded = False  # a restarted Redis has forgotten them
                if self._conn is not None:  # replies may be out of step with requests now
                    self._conn.close()
                    self._conn = None
                self._events.commands_down("publish", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            again = self._settle(outbox.pop(len(batch)), results)
            if again is not None:  # Redis is not ready for some of it: reload scripts, wait a little
                scripts.loaded = False
                if not again.startswith("NOSCRIPT") or backoff > 0.1:
                    self._events.commands_down("publish", RespConnectionError(again))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            self._events.commands_up()

    def _settle(self, entries: list[Command], results: list[Any]) -> str | None:
        """Finish each sent entry; put the ones to send again back in front, in order,
        and return why (None when there are none)."""
        again: list[Command] = []
        why = None
        stats = self._stats
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
        self._stats.store_dropped += count
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
            pipe = self._redis.pipeline(transaction=False)
            for item in planned:
                if not isinstance(item, _Refused):
                    for command in item:
                        pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        else:
            conn = self._conn
            if conn is None or conn.closed.done():
                conn = self._conn = await RespConnection.open(Address.from_url(self._url))
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
            return [("SPUBLISH", self._keys.topics, entry.payload)]
        if type(entry) is UserPublish:
            user, destination = entry.user, entry.destination
            keys = self._keys
            bcast = "" if self._directed else keys.user_broadcast(user)
            return [
                (  # EVALSHA: a cluster pipeline routes it by its keys
                    "EVALSHA",
                    self._scripts.publish_user.sha,
                    3,
                    *keys.publish_keys(user, destination),
                    entry.payload,
                    *publish_user_args(self._limits, bcast, user, destination),
                )
            ]
        node_users = self._node_users
        if type(entry) is PresenceUpdate:
            user, count = entry.user, entry.count
            return [("HSET", node_users, user, count) if count else ("HDEL", node_users, user)]
        if type(entry) is PresenceResync:  # this node's users as the broker has them now
            counts = self._session_counts()
            commands: list[tuple[Any, ...]] = [("DEL", node_users)]
            if counts:
                commands.append(("HSET", node_users, *(x for pair in counts for x in pair)))
            return commands
        assert_never(entry)


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
