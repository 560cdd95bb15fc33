"""The bus of a node that runs alone: nothing to relay, offline messages in memory."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection

from ..broker.broker import Done, Sender
from ..broker.message import Message
from .admin import AdminCommand, AdminHandler, AdminReplies
from .base import (
    MEMORY_OVERHEAD,
    BusStats,
    OfflineLimits,
    StoreNotices,
    encode,
    node_full,
    stored_size,
    too_big,
    too_many_bytes,
    too_many_destinations,
    too_many_messages,
)

log = logging.getLogger(__name__)


class _Stored:
    """The messages kept for one (user, destination), oldest first, with their sizes."""

    __slots__ = ("bytes", "destination", "expiry", "messages", "user")

    def __init__(self, user: str, destination: str) -> None:
        self.user = user
        self.destination = destination
        self.messages: deque[tuple[Message, int]] = deque()
        self.bytes = 0
        self.expiry = 0.0


class _UserStore:
    __slots__ = ("bytes", "count", "destinations")

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.destinations: dict[str, _Stored] = {}


class MemoryBus:
    """Offline store and user registry for a single node.

    The store has the Redis bus's limits, semantics and error texts (see
    :data:`~.keys.PUBLISH_USER`), plus ``max_total_bytes`` for the node's memory.
    Its entries are kept in expiry order (ttl is the same for all, and a store
    refreshes its entry's), so expiry costs one step per expired entry and the
    limits always count what is there.
    """

    healthy = True
    congested = False  # nothing waits: a publish is done when publish() returns

    def status(self) -> dict[str, object]:
        return {"bus": "memory", "offline_messages": self.stored_messages, "offline_bytes": self.stored_bytes}

    def __init__(
        self, limits: OfflineLimits, node_id: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self.node_id = node_id
        self.stats = BusStats()
        self._clock = clock
        # (user, destination) -> its messages; the soonest to expire first
        self._store: OrderedDict[tuple[str, str], _Stored] = OrderedDict()
        self._users: dict[str, _UserStore] = {}
        self.stored_messages = 0
        self.stored_bytes = 0  # sizes, plus MEMORY_OVERHEAD per message (what max_total_bytes counts)
        self._online: set[str] = set()
        self._notices = StoreNotices(log)
        self._admin: AdminHandler | None = None

    def publish(
        self, message: Message, delivered_here: int, done: Done | None, sender: Sender | None = None
    ) -> None:
        error = None
        if message.user is not None and delivered_here == 0:
            error = self._keep(message)
        if error is not None:
            self.stats.refused += 1
            self._notices.refused(f"a message for {message.user!r}", error)
            error = f"refused by the offline store: {error}"
        if done is not None:
            done(error)
        if sender is not None:
            sender.settle(message.size)

    def _keep(self, message: Message) -> str | None:
        """Store a message for a user with no subscriber; the refusal's text if it is refused."""
        user, destination = message.user, message.destination
        assert user is not None
        limits = self.limits
        size = stored_size(encode(message, self.node_id))
        if size > limits.max_message_bytes:
            return too_big(user, size, limits)
        self._expire_due()
        owner = self._users.get(user)
        stored = owner.destinations.get(destination) if owner is not None else None
        count, held, dests = (
            (owner.count, owner.bytes, len(owner.destinations)) if owner is not None else (0, 0, 0)
        )
        # At the (user, destination) cap the oldest go; the per-user limits apply to what is left.
        drop = (
            len(stored.messages) + 1 - limits.max_messages if stored is not None else 1 - limits.max_messages
        )
        drop = max(drop, 0)
        freed = sum(stored.messages[i][1] for i in range(drop)) if stored is not None and drop else 0
        others = dests - (stored is not None)  # after this message: others + 1 destinations
        if others >= limits.max_user_destinations:
            return too_many_destinations(user, others, limits)
        if count + 1 - drop > limits.max_user_messages:
            return too_many_messages(user, count, limits)
        if held + size - freed > limits.max_user_bytes:
            return too_many_bytes(user, held, size, limits)
        charge = size + MEMORY_OVERHEAD
        if self.stored_bytes + charge - (freed + drop * MEMORY_OVERHEAD) > limits.max_total_bytes:
            return node_full(self.stored_bytes, size, limits)
        if owner is None:
            owner = self._users[user] = _UserStore()
        if stored is None:
            stored = owner.destinations[destination] = _Stored(user, destination)
            self._store[(user, destination)] = stored
        else:
            self._store.move_to_end((user, destination))
        for _ in range(drop):
            self._forget(owner, stored, *stored.messages.popleft())
        stored.messages.append((message, size))
        stored.bytes += size
        stored.expiry = self._clock() + limits.ttl_s
        owner.count += 1
        owner.bytes += size
        self.stored_messages += 1
        self.stored_bytes += charge
        self.stats.stored += 1
        if drop:
            self.stats.store_dropped += drop
            self._notices.dropped(user, destination, drop)
        return None

    def _forget(self, owner: _UserStore, stored: _Stored, message: Message, size: int) -> None:
        """One message left the store (dropped, taken or expired)."""
        stored.bytes -= size
        owner.count -= 1
        owner.bytes -= size
        self.stored_messages -= 1
        self.stored_bytes -= size + MEMORY_OVERHEAD

    def _remove(self, stored: _Stored) -> list[Message]:
        """Take a (user, destination)'s messages out of the store."""
        del self._store[(stored.user, stored.destination)]
        owner = self._users[stored.user]
        del owner.destinations[stored.destination]
        messages = []
        for message, size in stored.messages:
            self._forget(owner, stored, message, size)
            messages.append(message)
        if not owner.destinations:
            del self._users[stored.user]
        return messages

    def _expire_due(self) -> None:
        now = self._clock()
        store = self._store
        while store:
            stored = next(iter(store.values()))
            if stored.expiry > now:
                break
            self._remove(stored)

    def take(self, user: str, destination: str) -> list[Message]:
        """Remove and return what is stored for ``user``'s ``destination``, oldest first."""
        self._expire_due()
        stored = self._store.get((user, destination))
        if stored is None:
            return []
        messages = self._remove(stored)
        self.stats.replayed += len(messages)
        return messages

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

    def serve_admin(self, handler: AdminHandler) -> None:
        self._admin = handler

    async def admin_call(self, command: AdminCommand, timeout_s: float = 2.0) -> AdminReplies:
        """This node is the cluster: its own answer."""
        if self._admin is None:
            return AdminReplies(missing=[self.node_id])
        return AdminReplies([self._admin(command)])

    async def start(self) -> None:
        pass

    async def release(self, users: Collection[str], timeout_s: float) -> bool:
        """Nothing to do: messages are routed within the call, to the sessions open then."""
        return True

    async def settle(self, timeout_s: float) -> bool:
        """Nothing is ever in flight: publishes and fetches happen within the call."""
        return True

    async def stop(self) -> None:
        pass

    def expire(self) -> None:
        """Drop expired entries (called now and then, so idle users do not pin memory)."""
        self._expire_due()
