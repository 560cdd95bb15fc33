"""Destination rules, as in Spring's simple broker.

Broker prefixes (``/topic``, ``/queue``) are publish-subscribe. The user prefix
(``/user/``) turns ``SUBSCRIBE /user/queue/x`` into a subscription private to the
subscriber's user, and ``SEND /user/{name}/queue/x`` into a message for every
session of ``name`` subscribed to ``/user/queue/x``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote


class DestinationError(Exception):
    """A destination the broker will not route; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a SEND goes: a broker destination, or a user's destination."""

    destination: str
    user: str | None = None


def encode_user(name: str) -> str:
    """User name as it appears inside ``/user/{name}/...`` (``/`` -> ``%2F``)."""
    return name.replace("%", "%25").replace("/", "%2F")


class DestinationRules:
    def __init__(self, broker_prefixes: list[str], user_prefix: str = "/user/") -> None:
        if not user_prefix.endswith("/"):
            user_prefix += "/"
        self.broker_prefixes = tuple(broker_prefixes)
        self.user_prefix = user_prefix
        # "/user/queue/x" is what a client subscribes to and sees in MESSAGE frames.
        self.user_root = user_prefix[:-1]

    def is_broker(self, destination: str) -> bool:
        return destination.startswith(self.broker_prefixes)

    def _prefixes_text(self) -> str:
        return ", ".join(self.broker_prefixes)

    def send_target(self, destination: str) -> Target:
        """Resolve a SEND destination, or raise :class:`DestinationError`."""
        if destination.startswith(self.user_prefix):
            rest = destination[len(self.user_prefix) :]
            name, slash, tail = rest.partition("/")
            if not name or not slash:
                raise DestinationError(
                    f"user destination {destination!r} must look like "
                    f"{self.user_prefix}{{user}}/<destination>"
                )
            tail = "/" + tail
            if not self.is_broker(tail):
                raise DestinationError(
                    f"user destination {destination!r}: {tail!r} does not start with a "
                    f"broker prefix ({self._prefixes_text()})"
                )
            return Target(tail, unquote(name))
        if self.is_broker(destination):
            return Target(destination)
        raise DestinationError(
            f"destination {destination!r} matches no broker prefix ({self._prefixes_text()}) "
            f"and is not a user destination ({self.user_prefix}...)"
        )

    def subscribe_target(self, destination: str) -> Target:
        """Resolve a SUBSCRIBE destination; ``user`` is set to ``""`` for own-user ones."""
        if destination.startswith(self.user_prefix):
            tail = destination[len(self.user_root) :]
            if not self.is_broker(tail):
                raise DestinationError(
                    f"cannot subscribe to {destination!r}: subscribe to "
                    f"{self.user_root}<destination> with a broker prefix "
                    f"({self._prefixes_text()}), e.g. {self.user_root}/queue/reply; "
                    "another user's destinations cannot be subscribed to"
                )
            return Target(tail, "")
        if self.is_broker(destination):
            return Target(destination)
        raise DestinationError(
            f"cannot subscribe to {destination!r}: it matches no broker prefix "
            f"({self._prefixes_text()}) and is not a user destination ({self.user_prefix}...)"
        )


def has_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


class AntPattern:
    """A compiled Ant-style pattern (Spring's AntPathMatcher semantics).

    ``?`` is one character and ``*`` any run within a segment; a ``**`` segment
    spans zero or more whole segments, so ``/topic/**`` matches ``/topic`` and
    ``/a/**/b`` matches ``/a/b``. Matching runs on the destination with a
    separator put in front, so every segment, the first included, is
    "separator + text" and ``**`` is simply "zero or more of those".
    """

    __slots__ = ("pattern", "separator", "_regex")

    def __init__(self, pattern: str, separator: str) -> None:
        sep = re.escape(separator)
        segment = f"{sep}[^{sep}]*"
        parts = []
        for seg in pattern.split(separator):
            if seg == "**":
                parts.append(f"(?:{segment})*")
            else:
                piece = "".join(
                    f"[^{sep}]*" if ch == "*" else f"[^{sep}]" if ch == "?" else re.escape(ch) for ch in seg
                )
                parts.append(sep + piece)
        self.pattern = pattern
        self.separator = separator
        self._regex = re.compile("".join(parts) + r"\Z", re.DOTALL)

    def match(self, destination: str) -> bool:
        return self._regex.match(self.separator + destination) is not None


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str, separator: str = "/") -> AntPattern:
    return AntPattern(pattern, separator)
