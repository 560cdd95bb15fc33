"""Hostile users against the offline store (issue 11, item 6): its limits, in both buses.

A logged-in user can send to any user name and destination, and what nobody
subscribes to is kept for days. The store is bounded per (user, destination)
(oldest dropped, counted and logged), per user (messages, bytes, destinations:
the new message is refused), per message, and in total (memory bus:
offline.max_total_bytes; Redis: its maxmemory). A refusal reaches the sender as
an error: an ERROR frame for a SEND with a receipt, a status for the HTTP API,
MessageRefused for the template.

1. the store's accounting against a reference model: the memory bus (with a
   clock), and the Lua script on a real Redis (with legacy lists and drift);
2. real nodes on the memory bus and on Redis (standalone and Cluster, both
   routings): the limits, drops counted and logged, take/pull then fill again,
   expiry, and an attacker flooding a full user while an innocent one is measured;
3. Redis out of memory (maxmemory, noeviction): refused with an error, the rest
   goes on, /ready stays true, nothing lost silently.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.clusterkit import FAST, api, wait_ready
from harness.nodes import NodeProcess
from harness.redisproc import RedisProcess, start_redis
from harness.stompclient import WsStomp
from stompgate.broker.message import Message
from stompgate.bus import base
from stompgate.bus.base import MEMORY_OVERHEAD, MessageRefused, OfflineLimits, StoreNotices, encode
from stompgate.bus.keys import PUBLISH_USER, TAKE_STORED, Keys, publish_user_args
from stompgate.bus.memory import MemoryBus
from stompgate.config import ConfigError, load_config
from stompgate.stomp import Frame
from stompgate.template import AsyncMessagingTemplate, MessagingTemplate

from ..hostile import Probe, assert_unharmed, while_attacked
from .kit import DEPLOYMENTS, started

pytestmark = pytest.mark.usefixtures("close_ws_clients")

# Small limits, so that a test reaches each in a few messages.
LIMITS = {
    "max_messages": 4,  # per (user, destination): the oldest go
    "max_user_messages": 6,
    "max_user_bytes": 3000,
    "max_user_destinations": 3,
    "max_message_bytes": 1000,
}
BUSES = [pytest.param(None, id="memory"), *DEPLOYMENTS]


def kind(error: str | None) -> str | None:
    """Which limit an error names (None: accepted)."""
    if error is None:
        return None
    for key in (
        "max_message_bytes",
        "max_user_destinations",
        "max_user_messages",
        "max_user_bytes",
        "max_total_bytes",
    ):
        if f"offline.{key}" in error:
            return key
    if "OOM" in error:
        return "OOM"
    raise AssertionError(f"not a store refusal: {error}")


# ------------------------------------------------------------ 1. the accounting


class Model:
    """What the store must hold, recomputed from scratch at every step (no index, no cleverness)."""

    def __init__(self, limits: OfflineLimits, overhead: int | None = None) -> None:
        self.limits = limits
        self.overhead = overhead  # per message in max_total_bytes (memory bus); None: no total
        self.lists: dict[tuple[str, str], tuple[list[int], float]] = {}  # -> (sizes, expiry)
        self.now = 0.0

    def _prune(self) -> None:
        self.lists = {k: v for k, v in self.lists.items() if v[1] > self.now}

    def store(self, user: str, destination: str, size: int) -> str | int:
        """-k (k oldest dropped) when stored, else the limit that refuses it."""
        limits = self.limits
        if size > limits.max_message_bytes:
            return "max_message_bytes"
        self._prune()
        mine = self.lists.get((user, destination), ([], 0.0))[0]
        theirs = [sizes for (u, _d), (sizes, _e) in self.lists.items() if u == user]
        drop = max(0, len(mine) + 1 - limits.max_messages)
        freed = sum(mine[:drop])
        if len(theirs) - ((user, destination) in self.lists) >= limits.max_user_destinations:
            return "max_user_destinations"
        if sum(map(len, theirs)) + 1 - drop > limits.max_user_messages:
            return "max_user_messages"
        if sum(map(sum, theirs)) + size - freed > limits.max_user_bytes:
            return "max_user_bytes"
        if self.overhead is not None:
            total = sum(sum(s) + len(s) * self.overhead for s, _e in self.lists.values())
            if total + size + self.overhead - freed - drop * self.overhead > limits.max_total_bytes:
                return "max_total_bytes"
        self.lists[(user, destination)] = (mine[drop:] + [size], self.now + limits.ttl_s)
        return -drop

    def take(self, user: str, destination: str) -> list[int]:
        self._prune()
        return self.lists.pop((user, destination), ([], 0.0))[0]


SMALL = OfflineLimits(
    max_messages=3, ttl_s=10, max_user_messages=5, max_user_bytes=400, max_user_destinations=3,
    max_message_bytes=150, max_total_bytes=2000,
)
USERS = ["ann", "c{x}"]
DESTINATIONS = ["/queue/a", "/queue/b", "/queue/c", "/queue/d"]
store = st.tuples(
    st.just("store"), st.sampled_from(USERS), st.sampled_from(DESTINATIONS),
    st.one_of(st.integers(0, 70), st.integers(0, 170)),  # mostly small: caps and counts are reached too
)
ops = st.lists(
    st.one_of(
        store, store, store,
        st.tuples(st.just("take"), st.sampled_from(USERS), st.sampled_from(DESTINATIONS)),
        st.tuples(st.just("wait"), st.sampled_from([1.0, 4.0, 9.5])),
    ),
    max_size=60,
)


@given(ops)
@settings(max_examples=300, deadline=None)
def test_memory_bus_keeps_what_the_model_keeps(steps: list[tuple[Any, ...]]) -> None:
    now = [0.0]
    bus = MemoryBus(SMALL, "n1", clock=lambda: now[0])
    model = Model(SMALL, MEMORY_OVERHEAD)
    ids = itertools.count()
    dropped = refused = 0
    for step in steps:
        if step[0] == "wait":
            now[0] += step[1]
            model.now = now[0]
            continue
        user, destination = step[1], step[2]
        if step[0] == "take":
            got = bus.take(user, destination)
            assert [len(encode(m, "n1")) for m in got] == model.take(user, destination)
            continue
        message = Message(destination, {"n": str(next(ids))}, b"", user=user)
        message.body = b"x" * max(0, step[3] - len(encode(message, "n1")))
        errors: list[str | None] = []
        bus.publish(message, 0, errors.append)
        expected = model.store(user, destination, len(encode(message, "n1")))
        assert kind(errors[0]) == (None if isinstance(expected, int) else expected), (errors, expected)
        if isinstance(expected, int):
            dropped -= expected
        else:
            refused += 1
            assert errors[0] is not None and errors[0].startswith("refused by the offline store: ")
        # Its totals are the sums of what is there.
        bus.expire()
        live = {k: v for k, v in model.lists.items() if v[1] > now[0]}
        assert bus.stored_messages == sum(len(s) for s, _e in live.values())
        assert bus.stored_bytes == sum(sum(s) + len(s) * MEMORY_OVERHEAD for s, _e in live.values())
    assert (bus.stats.store_dropped, bus.stats.refused) == (dropped, refused)


def index_matches_lists(client: redis.Redis, keys: Keys, user: str) -> None:
    """The index's totals are the sums of its records, and each record describes its list."""
    index = {k.decode(): int(v) for k, v in client.hgetall(keys.store_index(user)).items()}
    records = {f[2:]: (index[f], index["s:" + f[2:]]) for f in index if f.startswith("c:")}
    assert index.get("n", 0) == sum(c for c, _s in records.values())
    assert index.get("b", 0) == sum(s for _c, s in records.values())
    assert index.get("d", 0) == len(records)
    for destination, (count, size) in records.items():
        items = client.lrange(keys.store(user, destination), 0, -1)
        assert (count, size) == (len(items), sum(map(len, items))), destination
    if records:
        assert client.pttl(keys.store_index(user)) >= max(client.pttl(keys.store(user, d)) for d in records)


_prefixes = itertools.count()


@given(ops)
# -0: TAKE_STORED once wrote this one's decrement as '-0', which is not an integer to HINCRBY.
@example([("store", "ann", "/queue/a", 0), ("store", "ann", "/queue/b", 0), ("take", "ann", "/queue/a")])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_script_keeps_what_the_model_keeps(
    standalone_redis: RedisProcess, steps: list[tuple[Any, ...]]
) -> None:
    """PUBLISH_USER and TAKE_STORED on a real Redis, step by step against the model (no expiry here)."""
    client = standalone_redis.client()
    keys = Keys(f"model{next(_prefixes)}")
    limits = OfflineLimits(**{**base_fields(SMALL), "ttl_s": 600})
    publish, take = client.register_script(PUBLISH_USER), client.register_script(TAKE_STORED)
    model = Model(limits)
    for step in steps:
        if step[0] == "wait":
            continue
        user, destination = step[1], step[2]
        store_keys = [keys.store(user, destination), keys.store_index(user)]
        if step[0] == "take":
            got = take(keys=store_keys, args=[destination])
            assert [len(m) for m in got] == model.take(user, destination)
        else:
            payload = b"p" * step[3]
            try:
                result: Any = publish(
                    keys=[keys.user_channel(user, destination), *store_keys],
                    args=[payload, *publish_user_args(limits, "", user, destination)],
                )
            except redis.ResponseError as exc:
                result = kind(str(exc))
            assert result == model.store(user, destination, len(payload))
        index_matches_lists(client, keys, user)


def base_fields(limits: OfflineLimits) -> dict[str, Any]:
    return {name: getattr(limits, name) for name in limits.__slots__}


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_the_cap_makes_room_before_the_user_limits_count(standalone_redis: RedisProcess, where: str) -> None:
    """At a (user, destination) cap the oldest go first: the user's limits count what is left."""
    limits = OfflineLimits(max_messages=2, max_user_messages=2, max_user_bytes=100, max_message_bytes=100)
    if where == "memory":
        bus = MemoryBus(limits, "n1")

        def store(destination: str, size: int) -> str | int | None:
            message = Message(destination, {}, b"", user="bob")
            message.body = b"x" * (size - len(encode(message, "n1")))
            errors: list[str | None] = []
            bus.publish(message, 0, errors.append)
            return kind(errors[0]) if errors[0] else -bus.stats.store_dropped
    else:
        client = standalone_redis.client()
        keys = Keys(f"cap{next(_prefixes)}")
        publish = client.register_script(PUBLISH_USER)

        def store(destination: str, size: int) -> str | int | None:
            try:
                return publish(
                    keys=list(keys.publish_keys("bob", destination)),
                    args=[b"x" * size, *publish_user_args(limits, "", "bob", destination)],
                )
            except redis.ResponseError as exc:
                return kind(str(exc))

    assert store("/queue/a", 40) == 0
    assert store("/queue/a", 40) == 0
    assert store("/queue/a", 45) == -1  # 80 + 45 - 40 = 85 of 100 bytes, 2 of 2 messages
    assert store("/queue/a", 70) == "max_user_bytes"  # 85 + 70 - 40 = 115
    assert store("/queue/b", 10) == "max_user_messages"


def test_the_index_adopts_lists_it_does_not_describe(standalone_redis: RedisProcess) -> None:
    """Lists stored before the index existed (or by a node of an earlier release) are delivered,
    and counted from the first message stored to them; an index lost (evicted) is rebuilt the same way."""
    client = standalone_redis.client()
    keys = Keys(f"legacy{next(_prefixes)}")
    limits = OfflineLimits(**{**base_fields(SMALL), "ttl_s": 600, "max_user_messages": 4})
    publish, take = client.register_script(PUBLISH_USER), client.register_script(TAKE_STORED)

    def store(destination: str, payload: bytes) -> Any:
        try:
            return publish(
                keys=list(keys.publish_keys("bob", destination)),
                args=[payload, *publish_user_args(limits, "", "bob", destination)],
            )
        except redis.ResponseError as exc:
            return str(exc)

    # An earlier release's lists: 5 messages in one (its cap was higher), none in the index.
    client.rpush(keys.store("bob", "/queue/old"), *[b"o%d" % i for i in range(5)])
    client.pexpire(keys.store("bob", "/queue/old"), 600_000)
    assert store("/queue/new", b"n0") == 0  # the index does not know the old list yet
    assert store("/queue/old", b"o5") == -3  # measured (5 + 1 = 6 with n0), then trimmed to the cap of 3
    index_matches_lists(client, keys, "bob")
    assert kind(store("/queue/new", b"n1")) == "max_user_messages"  # 3 old + 1 new + 1 > 4
    # An older node took /queue/old without telling the index: the record is stale, and fixed when
    # the list is stored to again.
    client.delete(keys.store("bob", "/queue/old"))
    assert store("/queue/old", b"again") == 0
    index_matches_lists(client, keys, "bob")
    # The index itself lost (an eviction policy): rebuilt list by list.
    client.delete(keys.store_index("bob"))
    assert store("/queue/new", b"n3") == 0
    index_matches_lists(client, keys, "bob")
    assert take(
        keys=[keys.store("bob", "/queue/old"), keys.store_index("bob")], args=["/queue/old"]
    ) == [b"again"]
    index_matches_lists(client, keys, "bob")
    # Whatever became of the index, a take returns what it deleted.
    client.set(keys.store_index("bob"), "not a hash")
    assert take(
        keys=[keys.store("bob", "/queue/new"), keys.store_index("bob")], args=["/queue/new"]
    ) == [b"n0", b"n3"]


def test_the_script_and_the_memory_bus_say_the_same(standalone_redis: RedisProcess) -> None:
    """Each refusal's text, word for word, from the Lua script and from base.py (the memory bus's)."""
    client = standalone_redis.client()
    keys = Keys(f"texts{next(_prefixes)}")
    publish = client.register_script(PUBLISH_USER)
    limits = OfflineLimits(max_messages=10, max_user_messages=2, max_user_bytes=100, max_user_destinations=2,
                           max_message_bytes=50)

    def store(user: str, destination: str, size: int) -> str | None:
        try:
            publish(
keys=list(keys.publish_keys(user, destination)),
                args=[b"x" * size, *publish_user_args(limits, "", user, destination)],
            )
        except redis.ResponseError as exc:
            return str(exc)
        return None

    assert store("a\nb", "/q", 51) == base.too_big("a\nb", 51, limits)
    store("bob", "/q1", 10), store("bob", "/q2", 10)
    assert store("bob", "/q3", 10) == base.too_many_destinations("bob", 2, limits)
    assert store("bob", "/q1", 10) == base.too_many_messages("bob", 2, limits)
    store("amy", "/q1", 45), store("amy", "/q1", 45)  # 90 of 100 bytes... and 2 of 2 messages
    assert store("amy", "/q1", 45) == base.too_many_messages("amy", 2, limits)
    limits.max_user_messages = 10
    assert store("amy", "/q1", 45) == base.too_many_bytes("amy", 90, 45, limits)


def test_drop_notices_are_bounded_per_user_and_in_all() -> None:
    now = [0.0]
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("test.store-notices")
    logger.addHandler(Catch())
    notices = StoreNotices(logger, 60.0, clock=lambda: now[0])
    for _ in range(100):
        notices.dropped("bob", "/queue/in", 1)
    assert seen == ["offline store of user 'bob' full at /queue/in: 1 older message(s) dropped"]
    now[0] = 61
    notices.dropped("bob", "/queue/in", 2)
    assert seen[-1] == (
        "offline store of user 'bob' full at /queue/in: 101 older message(s) dropped "
        "(since the last report)"
    )
    for i in range(5000):  # junk for thousands of users: a few lines, a bounded memory
        notices.dropped(f"u{i}", "/queue/in", 1)
    assert len(seen) < 25 and len(notices._drops) <= StoreNotices.MAX_USERS


def test_limits_are_validated_with_their_keys(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "auth: {mode: dev}\napi: {enabled: false}\n"
        "offline: {max_user_bytes: 0, max_message_bytes: 2000, max_user_destinations: -1, "
        "max_total_bytes: 1000}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    problems = "\n".join(info.value.problems)
    assert "offline.max_user_bytes: must be > 0" in problems
    assert "offline.max_user_destinations: must be > 0" in problems
    assert "offline.max_message_bytes: must not be above offline.max_user_bytes" in problems
    path.write_text(
        "auth: {mode: dev}\napi: {enabled: false}\n"
        "offline: {max_user_messages: 7, max_total_bytes: 1000000}\n"
    )
    limits = load_config(str(path)).offline.limits()
    assert (limits.max_user_messages, limits.max_total_bytes, limits.max_message_bytes) == (7, 1000000, 65536)


# ---------------------------------------------------------------- 2. real nodes


@pytest.fixture(params=BUSES)
def bus(request: pytest.FixtureRequest, bus_config_for: Any) -> dict[str, Any]:
    return {} if request.param is None else bus_config_for(*request.param)


class Sender:
    """A user who SENDs with receipts and reconnects after each ERROR (which closes the session)."""

    def __init__(self, node: NodeProcess, login: str) -> None:
        self.node, self.login = node, login
        self.client: WsStomp | None = None

    async def send(self, destination: str, body: bytes | str) -> str | None:
        """None when the RECEIPT came; the ERROR's message when refused."""
        if self.client is None:
            self.client = await WsStomp.connect(self.node.ws_url, self.login)
        data = body.encode() if isinstance(body, str) else body
        await self.client.send(Frame("SEND", {"destination": destination, "receipt": "r"}, data))
        frame = await self.client.recv()
        if frame.command == "RECEIPT":
            return None
        assert frame.command == "ERROR", frame
        assert frame.headers["receipt-id"] == "r"
        self.client = None
        return frame.headers["message"]


def api_send(node: NodeProcess, user: str, destination: str, payload: str) -> tuple[int, str | None]:
    status, reply = api(
        node, "POST", "/api/send-to-user", {"user": user, "destination": destination, "payload": payload}
    )
    return status, reply.get("error")


def bus_stats(node: NodeProcess) -> dict[str, int]:
    return api(node, "GET", "/api/stats")[1]["bus"]


async def received(client: WsStomp, count: int) -> list[bytes]:
    return [(await client.recv()).body for _ in range(count)]


async def nothing_more(client: WsStomp, wait: float = 0.3) -> None:
    with pytest.raises(asyncio.TimeoutError):
        frame = await client.recv(wait)
        raise AssertionError(f"unexpected {frame}")


async def test_one_sender_meets_each_limit_with_a_clear_error(node_factory, bus) -> None:
    """alice writes to bob, carol, dave and erin until each limit refuses her: STOMP, HTTP and template."""
    node = node_factory({**bus, "offline": LIMITS})
    template = MessagingTemplate.from_config(str(node.config_path)) if bus else None
    alice = Sender(node, "alice")
    refusals = 0

    async def refused(user: str, destination: str, body: str, limit: str, status: int) -> None:
        nonlocal refusals
        error = await alice.send(f"/user/{user}/{destination}", body)
        assert kind(error) == limit and error is not None
        assert error.startswith("message not accepted: refused by ")
        code = "TOOBIG" if limit == "max_message_bytes" else "STOREFULL"
        assert f": {code} " in error and f"user '{user}'" in error, error
        got, text = api_send(node, user, f"/{destination}", body)
        assert (got, kind(text)) == (status, limit), text
        refusals += 2
        if template is not None:
            with pytest.raises(MessageRefused) as info:
                template.convert_and_send_to_user(user, f"/{destination}", body)
            assert info.value.code == code and kind(str(info.value)) == limit

    # bob: 4 + 2 stored (6 of 6), then nothing more for him... except where the oldest make room.
    for i in range(4):
        assert await alice.send("/user/bob/queue/d1", f"d1-{i}") is None
    for i in range(2):
        assert await alice.send("/user/bob/queue/d2", f"d2-{i}") is None
    await refused("bob", "queue/d3", "no room", "max_user_messages", 507)
    assert await alice.send("/user/bob/queue/d1", "d1-4") is None  # /queue/d1 is at its cap: d1-0 goes
    assert bus_stats(node)["store_dropped"] == 1
    # carol: one message too large to be kept.
    await refused("carol", "queue/big", "x" * 1200, "max_message_bytes", 413)
    # dave: 800-byte messages, 3 fit in 3000 bytes, the 4th does not.
    for i in range(3):
        assert await alice.send("/user/dave/queue/d1", f"{i}" * 800) is None
    await refused("dave", "queue/d2", "4" * 800, "max_user_bytes", 507)
    # erin: one message each to 3 destinations, none to a 4th.
    for i in range(3):
        assert await alice.send(f"/user/erin/queue/d{i}", "hi") is None
    await refused("erin", "queue/d3", "hi", "max_user_destinations", 507)
    assert bus_stats(node)["refused"] == refusals

    # What was kept is what was accepted, no more: bob gets d1-1..d1-4 and d2-0, d2-1.
    bob = await WsStomp.connect(node.ws_url, "bob")
    await bob.subscribe("/user/queue/d1", "1")
    assert await received(bob, 4) == [b"d1-1", b"d1-2", b"d1-3", b"d1-4"]
    reply = api(node, "POST", "/api/unread", {"user": "bob", "destination": "/queue/d2"})[1]
    assert [m["payload"] for m in reply["messages"]] == ["d2-0", "d2-1"]
    await bob.subscribe("/user/queue/d3", "3")
    await nothing_more(bob)
    # Taken, the room is back: the limits count what is there, not what ever was.
    await bob.close()
    for destination, count in (("d4", 4), ("d5", 2)):
        for i in range(count):
            assert await alice.send(f"/user/bob/queue/{destination}", f"{destination}-{i}") is None
    assert kind(await alice.send("/user/bob/queue/d6", "one too many")) == "max_user_messages"
    if template is not None:
        template.close()


async def test_the_async_template_raises_on_refusal(node_factory, bus_config_for) -> None:
    node = node_factory({**bus_config_for("cluster", "directed"), "offline": LIMITS})
    async with AsyncMessagingTemplate.from_config(str(node.config_path)) as template:
        assert await template.convert_and_send_to_user("bob", "/queue/a", "kept") is False
        with pytest.raises(MessageRefused) as info:
            await template.convert_and_send_to_user("bob", "/queue/a", "x" * 2000)
        assert info.value.code == "TOOBIG" and "offline.max_message_bytes = 1000" in str(info.value)


async def test_a_node_alone_refuses_past_its_total(node_factory) -> None:
    """Memory bus: many users, each within their limits, fill offline.max_total_bytes; refused past it."""
    node = node_factory({"offline": {**LIMITS, "max_total_bytes": 20_000}})
    alice = Sender(node, "alice")
    body = "x" * 500
    kept = 0
    for i in range(100):
        error = await alice.send(f"/user/u{i}/queue/in", body)
        if error is not None:
            break
        kept += 1
    assert kind(error) == "max_total_bytes" and "NODEFULL" in error
    assert 10 < kept < 40  # ~600 bytes each plus the per-message overhead, in 20,000
    # Larger than alice's refused one: it cannot fit in what room is left, whatever that is.
    status, text = api_send(node, "late", "/queue/in", "x" * 600)
    assert status == 503 and kind(text) == "max_total_bytes"
    ready = api(node, "GET", "/ready")[1]
    assert ready["ready"] is True and ready["offline_messages"] == kept
    api(node, "POST", "/api/unread", {"user": "u0", "destination": "/queue/in"})
    assert await alice.send("/user/late/queue/in", body) is None  # room again


@pytest.mark.parametrize(
    "where",
    [pytest.param(None, id="memory"), pytest.param(("standalone", "directed"), id="standalone-directed"),
     pytest.param(("cluster", "broadcast"), id="cluster-broadcast")],
)
async def test_junk_past_a_cap_is_counted_and_logged_with_the_user(
    node_factory, bus_config_for, where
) -> None:
    """Pushing junk to bob's /queue/inbox wipes it, as the cap says, but not unnoticed."""
    bus = {} if where is None else bus_config_for(*where)
    node = node_factory({**bus, "offline": {"max_messages": 3}})
    mallory = await WsStomp.connect(node.ws_url, "mallory")
    for i in range(10):
        await mallory.publish("/user/bob/queue/inbox", f"junk-{i}", receipt=(i == 9))
    await mallory.publish("/user/amy/queue/inbox", "hello")
    assert bus_stats(node)["store_dropped"] == 7
    lines = [line for line in node.log().splitlines() if "older message(s) dropped" in line]
    assert len(lines) == 1 and "offline store of user 'bob' full at /queue/inbox" in lines[0], lines
    bob = await WsStomp.connect(node.ws_url, "bob")
    await bob.subscribe("/user/queue/inbox")
    assert await received(bob, 3) == [b"junk-7", b"junk-8", b"junk-9"]


@pytest.mark.parametrize("where", [pytest.param(None, id="memory"), *DEPLOYMENTS[::3]])
async def test_expired_messages_free_their_room(node_factory, bus_config_for, where) -> None:
    """ttl 2 s: once a list expires the user's limits no longer count it, even for other destinations."""
    bus = {} if where is None else bus_config_for(*where)
    node = node_factory({**bus, "offline": {**LIMITS, "max_user_messages": 2, "ttl_s": 2}})
    alice = Sender(node, "alice")
    assert await alice.send("/user/bob/queue/d1", "first") is None
    first = time.monotonic()  # d1 expires by first + 2
    await asyncio.sleep(1.0)
    second = time.monotonic()  # d2 expires after second + 2
    assert await alice.send("/user/bob/queue/d2", "second") is None
    assert kind(await alice.send("/user/bob/queue/d3", "full")) == "max_user_messages"
    await asyncio.sleep(first + 2.25 - time.monotonic())  # d1 expired, d2 not yet
    assert await alice.send("/user/bob/queue/d3", "third") is None
    assert kind(await alice.send("/user/bob/queue/d4", "full again")) == "max_user_messages"
    assert time.monotonic() < second + 2, "too slow to tell: d2 may have expired"
    await asyncio.sleep(second + 2.3 - time.monotonic())  # d2 expired too
    assert await alice.send("/user/bob/queue/d4", "fourth") is None
    bob = await WsStomp.connect(node.ws_url, "bob")
    await bob.subscribe("/user/queue/d1", "1")
    await bob.subscribe("/user/queue/d2", "2")
    await bob.subscribe("/user/queue/d3", "3")
    assert await received(bob, 1) == [b"third"]
    await bob.subscribe("/user/queue/d4", "4")
    assert await received(bob, 1) == [b"fourth"]
    await nothing_more(bob)


@pytest.fixture
def own_redis(tmp_path):
    server = start_redis(tmp_path)
    yield server
    server.stop()


@pytest.mark.parametrize("redis_bus", [False, True], ids=["memory", "standalone-directed"])
async def test_a_flood_for_a_full_user_costs_little(node_factory, own_redis, redis_bus) -> None:
    """mallory fills bob (50 messages, 50 destinations), then floods him without receipts at her
    session's rate limit: new destinations, the full ones, too large. Each refusal costs O(1):
    the innocent user does not notice, and Redis checks bob's other lists once, not per message."""
    bus = {"bus": {"type": "redis", "redis": {"url": own_redis.url}, **FAST}} if redis_bus else {}
    limits = {**LIMITS, "max_user_messages": 50, "max_user_destinations": 50, "max_user_bytes": 100_000}
    # The default rate (1000 frames/s), without its 2 s burst: a burst of 2000 frames of anything costs
    # the first probe samples 100 ms or so (a flood to /topic does the same), which is not the store's doing.
    rate = {"stomp": {"rate_limit": {"burst_s": 0.1}}}
    node = node_factory({**bus, **rate, "offline": limits})
    for i in range(50):
        assert api_send(node, "bob", f"/queue/d{i}", "fill") == (200, None)
    client = own_redis.client()
    client.config_resetstat()
    mallory = await WsStomp.connect(node.ws_url, "mallory")

    async def attack() -> None:
        for i in itertools.count():
            body = b"x" * (1500 if i % 3 == 0 else 10)
            destination = f"/user/bob/queue/{'n' if i % 2 else 'd'}{i % 100}"
            await mallory.send(Frame("SEND", {"destination": destination}, body))
            if i % 50 == 0:
                await asyncio.sleep(0)

    probe = await Probe(node).start()
    idle = await probe.measure()
    attacked = await while_attacked(probe, attack())
    await probe.close()
    assert_unharmed(idle, attacked, what="flood for a full user")
    deadline = time.monotonic() + 10
    while bus_stats(node)["refused"] < 1000:  # what mallory's rate limit let through by now
        assert time.monotonic() < deadline, bus_stats(node)
        await asyncio.sleep(0.1)
    if redis_bus:
        calls = {k: v["calls"] for k, v in client.info("commandstats").items()}
        assert calls.get("cmdstat_pttl", 0) < 100, calls  # one check of bob's 50 lists (and amy's store)
    bob = await WsStomp.connect(node.ws_url, "bob")
    await bob.subscribe("/user/queue/d7")
    assert await received(bob, 1) == [b"fill"]


# ------------------------------------------------------- 3. Redis out of memory


@pytest.mark.parametrize("routing", ["directed", "broadcast"])
async def test_redis_out_of_memory_refuses_with_an_error_and_the_rest_goes_on(
    node_factory, own_redis, routing
) -> None:
    config = {
        "bus": {"type": "redis", "routing": routing, "redis": {"url": own_redis.url, "prefix": "oom"}, **FAST}
    }
    n1, n2 = started(node_factory, config, 2)
    client = own_redis.client()
    zed = await WsStomp.connect(n2.ws_url, "zed")
    await zed.subscribe("/user/queue/live")
    alice = Sender(n1, "alice")
    for i in range(2):
        assert await alice.send("/user/bob/queue/inbox", f"kept-{i}") is None

    # A small maxmemory, then 4 KB messages for offline users until Redis refuses one.
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", client.info("memory")["used_memory"] + 256 * 1024)
    accepted: dict[str, str] = {}
    for i in range(1000):
        payload = f"{i:04d}" * 1000
        status, error = api_send(n1, f"f{i}", "/queue/in", payload)
        if status != 200:
            break
        accepted[f"f{i}"] = payload
    assert status == 503 and error is not None and ": OOM " in error, (status, error)
    assert 10 < len(accepted) < 1000

    client.config_set("maxmemory", 1)  # from here every write that adds data is refused
    error = await alice.send("/user/bob/queue/inbox", "refused")
    assert error is not None and "refused by redis: OOM redis is out of memory" in error and "'bob'" in error
    with MessagingTemplate.from_config(str(n1.config_path)) as template:
        with pytest.raises(MessageRefused) as info:
            template.convert_and_send_to_user("bob", "/queue/inbox", "refused")
        assert info.value.code == "OOM"
        assert template.convert_and_send_to_user("zed", "/queue/live", "live-0") is True  # live still goes
    # One session: refused messages (no receipt) between live ones; the outbox keeps moving.
    mixed = await WsStomp.connect(n1.ws_url, "mixed")
    for i in range(1, 4):
        await mixed.publish("/user/bob/queue/inbox", f"refused-{i}", receipt=False)
        await mixed.publish("/user/zed/queue/live", f"live-{i}", receipt=(i == 3))
    assert await received(zed, 4) == [b"live-0", b"live-1", b"live-2", b"live-3"]
    refused = bus_stats(n1)["refused"]
    assert refused >= 1 + 1 + 3  # the fill's last, alice's, mixed's three (the registry's writes too)
    lines = [line for line in n1.log().splitlines() if "redis refused a user message for 'f" in line]
    assert len(lines) == 1 and ": OOM redis is out of memory" in lines[0], lines
    # Ready all along (its heartbeat meets OOM too), and saying why stores fail.
    await asyncio.sleep(1.5)
    for node in (n1, n2):
        status, body = api(node, "GET", "/ready")
        assert status == 200 and body["ready"] is True and "redis_out_of_memory_since" in body, body
    # Reading frees memory and works out of memory: bob's two stored messages are there.
    reply = api(n2, "POST", "/api/unread", {"user": "bob", "destination": "/queue/inbox"})[1]
    assert [m["payload"] for m in reply["messages"]] == ["kept-0", "kept-1"]

    client.config_set("maxmemory", 0)
    assert api_send(n1, "bob", "/queue/inbox", "stored again") == (200, None)
    # Nothing lost silently: every message Redis took is there, exactly.
    for user, payload in accepted.items():
        reply = api(n2, "POST", "/api/unread", {"user": user, "destination": "/queue/in"})[1]
        assert [m["payload"] for m in reply["messages"]] == [payload], user
    wait_ready(n1)
    await asyncio.sleep(1.0)
    assert "redis_out_of_memory_since" not in api(n1, "GET", "/ready")[1]
