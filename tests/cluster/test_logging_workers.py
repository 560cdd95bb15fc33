"""logging.format json under server.workers: every worker's lines carry its own node id."""

from __future__ import annotations

import json
import time

import pytest

from harness.stompclient import WsStomp

pytestmark = pytest.mark.usefixtures("close_ws_clients")


async def test_each_worker_stamps_its_node_id(node_factory, bus_config_for) -> None:
    node = node_factory(
        {
            "node_id": "lw",
            "server": {"workers": 2, "trusted_proxies": ["127.0.0.1"]},
            "logging": {"format": "json"},
            **bus_config_for("standalone", "directed"),
        }
    )
    answered: set[str] = set()
    deadline = time.monotonic() + 15
    while len(answered) < 2:  # both workers listening (the kernel spreads connections)
        assert time.monotonic() < deadline, answered
        answered.add(node.health()["node"])
    clients = [
        await WsStomp.open(node.ws_url, additional_headers={"X-Forwarded-For": f"203.0.113.{i}"})
        for i in range(12)
    ]
    for client in clients:
        await client.ws.close()
    node.stop()
    records = [json.loads(line) for line in node.log().splitlines()]  # every line is JSON
    by_node: dict[str, list[str]] = {}
    for record in records:
        by_node.setdefault(record["node"], []).append(record["msg"])
    assert set(by_node) == {"lw", "lw-w0", "lw-w1"}, set(by_node)
    assert any("2 workers" in msg for msg in by_node["lw"])  # the supervisor's own
    for worker in ("lw-w0", "lw-w1"):
        assert any(f"node {worker} listening" in msg for msg in by_node[worker])
    handshakes = [r for r in records if r.get("event") == "http.access" and r.get("status") == 101]
    assert {r["remote"] for r in handshakes} == {f"203.0.113.{i}" for i in range(12)}
    assert {r["node"] for r in handshakes} == {"lw-w0", "lw-w1"}
