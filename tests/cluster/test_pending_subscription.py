"""Messages sent to a subscription Redis has not confirmed yet: each arrives once.

A node's first subscription to a user's destination waits: it SSUBSCRIBEs, and
once Redis confirms, fetches what was stored for that destination, delivers it,
then what came live meanwhile. A message published through the very node while
it waits is delivered here at once (into that wait) and handed to the outbox,
whose connection is not the one the SSUBSCRIBE travels on. When Redis runs the
publish before the SSUBSCRIBE, nobody is subscribed: it stores the message, and
the fetch brings it back a second time. test_drain_flood hit it under load (a
user reconnecting to the node a sender floods through): 8 runs in 30 with two
busy processes on the machine's two cores.

Here the window is made wide on purpose: one WebSocket message subscribes to
many destinations and sends to each right after its SUBSCRIBE, so the node
dispatches every message while its subscription waits and the outbox writer,
woken by the first, sends them before the later SSUBSCRIBEs leave: dozens
came twice in every run, in both routing modes.
"""

from __future__ import annotations

from collections import Counter

import pytest

from harness.stompclient import WsStomp
from stompgate.stomp import Frame, serialize

from .kit import started

pytestmark = pytest.mark.usefixtures("close_ws_clients")

DESTINATIONS = 40
EACH = 10  # messages to each destination, right after its SUBSCRIBE
ROUNDS = 3  # each round subscribes fresh destinations


async def read_all(client: WsStomp, got: Counter[str], expected: int) -> None:
    """MESSAGEs until ``expected`` distinct ones and then 0.5 s of silence, or 3 s of silence."""
    while True:
        try:
            frame = await client.recv(0.5 if len(got) >= expected else 3)
        except TimeoutError:
            return
        assert frame.command == "MESSAGE", frame
        got[frame.body.decode()] += 1


@pytest.mark.parametrize("routing", ["directed", "broadcast"])
async def test_a_message_sent_while_its_subscription_waits_for_redis_arrives_once(
    node_factory, bus_config_for, routing
) -> None:
    config = bus_config_for("standalone", routing)
    (node,) = started(node_factory, config, 1)
    dave = await WsStomp.connect(node.ws_url, "dave")
    for round_ in range(ROUNDS):
        frames = []
        for d in range(DESTINATIONS):
            where = f"queue/r{round_}d{d}"
            frames.append(Frame("SUBSCRIBE", {"id": f"{round_}-{d}", "destination": f"/user/{where}"}))
            frames += [
                Frame("SEND", {"destination": f"/user/dave/{where}"}, f"{where}:{k}".encode())
                for k in range(EACH)
            ]
        await dave.send_raw(b"".join(serialize(frame, dave.version) for frame in frames))
        got: Counter[str] = Counter()
        await read_all(dave, got, DESTINATIONS * EACH)
        expected = {f"queue/r{round_}d{d}:{k}" for d in range(DESTINATIONS) for k in range(EACH)}
        missing = sorted(expected - set(got))
        assert not missing, f"round {round_}: {len(missing)} lost: {missing[:10]}"
        twice = sorted(body for body, n in got.items() if n > 1)
        assert not twice, f"round {round_}: {len(twice)} delivered twice: {twice[:10]}"
        assert set(got) == expected
