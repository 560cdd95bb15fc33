"""Graceful drain of a real node on SIGTERM: not ready, no new sessions, closes in batches, exit 0."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import websockets

from harness.nodes import NodeProcess
from harness.stompclient import Closed, WsStomp

from .test_sockjs_stomp import Streaming, frame

pytestmark = pytest.mark.usefixtures("close_ws_clients")

Factory = Callable[..., NodeProcess]
SESSIONS = 12
DRAIN_S = 1.5


def get(node: NodeProcess, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(node.http_url + path, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def closed_by_drain(client: WsStomp) -> float:
    """When the node's ERROR came; asserts the ERROR says why and the close code is 1012."""
    error = await client.recv(10)
    at = time.monotonic()
    assert error.command == "ERROR" and error.headers["message"] == "server restarting", error
    closed = await client.expect_closed()
    assert closed.code == 1012, closed
    return at


def batches(times: list[float], gap_s: float = 0.05) -> int:
    """How many groups the close times fall into, a group ending at a silence of ``gap_s``."""
    ordered = sorted(times)
    return 1 + sum(1 for a, b in zip(ordered, ordered[1:]) if b - a > gap_s)


def wait_exit(node: NodeProcess, timeout: float) -> int:
    node.proc.wait(timeout)
    return node.proc.returncode


async def test_sigterm_drains_in_batches_refusing_new_sessions(node_factory: Factory) -> None:
    node = node_factory({"server": {"drain_s": DRAIN_S, "sockjs": [{"path": "/sj"}]}})
    clients = [await WsStomp.connect(node.ws_url, f"user{i}") for i in range(SESSIONS)]
    for client in clients:
        await client.subscribe("/user/queue/in")
    async with aiohttp.ClientSession() as http:
        sockjs = Streaming(http, node)
        await sockjs.open()
        await sockjs.send(frame("CONNECT", {"accept-version": "1.2", "login": "sj", "heart-beat": "0,0"}))
        assert (await sockjs.line()).startswith('a["CONNECTED')
        assert get(node, "/ready")[0] == 200

        node.proc.send_signal(signal.SIGTERM)
        closes = [asyncio.ensure_future(closed_by_drain(c)) for c in clients]
        deadline = time.monotonic() + 5
        while (ready := get(node, "/ready"))[0] != 503:
            assert time.monotonic() < deadline, ready
            await asyncio.sleep(0.02)
        assert ready[1]["reason"] == "draining" and ready[1]["ready"] is False
        assert not all(c.done() for c in closes), "the sessions were closed before /ready said so"
        health = get(node, "/health")
        assert health[0] == 200 and health[1]["draining"] is True

        # New sessions are refused on every listener; open ones are not touched by that.
        with pytest.raises(websockets.InvalidStatus) as refused:
            await WsStomp.connect(node.ws_url, "late")
        assert refused.value.response.status_code == 503
        async with http.get(node.http_url + "/sj/info") as resp:
            assert resp.status == 503
        async with http.post(node.http_url + "/sj/000/newsession/xhr") as resp:
            assert resp.status == 503
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", node.tcp_port), timeout=2).close()

        times = await asyncio.gather(*closes)
        # The SockJS session ends the same way: ERROR, then a close frame with 1012.
        lines = await sockjs.lines_for(5)
        assert any(line.startswith('a["ERROR') and "server restarting" in line for line in lines), lines
        assert 'c[1012,"server restarting"]' in lines, lines
        await sockjs.close()

    assert wait_exit(node, 15) == 0, node.log()
    log = node.log()
    assert log.count("drain: batch ") >= 2, log
    assert batches(times) >= 2, f"every session closed at once: {sorted(t - min(times) for t in times)}"
    assert "drained: every session closed" in log, log
    # Each session's close line gives the reason shutdown (broker/closes.py, docs/metrics.md).
    assert log.count("closed: shutdown") >= SESSIONS + 1, log


async def test_a_second_signal_stops_at_once(node_factory: Factory) -> None:
    node = node_factory({"server": {"drain_s": 120}})
    clients = [await WsStomp.connect(node.ws_url, f"user{i}") for i in range(4)]
    node.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while get(node, "/ready")[0] != 503:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    node.proc.send_signal(signal.SIGINT)
    # With a 120 s drain, these close (and the node exits) only because of the second signal.
    for client in clients:
        try:
            await closed_by_drain(client)
        except Closed as exc:  # its batch came first: closed the same way
            assert exc.code == 1012
    assert wait_exit(node, 15) == 0, node.log()
    assert "received again: stopping now" in node.log()


async def test_workers_each_drain_on_the_supervisors_sigterm(node_factory: Factory, bus_config_for) -> None:
    config = {"server": {"workers": 2, "drain_s": 1.0}, **bus_config_for("standalone", "directed")}
    node = node_factory(config)
    answered: set[str] = set()
    deadline = time.monotonic() + 15
    while len(answered) < 2:  # both workers listening
        assert time.monotonic() < deadline
        answered.add(get(node, "/health")[1]["node"])
    clients = [await WsStomp.connect(node.ws_url, f"user{i}") for i in range(8)]
    node.proc.send_signal(signal.SIGTERM)
    for client in clients:
        await closed_by_drain(client)
    assert wait_exit(node, 15) == 0, node.log()
    log = node.log()
    assert "SIGTERM: passing it on to 2 workers: they drain over 1 s" in log, log
    assert log.count("drained: every session closed") == 2, log
