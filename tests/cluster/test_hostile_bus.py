"""Hostile clients against real nodes and a real Redis: the cluster bus, floods, memory
(issue 11, classes 3-5, 8).

- 3: one message Redis refuses fails alone; no user name can split a user's
  Redis slot; /ready says so when the outbox is not draining.
- 4: a flooder is paused at its own share, others keep sending.
- 5: transactions, slow readers and the node's memory budget are bounded in bytes.
- 8: per-session rate limits (throttle and close).

Each attack runs while tests/hostile.py's probe measures an innocent user and
/health; timing is judged as a ratio to the idle node.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
import websockets
from redis.cluster import ClusterNode, RedisCluster

from harness.clusterkit import api, nothing_more, ready
from harness.nodes import NodeProcess
from harness.stompclient import WsStomp
from stompgate.bus.keys import Keys
from stompgate.stomp import Frame, serialize

from ..hostile import Probe, assert_unharmed, while_attacked
from ..sockjsclient import fetch
from .kit import started

pytestmark = pytest.mark.usefixtures("close_ws_clients")

NO_RATE_LIMIT = {"frames_per_s": 0, "bytes_per_s": 0}
ONE_PER_DEPLOYMENT = [
    pytest.param(("standalone", "directed"), id="standalone"),
    pytest.param(("cluster", "directed"), id="cluster"),
]


def redis_of(request: Any, deployment: str) -> Any:
    """A client of the test's Redis (standalone server, or the whole Cluster)."""
    if deployment == "standalone":
        return request.getfixturevalue("standalone_redis").client()
    servers = request.getfixturevalue("redis_cluster")
    return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", s.port) for s in servers])


def packed(frames: list[Frame]) -> bytes:
    return b"".join(serialize(frame, "1.2") for frame in frames)


# ------------------------------------------------------------- 3. one refused message


@pytest.mark.parametrize("deployment", ONE_PER_DEPLOYMENT)
async def test_a_message_redis_refuses_fails_alone(node_factory, bus_config_for, request, deployment) -> None:
    """carol's store key holds a string, so storing for her fails (WRONGTYPE) on every try.

    Before, the outbox sent that batch again forever: nothing else of this node
    reached the cluster, while /ready said ready.
    """
    config = bus_config_for(*deployment)
    n1, n2 = started(node_factory, config, 2)
    keys = Keys(config["bus"]["redis"]["prefix"])
    redis_of(request, deployment[0]).set(keys.store("carol", "/queue/in"), "not a list")
    bob = await WsStomp.connect(n2.ws_url, "bob")
    await bob.subscribe("/user/queue/in")

    mallory = await WsStomp.connect(n1.ws_url, "mallory")
    alice = await WsStomp.connect(n1.ws_url, "alice")
    await mallory.send(Frame("SEND", {"destination": "/user/carol/queue/in", "receipt": "m"}, b"for carol"))
    for i in range(3):
        await alice.send(Frame("SEND", {"destination": "/user/bob/queue/in"}, f"for bob {i}".encode()))
    error = await mallory.recv(10)
    assert error.command == "ERROR" and "refused by redis: WRONGTYPE" in error.headers["message"], error
    assert [(await bob.recv(10)).body for _ in range(3)] == [b"for bob 0", b"for bob 1", b"for bob 2"]
    await alice.publish("/user/bob/queue/in", "with a receipt")  # waits for the cluster: it moves
    assert (await bob.recv()).body == b"with a receipt"
    assert ready(n1)
    stats = api(n1, "GET", "/api/stats")[1]["bus"]
    assert stats["refused"] == 1
    assert len(re.findall("redis refused", n1.log())) == 1


@pytest.mark.parametrize("name", ["}x", "a{b}", "{}", "50%{off"])
async def test_no_user_name_can_split_a_users_slot(node_factory, bus_config_for, name: str) -> None:
    """On a Redis Cluster a user's channel and store must share a slot: '{' and '}' in the name
    used to end or empty the hash tag, and every message for that user failed (CROSSSLOT) for ever."""
    n1, n2 = started(node_factory, bus_config_for("cluster", "directed"), 2)
    alice = await WsStomp.connect(n1.ws_url, "alice")
    encoded = name.replace("%", "%25")
    await alice.publish(f"/user/{encoded}/queue/in", "stored")  # nobody subscribed: the script stores it
    target = await WsStomp.connect(n2.ws_url, name)
    await target.subscribe("/user/queue/in")
    assert (await target.recv(10)).body == b"stored"
    await alice.publish(f"/user/{encoded}/queue/in", "live")
    assert (await target.recv(10)).body == b"live"
    assert api(n1, "GET", "/api/stats")[1]["bus"]["refused"] == 0


async def test_ready_says_when_the_outbox_is_not_draining(node_factory, bus_config_for, request) -> None:
    """Redis up but not taking writes (CLIENT PAUSE): /ready turns 503 once the oldest message
    has waited outbox_stall_s, and ready again once it drains; nothing is lost."""
    config = bus_config_for("standalone", "directed")
    config["bus"]["outbox_stall_s"] = 1.0
    n1, n2 = started(node_factory, config, 2)
    bob = await WsStomp.connect(n2.ws_url, "bob")
    await bob.subscribe("/user/queue/in")
    alice = await WsStomp.connect(n1.ws_url, "alice")
    server = request.getfixturevalue("standalone_redis").client()
    server.execute_command("CLIENT", "PAUSE", 4000, "WRITE")
    try:
        await alice.send(Frame("SEND", {"destination": "/user/bob/queue/in"}, b"during the pause"))
        deadline = time.monotonic() + 3.5
        while ready(n1):
            assert time.monotonic() < deadline, "/ready still 200 with the outbox stuck"
            await asyncio.sleep(0.1)
        status, body = api(n1, "GET", "/ready")
        assert status == 503 and body["outbox_stalled_s"] >= 1 and "not draining" in body["error"]
    finally:
        server.execute_command("CLIENT", "UNPAUSE")
    assert (await bob.recv(10)).body == b"during the pause"
    deadline = time.monotonic() + 10
    while not ready(n1):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)


# ------------------------------------------------------------- 4. a flooder


async def test_a_flooder_slows_itself_never_the_others(node_factory, bus_config_for, request) -> None:
    """30,000 SENDs without receipts while Redis takes nothing for 2.5 s.

    Before, the flood filled the 10,000-message outbox and other users' SENDs got
    an ERROR and were disconnected. Now the flooder is not read past its own
    share (stomp.max_inflight_bytes), and everyone else goes on.
    """
    config = bus_config_for("standalone", "directed")
    config["stomp"] = {"rate_limit": NO_RATE_LIMIT}
    n1, n2 = started(node_factory, config, 2)
    bob = await WsStomp.connect(n2.ws_url, "bob")
    await bob.subscribe("/user/queue/in")
    alice = await WsStomp.connect(n1.ws_url, "alice")
    flooder = await WsStomp.connect(n1.ws_url, "flooder")
    probe = await Probe(n1).start()
    idle = await probe.measure()
    server = request.getfixturevalue("standalone_redis").client()

    async def flood() -> None:
        batch = packed([Frame("SEND", {"destination": "/topic/flood"}, b"f" * 20)] * 1000)
        for _ in range(30):
            await flooder.send_raw(batch)

    server.execute_command("CLIENT", "PAUSE", 2500, "WRITE")
    try:
        flooding = asyncio.ensure_future(flood())
        await asyncio.sleep(0.3)
        for i in range(5):
            await alice.send(
                Frame("SEND", {"destination": "/user/bob/queue/in", "receipt": f"r{i}"}, f"m{i}".encode())
            )
        attacked = await probe.measure()
    finally:
        server.execute_command("CLIENT", "UNPAUSE")
    assert [(await alice.recv(15)).headers.get("receipt-id") for _ in range(5)] == [f"r{i}" for i in range(5)]
    assert [(await bob.recv(10)).body for _ in range(5)] == [f"m{i}".encode() for i in range(5)]
    await asyncio.wait_for(flooding, 60)
    await flooder.publish("/topic/flood", b"last")  # the flooder was slowed, not closed
    assert api(n1, "GET", "/api/stats")[1]["bus"]["dropped"] == 0
    assert_unharmed(idle, attacked, what="flooding with Redis paused")
    await probe.close()


# ------------------------------------------------------------- 5. bytes


async def test_open_transactions_are_bounded_in_bytes(node: NodeProcess) -> None:
    """Frames held by open transactions: 4 MiB per session, not 16 x 1,000 x 1 MB."""
    mallory = await WsStomp.connect(node.ws_url, "mallory")
    await mallory.send(Frame("BEGIN", {"transaction": "t"}))
    chunk = b"b" * 900_000
    error = None
    for _ in range(10):
        await mallory.send(Frame("SEND", {"destination": "/topic/tx", "transaction": "t"}, chunk))
        try:
            error = await mallory.recv(0.5)
            break
        except TimeoutError:
            continue
    assert error is not None and error.command == "ERROR", error
    assert "open transactions would hold more than 4194304 bytes" in error.headers["message"]


async def _reader_that_stops(url: str, login: str, destination: str) -> Any:
    """A session that subscribes, then never reads its socket again."""
    ws = await websockets.connect(url, max_size=None, max_queue=1, ping_interval=None)
    await ws.send(serialize(Frame("CONNECT", {"accept-version": "1.2", "login": login, "heart-beat": "0,0"})))
    await ws.recv()
    await ws.send(
        serialize(Frame("SUBSCRIBE", {"id": "s", "destination": destination, "receipt": "r"}), "1.2")
    )
    await ws.recv()
    ws.transport.pause_reading()  # from now on the kernel buffers fill, then the node's
    return ws


async def _publish_until(
    node: NodeProcess, what: str, body: bytes, destination: str, limit: int = 60
) -> None:
    """Publish ``body`` until ``what`` shows in the node's log (checks run once a second there)."""
    publisher = await WsStomp.connect(node.ws_url, "publisher")
    for _ in range(limit):
        await publisher.publish(destination, body)
        if what in node.log():
            return
    deadline = time.monotonic() + 10
    while what not in node.log():
        assert time.monotonic() < deadline, f"no {what!r} in the node's log:\n{node.log()[-2000:]}"
        await asyncio.sleep(0.1)


async def test_readers_that_stop_reading_are_closed_at_the_outbound_limit(node_factory: Any) -> None:
    """Sessions that never read a busy topic: each is closed once 512 KiB wait for it (Spring's
    send buffer limit), its buffers freed at once; the innocent user is unaffected."""
    node = node_factory({"stomp": {"rate_limit": NO_RATE_LIMIT}})
    readers = [await _reader_that_stops(node.ws_url, f"r{i}", "/topic/big") for i in range(8)]
    probe = await Probe(node).start()
    idle = await probe.measure()
    attacked = await while_attacked(
        probe, _publish_until(node, "slow consumer", b"B" * 200_000, "/topic/big")
    )
    await _publish_until(node, "slow consumer", b"B" * 200_000, "/topic/big")
    deadline = time.monotonic() + 20
    while len(re.findall("slow consumer, ", node.log())) < len(readers):
        assert time.monotonic() < deadline, node.log()[-3000:]
        await asyncio.sleep(0.1)
    assert_unharmed(idle, attacked, what="readers that stop reading")
    assert all(
        int(n) <= 512 * 1024 + 300_000 for n in re.findall(r"slow consumer, (\d+) bytes unsent", node.log())
    )
    for ws in readers:
        ws.transport.abort()
    await probe.close()


async def test_the_memory_budget_closes_the_heaviest_sessions_first(node_factory: Any) -> None:
    """With a large per-session limit, the node-wide budget still holds: past it the heaviest
    sessions are closed first, with a log line naming them and what they held."""
    node = node_factory(
        {"server": {"max_outbound_buffer": 256 * 1024 * 1024, "memory_budget": 8 * 1024 * 1024},
         "stomp": {"rate_limit": NO_RATE_LIMIT}}
    )
    readers = [await _reader_that_stops(node.ws_url, f"heavy{i}", "/topic/heavy") for i in range(4)]
    probe = await Probe(node).start()
    idle = await probe.measure()
    attacked = await while_attacked(
        probe, _publish_until(node, "memory budget", b"H" * 500_000, "/topic/heavy")
    )
    await _publish_until(node, "memory budget", b"H" * 500_000, "/topic/heavy")  # if the probe was quicker
    line = re.search(
        r"memory budget of 8388608 bytes exceeded: closing session \S+ \((heavy\d), .*holding (\d+) bytes",
        node.log(),
    )
    assert line is not None, node.log()[-3000:]
    assert int(line.group(2)) > 1024 * 1024
    assert_unharmed(idle, attacked, what="memory budget")
    for ws in readers:
        ws.transport.abort()
    await probe.close()


# ------------------------------------------------------------- 8. rate limits


async def test_a_session_over_its_rate_is_throttled_not_closed(node_factory: Any) -> None:
    node = node_factory({"stomp": {"rate_limit": {"frames_per_s": 200, "bytes_per_s": 0, "burst_s": 1}}})
    watcher = await WsStomp.connect(node.ws_url, "watcher")
    await watcher.subscribe("/topic/rate")
    flooder = await WsStomp.connect(node.ws_url, "flooder")
    await flooder.send_raw(packed([Frame("SEND", {"destination": "/topic/rate"}, b"x")] * 1000))
    started_at = time.monotonic()
    got = 0
    while time.monotonic() - started_at < 1.0:
        try:
            await watcher.recv(0.1)
            got += 1
        except TimeoutError:
            pass
    assert got < 600, f"{got} messages in the first second at 200 frames/s (bucket 200)"
    # Still served, in order, when its turn comes.
    await flooder.publish("/topic/rate", b"after", receipt=True)
    while (await watcher.recv(10)).body != b"after":
        got += 1
    assert got == 1000


async def test_the_close_policy_ends_a_session_over_its_rate(node_factory: Any) -> None:
    node = node_factory({"stomp": {"rate_limit": {"frames_per_s": 50, "burst_s": 1, "policy": "close"}}})
    flooder = await WsStomp.connect(node.ws_url, "flooder")
    await flooder.send_raw(packed([Frame("SEND", {"destination": "/topic/rate"}, b"x")] * 100))
    error = await flooder.recv()
    assert error.command == "ERROR" and "rate limit exceeded" in error.headers["message"]
    bystander = await WsStomp.connect(node.ws_url, "bystander")
    await bystander.publish("/topic/rate", b"fine")
    await nothing_more(bystander, 0.1)


async def test_sockjs_json_nested_thousands_deep_is_a_clean_error(node_factory: Any) -> None:
    node = node_factory({"server": {"sockjs": [{"path": "/sj"}]}})
    opened = await fetch("127.0.0.1", node.port, "POST", "/sj/000/deep/xhr")
    assert opened.status == 200 and opened.body.startswith(b"o")
    answer = await fetch("127.0.0.1", node.port, "POST", "/sj/000/deep/xhr_send", body=b"[" * 5000)
    assert answer.status == 500 and b"Broken JSON encoding." in answer.body
    assert "Traceback" not in node.log()
    assert node.health()["status"] == "ok"

