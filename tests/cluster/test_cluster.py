"""Several real stompgate nodes sharing a real Redis (standalone or a 3-master Cluster).

Every scenario runs in both routing modes over both deployments: users on
different nodes exchange messages, topics reach every node, order holds, offline
messages wait and arrive exactly once, and the registry is cluster-wide. Faults
(a node killed, Redis restarted, pub/sub connections killed) are in
``test_cluster_faults.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest

from harness.clusterkit import api, nothing_more
from harness.stompclient import WsStomp
from stompgate.stomp import Frame
from stompgate.template import MessagingTemplate

from .kit import DEPLOYMENTS, started

pytestmark = pytest.mark.usefixtures("close_ws_clients")


@pytest.fixture(params=DEPLOYMENTS)
def bus(request) -> dict:
    return request.getfixturevalue("bus_config_for")(*request.param)


@pytest.fixture
def three(node_factory, bus):
    nodes = started(node_factory, bus, 3)
    return nodes


async def test_alice_and_bob_with_two_tabs_on_three_nodes(three) -> None:
    n1, n2, n3 = three
    alice = await WsStomp.connect(n1.ws_url, "alice")
    bob_tab1 = await WsStomp.connect(n2.ws_url, "bob")
    bob_tab2 = await WsStomp.connect(n3.ws_url, "bob")
    for client in (alice, bob_tab1, bob_tab2):
        await client.subscribe("/user/queue/chat")

    await alice.publish("/user/bob/queue/chat", "hi bob")  # RECEIPT: the cluster has it
    for tab in (bob_tab1, bob_tab2):
        msg = await tab.recv()
        assert (msg.command, msg.body, msg.headers["destination"]) == (
            "MESSAGE",
            b"hi bob",
            "/user/queue/chat",
        )
    await bob_tab2.publish("/user/alice/queue/chat", "hi alice, from my second tab")
    assert (await alice.recv()).body == b"hi alice, from my second tab"

    # A backend on node 3 through HTTP, and one through the template (straight into Redis).
    status, reply = api(
        n3, "POST", "/api/send-to-user", {"user": "alice", "destination": "/queue/chat", "payload": {"n": 1}}
    )
    assert status == 200, reply
    msg = await alice.recv()
    assert json.loads(msg.body) == {"n": 1} and msg.headers["content-type"] == "application/json"
    with MessagingTemplate.from_config(str(n1.config_path)) as template:
        assert template.convert_and_send_to_user("bob", "/queue/chat", "from the template") is True
    for tab in (bob_tab1, bob_tab2):
        assert (await tab.recv()).body == b"from the template"
    for client in (alice, bob_tab1, bob_tab2):
        await nothing_more(client)


async def test_topics_queues_and_wildcards_reach_every_node(three) -> None:
    n1, n2, n3 = three
    star = await WsStomp.connect(n1.ws_url, "s1")
    await star.subscribe("/topic/chat.*")
    everything = await WsStomp.connect(n2.ws_url, "s2")
    await everything.subscribe("/topic/**")
    exact = await WsStomp.connect(n3.ws_url, "s3")
    await exact.subscribe("/topic/chat.room1")
    worker = await WsStomp.connect(n3.ws_url, "w")
    await worker.subscribe("/queue/jobs")
    publisher = await WsStomp.connect(n2.ws_url, "p")

    await publisher.publish("/topic/chat.room1", "one")
    for client in (star, everything, exact):
        msg = await client.recv()
        assert (msg.body, msg.headers["destination"]) == (b"one", "/topic/chat.room1")
    await publisher.publish("/topic/news/today", "two")
    assert (await everything.recv()).body == b"two"
    await publisher.publish("/queue/jobs", "job")
    assert (await worker.recv()).body == b"job"
    status, _ = api(n1, "POST", "/api/publish", {"destination": "/topic/chat.room2", "payload": "three"})
    assert status == 200
    for client in (star, everything):
        assert (await client.recv()).body == b"three"
    for client in (star, everything, exact, worker):
        await nothing_more(client)


async def test_order_is_kept_per_sender_and_destination(three) -> None:
    n1, n2, n3 = three
    alice = await WsStomp.connect(n1.ws_url, "alice")
    tabs = [await WsStomp.connect(n.ws_url, "bob") for n in (n2, n3)]
    for tab in tabs:
        await tab.subscribe("/user/queue/seq", "u")
        await tab.subscribe("/topic/seq", "t")
    count = 300
    for i in range(count):
        receipt = {"receipt": "last"} if i == count - 1 else {}
        await alice.send(Frame("SEND", {"destination": "/user/bob/queue/seq"}, str(i).encode()))
        await alice.send(Frame("SEND", {"destination": "/topic/seq", **receipt}, str(i).encode()))
    assert (await alice.recv(10)).headers["receipt-id"] == "last"
    for tab in tabs:
        got: dict[str, list[int]] = {"u": [], "t": []}
        for _ in range(2 * count):
            msg = await tab.recv()
            got[msg.headers["subscription"]].append(int(msg.body))
        assert got == {"u": list(range(count)), "t": list(range(count))}
        await nothing_more(tab)


async def test_offline_messages_arrive_once_before_live_ones(three) -> None:
    n1, n2, n3 = three
    alice = await WsStomp.connect(n1.ws_url, "alice")
    for i in range(5):
        await alice.publish("/user/carol/queue/inbox", f"stored {i}")  # RECEIPT: stored in the cluster
    await alice.publish("/user/carol/queue/other", "elsewhere")
    assert api(n3, "GET", "/api/users/carol")[1] == {
        "user": "carol",
        "online": False,
        "sessions": 0,
        "nodes": {},
    }

    carol = await WsStomp.connect(n2.ws_url, "carol")
    await carol.subscribe("/user/queue/inbox")
    await alice.publish("/user/carol/queue/inbox", "live")
    bodies = [(await carol.recv()).body.decode() for _ in range(6)]
    assert bodies == [f"stored {i}" for i in range(5)] + ["live"]
    await nothing_more(carol)

    # Exactly once: a new session elsewhere finds nothing left.
    await carol.close()
    again = await WsStomp.connect(n3.ws_url, "carol")
    await again.subscribe("/user/queue/inbox")
    await nothing_more(again)

    # The seed's pull: the user's own credentials, then a backend with the API key.
    basic = base64.b64encode(b"carol:").decode()
    status, reply = api(
        n1, "POST", "/api/unread", {"destination": "/user/queue/other"}, auth=f"Basic {basic}"
    )
    assert status == 200, reply
    assert [m["payload"] for m in reply["messages"]] == ["elsewhere"]
    assert reply["messages"][0]["destination"] == "/user/queue/other"
    status, reply = api(n2, "POST", "/api/unread", {"user": "carol", "destination": "/queue/other"})
    assert (status, reply) == (200, {"user": "carol", "messages": []})


async def test_a_user_connecting_while_messages_stream_gets_each_once_in_order(node_factory, bus) -> None:
    n1, n2 = started(node_factory, bus, 2)
    alice = await WsStomp.connect(n1.ws_url, "alice")
    count = 400
    sent = asyncio.Event()

    async def stream() -> None:
        for i in range(count):
            await alice.send(Frame("SEND", {"destination": "/user/dave/queue/race"}, str(i).encode()))
            if i % 20 == 0:
                await asyncio.sleep(0.005)
            if i == count // 4:
                sent.set()
        await alice.publish("/user/dave/queue/race", "end")

    streaming = asyncio.create_task(stream())
    await sent.wait()  # some are stored by now; the rest race the subscription
    dave = await WsStomp.connect(n2.ws_url, "dave")
    await dave.subscribe("/user/queue/race")
    await streaming
    got = [(await dave.recv()).body.decode() for _ in range(count + 1)]
    assert got == [str(i) for i in range(count)] + ["end"]
    await nothing_more(dave)
    stats = [api(n, "GET", "/api/stats")[1]["bus"] for n in (n1, n2)]
    assert stats[0]["stored"] > 0, "the test meant to store some of the messages"


async def test_offline_store_keeps_the_newest_up_to_the_cap_until_the_ttl(node_factory, bus) -> None:
    config = {**bus, "offline": {"max_messages": 3, "ttl_s": 1}}
    n1, n2 = started(node_factory, config, 2)
    alice = await WsStomp.connect(n1.ws_url, "alice")
    for i in range(5):
        await alice.publish("/user/erin/queue/a", str(i))
    await alice.publish("/user/erin/queue/b", "expires")
    erin = await WsStomp.connect(n2.ws_url, "erin")
    await erin.subscribe("/user/queue/a")
    assert [(await erin.recv()).body for _ in range(3)] == [b"2", b"3", b"4"]
    await nothing_more(erin)
    await asyncio.sleep(1.3)
    await erin.subscribe("/user/queue/b", "1")
    await nothing_more(erin)


async def test_the_registry_is_cluster_wide_and_quick(three) -> None:
    n1, n2, n3 = three
    ids = [n.id for n in three]
    assert api(n1, "GET", "/api/nodes")[1] == {"nodes": sorted(ids)}
    await WsStomp.connect(n1.ws_url, "alice")
    bob_tab1 = await WsStomp.connect(n2.ws_url, "bob")
    bob_tab2 = await WsStomp.connect(n3.ws_url, "bob")
    # Connections are announced at once: visible from any node well within a second.
    await until(lambda: api(n1, "GET", "/api/users/bob")[1]["sessions"] == 2, 1.0)
    assert api(n1, "GET", "/api/users/bob")[1] == {
        "user": "bob", "online": True, "sessions": 2, "nodes": {ids[1]: 1, ids[2]: 1}
    }
    assert api(n2, "GET", "/api/users")[1] == {"users": ["alice", "bob"]}
    await bob_tab2.close()
    await until(lambda: api(n1, "GET", "/api/users/bob")[1]["nodes"] == {ids[1]: 1}, 1.0)
    await bob_tab1.close()
    await until(lambda: api(n3, "GET", "/api/users/bob")[1]["online"] is False, 1.0)
    assert api(n3, "GET", "/api/users")[1] == {"users": ["alice"]}


async def test_bus_traffic_counters_show_the_routing_mode(three, bus) -> None:
    n1, n2, n3 = three
    bob = await WsStomp.connect(n2.ws_url, "bob")
    await bob.subscribe("/user/queue/in")
    alice = await WsStomp.connect(n1.ws_url, "alice")
    for i in range(10):
        await alice.publish("/user/bob/queue/in", str(i))
    assert [(await bob.recv()).body for _ in range(10)] == [str(i).encode() for i in range(10)]
    expected = {  # (received, ignored) per node for 10 user messages from n1 to bob on n2
        "directed": [(0, 0), (10, 0), (0, 0)],
        "broadcast": [(10, 10), (10, 0), (10, 10)],
    }[bus["bus"]["routing"]]

    def counters() -> list[tuple[int, int]]:
        stats = [api(n, "GET", "/api/stats")[1]["bus"] for n in three]
        return [(s["received"], s["ignored"]) for s in stats]

    await until(lambda: counters() == expected, 3.0, lambda: f"counters {counters()} != {expected}")
    assert api(n1, "GET", "/api/stats")[1]["bus"]["published"] == 10


async def until(check, timeout: float, why=lambda: "condition not met") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{why()} within {timeout} s")
        await asyncio.sleep(0.02)


async def test_a_burst_of_returning_users_gets_every_stored_message(node_factory, bus) -> None:
    """Hundreds of subscriptions at once (a node restarted, its users coming back) each
    fetch what was stored for them; none is left behind for lack of a connection."""
    (node,) = started(node_factory, bus, 1)
    users = [f"back{i}" for i in range(300)]
    for user in users:
        status, reply = api(
            node, "POST", "/api/send-to-user", {"user": user, "destination": "/queue/box", "payload": user}
        )
        assert (status, reply["delivered"]) == (200, 0)
    clients = await asyncio.gather(*(WsStomp.connect(node.ws_url, user) for user in users))
    await asyncio.gather(
        *(c.send(Frame("SUBSCRIBE", {"id": "1", "destination": "/user/queue/box"})) for c in clients)
    )
    bodies = await asyncio.gather(*(c.recv(20) for c in clients))
    assert [frame.body.decode() for frame in bodies] == users
    assert "not fetched" not in node.log()
