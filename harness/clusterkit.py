"""Helpers for the cluster tests and benchmarks: deployments, the HTTP API, readiness."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from .nodes import API_KEY, NodeProcess
from .stompclient import WsStomp

# (Redis deployment, routing mode): every cluster scenario runs in all four.
DEPLOYMENTS = [
    pytest.param(("standalone", "directed"), id="standalone-directed"),
    pytest.param(("standalone", "broadcast"), id="standalone-broadcast"),
    pytest.param(("cluster", "directed"), id="cluster-directed"),
    pytest.param(("cluster", "broadcast"), id="cluster-broadcast"),
]

# Quick heartbeats so faults show within a couple of seconds.
FAST = {"node_heartbeat_s": 0.5, "node_timeout_s": 2.0}


def api(
    node: NodeProcess, method: str, path: str, body: Any = None, auth: str | None = None
) -> tuple[int, Any]:
    """One HTTP API call (with the test API key unless ``auth`` says otherwise)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": auth or f"Bearer {API_KEY}", "Content-Type": "application/json"}
    req = urllib.request.Request(node.http_url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def started(node_factory: Any, config: dict[str, Any], count: int) -> list[NodeProcess]:
    """``count`` nodes on ``config``, started side by side, each ready (Redis reached)."""
    nodes: list[NodeProcess] = node_factory.many(count, config)
    for node in nodes:
        wait_ready(node)
    return nodes


def ready(node: NodeProcess) -> bool:
    return api(node, "GET", "/ready")[1]["ready"] is True


def wait_ready(node: NodeProcess, want: bool = True, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while ready(node) is not want:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"/ready of {node.http_url} not {want} after {timeout} s:\n{node.log()[-3000:]}"
            )
        time.sleep(0.05)


async def nothing_more(client: WsStomp, wait: float = 0.3) -> None:
    """No further frame arrives (no duplicate, nothing unexpected)."""
    try:
        frame = await client.recv(wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected frame: {frame}")
