"""The bus contract (stompgate/bus/contract.py), the same cases against every bus.

``memory`` is the single-node MemoryBus; ``redis`` is a RedisBus on a real
redis-server (its own key prefix per test). A bus that passes here keeps the
promises the broker, the HTTP API and the extensions rely on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable

import pytest

from stompgate.broker import Broker, BrokerSettings, DevAuthenticator
from stompgate.broker.message import Message
from stompgate.bus.admin import AdminCommand
from stompgate.bus.base import OfflineLimits, refusal_code
from stompgate.bus.contract import ClusterBus
from stompgate.bus.memory import MemoryBus
from stompgate.bus.redis_bus import RedisBus
from stompgate.config import BusConfig, RedisConfig

_prefixes = itertools.count()


class Settled:
    """A Sender that records every settle()."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def settle(self, size: int) -> None:
        self.sizes.append(size)


@pytest.fixture(params=["memory", "redis"])
def make_bus(request: pytest.FixtureRequest) -> Callable[..., tuple[Broker, ClusterBus]]:
    """Builds a broker and its bus of this kind with these offline limits (not started)."""

    def make(**limits: float) -> tuple[Broker, ClusterBus]:
        broker = Broker(BrokerSettings(), DevAuthenticator())
        offline = OfflineLimits(**limits)  # type: ignore[arg-type]
        bus: ClusterBus
        if request.param == "memory":
            bus = MemoryBus(offline, "n1")
        else:
            url = request.getfixturevalue("standalone_redis").url
            config = BusConfig(type="redis", redis=RedisConfig(url=url, prefix=f"contract{next(_prefixes)}"))
            bus = RedisBus(config, offline, "n1", broker)
        broker.bus = bus
        return broker, bus

    return make


@pytest.fixture
async def bus_pair(
    make_bus: Callable[..., tuple[Broker, ClusterBus]],
) -> AsyncIterator[tuple[Broker, ClusterBus]]:
    broker, bus = make_bus()
    await bus.start()
    yield broker, bus
    await bus.stop()


async def publish(bus: ClusterBus, message: Message, sender: Settled | None = None) -> str | None:
    """Hand ``message`` to the bus as the broker does after delivering it here, and wait for done()."""
    future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    calls: list[str | None] = []

    def done(error: str | None) -> None:
        calls.append(error)
        if not future.done():
            future.set_result(error)

    bus.publish(message, 0, done, sender)
    error = await asyncio.wait_for(future, 10)
    await asyncio.sleep(0.05)  # a second call would come now
    assert len(calls) == 1, calls
    return error


def for_bob(broker: Broker, body: bytes, destination: str = "/queue/in") -> Message:
    return broker.message(destination, {}, body, user="bob")


async def test_a_message_for_nobody_is_stored_and_handed_over_once_in_order(bus_pair) -> None:
    broker, bus = bus_pair
    sender = Settled()
    messages = [for_bob(broker, f"m{i}".encode()) for i in range(3)]
    for message in messages:
        assert await publish(bus, message, sender) is None
    assert sender.sizes == [m.size for m in messages]  # settle: once each, with the message's size
    assert [m.body for m in await bus.pull("bob", "/queue/in")] == [b"m0", b"m1", b"m2"]
    assert await bus.pull("bob", "/queue/in") == []
    assert bus.stats.stored == 3 and bus.stats.replayed == 3


async def test_a_subscription_replays_the_stored_ones_once(bus_pair) -> None:
    broker, bus = bus_pair
    for i in range(2):
        await publish(bus, for_bob(broker, f"m{i}".encode()))
    replays: list[list[bytes]] = []
    got = asyncio.Event()

    def replay(messages: list[Message]) -> None:
        replays.append([m.body for m in messages])
        got.set()

    bus.user_sessions("bob", 1)
    bus.user_subscribed("bob", "/queue/in", replay)
    await asyncio.wait_for(got.wait(), 10)
    await asyncio.sleep(0.1)
    assert replays == [[b"m0", b"m1"]]
    assert await bus.pull("bob", "/queue/in") == []


async def test_a_subscription_with_nothing_stored_replays_nothing_once(bus_pair) -> None:
    _broker, bus = bus_pair
    replays: list[list[Message]] = []
    got = asyncio.Event()

    def replay(messages: list[Message]) -> None:
        replays.append(messages)
        got.set()

    bus.user_sessions("carol", 1)
    bus.user_subscribed("carol", "/queue/in", replay)
    await asyncio.wait_for(got.wait(), 10)
    await asyncio.sleep(0.1)
    assert replays == [[]]


async def test_the_store_keeps_the_newest_up_to_its_cap(make_bus) -> None:
    broker, bus = make_bus(max_messages=2)
    await bus.start()
    try:
        for i in range(4):
            assert await publish(bus, for_bob(broker, f"m{i}".encode())) is None
        assert [m.body for m in await bus.pull("bob", "/queue/in")] == [b"m2", b"m3"]
        assert bus.stats.store_dropped == 2
    finally:
        await bus.stop()


async def test_refusals_are_named_and_settle_anyway(make_bus) -> None:
    broker, bus = make_bus(max_message_bytes=100, max_user_messages=1)
    await bus.start()
    try:
        sender = Settled()
        big = for_bob(broker, b"x" * 200)
        assert refusal_code(await publish(bus, big, sender) or "") == "TOOBIG"
        assert await publish(bus, for_bob(broker, b"one"), sender) is None
        full = await publish(bus, for_bob(broker, b"two", "/queue/other"), sender)
        assert refusal_code(full or "") == "STOREFULL", full
        assert len(sender.sizes) == 3  # refused or not, the sender's share is given back
        assert [m.body for m in await bus.pull("bob", "/queue/in")] == [b"one"]
    finally:
        await bus.stop()


async def test_the_cluster_view_and_health(bus_pair) -> None:
    _broker, bus = bus_pair
    assert bus.healthy
    json.dumps(bus.status())
    bus.user_sessions("dave", 2)
    deadline = asyncio.get_running_loop().time() + 10
    while "dave" not in await bus.online_users():
        assert asyncio.get_running_loop().time() < deadline, "dave never appeared online"
        await asyncio.sleep(0.05)
    assert await bus.live_nodes() == ["n1"]
    assert await bus.user_nodes("dave", 2) == {"n1": 2}
    bus.user_sessions("dave", 0)
    while "dave" in await bus.online_users():
        assert asyncio.get_running_loop().time() < deadline, "dave never went offline"
        await asyncio.sleep(0.05)
    assert await bus.user_nodes("dave", 0) == {}


async def test_admin_commands_are_answered_by_every_live_node(bus_pair) -> None:
    _broker, bus = bus_pair
    deadline = asyncio.get_running_loop().time() + 10
    while await bus.live_nodes() != ["n1"]:
        assert asyncio.get_running_loop().time() < deadline, "the node never appeared live"
        await asyncio.sleep(0.05)
    # No handler: the node is live but does not answer, and is named, after the timeout.
    got = await bus.admin_call(AdminCommand("node"), timeout_s=0.3)
    assert (got.replies, got.missing) == ([], ["n1"])
    asked: list[AdminCommand] = []

    def answer(command: AdminCommand) -> dict[str, object]:
        asked.append(command)
        return {"node": "n1", "closed": 3}

    bus.serve_admin(answer)
    command = AdminCommand("disconnect", user="bob")
    got = await bus.admin_call(command, timeout_s=5)
    assert (got.replies, got.missing, asked) == ([{"node": "n1", "closed": 3}], [], [command])
