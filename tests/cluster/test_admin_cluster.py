"""The admin API on a 2-node cluster over a real Redis: one node sees and disconnects the other's sessions.

The command travels as an admin command on the bus (stompgate/bus/admin.py):
published to every node, answered on a reply list, bounded per node.
"""

from __future__ import annotations

import pytest

from harness.adminclient import ADMIN_CONFIG, admin
from harness.clusterkit import ready
from harness.nodes import deep_merge
from harness.stompclient import WsStomp

from .kit import started

pytestmark = pytest.mark.usefixtures("close_ws_clients")


@pytest.fixture(
    params=[
        pytest.param(("standalone", "directed"), id="standalone-directed"),
        pytest.param(("cluster", "broadcast"), id="cluster-broadcast"),
    ]
)
def two(request, node_factory, bus_config_for):
    return started(node_factory, deep_merge(bus_config_for(*request.param), ADMIN_CONFIG), 2)


async def test_a_user_on_node_b_seen_and_disconnected_from_node_a(two) -> None:
    a, b = two
    alice_b = await WsStomp.connect(b.ws_url, "alice")
    await alice_b.subscribe("/user/queue/inbox", "inbox")
    await alice_b.subscribe("/topic/news", "news")
    alice_a = await WsStomp.connect(a.ws_url, "alice")
    bob_b = await WsStomp.connect(b.ws_url, "bob")

    status, nodes, _ = admin(a, "GET", "/nodes")
    assert status == 200 and nodes["missing"] == []
    assert {n["node"]: n["sessions"] for n in nodes["nodes"]} == {a.id: 1, b.id: 2}
    assert {n["node"]: n["subscriptions"] for n in nodes["nodes"]} == {a.id: 0, b.id: 2}

    status, alice, _ = admin(a, "GET", "/users/alice")
    assert (status, alice["total"], alice["truncated"], alice["missing"]) == (200, 2, False, [])
    on_b = next(s for s in alice["sessions"] if s["node"] == b.id)
    assert on_b["transport"] == "websocket" and on_b["remote"] == "127.0.0.1"
    assert sorted(sub["destination"] for sub in on_b["subscriptions"]) == ["/queue/inbox", "/topic/news"]
    assert sorted(n["node"] for n in alice["nodes"]) == sorted([a.id, b.id])
    assert admin(a, "GET", "/users")[1]["users"] == ["alice", "bob"]

    # Disconnect alice everywhere, from node A: her session on B gets the ERROR and is closed.
    status, answer, _ = admin(a, "POST", "/disconnect", {"user": "alice"})
    assert (status, answer["closed"], answer["nodes"], answer["missing"]) == (
        200, 2, {a.id: 1, b.id: 1}, [],
    )  # fmt: skip
    for client in (alice_b, alice_a):
        error = await client.recv()
        assert error.command == "ERROR" and error.headers["message"] == "disconnected by an administrator"
        await client.expect_closed()
    assert "disconnected by an administrator" in b.log()
    await bob_b.subscribe("/topic/bob-still-here")  # bob, on the same node, untouched
    assert admin(b, "GET", "/users/alice")[1]["total"] == 0

    # One session by id, asked on B for a session on A.
    bob_a = await WsStomp.connect(a.ws_url, "bob")
    bob = admin(b, "GET", "/users/bob")[1]
    [on_a] = [s for s in bob["sessions"] if s["node"] == a.id]
    assert admin(b, "POST", "/disconnect", {"session": on_a["id"]})[1]["closed"] == 1
    assert (await bob_a.recv()).headers["message"] == "disconnected by an administrator"
    await bob_b.subscribe("/topic/bob-still-here-2", "2")


async def test_answers_are_bounded(two) -> None:
    a, b = two
    for node in (a, b):
        for _ in range(4):
            await WsStomp.connect(node.ws_url, "carol")
    status, carol, _ = admin(a, "GET", "/users/carol?limit=3")
    assert status == 200
    assert (carol["total"], len(carol["sessions"]), carol["truncated"]) == (8, 3, True)
    assert sorted(n["sessions"] for n in carol["nodes"]) == [4, 4]
    status, everyone, _ = admin(b, "GET", "/sessions?limit=5")
    assert (everyone["total"], len(everyone["sessions"]), everyone["truncated"]) == (8, 5, True)


async def test_node_a_drains_node_b(two) -> None:
    """POST drain on A for B: B's sessions get ERROR and 1012 and B says it is not ready;
    A goes on serving. B stays up until it is stopped."""
    a, b = two
    on_b = await WsStomp.connect(b.ws_url, "dave")
    on_a = await WsStomp.connect(a.ws_url, "erin")
    status, answer, _ = admin(a, "POST", "/drain", {"node": b.id})
    assert (status, answer["draining"], answer["missing"]) == (200, [b.id], [])
    error = await on_b.recv(10)
    assert error.command == "ERROR" and error.headers["message"] == "server restarting"
    assert (await on_b.expect_closed()).code == 1012
    assert ready(b) is False and ready(a) is True
    await on_a.subscribe("/topic/erin-still-here")
    assert b.proc.poll() is None
