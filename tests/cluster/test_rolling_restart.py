"""A rolling restart of a three-node cluster under load loses no user message.

A real redis-server and three real stompgate processes. Users' STOMP clients
(harness/stompclient.py over WebSocket) connect straight to a node, as behind a
load balancer, and reconnect to another when their node closes them with 1012
(or refuses them while it drains); now and then each also goes offline for a
moment by itself. Meanwhile messages for those users are published through the
HTTP API at a steady rate, and each node in turn is sent SIGTERM, drains, exits 0
and is started again on its port.

What stompgate promises (docs/cluster.md, Delivery): a user message the API
answered 200 for is in Redis, delivered or stored, and each is in exactly one of
the two paths. So every acknowledged message reaches its user exactly once; a
message whose request failed (its node went away mid-request) may arrive or not,
but never twice.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import websockets

from harness.clusterkit import wait_ready
from harness.nodes import API_KEY, ROOT, STOMPGATE, NodeProcess
from harness.stompclient import Closed, WsStomp
from stompgate.stomp import Frame

from .kit import started

pytestmark = pytest.mark.usefixtures("close_ws_clients")

USERS = 8
PUBLISH_EVERY_S = 0.02
DRAIN_S = 1.0


@dataclass
class Cluster:
    nodes: list[NodeProcess]
    up: set[int] = field(default_factory=set)  # the nodes a load balancer would send traffic to

    def pick(self, rng: random.Random) -> NodeProcess | None:
        live = sorted(self.up)
        return self.nodes[rng.choice(live)] if live else None


@dataclass
class User:
    name: str
    received: Counter[int] = field(default_factory=Counter)
    restarts_seen: int = 0  # closes with ERROR "server restarting" and 1012
    offline_breaks: int = 0


async def subscribe(client: WsStomp, user: User) -> None:
    """SUBSCRIBE with a receipt; stored messages may come before the RECEIPT."""
    await client.send(Frame("SUBSCRIBE", {"id": "0", "destination": "/user/queue/feed", "receipt": "s"}))
    while True:
        frame = await client.recv(10)
        if frame.command == "RECEIPT":
            return
        assert frame.command == "MESSAGE", frame
        user.received[int(frame.body)] += 1


async def run_user(cluster: Cluster, user: User, stop: asyncio.Event, seed: int) -> None:
    """Stay connected to some node; go offline now and then; reconnect when a node restarts."""
    rng = random.Random(seed)
    while not stop.is_set():
        node = cluster.pick(rng)
        if node is None:
            await asyncio.sleep(0.05)
            continue
        try:
            client = await WsStomp.connect(node.ws_url, user.name)
            await subscribe(client, user)
        except (OSError, websockets.InvalidStatus, websockets.ConnectionClosed, Closed, TimeoutError):
            await asyncio.sleep(0.05)  # draining (503) or down: another node
            continue
        break_at = time.monotonic() + rng.uniform(1.0, 3.0)
        try:
            while not stop.is_set():
                try:
                    frame = await client.recv(max(0.01, break_at - time.monotonic()))
                except TimeoutError:  # a moment offline: messages meanwhile are stored
                    await client.send(Frame("DISCONNECT", {"receipt": "bye"}))
                    while (frame := await client.recv(5)).command == "MESSAGE":
                        user.received[int(frame.body)] += 1
                    if frame.command == "RECEIPT":
                        user.offline_breaks += 1
                        break
                if frame.command == "ERROR":  # a drain's (also when it crossed our DISCONNECT)
                    assert frame.headers["message"] == "server restarting", frame
                    assert (await client.expect_closed()).code == 1012
                    user.restarts_seen += 1
                    break
                assert frame.command == "MESSAGE", frame
                user.received[int(frame.body)] += 1
        except Closed as exc:
            assert exc.code == 1012, exc  # closed by a drain without our reading the ERROR first
            user.restarts_seen += 1
        finally:
            await client.close()
        await asyncio.sleep(rng.uniform(0.05, 0.4))


async def publish(
    cluster: Cluster, users: list[User], stop: asyncio.Event, acked: dict[int, str], sent: dict[int, str]
) -> None:
    """One message at a time, at a steady rate, each to the next user, through any node in service."""
    rng = random.Random(1)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    seq = itertools.count()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while not stop.is_set():
            node = cluster.pick(rng)
            if node is None:
                await asyncio.sleep(PUBLISH_EVERY_S)
                continue
            n = next(seq)
            user = users[n % len(users)].name
            sent[n] = user
            body = {"user": user, "destination": "/queue/feed", "payload": str(n)}
            try:
                async with http.post(node.http_url + "/api/send-to-user", json=body, headers=headers) as resp:
                    if resp.status == 200:
                        acked[n] = user
            except (aiohttp.ClientError, TimeoutError):
                pass  # not acknowledged: it may arrive or not, never twice
            await asyncio.sleep(PUBLISH_EVERY_S)


def restart(node: NodeProcess) -> None:
    """Start the node again on its ports and config, once the old process has gone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOMPGATE_")}
    with open(node.log_path, "ab") as log:
        node.proc = subprocess.Popen(
            [*STOMPGATE, "serve", "--config", str(node.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
    node.wait_healthy()
    wait_ready(node)


async def test_rolling_restart_under_load_loses_no_message(node_factory, bus_config_for) -> None:
    config: dict[str, Any] = bus_config_for("standalone", "directed")
    config["server"] = {"drain_s": DRAIN_S}
    cluster = Cluster(started(node_factory, config, 3))
    cluster.up = {0, 1, 2}
    users = [User(f"user{i}") for i in range(USERS)]
    stop_clients, stop_publishing = asyncio.Event(), asyncio.Event()
    acked: dict[int, str] = {}
    sent: dict[int, str] = {}
    clients = [asyncio.ensure_future(run_user(cluster, u, stop_clients, i)) for i, u in enumerate(users)]
    publisher = asyncio.ensure_future(publish(cluster, users, stop_publishing, acked, sent))
    try:
        await asyncio.sleep(1.5)
        for index, node in enumerate(cluster.nodes):
            cluster.up.discard(index)  # what a load balancer does once /ready says 503
            node.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(node.proc.wait, 20)
            assert code == 0, f"node {index} exited with {code}:\n{node.log()[-3000:]}"
            await asyncio.to_thread(restart, node)
            cluster.up.add(index)
            await asyncio.sleep(1.0)  # load on the full cluster again before the next one
        stop_publishing.set()
        await publisher

        # Everyone comes back (some are offline for a moment): every acknowledged message arrives.
        deadline = time.monotonic() + 15
        while any(n not in users_by_name(users)[u].received for n, u in acked.items()):
            assert time.monotonic() < deadline, "messages still missing after 15 s"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # room for a duplicate to show up
    finally:
        stop_clients.set()
        stop_publishing.set()
        await asyncio.gather(publisher, *clients, return_exceptions=True)
    for client in clients:
        client.result()  # a client's failed assertion (a wrong ERROR or close code) fails the test

    by_name = users_by_name(users)
    missing = sorted(n for n, u in acked.items() if n not in by_name[u].received)
    duplicated = {u.name: [n for n, c in u.received.items() if c > 1] for u in users}
    strays = {u.name: [n for n in u.received if sent.get(n) != u.name] for u in users}
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged messages lost: {missing[:20]}"
    assert not any(duplicated.values()), f"delivered twice: {duplicated}"
    assert not any(strays.values()), f"delivered to the wrong user: {strays}"
    # The scenario happened: steady load, sessions closed by drains and offline moments.
    assert len(acked) > 300, len(acked)
    assert sum(u.restarts_seen for u in users) >= USERS // 2, [u.restarts_seen for u in users]
    assert sum(u.offline_breaks for u in users) >= USERS, [u.offline_breaks for u in users]
    for node in cluster.nodes:
        assert node.log().count("drained: every session closed") == 1, node.log()[-3000:]


def users_by_name(users: list[User]) -> dict[str, User]:
    return {u.name: u for u in users}
