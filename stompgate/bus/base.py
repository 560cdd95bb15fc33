"""What every bus shares: counters, the offline-store limits, and the wire format."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from ..broker.message import Message
from ..logs import RateLimitedLog


class BusUnavailable(Exception):
    """A cluster-wide question could not be answered: Redis is unreachable."""


@dataclass(slots=True)
class BusStats:
    """Bus traffic of this node (shown by ``GET /api/stats``)."""

    published: int = 0  # messages this node sent to the bus
    received: int = 0  # messages the bus brought to this node
    ignored: int = 0  # of those, ones with nothing to do here (own echo, no subscriber)
    stored: int = 0  # user messages kept for a user with no subscriber anywhere
    replayed: int = 0  # stored messages handed back at a subscription or a pull
    dropped: int = 0  # messages refused because the outbox was full (Redis away or too slow)
    refused: int = 0  # messages refused one by one (a store limit, Redis out of memory); the rest went on
    store_dropped: int = 0  # older stored messages pushed out by the per-(user, destination) cap
    redis_errors: dict[str, int] = field(default_factory=dict)  # failed Redis calls, by where (publish...)
    redis_reconnects: int = 0  # Redis reachable again after an outage


@dataclass(slots=True)
class OfflineLimits:
    """What the offline store keeps (``offline.*`` in the configuration, docs/cluster.md).

    Sizes are a message's bytes on the bus (:func:`stored_size`).
    """

    max_messages: int = 1000  # per user and destination; the oldest go first
    ttl_s: float = 7 * 24 * 3600  # since the last message stored
    max_user_messages: int = 10_000  # per user, all destinations: the new message is refused
    max_user_bytes: int = 10 * 1024 * 1024  # per user, all destinations: refused
    max_user_destinations: int = 100  # destinations a user has messages stored for: refused
    max_message_bytes: int = 64 * 1024  # one stored message: refused
    # The whole store (memory bus only; Redis has maxmemory): refused past it.
    max_total_bytes: int = 256 * 1024 * 1024


class MessageRefused(Exception):
    """The offline store refused a message (a limit, or Redis out of memory): it was neither
    delivered nor stored. ``code`` is the first word of the text (``STOREFULL``, ``TOOBIG``,
    ``NODEFULL``, ``OOM``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.code = text.split(" ", 1)[0]


# The first words of the offline store's refusals, and the HTTP status the publish API answers each with.
REFUSAL_STATUS = {
    "TOOBIG": 413,  # this message is too large to be kept: sending it again will not help
    "STOREFULL": 507,  # this user's store is full: until the user reads, nothing more is kept
    "NODEFULL": 503,  # the node's (memory bus) store is full
    "OOM": 503,  # Redis is out of memory (maxmemory)
}


def refusal_code(error: str) -> str | None:
    """The code of a ``done()`` error that is a store refusal ("refused by redis: STOREFULL ..."), or None."""
    if not error.startswith("refused by "):
        return None
    code = error.partition(": ")[2].split(" ", 1)[0]
    return code if code in REFUSAL_STATUS else None


def reply_text(exc: BaseException) -> str:
    """An error reply as Redis wrote it (redis-py takes the code, ``OOM``, ``NOSCRIPT``..., off some)."""
    text = str(exc)
    code = getattr(exc, "status_code", None)
    if code is None:  # redis-py before 6 keeps no status_code: the codes that matter here
        from redis.exceptions import NoScriptError, OutOfMemoryError

        if isinstance(exc, OutOfMemoryError):
            code = "OOM"
        elif isinstance(exc, NoScriptError):
            code = "NOSCRIPT"
    return f"{code} {text}" if code and not text.startswith(code + " ") else text


# Bytes counted in offline.max_total_bytes for each message a node keeps in memory, on top of its
# size: the Message object, its headers dict and the deque slot (about 300 measured for one header).
MEMORY_OVERHEAD = 256


def stored_size(payload: bytes) -> int:
    """A stored message's size: its bytes on the bus (body, and destination, user and headers as JSON)."""
    return len(payload)


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _who(user: str) -> str:
    # As the Lua script writes it: control characters (which an error reply cannot carry) as '?'.
    return "user '" + _CONTROL.sub("?", user) + "'"


def too_big(user: str, size: int, limits: OfflineLimits) -> str:
    return (
        f"TOOBIG a message of {size} bytes for {_who(user)} cannot be stored: "
        f"larger than offline.max_message_bytes = {limits.max_message_bytes}"
    )


def too_many_messages(user: str, count: int, limits: OfflineLimits) -> str:
    cap = limits.max_user_messages
    return f"STOREFULL {_who(user)} has {count} stored messages (offline.max_user_messages = {cap})"


def too_many_bytes(user: str, held: int, size: int, limits: OfflineLimits) -> str:
    return (
        f"STOREFULL {_who(user)} has {held} bytes of stored messages; a message of {size} bytes "
        f"would pass offline.max_user_bytes = {limits.max_user_bytes}"
    )


def too_many_destinations(user: str, count: int, limits: OfflineLimits) -> str:
    return (
        f"STOREFULL {_who(user)} has stored messages for {count} destinations "
        f"(offline.max_user_destinations = {limits.max_user_destinations})"
    )


def node_full(held: int, size: int, limits: OfflineLimits) -> str:
    return (
        f"NODEFULL the offline store of this node holds {held} bytes; a message of {size} bytes "
        f"would pass offline.max_total_bytes = {limits.max_total_bytes}"
    )


class StoreNotices:
    """The offline store's warnings, bounded whatever a sender does.

    Drops at a (user, destination) cap: one line per user and interval, naming
    the user, with the count since the last line. Refusals: one line per kind
    (the error's first word) and interval. Past ``burst`` lines an interval
    (junk pushed to thousands of users), lines are counted and summed up
    (:class:`~stompgate.logs.RateLimitedLog`); the users remembered are bounded.
    """

    MAX_USERS = 1000

    def __init__(
        self, logger: logging.Logger, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lines = RateLimitedLog(
            logger, "offline store warnings", burst=20, interval_s=interval_s, clock=clock
        )
        self._drops: dict[str, tuple[float, int]] = {}  # user -> (last logged, dropped since)
        self._refusals: dict[str, tuple[float, int]] = {}  # kind -> (last logged, refused since)

    def dropped(self, user: str, destination: str, count: int) -> None:
        """Storing a message for ``user`` pushed ``count`` older ones of ``destination`` out."""
        now = self._clock()
        last, since = self._drops.get(user, (-self.interval_s, 0))
        if now - last < self.interval_s:
            self._drops[user] = (last, since + count)
            return
        if len(self._drops) >= self.MAX_USERS:
            self._drops = {u: v for u, v in self._drops.items() if now - v[0] < self.interval_s}
            if len(self._drops) >= self.MAX_USERS:
                self._drops.clear()
        self._drops[user] = (now, 0)
        self._lines.log(
            "offline store of user %r full at %s: %d older message(s) dropped%s",
            user,
            destination,
            count + since,
            " (since the last report)" if since else "",
            key=user,
        )

    def refused(self, what: str, error: str) -> None:
        """``what`` ("a user message for 'bob'") was refused with ``error``."""
        kind = error.split(" ", 1)[0]
        now = self._clock()
        last, since = self._refusals.get(kind, (-self.interval_s, 0))
        if now - last < self.interval_s:
            self._refusals[kind] = (last, since + 1)
            return
        self._refusals[kind] = (now, 0)
        more = f" ({since} more of this kind since the last report)" if since else ""
        self._lines.log("offline store refused %s: %s%s", what, error, more, key=kind)


def encode(message: Message, origin: str) -> bytes:
    """One bus payload: a JSON line (origin, destination, user, headers), then the body.

    orjson: the standard library's json took 5 of the ~28 us a node spends per
    message at p2p load; the format is the same either way.
    """
    head = [origin, message.destination, message.user, message.headers]
    try:
        data = orjson.dumps(head)
    except orjson.JSONEncodeError:  # lone surrogates, which UTF-8 cannot carry: escaped
        data = json.dumps(head, separators=(",", ":")).encode("ascii")
    return data + b"\n" + message.body


def decode(payload: bytes, user_root: str) -> tuple[str, Message]:
    """(origin node, message) from :func:`encode`'s bytes."""
    head, _, body = payload.partition(b"\n")
    try:
        origin, destination, user, headers = orjson.loads(head)
    except orjson.JSONDecodeError:  # what only json writes: escaped lone surrogates
        origin, destination, user, headers = json.loads(head)
    shown = user_root + destination if user is not None else destination
    return origin, Message(destination, headers, body, user=user, shown=shown)
