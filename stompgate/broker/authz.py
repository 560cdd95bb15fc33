"""Who may SEND or SUBSCRIBE where: ordered rules, the first that matches decides.

As Spring Security's message matchers (``simpDestMatchers``,
``simpSubscribeDestMatchers`` with ``permitAll``, ``authenticated``,
``hasRole``, ``denyAll``) and RabbitMQ's write / read permissions: each rule
names the frames it covers, an Ant-style destination pattern and who it lets
through; a frame no rule matches gets the default. ``{user}`` in a pattern is
the session's own user name (as it is written in ``/user/{name}/...``).

A wildcard SUBSCRIBE (``/topic/**``) can match destinations that different
rules decide differently, which a string match of the pattern alone (Spring's,
RabbitMQ's) would let through. Here it passes only when an allowing rule covers
every destination it can match and no earlier rule that could overlap it
denies: the checks are conservative (:func:`covers`, :func:`may_overlap`), so a
doubtful case is refused, never let through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .destinations import GLOBSTAR, compile_pattern, encode_user, has_wildcard

SEND = "SEND"
SUBSCRIBE = "SUBSCRIBE"
USER = "{user}"

# Who a rule lets through.
ANYONE = "anyone"
AUTHENTICATED = "authenticated"
NOBODY = "nobody"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a session (or an API caller) is: a name (None: anonymous) and roles."""

    name: str | None
    roles: frozenset[str] = frozenset()
    # When the credential stops being valid (a JWT's exp, Unix time); None: never.
    expires_at: float | None = None


ANONYMOUS = Principal(None)


@dataclass(frozen=True)
class Rule:
    """One entry of ``authorization.rules``."""

    frames: frozenset[str]  # SEND, SUBSCRIBE
    pattern: str
    who: str | None = None  # anyone | authenticated | nobody; None: the users and roles below
    users: frozenset[str] = field(default_factory=frozenset)
    roles: frozenset[str] = field(default_factory=frozenset)
    name: str = ""  # where it is written (authorization.rules[2]), for the log

    def grants(self, principal: Principal) -> bool:
        if self.who == ANYONE:
            return True
        if self.who == NOBODY:
            return False
        if principal.name is None:
            return False
        if self.who == AUTHENTICATED:
            return True
        return principal.name in self.users or not self.roles.isdisjoint(principal.roles)

    def pattern_for(self, principal: Principal, separator: str) -> str | None:
        """The pattern with ``{user}`` filled in; None when the rule cannot apply to ``principal``.

        A name that holds a wildcard character or the separator would change what
        the pattern matches, so rules with ``{user}`` do not apply to it.
        """
        if USER not in self.pattern:
            return self.pattern
        name = principal.name
        if name is None or has_wildcard(name) or separator in encode_user(name):
            return None
        return self.pattern.replace(USER, encode_user(name))


class Denied(Exception):
    """A frame the rules refuse; the message names the frame and the destination."""

    def __init__(self, frame: str, destination: str, rule: Rule | None) -> None:
        super().__init__(f"access denied: {frame} {destination}")
        self.rule = rule


class Authorizer:
    """The rules of one node, in order, and the default for a frame none matches."""

    def __init__(self, rules: list[Rule], default_allow: bool, separator: str = "/") -> None:
        self.rules = rules
        self.default_allow = default_allow
        self.separator = separator
        self.open = default_allow and not rules  # nothing to check: the hot path skips it

    def check(self, frame: str, destination: str, principal: Principal) -> None:
        """Raise :class:`Denied` unless ``principal`` may send ``frame`` to ``destination``."""
        if self.open:
            return
        wildcard = frame == SUBSCRIBE and has_wildcard(destination)
        for rule in self.rules:
            if frame not in rule.frames:
                continue
            pattern = rule.pattern_for(principal, self.separator)
            if pattern is None:
                continue
            if not wildcard:
                if compile_pattern(pattern, self.separator).match(destination):
                    if rule.grants(principal):
                        return
                    raise Denied(frame, destination, rule)
                continue
            if covers(pattern, destination, self.separator):
                if rule.grants(principal):
                    return
                raise Denied(frame, destination, rule)
            if may_overlap(pattern, destination, self.separator) and not rule.grants(principal):
                raise Denied(frame, destination, rule)  # part of what it matches is refused
        if not self.default_allow:
            raise Denied(frame, destination, None)


def _literal(segment: str) -> bool:
    return not has_wildcard(segment)


def covers(rule: str, sub: str, separator: str = "/") -> bool:
    """Whether every destination ``sub`` matches, ``rule`` matches too (False when unsure)."""
    if rule == sub:
        return True
    if not has_wildcard(sub):
        return compile_pattern(rule, separator).match(sub)
    r, s = rule.split(separator), sub.split(separator)
    for i, seg in enumerate(r):
        if seg == GLOBSTAR:
            return i == len(r) - 1  # a trailing '**' takes whatever is left, '**' included
        if i >= len(s) or s[i] == GLOBSTAR:
            return False
        if seg == s[i] or seg == "*":
            continue
        if not (_literal(s[i]) and compile_pattern(seg, separator).match(s[i])):
            return False
    return len(r) == len(s)


def may_overlap(rule: str, sub: str, separator: str = "/") -> bool:
    """Whether some destination matches both patterns (True when unsure)."""
    r, s = rule.split(separator), sub.split(separator)
    for a, b in zip(r, s):
        if a == GLOBSTAR or b == GLOBSTAR:
            return True
        if _literal(a) and _literal(b):
            if a != b:
                return False
        elif _literal(a) and not compile_pattern(b, separator).match(a):
            return False
        elif _literal(b) and not compile_pattern(a, separator).match(b):
            return False
    if len(r) == len(s):
        return True
    longer = r if len(r) > len(s) else s
    # The shorter has no '**' (it would have returned above): the longer must match
    # with its extra segments empty, which only '**' segments can be ('/a/**' matches '/a').
    return all(seg == GLOBSTAR for seg in longer[min(len(r), len(s)) :])
