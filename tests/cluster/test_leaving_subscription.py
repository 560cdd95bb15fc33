"""A user message that reaches a node just after the user's last subscription there ended is not lost.

Between a node dropping its last local subscription to (user, destination) and
Redis processing its SUNSUBSCRIBE, Redis still counts the node as a subscriber:
a message published in that round trip goes to the node, which has no one to
give it to. The node routes it again (stored, or to the user's other nodes), so
the flood below arrives whole: part live, part from the store. Every session a
drain closes goes through that window.
"""

from __future__ import annotations

import asyncio

import pytest

from harness.clusterkit import api
from harness.stompclient import WsStomp
from stompgate.stomp import Frame

from .kit import started

pytestmark = pytest.mark.usefixtures("close_ws_clients")

FLOOD = 3000
CYCLES = 8


@pytest.mark.parametrize("routing", ["directed", "broadcast"])
async def test_messages_in_flight_when_the_last_subscription_ends_are_stored(
    node_factory, bus_config_for, routing
) -> None:
    config = bus_config_for("standalone", routing)
    config["offline"] = {"max_messages": 2 * FLOOD}
    n1, n2 = started(node_factory, config, 2)
    bob = await WsStomp.connect(n1.ws_url, "bob")
    await bob.subscribe("/user/queue/flood", "s0")
    alice = await WsStomp.connect(n2.ws_url, "alice")

    async def flood() -> None:
        for i in range(FLOOD - 1):
            await alice.send(Frame("SEND", {"destination": "/user/bob/queue/flood"}, str(i).encode()))
        await alice.publish("/user/bob/queue/flood", str(FLOOD - 1))  # with a receipt: all are in Redis

    sending = asyncio.ensure_future(flood())
    received: list[int] = []

    async def take(frame: Frame) -> None:
        assert frame.command == "MESSAGE", frame
        received.append(int(frame.body))

    # Several times in the middle of the flood: the last subscription ends, then comes back.
    for cycle in range(CYCLES):
        while len(received) < (cycle + 1) * FLOOD // (CYCLES + 2):
            await take(await bob.recv())
        await bob.send(Frame("UNSUBSCRIBE", {"id": f"s{cycle}", "receipt": "gone"}))
        while (frame := await bob.recv()).command != "RECEIPT":
            await take(frame)
        # Back, with a receipt: it comes once the stored messages are fetched. (Ending a
        # subscription while its stored messages are being fetched is another matter.)
        await bob.send(
            Frame("SUBSCRIBE", {"id": f"s{cycle + 1}", "destination": "/user/queue/flood", "receipt": "back"})
        )
        while (frame := await bob.recv()).command != "RECEIPT":
            await take(frame)
    await sending
    try:
        while len(received) < FLOOD:
            await take(await bob.recv(3))
    except TimeoutError:
        pass
    missing = sorted(set(range(FLOOD)) - set(received))
    stats = [api(n, "GET", "/api/stats")[1] for n in (n1, n2)]
    assert not missing, f"{len(missing)} messages lost: {missing[:20]}; stats: {stats}"
    assert sorted(received) == list(range(FLOOD)), "some arrived twice"
    try:
        extra = await bob.recv(0.3)
    except TimeoutError:
        return
    raise AssertionError(f"more than {FLOOD} messages: {extra}")
