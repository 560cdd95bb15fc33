"""Faults with real processes: a node SIGKILLed, Redis restarted, pub/sub connections killed.

Each runs in both routing modes over a standalone Redis and a 3-master Cluster.
The restart tests get their own Redis with an append-only file (what a
production deployment keeping offline messages runs), so the shared ones stay up.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.clusterkit import FAST, api, nothing_more, ready, wait_ready
from harness.redisproc import RedisProcess, start_cluster, start_redis
from harness.stompclient import WsStomp
from stompgate.stomp import Frame

from .kit import DEPLOYMENTS, started

pytestmark = pytest.mark.usefixtures("close_ws_clients")


@pytest.fixture(params=DEPLOYMENTS)
def deployment(request) -> tuple[str, str]:
    return request.param


async def test_a_killed_node_leaves_the_registry_and_messages_for_its_users_wait(
    node_factory, bus_config_for, deployment
) -> None:
    n1, n2 = started(node_factory, bus_config_for(*deployment), 2)
    bob = await WsStomp.connect(n2.ws_url, "bob")
    await bob.subscribe("/user/queue/chat")
    ann = await WsStomp.connect(n2.ws_url, "ann")
    await ann.publish("/user/carol/queue/chat", "stored via the node that dies")
    n2_id = n2.id
    assert n2_id in api(n1, "GET", "/api/nodes")[1]["nodes"]
    assert api(n1, "GET", "/api/users/bob")[1]["nodes"] == {n2_id: 1}

    n2.kill()
    killed_at = time.monotonic()
    bound = FAST["node_timeout_s"] + FAST["node_heartbeat_s"] + 1.0
    while n2_id in api(n1, "GET", "/api/nodes")[1]["nodes"]:
        assert time.monotonic() - killed_at < bound, "the killed node is still registered"
        await asyncio.sleep(0.05)
    assert api(n1, "GET", "/api/users/bob")[1]["online"] is False

    alice = await WsStomp.connect(n1.ws_url, "alice")
    for i in range(3):
        await alice.publish("/user/bob/queue/chat", f"while away {i}")  # RECEIPT: stored
    assert api(n1, "GET", "/api/stats")[1]["bus"]["stored"] == 3
    for user, expected in (
        ("bob", [f"while away {i}" for i in range(3)]),
        ("carol", ["stored via the node that dies"]),
    ):
        client = await WsStomp.connect(n1.ws_url, user)
        await client.subscribe("/user/queue/chat")
        assert [(await client.recv()).body.decode() for _ in expected] == expected
        await nothing_more(client)


@pytest.fixture
def own_redis(tmp_path, deployment):
    """A persistent Redis (or Cluster) for this test alone, and the bus config for it."""
    where, routing = deployment
    if where == "standalone":
        servers = [start_redis(tmp_path, persistent=True)]
        target = {"url": servers[0].url}
    else:
        servers = start_cluster(tmp_path, persistent=True)
        target = {"cluster_nodes": [f"127.0.0.1:{s.port}" for s in servers]}
    yield servers, {"bus": {"type": "redis", "routing": routing, "redis": target, **FAST}}
    for server in servers:
        server.stop()


def restart(servers: list[RedisProcess]) -> None:
    for server in servers:
        server.start()
    if len(servers) > 1:  # a Cluster: wait until it serves every slot again
        deadline = time.monotonic() + 20
        while b"cluster_state:ok" not in servers[0].client().execute_command("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "the Redis Cluster did not come back"
            time.sleep(0.1)


async def test_redis_restarted_nodes_serve_locally_then_recover_without_loss(node_factory, own_redis) -> None:
    servers, config = own_redis
    n1, n2 = started(node_factory, config, 2)
    bob = await WsStomp.connect(n2.ws_url, "bob")
    await bob.subscribe("/user/queue/chat")
    alice = await WsStomp.connect(n1.ws_url, "alice")
    await alice.subscribe("/topic/local", "t")
    await alice.subscribe("/user/queue/chat", "u")
    for i in range(3):
        await alice.publish("/user/carol/queue/chat", f"stored {i}")

    for server in servers:
        server.stop()
    for node in (n1, n2):
        wait_ready(node, want=False)
    status, body = api(n1, "GET", "/ready")
    assert status == 503 and body["redis"] == "down" and body["error"]
    assert api(n1, "GET", "/api/users")[0] == 503

    # Local traffic goes on: a new session, a topic, a user on the same node.
    dave = await WsStomp.connect(n1.ws_url, "dave")
    await dave.send(Frame("SEND", {"destination": "/topic/local"}, b"local topic"))
    await dave.send(Frame("SEND", {"destination": "/user/alice/queue/chat"}, b"local user"))
    got = {(await alice.recv()).body for _ in range(2)}
    assert got == {b"local topic", b"local user"}
    # A message for another node waits in the outbox; its RECEIPT waits with it.
    await alice.send(
        Frame("SEND", {"destination": "/user/bob/queue/chat", "receipt": "r1"}, b"sent during the outage")
    )
    await nothing_more(alice, 0.5)

    restart(servers)
    receipt = await alice.recv(20)
    assert (receipt.command, receipt.headers["receipt-id"]) == ("RECEIPT", "r1")
    assert (await bob.recv(20)).body == b"sent during the outage"
    for node in (n1, n2):
        wait_ready(node)
    # Sessions are registered again, subscriptions are live again, stored messages survived.
    n2_id = n2.id
    deadline = time.monotonic() + 10
    while api(n1, "GET", "/api/users/bob")[1]["nodes"] != {n2_id: 1}:
        assert time.monotonic() < deadline, "bob's session was not registered again"
        await asyncio.sleep(0.1)
    await alice.publish("/user/bob/queue/chat", "after")
    assert (await bob.recv()).body == b"after"
    carol = await WsStomp.connect(n2.ws_url, "carol")
    await carol.subscribe("/user/queue/chat")
    assert [(await carol.recv()).body for _ in range(3)] == [f"stored {i}".encode() for i in range(3)]
    for client in (alice, bob, carol):
        await nothing_more(client)


def pubsub_clients(server: RedisProcess) -> int:
    return sum(
        1
        for c in server.client().client_list()
        if int(c.get("sub", 0)) + int(c.get("psub", 0)) + int(c.get("ssub", 0))
    )


async def test_pubsub_connections_killed_by_redis_are_restored(
    node_factory, bus_config_for, deployment, request
) -> None:
    n1, n2 = started(node_factory, bus_config_for(*deployment), 2)
    if deployment[0] == "standalone":
        servers = [request.getfixturevalue("standalone_redis")]
    else:
        servers = request.getfixturevalue("redis_cluster")
    bob = await WsStomp.connect(n2.ws_url, "bob")
    await bob.subscribe("/user/queue/chat")
    watcher = await WsStomp.connect(n2.ws_url, "watcher")
    await watcher.subscribe("/topic/news")
    alice = await WsStomp.connect(n1.ws_url, "alice")
    before = [pubsub_clients(s) for s in servers]

    for server in servers:
        server.client().execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    # Sent right into the gap: stored while bob's node has no subscription, recovered after.
    await alice.publish("/user/bob/queue/chat", "into the gap")
    assert (await bob.recv(10)).body == b"into the gap"

    deadline = time.monotonic() + 10
    while [pubsub_clients(s) for s in servers] != before or not (ready(n1) and ready(n2)):
        assert time.monotonic() < deadline, (
            f"pub/sub not restored: {[pubsub_clients(s) for s in servers]} != {before}"
        )
        await asyncio.sleep(0.05)
    await alice.publish("/topic/news", "topics flow again")
    assert (await watcher.recv()).body == b"topics flow again"
    await alice.publish("/user/bob/queue/chat", "live again")
    assert (await bob.recv()).body == b"live again"
    assert "redis unreachable (subscribe)" in n2.log()  # noticed, not silently papered over
    for client in (bob, watcher):
        await nothing_more(client)



async def test_a_node_started_before_its_redis_says_so_and_catches_up(node_factory, tmp_path) -> None:
    from harness.nodes import free_port

    server = RedisProcess(free_port(), tmp_path / "late-redis")
    config = {"bus": {"type": "redis", "routing": "directed", "redis": {"url": server.url}, **FAST}}
    node = node_factory(config)
    try:
        # Which connection failed last (pub/sub or heartbeat) varies; the address is named either way.
        warning = [line for line in node.log().splitlines() if "redis not reachable yet (" in line]
        assert warning and f"127.0.0.1:{server.port}" in warning[0], node.log()
        assert api(node, "GET", "/ready")[0] == 503
        alice = await WsStomp.connect(node.ws_url, "alice")
        await alice.subscribe("/topic/local")
        await alice.publish("/topic/local", "served while redis is missing", receipt=False)
        assert (await alice.recv()).body == b"served while redis is missing"
        # For a user nobody holds: the message waits in the outbox, its RECEIPT with it.
        await alice.send(
            Frame("SEND", {"destination": "/user/bob/queue/in", "receipt": "r1"}, b"kept for bob")
        )
        await nothing_more(alice, 0.5)

        server.start()
        receipt = await alice.recv(20)
        assert (receipt.command, receipt.headers["receipt-id"]) == ("RECEIPT", "r1")
        wait_ready(node)
        assert "connected to redis" in node.log()
        bob = await WsStomp.connect(node.ws_url, "bob")
        await bob.subscribe("/user/queue/in")
        assert (await bob.recv()).body == b"kept for bob"
    finally:
        server.stop()
