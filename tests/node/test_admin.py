"""The admin API on a real node: who may call it, what it shows (never a secret), and disconnects.

The cluster-wide side (a user disconnected on another node) is in
tests/cluster/test_admin_cluster.py; the page in tests/clients/test_admin_browser.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import websockets

from harness.adminclient import ADMIN_CONFIG, ADMIN_PASSWORD, GOOD, admin, basic
from harness.nodes import API_KEY, ROOT, deep_merge
from harness.stompclient import WsStomp
from stompgate import __version__
from stompgate.config import ConfigError, load_config

pytestmark = pytest.mark.usefixtures("close_ws_clients")


@pytest.fixture
def admin_node(node_factory):
    return node_factory(ADMIN_CONFIG)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_off_by_default(node) -> None:
    assert get(node.http_url + "/admin/api/info", {"Authorization": GOOD})[0] == 404
    assert get(node.http_url + "/admin/")[0] == 404


@pytest.mark.parametrize(
    ("admin_section", "problem"),
    [
        ({"enabled": True}, "admin.password: required when admin.enabled is true"),
        ({"enabled": True, "password": "short"}, "admin.password: at least 12 characters"),
        ({"path": "/admin/"}, "admin.path: must start with '/' and not end with it"),
        ({"enabled": True, "api_key": True}, "admin.api_key: needs api.enabled"),
        (
            {"enabled": True, "password": "long-enough-pw", "path": "/ws"},
            "server.websocket_paths/sockjs: a path lies under admin.path '/ws'",
        ),
    ],
)
def test_config_refuses_an_open_or_weak_admin(tmp_path, admin_section, problem) -> None:
    path = tmp_path / "c.yaml"
    config = {
        "server": {"websocket_paths": ["/ws"]},
        "auth": {"mode": "dev"},
        "api": {"enabled": False},
        "admin": admin_section,
    }
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert any(problem in p for p in exc.value.problems), exc.value.problems


def test_refusals_without_the_right_credential(admin_node) -> None:
    wrong = [
        None,
        basic("admin", "not-the-password"),
        basic("root", ADMIN_PASSWORD),
        basic("admin", ADMIN_PASSWORD + "x"),
        "Basic !!!not-base64",
        f"Bearer {API_KEY}",  # admin.api_key is false: the API key is not an admin credential
        f"Bearer {ADMIN_PASSWORD}",
    ]
    for auth in wrong:
        for method, path, body in [
            ("GET", "/info", None),
            ("GET", "/config", None),
            ("GET", "/sessions", None),
            ("POST", "/disconnect", {"user": "alice"}),
        ]:
            status, answer, headers = admin(admin_node, method, path, body, auth=auth)
            assert status == 401, (auth, path, answer)
            # No challenge: a browser must never remember the credential for the node.
            assert "WWW-Authenticate" not in headers
    assert admin(admin_node, "GET", "/info")[0] == 200


def test_the_api_key_when_allowed(node_factory) -> None:
    node = node_factory(deep_merge(ADMIN_CONFIG, {"admin": {"api_key": True}}))
    assert admin(node, "GET", "/info", auth=f"Bearer {API_KEY}")[0] == 200
    assert admin(node, "GET", "/info", auth=None, headers={"X-API-Key": API_KEY})[0] == 200
    assert admin(node, "GET", "/info", auth="Bearer wrong")[0] == 401
    assert admin(node, "GET", "/info")[0] == 200  # and the password still


async def test_no_cross_site_calls(admin_node) -> None:
    client = await WsStomp.connect(admin_node.ws_url, "alice")
    own = f"http://127.0.0.1:{admin_node.port}"
    for origin in ("http://evil.example", "null", f"http://localhost:{admin_node.port}"):
        headers = {"Origin": origin}
        status, answer, _ = admin(admin_node, "POST", "/disconnect", {"user": "alice"}, headers=headers)
        assert status == 403, answer
        assert admin(admin_node, "GET", "/sessions", headers={"Origin": origin})[0] == 403
    # A form post (no preflight) is refused for its type, before anything is done.
    status, answer, _ = admin(
        admin_node, "POST", "/disconnect", {"user": "alice"}, headers={"Content-Type": "text/plain"}
    )
    assert status == 415, answer
    assert admin(admin_node, "GET", "/sessions", headers={"Origin": own})[1]["total"] == 1
    await client.send_raw("\n")  # still open: nothing above disconnected it
    status, answer, _ = admin(admin_node, "GET", "/users/alice")
    assert answer["total"] == 1


def test_config_shows_no_secret(node_factory, tmp_path) -> None:
    secrets = {
        "alice-passcode-0451",
        "api-key-secret-9872",
        "admin-password-3319",
        "proxy-secret-value-7731",
        "redis-password-5512",
        "jwt-secret-value-6603",
    }
    node = node_factory(
        {
            "auth": {
                "mode": "static",
                "users": {"alice": "alice-passcode-0451"},
                "jwt": {"secret": "jwt-secret-value-6603"},
            },
            "api": {"key": "api-key-secret-9872"},
            "admin": {"enabled": True, "password": "admin-password-3319", "api_key": True},
            "proxy": {"subscribe_url": "http://127.0.0.1:9/subscribe", "secret": "proxy-secret-value-7731"},
            "bus": {"redis": {"url": "redis://:redis-password-5512@127.0.0.1:6379/0"}},
        }
    )
    auth = basic("admin", "admin-password-3319")
    seen = ""
    for path in ("/config", "/info", "/nodes", "/sessions", "/users"):
        status, answer, _ = admin(node, "GET", path, auth=auth)
        assert status == 200, answer
        seen += json.dumps(answer)
    config = admin(node, "GET", "/config", auth=auth)[1]["config"]
    assert config["auth"]["users"] == {"alice": "<redacted>"}  # who is configured shows, not how
    assert config["bus"]["redis"]["url"] == "redis://:<redacted>@127.0.0.1:6379/0"
    assert config["admin"]["api_key"] is True and config["server"]["port"] == node.port
    leaked = [s for s in secrets if s in seen]
    assert not leaked, f"secret values in the admin API's answers: {leaked}"
    # And the CLI shows the same redacted configuration.
    out = run_cli(node, "config", password="admin-password-3319")
    assert out.returncode == 0 and not [s for s in secrets if s in out.stdout], out.stdout


async def test_info_nodes_users_and_sessions(admin_node) -> None:
    tabs = [await WsStomp.connect(admin_node.ws_url, "alice") for _ in range(3)]
    await tabs[0].subscribe("/topic/news", "s1")
    await tabs[0].subscribe("/user/queue/inbox", "s2")
    bob = await WsStomp.connect(admin_node.ws_url, "bob")
    await bob.publish("/topic/news", "hello")
    assert (await tabs[0].recv()).body == b"hello"

    status, info, _ = admin(admin_node, "GET", "/info")
    assert status == 200
    assert info["node"] == admin_node.id and info["version"] == __version__
    assert (info["sessions"], info["subscriptions"], info["users"]) == (4, 2, 2)
    assert info["broker"]["messages_published"] >= 1 and info["uptime_s"] >= 0

    status, nodes, _ = admin(admin_node, "GET", "/nodes")
    assert status == 200 and nodes["missing"] == []
    [one] = nodes["nodes"]
    assert (one["node"], one["sessions"]) == (admin_node.id, 4)
    assert set(one["rates"]) >= {"t", "published", "delivered", "sessions"}

    users = admin(admin_node, "GET", "/users")[1]
    assert users == {"users": ["alice", "bob"], "total": 2, "truncated": False}
    users = admin(admin_node, "GET", "/users?limit=1")[1]
    assert users == {"users": ["alice"], "total": 2, "truncated": True}

    status, alice, _ = admin(admin_node, "GET", "/users/alice")
    assert (alice["user"], alice["total"], alice["truncated"]) == ("alice", 3, False)
    first = next(s for s in alice["sessions"] if s["subscription_count"] == 2)
    assert first["node"] == admin_node.id and first["transport"] == "websocket"
    assert first["remote"] == "127.0.0.1" and first["user"] == "alice" and first["since"] > 1e9
    assert sorted(s["destination"] for s in first["subscriptions"]) == ["/queue/inbox", "/topic/news"]

    # Bounded: at most `limit` sessions, and it says so.
    status, some, _ = admin(admin_node, "GET", "/users/alice?limit=2")
    assert (some["total"], len(some["sessions"]), some["truncated"]) == (3, 2, True)
    assert admin(admin_node, "GET", "/sessions?limit=5000")[0] == 400
    assert admin(admin_node, "GET", "/sessions")[1]["total"] == 4


async def test_disconnect_a_user_then_a_session(admin_node) -> None:
    alice = [await WsStomp.connect(admin_node.ws_url, "alice") for _ in range(2)]
    bob1 = await WsStomp.connect(admin_node.ws_url, "bob")
    [first_bob] = admin(admin_node, "GET", "/users/bob")[1]["sessions"]  # bob1's: the only one yet
    bob2 = await WsStomp.connect(admin_node.ws_url, "bob")

    status, answer, _ = admin(admin_node, "POST", "/disconnect", {"user": "alice"})
    assert (status, answer["closed"], answer["nodes"]) == (200, 2, {admin_node.id: 2})
    for tab in alice:
        error = await tab.recv()
        assert error.command == "ERROR" and error.headers["message"] == "disconnected by an administrator"
        await tab.expect_closed()
    assert admin(admin_node, "GET", "/users/alice")[1]["total"] == 0

    status, answer, _ = admin(admin_node, "POST", "/disconnect", {"session": first_bob["id"]})
    assert answer["closed"] == 1
    assert (await bob1.recv()).headers["message"] == "disconnected by an administrator"
    await bob1.expect_closed()
    await bob2.subscribe("/topic/still-here")  # the other session of bob is untouched
    assert admin(admin_node, "GET", "/users/bob")[1]["total"] == 1
    status, answer, _ = admin(admin_node, "POST", "/disconnect", {"session": first_bob["id"]})
    assert answer["closed"] == 0  # gone already
    for bad in ({}, {"user": "a", "session": "b"}, {"user": ""}, {"user": 5}):
        assert admin(admin_node, "POST", "/disconnect", bad)[0] == 400, bad
    assert "disconnected by an administrator" in admin_node.log()
    assert "admin disconnect of user 'alice' asked from 127.0.0.1: 2 session(s) closed" in admin_node.log()
    # Each closed session's end is counted under the reason admin (docs/metrics.md).
    status, scraped, _ = get(admin_node.http_url + "/metrics")
    assert status == 200 and b'stompgate_sessions_closed_total{reason="admin"} 3.0' in scraped


def test_page_and_chart_library_are_served_locally(admin_node) -> None:
    status, body, headers = get(admin_node.http_url + "/admin/")
    assert status == 200 and b"<title>stompgate admin</title>" in body
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert b"//cdn" not in body and b"https://" not in body  # nothing from elsewhere
    status, body, _ = get(admin_node.http_url + "/admin/vendor/uPlot.iife.min.js")
    assert status == 200 and b"uPlot" in body, "run scripts/bootstrap.sh (npm install of the chart library)"
    assert get(admin_node.http_url + "/admin/static/admin.js")[0] == 200
    assert get(admin_node.http_url + "/admin/vendor/package.json")[0] == 404
    assert get(admin_node.http_url + "/admin/static/../api.py")[0] == 404


def run_cli(node, *args: str, password: str | None = ADMIN_PASSWORD) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if password is not None:
        env["STOMPGATE_ADMIN__PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "stompgate", "admin", "--url", f"{node.http_url}/admin", *args],
        capture_output=True, text=True, timeout=30, env=env, cwd=ROOT,
    )  # fmt: skip


async def test_cli(admin_node) -> None:
    tab = await WsStomp.connect(admin_node.ws_url, "alice")
    await tab.subscribe("/topic/news")
    out = run_cli(admin_node, "nodes")
    assert out.returncode == 0, out.stderr
    head = ["NODE", "VERSION", "UPTIME_S", "SESSIONS", "SUBSCRIPTIONS", "USERS"]
    assert out.stdout.splitlines()[0].split() == head
    assert admin_node.id in out.stdout
    out = run_cli(admin_node, "--json", "info")
    assert json.loads(out.stdout)["sessions"] == 1
    out = run_cli(admin_node, "user", "alice")
    assert "alice" in out.stdout and "/topic/news" in out.stdout and "1 session(s)" in out.stdout
    out = run_cli(admin_node, "sessions", "--user", "alice", "--json")
    [session] = json.loads(out.stdout)["sessions"]
    assert run_cli(admin_node, "users").stdout.split() == ["alice"]
    out = run_cli(admin_node, "disconnect", "--session", session["id"])
    assert out.returncode == 0 and out.stdout.startswith("closed 1 session(s)"), out.stdout
    assert (await tab.recv()).headers["message"] == "disconnected by an administrator"
    # Refusals: no credential, a wrong one, no node there.
    out = run_cli(admin_node, "info", password=None)
    assert out.returncode == 1 and "no credential" in out.stderr
    out = run_cli(admin_node, "info", password="wrong-password-123")
    assert out.returncode == 1 and "401" in out.stderr
    assert run_cli(admin_node, "--password", ADMIN_PASSWORD, "--json", "info").returncode == 0


async def test_drain_by_an_administrator(admin_node) -> None:
    """`stompgate admin drain NODE`: the node drains as on SIGTERM (ERROR and 1012 for its
    sessions, /ready 503, new sessions refused) but stays up until it is stopped."""
    tab = await WsStomp.connect(admin_node.ws_url, "alice")
    out = run_cli(admin_node, "drain", "no-such-node")
    assert out.returncode == 1 and "404" in out.stderr and "no live node 'no-such-node'" in out.stderr
    assert get(admin_node.http_url + "/ready")[0] == 200
    out = run_cli(admin_node, "drain", admin_node.id)
    assert out.returncode == 0 and out.stdout.strip() == f"draining: {admin_node.id}", out
    error = await tab.recv(10)
    assert error.command == "ERROR" and error.headers["message"] == "server restarting"
    assert (await tab.expect_closed()).code == 1012
    assert get(admin_node.http_url + "/ready")[0] == 503
    with pytest.raises(websockets.InvalidStatus):
        await WsStomp.connect(admin_node.ws_url, "late")
    assert admin_node.proc.poll() is None  # still up: the admin API answers
    assert run_cli(admin_node, "--json", "info").returncode == 0
    assert "draining on an administrator's request" in admin_node.log()
    assert admin_node.stop() == 0


def test_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stompgate", "--version"], capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert out.returncode == 0 and out.stdout.strip() == f"stompgate {__version__}"
