"""Subscriptions and the index that finds them for a destination."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

from .destinations import AntPattern, compile_pattern, has_wildcard

if TYPE_CHECKING:
    from .message import Message
    from .session import Session

ACK_MODES = ("auto", "client", "client-individual")


class Subscription:
    """One SUBSCRIBE of one session.

    ``head`` is the pre-encoded start of every MESSAGE frame for it, so delivery
    only appends the message id and the message's shared tail.
    """

    __slots__ = ("session", "id", "destination", "ack", "user", "head", "pending", "replay", "on_live")

    def __init__(
        self, session: Session, sub_id: str, destination: str, ack: str, user: str | None, head: bytes
    ) -> None:
        self.session = session
        self.id = sub_id
        self.destination = destination
        self.ack = ack
        self.user = user
        self.head = head
        # message-id -> None, oldest first (for cumulative "client" acks)
        self.pending: dict[str, None] = {}
        # While stored messages are fetched, live ones wait here (see Broker._replay).
        self.replay: list[Message] | None = None
        # Called once the subscription is live cluster-wide (its SUBSCRIBE RECEIPT).
        self.on_live: Callable[[], None] | None = None


class SubscriptionIndex:
    """Exact destinations by dict lookup; Ant-style patterns by regex, cached per destination."""

    __slots__ = ("separator", "_exact", "_patterns", "_match_cache")

    _CACHE_LIMIT = 10_000

    def __init__(self, separator: str = "/") -> None:
        self.separator = separator
        self._exact: dict[str, dict[Subscription, None]] = {}
        self._patterns: dict[str, tuple[AntPattern, dict[Subscription, None]]] = {}
        self._match_cache: dict[str, list[dict[Subscription, None]]] = {}

    def __bool__(self) -> bool:
        return bool(self._exact or self._patterns)

    def add(self, sub: Subscription) -> None:
        dest = sub.destination
        if has_wildcard(dest):
            entry = self._patterns.get(dest)
            if entry is None:
                entry = (compile_pattern(dest, self.separator), {})
                self._patterns[dest] = entry
                self._match_cache.clear()
            entry[1][sub] = None
        else:
            self._exact.setdefault(dest, {})[sub] = None

    def remove(self, sub: Subscription) -> None:
        dest = sub.destination
        if has_wildcard(dest):
            entry = self._patterns.get(dest)
            if entry is not None:
                entry[1].pop(sub, None)
                if not entry[1]:
                    del self._patterns[dest]
                    self._match_cache.clear()
        else:
            subs = self._exact.get(dest)
            if subs is not None:
                subs.pop(sub, None)
                if not subs:
                    del self._exact[dest]

    def _pattern_groups(self, destination: str) -> list[dict[Subscription, None]]:
        groups = self._match_cache.get(destination)
        if groups is None:
            groups = [subs for pattern, subs in self._patterns.values() if pattern.match(destination)]
            if len(self._match_cache) >= self._CACHE_LIMIT:
                self._match_cache.clear()
            self._match_cache[destination] = groups
        return groups

    def match(self, destination: str) -> Iterator[Subscription]:
        """Every subscription that receives ``destination`` (a snapshot, safe to mutate after)."""
        exact = self._exact.get(destination)
        if not self._patterns:
            return iter(list(exact) if exact else ())
        out = list(exact) if exact else []
        for subs in self._pattern_groups(destination):
            out.extend(subs)
        return iter(out)

    def __len__(self) -> int:
        return sum(len(s) for s in self._exact.values()) + sum(
            len(e[1]) for e in self._patterns.values()
        )
