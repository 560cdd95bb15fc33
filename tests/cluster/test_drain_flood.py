"""A node drained in the middle of a flood of user messages: none lost, none twice.

Redis routes a user's messages to the nodes subscribed for that user. Were a
draining node to close a session first and unsubscribe after, Redis would go on
counting it for a round trip and the messages of that round trip would reach a
node with no one to give them to. The drain unsubscribes first, waits for Redis
to confirm, then closes. Under a flood that round trip always holds messages, so
this test fails without it (in most runs; it passes with it in every run).

carol has one session, on the node that drains: she reconnects to the other
node and must get every message exactly once, live or stored. bob has a tab on
each node: the tab on the other node must get every message exactly once (a
message sent again for the drained node's sake would reach it twice), and the
drained tab nothing twice.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import pytest

from harness.stompclient import Closed, WsStomp
from stompgate.stomp import Frame

from .kit import started

pytestmark = pytest.mark.usefixtures("close_ws_clients")

EACH = 1500  # messages to each of carol and bob, interleaved


async def read_until_closed(client: WsStomp, got: Counter[int]) -> None:
    """MESSAGEs until the drain's ERROR and close 1012."""
    while True:
        try:
            frame = await client.recv(10)
        except Closed as exc:
            assert exc.code == 1012, exc
            return
        if frame.command == "ERROR":
            assert frame.headers["message"] == "server restarting", frame
            assert (await client.expect_closed()).code == 1012
            return
        assert frame.command == "MESSAGE", frame
        got[int(frame.body)] += 1


async def read(client: WsStomp, got: Counter[int], until: int) -> None:
    """MESSAGEs until ``until`` distinct ones arrived, or 3 s of silence."""
    while len(got) < until:
        try:
            frame = await client.recv(3)
        except TimeoutError:
            return
        assert frame.command == "MESSAGE", frame
        got[int(frame.body)] += 1


@pytest.mark.parametrize("routing", ["directed", "broadcast"])
async def test_a_drain_mid_flood_loses_and_repeats_nothing(node_factory, bus_config_for, routing) -> None:
    config = bus_config_for("standalone", routing)
    config["server"] = {"drain_s": 0.5}
    config["offline"] = {"max_messages": 2 * EACH}
    draining, staying = started(node_factory, config, 2)
    carol = await WsStomp.connect(draining.ws_url, "carol")
    bob_drained = await WsStomp.connect(draining.ws_url, "bob")
    bob_staying = await WsStomp.connect(staying.ws_url, "bob")
    for client in (carol, bob_drained, bob_staying):
        await client.subscribe("/user/queue/flood")
    alice = await WsStomp.connect(staying.ws_url, "alice")

    async def flood() -> None:
        for i in range(2 * EACH - 1):
            to = "carol" if i % 2 == 0 else "bob"
            await alice.send(Frame("SEND", {"destination": f"/user/{to}/queue/flood"}, str(i).encode()))
        await alice.publish("/user/bob/queue/flood", str(2 * EACH - 1))  # a receipt: Redis has all

    carol_got: Counter[int] = Counter()
    bob_drained_got: Counter[int] = Counter()
    bob_staying_got: Counter[int] = Counter()
    sending = asyncio.ensure_future(flood())
    await read(carol, carol_got, EACH // 5)  # the flood is well under way
    draining.proc.send_signal(signal.SIGTERM)
    staying_tab = asyncio.ensure_future(read(bob_staying, bob_staying_got, EACH))
    await asyncio.gather(read_until_closed(carol, carol_got), read_until_closed(bob_drained, bob_drained_got))

    carol = await WsStomp.connect(staying.ws_url, "carol")  # back, on the other node
    await carol.send(Frame("SUBSCRIBE", {"id": "0", "destination": "/user/queue/flood"}))
    await sending
    await read(carol, carol_got, EACH)
    await staying_tab
    assert await asyncio.to_thread(draining.proc.wait, 15) == 0, draining.log()

    expected_carol = set(range(0, 2 * EACH, 2))
    expected_bob = set(range(1, 2 * EACH, 2))
    missing = sorted(expected_carol - set(carol_got))
    assert not missing, f"carol lost {len(missing)}: {missing[:20]}"
    assert set(carol_got) == expected_carol and max(carol_got.values()) == 1, "carol got one twice"
    missing = sorted(expected_bob - set(bob_staying_got))
    assert not missing, f"bob's staying tab lost {len(missing)}: {missing[:20]}"
    assert max(bob_staying_got.values()) == 1, "bob's staying tab got one twice"
    assert set(bob_drained_got) <= expected_bob and max(bob_drained_got.values(), default=1) == 1


@pytest.mark.parametrize("routing", ["directed", "broadcast"])
async def test_a_user_subscribing_on_the_senders_node_mid_stream_gets_each_once(
    node_factory, bus_config_for, routing
) -> None:
    """What a rolling restart does all the time: a user reconnects to the very node a
    sender publishes through. A message sent before the user's subscription there,
    and routed by Redis after it, must reach it (it used to come back to its own
    node and be skipped as delivered there already)."""
    config = bus_config_for("standalone", routing)
    config["offline"] = {"max_messages": 5000}
    (node,) = started(node_factory, config, 1)
    alice = await WsStomp.connect(node.ws_url, "alice")
    count = 2000
    sent = asyncio.Event()

    async def stream() -> None:
        for i in range(count):
            await alice.send(Frame("SEND", {"destination": "/user/dave/queue/race"}, str(i).encode()))
            if i == count // 4:
                sent.set()
        await alice.publish("/user/dave/queue/race", str(count))

    streaming = asyncio.ensure_future(stream())
    await sent.wait()
    dave = await WsStomp.connect(node.ws_url, "dave")
    await dave.send(Frame("SUBSCRIBE", {"id": "0", "destination": "/user/queue/race"}))
    await streaming
    got: Counter[int] = Counter()
    await read(dave, got, count + 1)
    missing = sorted(set(range(count + 1)) - set(got))
    assert not missing, f"{len(missing)} lost: {missing[:20]}"
    assert max(got.values()) == 1
