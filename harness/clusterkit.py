"""Helpers for the cluster tests and benchmarks: the HTTP API, readiness."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from .nodes import API_KEY, NodeProcess
from .stompclient import WsStomp

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
        with urllib.request.urlopen(req, timeout=10, context=node.ssl_context) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


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
