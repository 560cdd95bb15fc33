"""The Redis bus's outbox: what this node has to tell Redis, in order, bounded.

One writer drains it in pipelined batches (:class:`~.redis_outbox.OutboxWriter`).
It is bounded in messages and in bytes; past 80 % of either it is *congested*:
sessions that publish are not read until it is back under half (the broker's
flow control), so a burst slows its senders instead of filling memory or
making the outbox refuse other users' messages. It knows when it is not
draining (its oldest entry has waited too long), for readiness.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import final

from ..broker.broker import Done, Sender
from .base import StoreNotices

log = logging.getLogger(__name__)

HIGH_WATER = 0.8
LOW_WATER = 0.5
# A refusal of each kind is logged in full once per interval, then counted.
_LOG_INTERVAL_S = 60.0


class Entry:
    """One thing to tell Redis, with who is waiting for it. What it is, is its type:
    one of the classes of :data:`Command`."""

    __slots__ = ("done", "sender", "size")

    done: Done | None
    sender: Sender | None
    size: int

    def finish(self, error: str | None) -> None:
        """The entry left the outbox: sent (None) or refused (a reason)."""
        if self.done is not None:
            self.done(error)
        if self.sender is not None:
            self.sender.settle(self.size)

    def describe(self) -> str:
        """What it is, for a log line."""
        raise NotImplementedError


@final
class TopicPublish(Entry):
    """A message to a broker destination: to every node."""

    __slots__ = ("payload",)

    def __init__(
        self, payload: bytes, done: Done | None = None, sender: Sender | None = None, size: int = 0
    ) -> None:
        self.payload = payload
        self.done = done
        self.sender = sender
        self.size = size

    def describe(self) -> str:
        return "a topic message"


@final
class UserPublish(Entry):
    """A message to a user: live to the nodes subscribed to it, else stored for the user."""

    __slots__ = ("user", "destination", "payload")

    def __init__(
        self,
        user: str,
        destination: str,
        payload: bytes,
        done: Done | None = None,
        sender: Sender | None = None,
        size: int = 0,
    ) -> None:
        self.user = user
        self.destination = destination
        self.payload = payload
        self.done = done
        self.sender = sender
        self.size = size

    def describe(self) -> str:
        return f"a user message for {self.user!r}"


@final
class PresenceUpdate(Entry):
    """This node's session count of a user, for the registry (0: the user left)."""

    __slots__ = ("user", "count")

    def __init__(self, user: str, count: int) -> None:
        self.user = user
        self.count = count
        self.done = None
        self.sender = None
        self.size = 0

    def describe(self) -> str:
        return "a sessions message"


@final
class PresenceResync(Entry):
    """This node's whole user registry, written again as the broker has it when sent."""

    __slots__ = ()

    def __init__(self) -> None:
        self.done = None
        self.sender = None
        self.size = 0

    def describe(self) -> str:
        return "a resync message"


# What the outbox holds: a closed set, so mypy checks that the writer handles each.
Command = TopicPublish | UserPublish | PresenceUpdate | PresenceResync


class Outbox:
    def __init__(self, limit: int, max_bytes: int, stall_s: float, on_room: Callable[[], None]) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.stall_s = stall_s
        self._on_room = on_room
        self._entries: deque[Command] = deque()
        self.bytes = 0
        self.congested = False
        # Since when the outbox has held entries without sending any (for "not draining").
        self._waiting_since = 0.0
        self._high = (limit * HIGH_WATER, max_bytes * HIGH_WATER)
        self._low = (limit * LOW_WATER, max_bytes * LOW_WATER)
        self._refusals: dict[str, tuple[float, int]] = {}  # kind of error -> (last logged, since then)
        self._notices = StoreNotices(log, _LOG_INTERVAL_S)

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def full(self) -> bool:
        return len(self._entries) >= self.limit or self.bytes >= self.max_bytes

    def put(self, entry: Command) -> bool:
        """Queue ``entry``; False (and nothing queued) when the outbox is full."""
        entries = self._entries
        if len(entries) >= self.limit or self.bytes >= self.max_bytes:
            return False
        if not entries:
            self._waiting_since = time.monotonic()
        entries.append(entry)
        self.bytes += entry.size
        if not self.congested and (len(entries) >= self._high[0] or self.bytes >= self._high[1]):
            self.congested = True
        return True

    def peek(self, count: int) -> list[Command]:
        entries = self._entries
        return [entries[i] for i in range(min(count, len(entries)))]

    def pop(self, count: int) -> list[Command]:
        """Take the first ``count`` entries off (they were sent or refused)."""
        popleft = self._entries.popleft
        taken = [popleft() for _ in range(count)]
        size = 0
        for entry in taken:
            size += entry.size
        self.bytes -= size
        if self.congested and len(self._entries) <= self._low[0] and self.bytes <= self._low[1]:
            self.congested = False
            self._on_room()
        return taken

    def moved(self) -> None:
        """Some entry left for good (sent or refused): the outbox is draining.

        Not in ``pop``: a batch taken off and put back whole did not move."""
        self._waiting_since = time.monotonic()

    def requeue(self, entries: list[Command]) -> None:
        """Put entries taken off back in front, in their order (to be sent again)."""
        self._entries.extendleft(reversed(entries))
        self.bytes += sum(entry.size for entry in entries)

    def note_dropped(self, user: str, destination: str, count: int) -> None:
        """Older stored messages of a user were dropped at the store's cap: say so, once per interval
        and user."""
        self._notices.dropped(user, destination, count)

    def stalled(self) -> bool:
        """Not draining: entries have waited ``stall_s`` with none sent meanwhile."""
        return bool(self._entries) and time.monotonic() - self._waiting_since > self.stall_s

    def oldest_age(self) -> float:
        return time.monotonic() - self._waiting_since if self._entries else 0.0

    def refused(self, entry: Entry, error: str) -> None:
        """Redis refused this one entry: tell its sender, and say so once per kind of error and interval."""
        kind = error.split(" ", 1)[0]
        now = time.monotonic()
        last, since = self._refusals.get(kind, (0.0, 0))
        if now - last >= _LOG_INTERVAL_S:
            more = f" ({since} more of this kind since the last report)" if since else ""
            what = entry.describe()
            log.warning("redis refused %s: %s%s; the rest of the outbox goes on", what, error, more)
            self._refusals[kind] = (now, 0)
        else:
            self._refusals[kind] = (last, since + 1)
        entry.finish(f"refused by redis: {error}")
