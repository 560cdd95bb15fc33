"""Tests for destination rules, Ant-style patterns and the subscription index.

Layout:

1. DestinationRules.send_target / subscribe_target (and their error messages)
2. encode_user
3. compile_pattern: Spring AntPathMatcher semantics, '/' and '.' separators
4. SubscriptionIndex: add / remove / match and the pattern match cache
5. hypothesis: compile_pattern against a reference matcher, the index against brute force
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stompgate.broker.destinations import (
    DestinationError,
    DestinationRules,
    Target,
    compile_pattern,
    encode_user,
    has_wildcard,
)
from stompgate.broker.subscriptions import Subscription, SubscriptionIndex

PROPERTY = settings(max_examples=400, database=None, deadline=None)


@pytest.fixture
def rules() -> DestinationRules:
    return DestinationRules(["/topic", "/queue"], "/user/")


# --------------------------------------------------------------------------- 1. rules


@pytest.mark.parametrize(
    "destination, target",
    [
        ("/topic/a", Target("/topic/a")),
        ("/queue/a/b", Target("/queue/a/b")),
        ("/topic", Target("/topic")),
        ("/topic/*", Target("/topic/*")),
        ("/user/bob/queue/x", Target("/queue/x", "bob")),
        ("/user/bob/topic/a/b", Target("/topic/a/b", "bob")),
        ("/user/dept%2Fbob/queue/x", Target("/queue/x", "dept/bob")),
        ("/user/50%25off/queue/x", Target("/queue/x", "50%off")),
        ("/user/%C3%A9/queue/x", Target("/queue/x", "é")),
        ("/user/é/queue/x", Target("/queue/x", "é")),
        ("/user/a+b/queue/x", Target("/queue/x", "a+b")),  # '+' is not a space here
    ],
)
def test_send_target(rules: DestinationRules, destination: str, target: Target) -> None:
    """Broker destinations route as they are; /user/{name}/... goes to that user's /user/..."""
    assert rules.send_target(destination) == target


@pytest.mark.parametrize(
    "destination",
    [
        "/app/x",
        "",
        "topic/a",
        "/Topic/a",
        "/user/bob",  # no destination after the name
        "/user/",
        "/user//queue/x",  # empty name
        "/user/bob/app/x",  # not a broker destination
        "/user/bob/",
        "/user",
    ],
)
def test_send_target_errors_name_the_destination(rules: DestinationRules, destination: str) -> None:
    """Every refused SEND destination is quoted in the error, so a client can see its mistake."""
    with pytest.raises(DestinationError) as info:
        rules.send_target(destination)
    assert repr(destination) in str(info.value)


@pytest.mark.parametrize(
    "destination, target",
    [
        ("/topic/a", Target("/topic/a")),
        ("/queue/a", Target("/queue/a")),
        ("/topic/**", Target("/topic/**")),
        ("/user/queue/x", Target("/queue/x", "")),
        ("/user/topic/a/*", Target("/topic/a/*", "")),
    ],
)
def test_subscribe_target(rules: DestinationRules, destination: str, target: Target) -> None:
    """Own-user destinations come back with user "" (the session fills in its own name)."""
    assert rules.subscribe_target(destination) == target


@pytest.mark.parametrize(
    "destination",
    ["/app/x", "", "/user/bob/queue/x", "/user/", "/user/app/x", "/user", "queue/x", "/users/queue/x"],
)
def test_subscribe_target_errors_name_the_destination(rules: DestinationRules, destination: str) -> None:
    """Every refused SUBSCRIBE destination is quoted in the error."""
    with pytest.raises(DestinationError) as info:
        rules.subscribe_target(destination)
    assert repr(destination) in str(info.value)


def test_error_messages_say_what_is_allowed(rules: DestinationRules) -> None:
    """Messages list the broker prefixes so a client developer can fix the destination."""
    for call in (rules.send_target, rules.subscribe_target):
        with pytest.raises(DestinationError) as info:
            call("/app/x")
        assert "/topic" in str(info.value) and "/queue" in str(info.value)


def test_custom_prefixes() -> None:
    """Prefixes come from settings; a user prefix without trailing '/' gets one."""
    rules = DestinationRules(["/exchange", "/amq/queue"], "/u")
    assert rules.user_prefix == "/u/" and rules.user_root == "/u"
    assert rules.is_broker("/exchange/x") and not rules.is_broker("/topic/x")
    assert rules.send_target("/u/bob/amq/queue/q") == Target("/amq/queue/q", "bob")
    assert rules.subscribe_target("/u/exchange/x") == Target("/exchange/x", "")
    with pytest.raises(DestinationError, match="/topic/x"):
        rules.send_target("/topic/x")
    with pytest.raises(DestinationError, match="/user/queue/x"):
        rules.subscribe_target("/user/queue/x")


# --------------------------------------------------------------------------- 2. encode_user


@pytest.mark.parametrize(
    "name, encoded",
    [
        ("bob", "bob"),
        ("dept/bob", "dept%2Fbob"),
        ("50%off", "50%25off"),
        ("a%2Fb", "a%252Fb"),
        ("a/b/c", "a%2Fb%2Fc"),
        ("é ü", "é ü"),
    ],
)
def test_encode_user(name: str, encoded: str) -> None:
    """Only '/' (and '%', to keep decoding unambiguous) are encoded."""
    assert encode_user(name) == encoded


@PROPERTY
@given(st.text(min_size=1))
def test_encode_user_round_trips_through_send_target(name: str) -> None:
    """Any user name survives /user/{encode_user(name)}/queue/x."""
    encoded = encode_user(name)
    assert "/" not in encoded
    assert unquote(encoded) == name
    rules = DestinationRules(["/topic", "/queue"])
    assert rules.send_target(f"/user/{encoded}/queue/x") == Target("/queue/x", name)


# --------------------------------------------------------------------------- 3. compile_pattern


def matches(pattern: str, destination: str, separator: str = "/") -> bool:
    return compile_pattern(pattern, separator).match(destination)


@pytest.mark.parametrize(
    "pattern, destination, expected",
    [
        # literal
        ("/topic/a", "/topic/a", True),
        ("/topic/a", "/topic/ab", False),
        ("/topic/a", "/topic/a/b", False),
        ("/topic/a", "/topic/a\n", False),  # anchored at the very end
        # * within one segment
        ("/topic/*", "/topic/abc", True),
        ("/topic/*", "/topic/a/b", False),
        ("/topic/*", "/topic", False),
        ("/topic/*/x", "/topic/a/x", True),
        ("/topic/*/x", "/topic/a/b/x", False),
        ("/topic/a*c", "/topic/abbc", True),
        ("/topic/a*c", "/topic/ac", True),
        ("/topic/a*c", "/topic/a/c", False),
        ("/*/*", "/topic/a", True),
        ("/*/*", "/topic", False),
        # ? exactly one character, never the separator
        ("/topic/?", "/topic/a", True),
        ("/topic/?", "/topic/ab", False),
        ("/topic/a?c", "/topic/abc", True),
        ("/topic/a?c", "/topic/ac", False),
        ("/topic/a?c", "/topic/a/c", False),
        ("/topic/??", "/topic/ab", True),
        # ** any number of segments, including zero
        ("/topic/**", "/topic", True),
        ("/topic/**", "/topic/a", True),
        ("/topic/**", "/topic/a/b/c", True),
        ("/topic/**", "/topicx", False),
        ("/topic/**", "/topicx/a", False),
        ("/topic/**", "/other/a", False),
        ("/topic/**/x", "/topic/x", True),
        ("/topic/**/x", "/topic/a/x", True),
        ("/topic/**/x", "/topic/a/b/x", True),
        ("/topic/**/x", "/topic/a/xb", False),
        ("/topic/**/x", "/topic/a/x/b", False),
        ("/**", "/a/b", True),
        ("/**/x", "/x", True),
        ("/**/x", "/a/b/x", True),
        ("/topic/**/a/**", "/topic/a", True),
        ("/topic/*/**", "/topic/a/b", True),
        ("/topic/*/**", "/topic/a", True),  # ** at the end matches zero segments after a wildcard too
        ("/topic/?/**", "/topic/a", True),
        ("/topic/**/**", "/topic", True),
        ("/topic/*/**", "/topic", False),
        # ** inside a segment is just *
        ("/topic/a**", "/topic/abc", True),
        ("/topic/a**", "/topic/a/b", False),
        # regex metacharacters are literal
        ("/topic/a.b", "/topic/a.b", True),
        ("/topic/a.b", "/topic/axb", False),
        ("/topic/(x)+", "/topic/(x)+", True),
        ("/topic/[ab]", "/topic/a", False),
        ("/topic/a$", "/topic/a$", True),
        ("/topic/a\\d", "/topic/a\\d", True),
        ("/topic/a\\d", "/topic/a1", False),
    ],
)
def test_compile_pattern_slash(pattern: str, destination: str, expected: bool) -> None:
    """Spring AntPathMatcher with '/' as the separator."""
    assert matches(pattern, destination) is expected


@pytest.mark.parametrize(
    "pattern, destination, expected",
    [
        ("topic.*", "topic.a", True),
        ("topic.*", "topic.a.b", False),
        ("topic.*", "topic", False),
        ("topic.**", "topic", True),
        ("topic.**", "topic.a.b", True),
        ("topic.**", "topicx", False),
        ("topic.**.x", "topic.x", True),
        ("topic.**.x", "topic.a.b.x", True),
        ("topic.a?c", "topic.abc", True),
        ("topic.a?c", "topic.a.c", False),
        ("topic.*", "topic.a/b", True),  # '/' is an ordinary character here
        ("/topic/*", "/topic/a/b", True),
        ("/topic/*", "/topic/a.b", False),
        ("/topic/**", "/topic/a.b", False),  # "/topic/" is one segment; no '.' before **
        ("/topic.**", "/topic", True),
    ],
)
def test_compile_pattern_dot(pattern: str, destination: str, expected: bool) -> None:
    """The '.' separator option (Spring's AntPathMatcher(".")), e.g. for RabbitMQ-style names."""
    assert matches(pattern, destination, ".") is expected


def test_compile_pattern_is_cached() -> None:
    """Patterns are compiled once per (pattern, separator)."""
    assert compile_pattern("/topic/*/c", "/") is compile_pattern("/topic/*/c", "/")
    assert compile_pattern("topic.*", ".") is not compile_pattern("topic.*", "/")


@pytest.mark.parametrize(
    "destination, wildcard",
    [("/topic/a", False), ("/topic/*", True), ("/topic/a?", True), ("/topic/**", True), ("/t.a", False)],
)
def test_has_wildcard(destination: str, wildcard: bool) -> None:
    """Only '*' and '?' make a destination a pattern."""
    assert has_wildcard(destination) is wildcard


# --------------------------------------------------------------------------- 4. SubscriptionIndex


def sub(destination: str, sub_id: str = "0") -> Subscription:
    """A subscription not tied to a session: the index never looks at it."""
    return Subscription(None, sub_id, destination, "auto", None, b"")  # type: ignore[arg-type]


def found(index: SubscriptionIndex, destination: str) -> set[Subscription]:
    return set(index.match(destination))


def test_index_exact() -> None:
    """Exact destinations: add, match, remove, and removing twice or unknown is harmless."""
    index = SubscriptionIndex()
    assert not index and len(index) == 0
    a1, a2, b = sub("/topic/a", "1"), sub("/topic/a", "2"), sub("/topic/b")
    for s in (a1, a2, b):
        index.add(s)
    assert index and len(index) == 3
    assert found(index, "/topic/a") == {a1, a2}
    assert found(index, "/topic/b") == {b}
    assert found(index, "/topic/c") == set()
    index.remove(a1)
    assert found(index, "/topic/a") == {a2}
    index.remove(a1)  # twice is harmless
    index.remove(sub("/topic/zzz"))  # never added
    index.remove(a2)
    index.remove(b)
    assert not index and len(index) == 0
    assert found(index, "/topic/a") == set()


def test_index_add_is_idempotent() -> None:
    """Adding the same subscription twice does not deliver twice."""
    index = SubscriptionIndex()
    s, p = sub("/topic/a"), sub("/topic/*")
    for _ in range(2):
        index.add(s)
        index.add(p)
    assert len(index) == 2
    assert list(index.match("/topic/a")).count(s) == 1


def test_index_patterns_and_exact_together() -> None:
    """A destination collects exact and pattern subscribers alike."""
    index = SubscriptionIndex()
    exact, star, deep, other = sub("/topic/a/b"), sub("/topic/a/*"), sub("/topic/**"), sub("/queue/*")
    for s in (exact, star, deep, other):
        index.add(s)
    assert found(index, "/topic/a/b") == {exact, star, deep}
    assert found(index, "/topic/a/c") == {star, deep}
    assert found(index, "/topic/x/y/z") == {deep}
    assert found(index, "/topic") == {deep}
    assert found(index, "/queue/q") == {other}
    assert len(index) == 4


def test_index_cache_sees_a_new_pattern() -> None:
    """A destination matched (and cached) before a pattern appears must see the pattern after."""
    index = SubscriptionIndex()
    first = sub("/topic/*", "1")
    index.add(first)
    assert found(index, "/topic/a") == {first}  # cached
    second = sub("/topic/**", "2")
    index.add(second)
    assert found(index, "/topic/a") == {first, second}
    assert found(index, "/topic/a/b") == {second}


def test_index_cache_sees_a_removed_pattern() -> None:
    """A pattern whose last subscription goes must no longer match cached destinations."""
    index = SubscriptionIndex()
    keep, drop = sub("/topic/*", "1"), sub("/topic/a", "2")
    gone = sub("/topic/?", "3")
    for s in (keep, drop, gone):
        index.add(s)
    assert found(index, "/topic/a") == {keep, drop, gone}
    index.remove(gone)
    assert found(index, "/topic/a") == {keep, drop}
    index.remove(keep)
    assert found(index, "/topic/a") == {drop}
    index.add(gone)  # the same pattern again, after its group was deleted
    assert found(index, "/topic/a") == {drop, gone}


def test_index_cache_sees_more_subscriptions_of_a_cached_pattern() -> None:
    """Subscriptions added to (or removed from) an existing pattern show without a cache clear."""
    index = SubscriptionIndex()
    s1, s2, s3 = sub("/topic/*", "1"), sub("/topic/*", "2"), sub("/topic/*", "3")
    index.add(s1)
    assert found(index, "/topic/a") == {s1}
    index.add(s2)
    index.add(s3)
    assert found(index, "/topic/a") == {s1, s2, s3}
    index.remove(s2)
    assert found(index, "/topic/a") == {s1, s3}
    index.remove(s1)
    index.remove(s3)
    assert found(index, "/topic/a") == set()
    index.add(s2)
    assert found(index, "/topic/a") == {s2}


def test_index_cache_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The match cache is bounded and stays correct when it is flushed."""
    monkeypatch.setattr(SubscriptionIndex, "_CACHE_LIMIT", 3)
    index = SubscriptionIndex()
    p = sub("/topic/*")
    index.add(p)
    for _round in range(3):
        for i in range(10):
            assert found(index, f"/topic/{i}") == {p}
            assert found(index, f"/queue/{i}") == set()
            assert len(index._match_cache) <= 3


def test_index_match_is_a_snapshot() -> None:
    """Subscribers may unsubscribe while a message is being dispatched to them."""
    index = SubscriptionIndex()
    subs = [sub("/topic/a", "e"), sub("/topic/*", "p1"), sub("/topic/**", "p2")]
    for s in subs:
        index.add(s)
    seen = []
    for s in index.match("/topic/a"):
        seen.append(s)
        for t in subs:
            index.remove(t)
        index.add(sub("/topic/*", "late"))
    assert set(seen) == set(subs)


def test_index_dot_separator() -> None:
    """The index honours the configured separator."""
    index = SubscriptionIndex(".")
    star, deep = sub("topic.*"), sub("topic.**")
    index.add(star)
    index.add(deep)
    assert found(index, "topic.a") == {star, deep}
    assert found(index, "topic.a.b") == {deep}
    assert found(index, "topic") == {deep}


# --------------------------------------------------------------------------- 5. properties


def reference_match(pattern: str, path: str, separator: str) -> bool:
    """Spring AntPathMatcher, written the obvious way: segments, with '**' spanning zero or more.

    Within a segment ``*`` is any run of characters and ``?`` exactly one character.
    """

    def segment(p: str, s: str) -> bool:
        if not p:
            return not s
        if p[0] == "*":
            return any(segment(p[1:], s[i:]) for i in range(len(s) + 1))
        if not s:
            return False
        return (p[0] == "?" or p[0] == s[0]) and segment(p[1:], s[1:])

    pat, parts = pattern.split(separator), path.split(separator)

    def walk(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(parts)
        if pat[i] == "**":
            return any(walk(i + 1, k) for k in range(j, len(parts) + 1))
        return j < len(parts) and segment(pat[i], parts[j]) and walk(i + 1, j + 1)

    return walk(0, 0)


def test_reference_matcher_sanity() -> None:
    """The reference agrees with the documented examples, so a disagreement is compile_pattern's."""
    assert reference_match("/topic/**", "/topic", "/")
    assert reference_match("/topic/*/**", "/topic/a", "/")
    assert reference_match("/a/**/b", "/a/b", "/")
    assert not reference_match("/topic/*", "/topic/a/b", "/")
    assert reference_match("/t/a*c?", "/t/abbcd", "/")
    assert not reference_match("/t/a?", "/t/a", "/")


PATH_SEGMENTS = st.text(alphabet="abc", min_size=1, max_size=3)
PATTERN_SEGMENTS = st.one_of(
    st.sampled_from(["*", "**", "?", "a*", "*b", "a?", "?*", "a**", "*a*"]),
    PATH_SEGMENTS,
)


@st.composite
def pattern_for(draw: st.DrawFn, path_segs: list[str]) -> list[str]:
    """A pattern derived from a path, so that matches are common, not rare.

    Each segment is kept or generalised (``*``, ``?``..., ``a*``, ``**``), and
    ``**`` may be inserted anywhere to stand for zero segments.
    """
    out: list[str] = []
    for seg in path_segs:
        if draw(st.integers(0, 3)) == 0:
            out.append("**")  # zero segments here
        out.append(
            draw(st.sampled_from([seg, "*", "?" * len(seg), seg[0] + "*", "*" + seg[-1], "**", seg + "x"]))
        )
    if draw(st.booleans()):
        out.append("**")
    return out


@st.composite
def pattern_and_path(draw: st.DrawFn) -> tuple[str, str, str]:
    separator = draw(st.sampled_from(["/", "."]))
    path_segs = draw(st.lists(PATH_SEGMENTS, min_size=1, max_size=4))
    if draw(st.booleans()):
        pattern_segs = draw(pattern_for(path_segs))
    else:
        pattern_segs = draw(st.lists(PATTERN_SEGMENTS, min_size=1, max_size=5))
    lead = separator if separator == "/" else ""  # Spring style: "/topic/..." vs "topic.x"
    return separator, lead + separator.join(pattern_segs), lead + separator.join(path_segs)


@PROPERTY
@given(pattern_and_path())
def test_compile_pattern_matches_reference(case: tuple[str, str, str]) -> None:
    """compile_pattern agrees with a straightforward AntPathMatcher on arbitrary patterns and paths."""
    separator, pattern, path = case
    assert matches(pattern, path, separator) is reference_match(pattern, path, separator), (pattern, path)


@PROPERTY
@given(st.lists(st.text(alphabet="ab", min_size=1, max_size=2), min_size=1, max_size=4))
def test_literal_pattern_matches_only_itself(segments: list[str]) -> None:
    """A pattern without wildcards is plain equality."""
    dest = "/" + "/".join(segments)
    assert matches(dest, dest)
    assert not matches(dest, dest + "x")
    assert not matches(dest, dest + "/x")


INDEX_DESTINATIONS = ["/t/a", "/t/b", "/t/a/b", "/t", "/q/a"]
INDEX_PATTERNS = ["/t/*", "/t/**", "/t/?", "/*/a", "/t/a/*", "/**"]
OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "match"]),
        st.sampled_from(INDEX_DESTINATIONS + INDEX_PATTERNS),
        st.integers(0, 2),  # which of three subscriptions to that destination
    ),
    max_size=60,
)


@PROPERTY
@given(OPS)
def test_index_agrees_with_brute_force(ops: list[tuple[str, str, int]]) -> None:
    """Any interleaving of add/remove/match gives what a linear scan over live subscriptions gives.

    The expected side uses compile_pattern itself, so this checks the index and
    its cache, independently of the pattern semantics checked above.
    """
    pool = {(d, n): sub(d, str(n)) for d in INDEX_DESTINATIONS + INDEX_PATTERNS for n in range(3)}
    index = SubscriptionIndex()
    live: set[Subscription] = set()
    for op, dest, n in ops:
        s = pool[(dest, n)]
        if op == "add":
            index.add(s)
            live.add(s)
        elif op == "remove":
            index.remove(s)
            live.discard(s)
        for query in INDEX_DESTINATIONS:
            expected = {
                t
                for t in live
                if (matches(t.destination, query) if has_wildcard(t.destination) else t.destination == query)
            }
            got = list(index.match(query))
            assert len(got) == len(set(got)) and set(got) == expected, (query, op, dest)
        assert len(index) == len(live)
        assert bool(index) is bool(live)


# --------------------------------------------------------------------------- 6. the trie, any patterns


def one_globstar(segments: list[str]) -> list[str]:
    """Patterns the index takes: '**' at most once (consecutive ones count as one)."""
    out: list[str] = []
    seen = False
    for seg in segments:
        if seg == "**":
            if seen and out[-1:] != ["**"]:
                continue
            seen = True
        out.append(seg)
    return out


@st.composite
def pattern_sets(draw: st.DrawFn) -> tuple[str, list[str], list[str]]:
    separator = draw(st.sampled_from(["/", "."]))
    lead = separator if separator == "/" else ""
    paths = draw(st.lists(st.lists(PATH_SEGMENTS, min_size=1, max_size=5), min_size=1, max_size=6))
    patterns = []
    for _ in range(draw(st.integers(1, 12))):
        base = draw(st.sampled_from(paths))
        segs = (
            draw(pattern_for(base))
            if draw(st.booleans())
            else draw(st.lists(PATTERN_SEGMENTS, min_size=1, max_size=6))
        )
        patterns.append(lead + separator.join(one_globstar(segs)))
    queries = [lead + separator.join(p) for p in paths] + [lead + "a", lead, lead + separator.join(["a"] * 7)]
    return separator, patterns, queries


@PROPERTY
@given(pattern_sets())
def test_the_trie_matches_exactly_what_the_reference_matches(case: tuple[str, list[str], list[str]]) -> None:
    """Any set of patterns (each with '**' at most once), any destinations: the index's answer
    is the reference matcher's, each subscription once; and it stays so as patterns go."""
    separator, patterns, queries = case
    index = SubscriptionIndex(separator)
    subs = [sub(p, str(i)) for i, p in enumerate(patterns)]
    for s in subs:
        if has_wildcard(s.destination):
            index.add(s)
    live = [s for s in subs if has_wildcard(s.destination)]
    for _round in range(2):
        for query in queries:
            got = list(index.match(query))
            want = {s for s in live if reference_match(s.destination, query, separator)}
            assert len(got) == len(set(got)) and set(got) == want, (query, [s.destination for s in live])
        for s in live[::2]:  # take half away: pruned branches must not leave matches behind
            index.remove(s)
        live = live[1::2]
    for s in live:
        index.remove(s)
    assert not index and index._trie.root.empty()


@pytest.mark.parametrize(
    "pattern, problem",
    [
        ("/topic/**", False),
        ("/topic/**/**/a", False),
        ("/**/a/**", True),
        ("/a/**/b/**", True),
        ("a.**.b.**", True),
    ],
)
def test_pattern_problem(pattern: str, problem: bool) -> None:
    from stompgate.broker.destinations import pattern_problem

    separator = "." if "." in pattern else "/"
    assert (pattern_problem(pattern, separator) is not None) is problem


@PROPERTY
@given(st.text(alphabet="ab?*", max_size=12), st.text(alphabet="abc", max_size=40))
def test_segment_globs_never_backtrack_into_a_wrong_answer(glob: str, text: str) -> None:
    """SegmentGlob's greedy placement agrees with the reference on one segment, long pieces included."""
    from stompgate.broker.destinations import SegmentGlob

    assert SegmentGlob(glob).match(text) is reference_match("/" + glob, "/" + text, "/")


def test_long_pieces_with_question_marks_use_the_bit_parallel_scan() -> None:
    from stompgate.broker.destinations import SegmentGlob

    piece = "a" * 40 + "?b"  # longer than the regex's share: Shift-And
    glob = SegmentGlob("*" + piece + "*")
    assert glob.match("x" + "a" * 40 + "zb" + "y")
    assert not glob.match("a" * 400)
    assert glob.match("a" * 400 + "cb")


def test_a_users_destination_as_a_backend_names_it() -> None:
    """The API, extensions and the template take ``/queue/x`` or ``/user/queue/x`` for a user."""
    rules = DestinationRules(["/topic", "/queue"], "/user/")
    assert rules.user_destination("/queue/x") == "/queue/x"
    assert rules.user_destination("/user/queue/x") == "/queue/x"
    for bad in ["/app/x", "/user/app/x", "queue/x", "/user/"]:
        with pytest.raises(DestinationError, match=r"broker prefix \(/topic, /queue\)"):
            rules.user_destination(bad)
