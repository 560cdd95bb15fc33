"""The bus of a node that runs alone: nothing to relay, offline messages in memory."""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

from ..broker.broker import Done, Sender
from ..broker.message import Message
from .base import BusStats, OfflineLimits


class MemoryBus:
    """Offline store and user registry for a single node."""

    healthy = True
    congested = False  # nothing waits: a publish is done when publish() returns

    def status(self) -> dict[str, str]:
        return {"bus": "memory"}

    def __init__(self, limits: OfflineLimits, node_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.node_id = node_id
        self.stats = BusStats()
        self._clock = clock
        # (user, destination) -> (expiry, messages)
        self._store: dict[tuple[str, str], tuple[float, deque[Message]]] = {}
        self._online: set[str] = set()

    def publish(self, message: Message, delivered_here: int, done: Done | None, sender: Sender | None = None) -> None:
        if message.user is not None and delivered_here == 0:
            self._keep(message)
        if done is not None:
            done(None)
        if sender is not None:
            sender.settle(message.size)

    def _keep(self, message: Message) -> None:
        assert message.user is not None
        key = (message.user, message.destination)
        entry = self._store.get(key)
        now = self._clock()
        if entry is None or entry[0] <= now:
            entry = (0.0, deque(maxlen=self.limits.max_messages))
        entry[1].append(message)
        self._store[key] = (now + self.limits.ttl_s, entry[1])
        self.stats.stored += 1

    def take(self, user: str, destination: str) -> list[Message]:
        """Remove and return what is stored for ``user``'s ``destination``, oldest first."""
        entry = self._store.pop((user, destination), None)
        if entry is None or entry[0] <= self._clock():
            return []
        self.stats.replayed += len(entry[1])
        return list(entry[1])

    def user_sessions(self, user: str, count: int) -> None:
        (self._online.add if count else self._online.discard)(user)

    def user_subscribed(self, user: str, destination: str, replay: Callable[[list[Message]], None]) -> None:
        replay(self.take(user, destination))

    def user_unsubscribed(self, user: str, destination: str) -> None:
        pass

    # The cluster view, same shape as the Redis bus answers.
    async def pull(self, user: str, destination: str) -> list[Message]:
        return self.take(user, destination)

    async def user_nodes(self, user: str, sessions_here: int) -> dict[str, int]:
        return {self.node_id: sessions_here} if sessions_here else {}

    async def online_users(self) -> list[str]:
        return sorted(self._online)

    async def live_nodes(self) -> list[str]:
        return [self.node_id]

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def expire(self) -> None:
        """Drop expired entries (called now and then, so idle users do not pin memory)."""
        now = self._clock()
        for key in [k for k, (expiry, _) in self._store.items() if expiry <= now]:
            del self._store[key]
