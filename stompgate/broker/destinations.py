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
    application: bool = False  # an application destination: the application takes it


def encode_user(name: str) -> str:
    """User name as it appears inside ``/user/{name}/...`` (``/`` -> ``%2F``)."""
    return name.replace("%", "%25").replace("/", "%2F")


class DestinationRules:
    """Where a destination a client names goes: the broker (publish-subscribe), a
    user's destinations, or the application (``application_prefixes``)."""

    def __init__(
        self,
        broker_prefixes: list[str],
        user_prefix: str = "/user/",
        application_prefixes: list[str] | None = None,
    ) -> None:
        if not user_prefix.endswith("/"):
            user_prefix += "/"
        # As Spring: "/app" is "/app/", so "/application/x" is not under it.
        prefixes = application_prefixes or []
        self.application_prefixes = tuple(p if p.endswith("/") else p + "/" for p in prefixes)
        self.broker_prefixes = tuple(broker_prefixes)
        self.user_prefix = user_prefix
        # "/user/queue/x" is what a client subscribes to and sees in MESSAGE frames.
        self.user_root = user_prefix[:-1]

    def is_broker(self, destination: str) -> bool:
        return destination.startswith(self.broker_prefixes)

    def application_path(self, destination: str) -> str | None:
        """``/hello`` for ``/app/hello`` when ``/app`` is an application prefix, else None."""
        for prefix in self.application_prefixes:
            if destination.startswith(prefix):
                return destination[len(prefix) - 1 :]
        return None

    def _prefixes_text(self) -> str:
        return ", ".join(self.broker_prefixes)

    def user_destination(self, destination: str) -> str:
        """A destination of one user's as a backend names it, ``/queue/x`` or ``/user/queue/x``
        (what the user subscribes to), reduced to ``/queue/x``; or :class:`DestinationError`
        unless that is under a broker prefix. The one place the API, extensions and the
        template check it."""
        if destination.startswith(self.user_prefix):
            destination = destination[len(self.user_root) :]
        if not self.is_broker(destination):
            raise DestinationError(
                f"destination {destination!r} must start with a broker prefix ({self._prefixes_text()})"
            )
        return destination

    def send_target(self, destination: str) -> Target:
        """Resolve a SEND destination, or raise :class:`DestinationError`."""
        if self.application_prefixes and self.application_path(destination) is not None:
            return Target(destination, application=True)
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
        if self.application_prefixes and self.application_path(destination) is not None:
            return Target(destination, application=True)
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


GLOBSTAR = "**"


# Pieces with '?' up to this long are searched by the regex engine: it tries each
# position in C, at most this many characters each. Longer ones by Shift-And.
_SHORT_PIECE = 32


class _Piece:
    """A run of a segment pattern between two ``*``: literal characters and ``?``.

    Placing it never backtracks: a literal piece is found with ``str.find``; a
    short piece with ``?`` by a fixed-length regex (at most its length per
    position, in C); a long one by a bit-parallel scan (Shift-And) that reads
    each character of the text once, however the piece is made.
    """

    __slots__ = ("text", "size", "_regex", "_masks", "_any", "_last")

    def __init__(self, text: str) -> None:
        self.text = text
        self.size = len(text)
        self._regex = None
        self._masks: dict[str, int] = {}
        self._any = 0
        self._last = 1 << (self.size - 1) if text else 0
        if "?" in text:
            # Anchored checks: a fixed-length regex (no quantifier, no alternation).
            self._regex = re.compile("".join("." if c == "?" else re.escape(c) for c in text), re.DOTALL)
            for i, c in enumerate(text):
                if c == "?":
                    self._any |= 1 << i
                else:
                    self._masks[c] = self._masks.get(c, 0) | 1 << i

    def at(self, s: str, pos: int) -> bool:
        if self._regex is None:
            return s.startswith(self.text, pos)
        return self._regex.match(s, pos) is not None

    def find(self, s: str, start: int, end: int) -> int:
        """The leftmost place in ``s[start:end]`` the piece fits, or -1."""
        if self._regex is None:
            return s.find(self.text, start, end)
        if self.size <= _SHORT_PIECE:
            m = self._regex.search(s, start, end)
            return -1 if m is None else m.start()
        masks, anything, last = self._masks, self._any, self._last
        state = 0
        for i in range(start, end):
            state = ((state << 1) | 1) & (masks.get(s[i], 0) | anything)
            if state & last:
                return i - self.size + 1
        return -1


class SegmentGlob:
    """One segment of a pattern, with ``*`` (any run) and ``?`` (one character).

    Matched greedily without backtracking: the text before the first ``*`` must
    start the segment, the text after the last one must end it, and each piece
    in between is placed at its leftmost fit after the previous one. For pieces
    separated by ``*`` the leftmost fit is always a valid choice, so this is
    exact, and every search starts where the previous one ended: the segment is
    read about once, whatever the pattern.
    """

    __slots__ = ("text", "_first", "_middle", "_last", "_starred")

    def __init__(self, text: str) -> None:
        self.text = text
        pieces = text.split("*")
        self._starred = len(pieces) > 1
        self._first = _Piece(pieces[0])
        self._last = _Piece(pieces[-1])
        self._middle = [_Piece(p) for p in pieces[1:-1] if p]

    def match(self, s: str) -> bool:
        first, last = self._first, self._last
        if not self._starred:
            return len(s) == first.size and first.at(s, 0)
        end = len(s) - last.size
        if end < first.size or not first.at(s, 0) or not last.at(s, end):
            return False
        pos = first.size
        for piece in self._middle:
            found = piece.find(s, pos, end)
            if found < 0:
                return False
            pos = found + piece.size
        return True


def pattern_problem(pattern: str, separator: str) -> str | None:
    """Why a wildcard pattern is refused, or None.

    ``**`` may appear once (several in a row count as one): with two, matching
    needs a search for the part between them at every position, which an
    attacker can make quadratic. Spring's AntPathMatcher allows more; STOMP
    applications hardly use it.
    """
    runs = 0
    previous = False
    for seg in pattern.split(separator):
        deep = seg == GLOBSTAR
        runs += deep and not previous
        previous = deep
    if runs > 1:
        return f"pattern {pattern!r} has '**' more than once: a subscription pattern may span segments once"
    return None


class AntPattern:
    """A compiled Ant-style pattern (Spring's AntPathMatcher semantics).

    ``?`` is one character and ``*`` any run within a segment; a ``**`` segment
    spans zero or more whole segments, so ``/topic/**`` matches ``/topic`` and
    ``/a/**/b`` matches ``/a/b``. Segments are the pieces between separators
    (the empty one before a leading ``/`` included).

    Matching walks the destination's segments once, keeping the set of pattern
    positions reached so far (at most one per pattern segment): its cost is
    linear in the destination for any pattern. A regular expression with
    backtracking took minutes for ``*x*x*x...`` against a long segment.
    """

    __slots__ = ("pattern", "separator", "_segments")

    def __init__(self, pattern: str, separator: str) -> None:
        self.pattern = pattern
        self.separator = separator
        self._segments: list[SegmentGlob | None] = [
            None if seg == GLOBSTAR else SegmentGlob(seg) for seg in pattern.split(separator)
        ]

    def match(self, destination: str) -> bool:
        segments = self._segments
        size = len(segments)

        def closure(i: int, into: dict[int, None]) -> None:
            while True:
                into[i] = None
                if i == size or segments[i] is not None:
                    return
                i += 1  # a '**' may span no segment at all

        states: dict[int, None] = {}
        closure(0, states)
        for part in destination.split(self.separator):
            reached: dict[int, None] = {}
            for i in states:
                if i == size:
                    continue
                glob = segments[i]
                if glob is None:
                    closure(i, reached)  # '**' takes this segment and stays
                elif glob.match(part):
                    closure(i + 1, reached)
            if not reached:
                return False
            states = reached
        return size in states


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str, separator: str = "/") -> AntPattern:
    return AntPattern(pattern, separator)
