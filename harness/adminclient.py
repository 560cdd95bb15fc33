"""The admin API of a real node, for the tests: one call, with the test credential or another."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from .nodes import NodeProcess

ADMIN_PASSWORD = "test-admin-password"  # what admin_config() sets
# A node's overrides that serve the admin API behind ADMIN_PASSWORD, sampling quickly.
ADMIN_CONFIG: dict[str, Any] = {
    "admin": {"enabled": True, "password": ADMIN_PASSWORD, "sample_interval_s": 0.2}
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


GOOD = basic("admin", ADMIN_PASSWORD)


def admin(
    node: NodeProcess,
    method: str,
    path: str,
    body: Any = None,
    auth: str | None = GOOD,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON answer, response headers) of ``{method} /admin/api{path}``."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if auth is not None:
        sent["Authorization"] = auth
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(node.http_url + "/admin/api" + path, data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)
