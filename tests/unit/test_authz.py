"""The authorization rules (stompgate.broker.authz): first match decides, and a
wildcard SUBSCRIBE passes only when every destination it can match is allowed.

The two pattern relations the wildcard check rests on are tested as properties
against brute force over a small alphabet of destinations: ``covers`` never says
yes wrongly, ``may_overlap`` never says no wrongly.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stompgate.broker.authz import (
    ANONYMOUS,
    SEND,
    SUBSCRIBE,
    Authorizer,
    Denied,
    Principal,
    Rule,
    covers,
    may_overlap,
)
from stompgate.broker.destinations import compile_pattern

ALICE = Principal("alice")
ADMIN = Principal("root", frozenset({"admin"}))


BOTH = (SEND, SUBSCRIBE)


def rule(pattern: str, who: str | None = None, frames: tuple[str, ...] = BOTH, **kw: frozenset[str]) -> Rule:
    return Rule(frozenset(frames), pattern, who, **kw)  # type: ignore[arg-type]


def allowed(authorizer: Authorizer, frame: str, destination: str, principal: Principal) -> bool:
    try:
        authorizer.check(frame, destination, principal)
    except Denied:
        return False
    return True


class TestFirstMatchDecides:
    def test_no_rules_and_default_allow_is_open(self) -> None:
        authorizer = Authorizer([], True)
        assert authorizer.open
        assert allowed(authorizer, SEND, "/topic/x", ANONYMOUS)

    def test_no_rules_and_default_deny_refuses_everything(self) -> None:
        authorizer = Authorizer([], False)
        assert not allowed(authorizer, SEND, "/topic/x", ADMIN)
        with pytest.raises(Denied, match=r"access denied: SUBSCRIBE /topic/x") as info:
            authorizer.check(SUBSCRIBE, "/topic/x", ALICE)
        assert info.value.rule is None

    def test_the_first_matching_rule_wins(self) -> None:
        authorizer = Authorizer(
            [rule("/topic/admin/**", roles=frozenset({"admin"})), rule("/topic/**", "authenticated")], False
        )
        assert allowed(authorizer, SEND, "/topic/admin/x", ADMIN)
        assert not allowed(authorizer, SEND, "/topic/admin/x", ALICE)  # no fall-through to the next rule
        assert allowed(authorizer, SEND, "/topic/chat", ALICE)
        assert not allowed(authorizer, SEND, "/topic/chat", ANONYMOUS)
        assert not allowed(authorizer, SEND, "/queue/chat", ALICE)  # the default

    def test_rules_apply_to_their_frames_only(self) -> None:
        authorizer = Authorizer([rule("/topic/news", "anyone", frames=(SUBSCRIBE,))], False)
        assert allowed(authorizer, SUBSCRIBE, "/topic/news", ANONYMOUS)
        assert not allowed(authorizer, SEND, "/topic/news", ADMIN)

    def test_who(self) -> None:
        cases = [
            (rule("/a", "anyone"), [True, True, True]),
            (rule("/a", "authenticated"), [False, True, True]),
            (rule("/a", "nobody"), [False, False, False]),
            (rule("/a", users=frozenset({"alice"})), [False, True, False]),
            (rule("/a", roles=frozenset({"admin"})), [False, False, True]),
        ]
        for r, expected in cases:
            authorizer = Authorizer([r], True)
            got = [allowed(authorizer, SEND, "/a", p) for p in (ANONYMOUS, ALICE, ADMIN)]
            assert got == expected, r


class TestUserPlaceholder:
    def test_own_user_destination_only(self) -> None:
        authorizer = Authorizer([rule("/user/{user}/**", "authenticated", frames=(SEND,))], False)
        assert allowed(authorizer, SEND, "/user/alice/queue/x", ALICE)
        assert not allowed(authorizer, SEND, "/user/bob/queue/x", ALICE)
        assert not allowed(authorizer, SEND, "/user/alice/queue/x", ANONYMOUS)

    def test_names_are_matched_as_written_in_user_destinations(self) -> None:
        authorizer = Authorizer([rule("/user/{user}/**", "authenticated")], False)
        odd = Principal("a/b%c")
        assert allowed(authorizer, SEND, "/user/a%2Fb%25c/queue/x", odd)
        assert not allowed(authorizer, SEND, "/user/a/b%c/queue/x", odd)

    @pytest.mark.parametrize("name", ["*", "**", "a?", "x*y"])
    def test_a_name_with_wildcards_never_widens_a_rule(self, name: str) -> None:
        authorizer = Authorizer([rule("/topic/room.{user}", "authenticated")], False)
        assert not allowed(authorizer, SUBSCRIBE, "/topic/room.bob", Principal(name))
        assert allowed(authorizer, SUBSCRIBE, "/topic/room.bob", Principal("bob"))


class TestWildcardSubscriptions:
    RULES = [
        rule("/topic/admin/**", roles=frozenset({"admin"}), frames=(SUBSCRIBE,)),
        rule("/topic/**", "authenticated", frames=(SUBSCRIBE,)),
    ]

    @pytest.mark.parametrize(
        ("destination", "alice", "admin"),
        [
            ("/topic/chat/*", True, True),  # covered by /topic/** and clear of admin
            ("/topic/**", False, True),  # would include /topic/admin/...: refused to alice
            ("/topic/*/x", False, True),  # '*' may be 'admin'
            ("/topic/admin/*", False, True),
            ("/topic/a*", False, True),  # 'a*' may be 'admin'
            ("/topic/b*", True, True),  # cannot be 'admin'
            ("/queue/*", False, False),  # no rule covers it: the default
        ],
    )
    def test_passes_only_when_every_match_is_allowed(
        self, destination: str, alice: bool, admin: bool
    ) -> None:
        authorizer = Authorizer(self.RULES, False)
        assert allowed(authorizer, SUBSCRIBE, destination, ALICE) is alice
        assert allowed(authorizer, SUBSCRIBE, destination, ADMIN) is admin

    def test_a_pattern_is_not_a_literal(self) -> None:
        """Spring's string match would let '/topic/**' pass a rule written for '/topic/**' only;
        here a literal rule for one destination does not allow a pattern around it."""
        authorizer = Authorizer([rule("/topic/news", "anyone")], False)
        assert not allowed(authorizer, SUBSCRIBE, "/topic/*", ALICE)
        assert allowed(authorizer, SUBSCRIBE, "/topic/news", ALICE)


# ---------------------------------------------------------------- properties

SEGMENTS = ["a", "b", "ab"]
GLOB_SEGMENTS = [*SEGMENTS, "*", "a*", "*b", "?", "**"]


def destinations(depth: int = 3) -> list[str]:
    out = []
    for n in range(1, depth + 1):
        for parts in itertools.product(SEGMENTS, repeat=n):
            out.append("/" + "/".join(parts))
    return out


ALL = destinations()
patterns = st.lists(st.sampled_from(GLOB_SEGMENTS), min_size=1, max_size=3).map(lambda p: "/" + "/".join(p))


@settings(max_examples=400, deadline=None)
@given(patterns, patterns)
def test_covers_is_never_wrong_when_it_says_yes(rule_pattern: str, sub: str) -> None:
    if covers(rule_pattern, sub):
        r, s = compile_pattern(rule_pattern), compile_pattern(sub)
        assert all(r.match(d) for d in ALL if s.match(d)), (rule_pattern, sub)


@settings(max_examples=400, deadline=None)
@given(patterns, patterns)
def test_may_overlap_is_never_wrong_when_it_says_no(rule_pattern: str, sub: str) -> None:
    if not may_overlap(rule_pattern, sub):
        r, s = compile_pattern(rule_pattern), compile_pattern(sub)
        assert not any(r.match(d) and s.match(d) for d in ALL), (rule_pattern, sub)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(patterns, st.booleans()), max_size=4), st.booleans(), patterns)
def test_an_allowed_wildcard_subscription_only_matches_allowed_destinations(
    spec: list[tuple[str, bool]], default: bool, sub: str
) -> None:
    """Whatever the rules: if a SUBSCRIBE to a pattern passes, a SUBSCRIBE to each
    destination it matches passes too."""
    rules = [rule(p, "anyone" if ok else "nobody", frames=(SUBSCRIBE,)) for p, ok in spec]
    authorizer = Authorizer(rules, default)
    if allowed(authorizer, SUBSCRIBE, sub, ALICE):
        s = compile_pattern(sub)
        assert all(allowed(authorizer, SUBSCRIBE, d, ALICE) for d in ALL if s.match(d)), (spec, sub)
