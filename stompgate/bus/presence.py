"""The node registry in Redis: this node's heartbeat into it, and the cluster view read from it.

Apart from the bus because none of it is on a message's path: it is redis-py
on a timer (the heartbeat, which also probes the pub/sub connection) and on
HTTP requests (who is alive, who is online), and it needs nothing of the bus
but a few callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from redis.exceptions import ResponseError

from .base import BusUnavailable, reply_text
from .keys import Keys
from .listener import Listener
from .redis_outbox import CONNECTION_ERRORS
from .resp import ReplyError

log = logging.getLogger(__name__)


class HeartbeatEvents(Protocol):
    """What the heartbeat tells the bus: whether Redis takes its writes."""

    def on_beat(self) -> None:
        """Redis took a beat's writes (or refused them only for lack of memory)."""
        ...

    def commands_down(self, where: str, exc: BaseException) -> None:
        """A beat failed."""
        ...


class Heartbeat:
    """Every ``interval_s``: this node's entry in the registry (its users' hash kept from
    expiring, dead nodes pruned) and a probe published to itself on the main pub/sub
    connection, which is replaced when the probes stop coming back."""

    def __init__(
        self,
        redis: Any,
        keys: Keys,
        node_id: str,
        interval_s: float,
        timeout_s: float,
        listener: Listener,
        events: HeartbeatEvents,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._node_id = node_id
        self._interval_s = interval_s
        self._timeout_ms = int(timeout_s * 1000)
        self._listener = listener
        self._events = events
        # When the oldest probe published since the last one seen went out.
        self._probe_unseen_since: float | None = None
        self.oom_since: float | None = None  # when a beat first met Redis out of memory
        self._oom_logged = -60.0

    def probe_seen(self) -> None:
        """A probe came back, or the connection was just made: it is alive."""
        self._probe_unseen_since = None

    async def run(self) -> None:
        interval = self._interval_s
        keys = self._keys
        while True:
            try:
                now_ms = int(time.time() * 1000)
                pipe = self._redis.pipeline(transaction=False)
                pipe.zadd(keys.nodes, {self._node_id: now_ms})
                pipe.zremrangebyscore(keys.nodes, "-inf", now_ms - self._timeout_ms)
                pipe.pexpire(keys.node_users(self._node_id), self._timeout_ms)
                pipe.execute_command("SPUBLISH", keys.probe(self._node_id), b"probe")
                self._redis_full(await pipe.execute(raise_on_error=False))
                if self._probe_unseen_since is None:
                    self._probe_unseen_since = time.monotonic()
                self._events.on_beat()
            except Exception as exc:  # the heartbeat must survive anything
                if not isinstance(exc, CONNECTION_ERRORS):
                    log.exception("heartbeat to redis failed")
                self._events.commands_down("heartbeat", exc)
            await asyncio.sleep(interval)
            main, unseen = self._listener, self._probe_unseen_since
            if main.ok and unseen is not None and time.monotonic() - unseen > 3 * interval:
                # Redis took our probes but the connection brought none back: it is dead
                # without having said so (a silent network drop). Replace it.
                log.warning(
                    "pub/sub connection silent for %.1f s: reconnecting it", time.monotonic() - unseen
                )
                self._probe_unseen_since = None
                main.restart()

    async def leave(self) -> None:
        """Take this node out of the registry (at stop)."""
        await self._redis.zrem(self._keys.nodes, self._node_id)
        await self._redis.delete(self._keys.node_users(self._node_id))

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
            if self.oom_since is not None:
                log.info("redis takes writes again after %.0f s out of memory", time.time() - self.oom_since)
                self.oom_since = None
            return
        now = time.monotonic()
        if self.oom_since is None:
            self.oom_since = time.time()
        if now - self._oom_logged >= 60.0:
            self._oom_logged = now
            log.warning(
                "redis is out of memory (%s): messages for offline users are refused (their senders get an "
                "error) and the node registry is not updated; live delivery goes on. Raise maxmemory, or "
                "free memory (users reading their stored messages do)",
                oom,
            )


class ClusterView:
    """Who is alive and who is online, from the registry; BusUnavailable (HTTP 503)
    while Redis cannot be reached."""

    def __init__(self, redis: Any, keys: Keys, node_timeout_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self._timeout_ms = int(node_timeout_s * 1000)

    async def live_nodes(self) -> list[str]:
        cutoff = int(time.time() * 1000) - self._timeout_ms
        try:
            nodes = await self._redis.zrangebyscore(self._keys.nodes, cutoff, "+inf")
        except CONNECTION_ERRORS as exc:
            raise BusUnavailable(f"redis unreachable: {exc}") from None
        return sorted(n.decode() for n in nodes)

    async def user_nodes(self, user: str) -> dict[str, int]:
        return {node: int(n) for node, n in await self._per_node("HGET", user) if n and int(n) > 0}

    async def online_users(self) -> list[str]:
        return sorted({u.decode() for _node, users in await self._per_node("HKEYS") for u in users})

    async def _per_node(self, command: str, *args: Any) -> list[tuple[str, Any]]:
        """One command on every live node's user hash, in one pipeline."""
        nodes = await self.live_nodes()
        pipe = self._redis.pipeline(transaction=False)
        for node in nodes:
            pipe.execute_command(command, self._keys.node_users(node), *args)
        try:
            results = await pipe.execute()
        except CONNECTION_ERRORS as exc:
            raise BusUnavailable(f"redis unreachable: {exc}") from None
        return list(zip(nodes, results))
