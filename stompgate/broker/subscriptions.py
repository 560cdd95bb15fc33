"""Subscriptions and the index that finds them for a destination."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .destinations import GLOBSTAR, SegmentGlob, has_wildcard

if TYPE_CHECKING:
    from .message import Message
    from .receipts import ReceiptSlot
    from .session import Session

ACK_MODES = ("auto", "client", "client-individual")


class Subscription:
    """One SUBSCRIBE of one session.

    ``head`` is the pre-encoded start of every MESSAGE frame for it, so delivery
    only appends the message id and the message's shared tail.
    """

    __slots__ = ("session", "id", "destination", "ack", "user", "head", "pending", "replay", "receipt")

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
        # The SUBSCRIBE's RECEIPT, written once the subscription is live cluster-wide.
        self.receipt: ReceiptSlot | None = None


class _Node:
    """One segment position in the pattern trie.

    Children by the kind of the next pattern segment: literal text (a dict
    lookup), ``*`` (takes any segment), and other globs (tested one by one).
    ``tail`` is where patterns with a ``**`` after this prefix continue: a trie
    of what follows the ``**``, read from the end of the destination.
    """

    __slots__ = ("literal", "star", "globs", "tail", "subs")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.globs: dict[str, tuple[SegmentGlob, _Node]] = {}
        self.tail: _Node | None = None
        self.subs: dict[Subscription, None] = {}

    def empty(self) -> bool:
        return not (self.subs or self.literal or self.globs or self.star is not None or self.tail is not None)

    def children(self, part: str, into: list[_Node]) -> None:
        """Append the children that take the segment ``part``."""
        child = self.literal.get(part)
        if child is not None:
            into.append(child)
        if self.star is not None:
            into.append(self.star)
        for glob, node in self.globs.values():
            if glob.match(part):
                into.append(node)


def _path(pattern: str, separator: str) -> list[str]:
    """The trie keys of a pattern: its segments up to ``**``, then ``**``, then the rest backwards."""
    segments = pattern.split(separator)
    if GLOBSTAR not in segments:
        return segments
    first = segments.index(GLOBSTAR)
    last = len(segments) - 1 - segments[::-1].index(GLOBSTAR)
    rest = segments[last + 1 :]
    if any(seg != GLOBSTAR for seg in segments[first:last]):
        raise ValueError(f"pattern {pattern!r} has '**' more than once")
    return segments[:first] + [GLOBSTAR] + rest[::-1]


class _PatternTrie:
    """Ant patterns by segment, as RabbitMQ's topic exchange keeps binding keys.

    A pattern is split at its one ``**`` (see ``pattern_problem``): the segments
    before it are matched from the start of the destination, those after it from
    the end. Both parts have a fixed length, so every node of the trie sits at
    one depth and a publish reaches each node at most once: its cost is bounded
    by the part of the trie its segments lead into, whatever the patterns, and
    literal segments cost one dict lookup however many patterns share a prefix.
    """

    __slots__ = ("separator", "root", "size", "subscriptions")

    def __init__(self, separator: str) -> None:
        self.separator = separator
        self.root = _Node()
        self.size = 0  # distinct patterns
        self.subscriptions = 0

    def add(self, pattern: str, sub: Subscription) -> bool:
        """Add ``sub`` under ``pattern``; True when the pattern is new."""
        node = self.root
        for key in _path(pattern, self.separator):
            node = self._child(node, key)
        if sub in node.subs:
            return False
        fresh = not node.subs
        node.subs[sub] = None
        self.subscriptions += 1
        self.size += fresh
        return fresh

    @staticmethod
    def _child(node: _Node, key: str) -> _Node:
        if key == GLOBSTAR:
            if node.tail is None:
                node.tail = _Node()
            return node.tail
        if key == "*":
            if node.star is None:
                node.star = _Node()
            return node.star
        if has_wildcard(key):
            entry = node.globs.get(key)
            if entry is None:
                entry = node.globs[key] = (SegmentGlob(key), _Node())
            return entry[1]
        child = node.literal.get(key)
        if child is None:
            child = node.literal[key] = _Node()
        return child

    @staticmethod
    def _find(node: _Node, key: str) -> _Node | None:
        if key == GLOBSTAR:
            return node.tail
        if key == "*":
            return node.star
        if has_wildcard(key):
            entry = node.globs.get(key)
            return entry[1] if entry is not None else None
        return node.literal.get(key)

    @staticmethod
    def _unlink(node: _Node, key: str) -> None:
        if key == GLOBSTAR:
            node.tail = None
        elif key == "*":
            node.star = None
        elif has_wildcard(key):
            del node.globs[key]
        else:
            del node.literal[key]

    def remove(self, pattern: str, sub: Subscription) -> bool:
        """Remove ``sub``; True when the pattern has no subscription left (and is pruned)."""
        steps: list[tuple[_Node, str]] = []
        node: _Node | None = self.root
        for key in _path(pattern, self.separator):
            assert node is not None
            steps.append((node, key))
            node = self._find(node, key)
            if node is None:
                return False
        assert node is not None
        if sub not in node.subs:
            return False
        del node.subs[sub]
        self.subscriptions -= 1
        if node.subs:
            return False
        self.size -= 1
        for parent, key in reversed(steps):  # prune the branch that led only here
            if not node.empty():
                break
            self._unlink(parent, key)
            node = parent
        return True

    def match(self, destination: str) -> list[dict[Subscription, None]]:
        """The subscription groups of every pattern ``destination`` matches."""
        parts = destination.split(self.separator)
        count = len(parts)
        groups: list[dict[Subscription, None]] = []
        level = [self.root]
        for depth in range(count + 1):
            following: list[_Node] = []
            for node in level:
                if node.tail is not None:
                    _match_tail(node.tail, parts, count - depth, groups)
                if depth == count:
                    if node.subs:
                        groups.append(node.subs)
                else:
                    node.children(parts[depth], following)
            if not following:
                break
            level = following
        return groups


def _match_tail(tail: _Node, parts: list[str], room: int, groups: list[dict[Subscription, None]]) -> None:
    """Patterns ``prefix/**/suffix`` whose prefix took the first segments: suffixes from the end.

    ``room`` segments are left after the prefix; the ``**`` takes what the suffix does not.
    """
    level = [tail]
    last = len(parts) - 1
    for back in range(room + 1):
        following: list[_Node] = []
        for node in level:
            if node.subs:
                groups.append(node.subs)
            if back < room:
                node.children(parts[last - back], following)
        if not following:
            return
        level = following


class SubscriptionIndex:
    """Exact destinations by dict lookup; Ant-style patterns in a segment trie, cached per destination."""

    __slots__ = ("separator", "_exact", "_trie", "_match_cache")

    _CACHE_LIMIT = 10_000

    def __init__(self, separator: str = "/") -> None:
        self.separator = separator
        self._exact: dict[str, dict[Subscription, None]] = {}
        self._trie = _PatternTrie(separator)
        self._match_cache: dict[str, list[dict[Subscription, None]]] = {}

    def __bool__(self) -> bool:
        return bool(self._exact or self._trie.size)

    def add(self, sub: Subscription) -> None:
        dest = sub.destination
        if has_wildcard(dest):
            if self._trie.add(dest, sub):
                self._match_cache.clear()
        else:
            self._exact.setdefault(dest, {})[sub] = None

    def remove(self, sub: Subscription) -> None:
        dest = sub.destination
        if has_wildcard(dest):
            if self._trie.remove(dest, sub):
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
            groups = self._trie.match(destination)
            if len(self._match_cache) >= self._CACHE_LIMIT:
                self._match_cache.clear()
            self._match_cache[destination] = groups
        return groups

    def match(self, destination: str) -> Iterator[Subscription]:
        """Every subscription that receives ``destination`` (a snapshot, safe to mutate after)."""
        exact = self._exact.get(destination)
        if not self._trie.size:
            return iter(list(exact) if exact else ())
        out = list(exact) if exact else []
        for subs in self._pattern_groups(destination):
            out.extend(subs)
        return iter(out)

    def __len__(self) -> int:
        return sum(len(s) for s in self._exact.values()) + self._trie.subscriptions
