"""Logs (issue 14, item 4) on real nodes: JSON lines, the access log, and client addresses behind
trusted proxies (server.trusted_proxies), which also decide the per-address connection cap.

Most tests send X-Forwarded-For / Forwarded themselves, from 127.0.0.1 configured as a
trusted proxy, and from 127.0.0.2 (any of 127.0.0.0/8 reaches the loopback interface) that
is not; the last puts a real nginx in front of a node.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from aiohttp import web
from websockets.exceptions import InvalidStatus

from harness.nodes import NodeProcess, free_port
from harness.stompclient import Closed, WsStomp
from stompgate.stomp import Frame

from .test_proxy import SECRET, serving, signed

pytestmark = pytest.mark.usefixtures("close_ws_clients")

FORGED = '{"level":"ERROR","logger":"stompgate","msg":"FORGED"}'  # no dot: a SockJS session id
TEXT_FORGED = "2026-01-01 00:00:00,000 WARNING stompgate: FORGED"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def records(node: NodeProcess) -> list[dict[str, Any]]:
    """Every line the node wrote, each of which must be one JSON object with the common fields."""
    out = []
    for line in node.log_path.read_bytes().decode("utf-8").split("\n")[:-1]:
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert ISO_UTC.match(record["ts"]) and record["level"] and record["logger"], line
        assert isinstance(record["msg"], str), line
        out.append(record)
    return out


async def wait_for_log(node: NodeProcess, *texts: str, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while not all(text in (log := node.log()) for text in texts):
        assert time.monotonic() < deadline, f"{texts} not in the log:\n{log[-3000:]}"
        await asyncio.sleep(0.05)
    return log


async def raw_http(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    """Send ``request`` as it is (Connection: close) and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def access(recs: list[dict[str, Any]], **want: Any) -> list[dict[str, Any]]:
    lines = [r for r in recs if r.get("event") == "http.access"]
    return [r for r in lines if all(r.get(k) == v for k, v in want.items())]


async def refused_login(url: str, login: str, **kw: Any) -> str:
    client = await WsStomp.open(url, **kw)
    await client.send(Frame("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0", "login": login}))
    frame = await client.recv()
    assert frame.command == "ERROR", frame
    await client.expect_closed()
    return frame.headers["message"]


# ------------------------------------------------------------------ JSON lines


async def test_json_lines_stay_one_object_each_whatever_users_send(node_factory, tmp_path: Path) -> None:
    ext = tmp_path / "raising_ext.py"
    ext.write_text(
        "from aiohttp import web\n"
        "def setup(node):\n"
        "    async def boom(request):\n"
        "        raise ValueError('bad q: ' + request.query['q'])\n"
        "    node.app.router.add_get('/boom', boom)\n"
    )
    node = node_factory(
        {
            "node_id": "logs-n1",
            "server": {
                "trusted_proxies": ["127.0.0.1"],
                "sockjs": [{"path": "/sj"}],
                "extensions": [str(ext)],
            },
            "authorization": {"rules": [{"send": "/topic/secret/**", "allow": "nobody"}]},
            "logging": {"format": "json"},
        }
    )
    # A login a terminal or a line reader would act on, behind the proxy.
    hostile_login = 'eve\x1b[2J\u2028\x85"}\x1c' + FORGED
    message = await refused_login(
        node.ws_url, hostile_login, additional_headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}
    )
    assert "control character" in message
    # A destination with quotes and a forged record, denied by a rule: logged with the user.
    alice = await WsStomp.open(
        node.ws_url, additional_headers={"X-Forwarded-For": "203.0.113.8"}, user_agent_header='agent "q"'
    )
    await alice.send(Frame("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0", "login": "alice"}))
    assert (await alice.recv()).command == "CONNECTED"
    destination = '/topic/secret/"}\\' + FORGED
    await alice.send(Frame("SEND", {"destination": destination, "receipt": "r"}, b"x"))
    assert (await alice.recv()).command == "ERROR"
    # A SockJS session id is a URL segment: its %0D reaches a log line as a carriage return.
    session = "s%0D" + urllib.parse.quote(FORGED) + "%E2%80%A8"
    async with websockets.connect(f"ws://127.0.0.1:{node.port}/sj/000/{session}/websocket") as ws:
        assert await asyncio.wait_for(ws.recv(), 5) == "o"
        # logged as the handshake completes, not when the connection ends
        await wait_for_log(node, '"status":101', "/sj/000/s%0D")
        await ws.send("[broken")
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    # A query with a token, a User-Agent with quotes and bytes that are not UTF-8.
    answer = await raw_http(
        node.port,
        b"GET /health?access_token=SECRET-TOKEN&x=1 HTTP/1.1\r\nHost: a\r\n"
        b'User-Agent: ua "q" \xff\xfe\x85\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n',
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer
    # An exception whose message the user wrote.
    query = urllib.parse.quote("x\n" + FORGED + "\u2028")
    request = f"GET /boom?q={query} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    answer = await raw_http(node.port, request.encode())
    assert answer.startswith(b"HTTP/1.1 500"), answer
    await wait_for_log(node, "broken JSON", "login failed", "ValueError", "/topic/secret/", '"path":"/boom"')

    raw = node.log_path.read_bytes()
    for char in ("\x1b", "\r", "\u2028", "\x85", "\x1c"):
        assert char.encode() not in raw, char  # JSON escapes all of them
    recs = records(node)
    assert all(r["node"] == "logs-n1" for r in recs), {r["node"] for r in recs}
    assert not any(r["msg"] == "FORGED" for r in recs)
    (failed,) = [r for r in recs if "login failed" in r["msg"]]
    assert "from 203.0.113.7 as 'eve\\x1b[2J\\u2028\\x85\"}\\x1c{" in failed["msg"]  # shown escaped by auth
    denied = [r for r in recs if "access denied" in r["msg"]]
    assert len(denied) == 2 and all(destination in r["msg"] and "alice" in r["msg"] for r in denied)
    (broken,) = [r for r in recs if "broken JSON" in r["msg"]]
    assert "s\r" + FORGED + "\u2028" in broken["msg"]
    (boom,) = [r for r in recs if "exception" in r]
    assert boom["level"] == "ERROR" and "Traceback" in boom["exception"]
    assert "ValueError: bad q: x\n" + FORGED + "\u2028" in boom["exception"]

    # The access log: one line per request, the client's address, no query string.
    assert b"SECRET-TOKEN" not in raw
    (health,) = access(recs, path="/health", remote="203.0.113.9")
    assert health["logger"] == "stompgate.access" and health["level"] == "INFO"
    assert health["method"] == "GET" and health["status"] == 200 and health["bytes"] > 0
    assert isinstance(health["duration_ms"], float)
    assert health["agent"] == 'ua "q" \\udcff\\udcfe\\udc85'  # undecodable bytes, shown escaped
    assert health["msg"].startswith('203.0.113.9 "GET /health HTTP/1.1" 200 ')
    handshakes = access(recs, path="/ws", status=101)
    assert {r["remote"] for r in handshakes} == {"203.0.113.7", "203.0.113.8"}, handshakes
    assert [r["agent"] for r in handshakes if r["remote"] == "203.0.113.8"] == ['agent "q"']
    (sockjs,) = access(recs, status=101, remote="127.0.0.1")
    assert sockjs["path"] == "/sj/000/" + session + "/websocket"  # as sent, percent-encoded
    assert access(recs, path="/boom", status=500)


# ------------------------------------------------------------------ text lines


async def test_text_access_lines_cannot_be_forged_and_the_access_log_can_be_off(node_factory) -> None:
    node = node_factory({"logging": {"access_log": True}})
    agent = b'x" 200 0 0.0ms "y\xc2\x85\xe2\x80\xa8' + TEXT_FORGED.encode()  # NEL, LINE SEPARATOR
    answer = await raw_http(
        node.port,
        b"GET /nothing%0A" + urllib.parse.quote(TEXT_FORGED).encode() + b"?token=SECRET HTTP/1.1\r\n"
        b"Host: a\r\nUser-Agent: " + agent + b"\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 404"), answer
    log = await wait_for_log(node, "/nothing")
    assert not any(line.startswith(TEXT_FORGED) for line in log.splitlines()), log
    assert "\x85" not in log and "\u2028" not in log and "SECRET" not in log
    (line,) = [line for line in log.splitlines() if "/nothing" in line]
    # 127.0.0.1 is no trusted proxy here: its X-Forwarded-For is not read.
    assert '127.0.0.1 "GET /nothing%0A' in line and ' HTTP/1.1" 404 ' in line
    assert line.endswith('"x\\" 200 0 0.0ms \\"y\\x85\\u2028' + TEXT_FORGED + '"'), line

    quiet = node_factory({"logging": {"access_log": False}})
    answer = await raw_http(quiet.port, b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    client = await WsStomp.connect(quiet.ws_url, "alice")
    await client.close()
    await asyncio.sleep(0.3)
    assert "stompgate.access" not in quiet.log()


# ------------------------------------------------------------------ trusted proxies


def limited(per_address: int, **server: Any) -> dict[str, Any]:
    return {"server": {"connections": {"exempt": [], "per_address": per_address}, **server}}


async def test_an_untrusted_peer_cannot_pick_its_address_to_escape_the_cap(node_factory) -> None:
    """127.0.0.2 is no trusted proxy: whatever X-Forwarded-For it sends, it is counted as itself."""
    node = node_factory(limited(2, trusted_proxies=["127.0.0.1"]))
    held = []
    for i in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port, local_addr=("127.0.0.2", 0))
        writer.write(f"GET /health HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.{i}\r\n\r\n".encode())
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
        held.append(writer)
    spoofing = (
        b"GET /health HTTP/1.1\r\nHost: a\r\n"
        b"X-Forwarded-For: 203.0.113.50\r\nForwarded: for=1.1.1.1\r\n\r\n"
    )
    answer = await raw_http(node.port, spoofing, source="127.0.0.2")
    assert answer.startswith(b"HTTP/1.1 503"), answer
    assert b"too many connections from 127.0.0.2 (server.connections.per_address = 2)" in answer
    for writer in held:
        writer.close()
    # Its sessions carry its own address too (a failed login names it), 127.0.0.1's the client's.
    await asyncio.sleep(0.2)
    spoofed = {"X-Forwarded-For": "7.7.7.7"}
    await refused_login(node.ws_url, "bad\x1b", additional_headers=spoofed, local_addr=("127.0.0.2", 0))
    await refused_login(node.ws_url, "bad\x1b", additional_headers={"X-Forwarded-For": "6.6.6.6"})
    log = await wait_for_log(node, "login failed from 6.6.6.6", "login failed from 127.0.0.2")
    assert "7.7.7.7" not in log


async def test_behind_a_trusted_proxy_each_client_is_counted_by_its_own_address(node_factory) -> None:
    node = node_factory(limited(2, trusted_proxies=["127.0.0.1"]))

    async def ws(forwarded: str) -> WsStomp:
        return await WsStomp.open(node.ws_url, additional_headers={"X-Forwarded-For": forwarded})

    async def refused(forwarded: str) -> bytes:
        with pytest.raises(InvalidStatus) as info:
            await ws(forwarded)
        assert info.value.response.status_code == 503
        return info.value.response.body or b""

    first = [await ws("6.6.6.6, 203.0.113.5"), await ws("203.0.113.5")]
    # What the client writes left of the proxy's hop changes nothing.
    body = await refused("1.1.1.1, 203.0.113.5")
    assert b"too many connections from 203.0.113.5 (server.connections.per_address = 2)" in body
    others = [await ws("203.0.113.6"), await ws("203.0.113.6")]
    # IPv6 clients count per /64, whatever their spelling.
    v6 = [await ws("[2001:db8::1]:443"), await ws("2001:db8::2")]
    assert b"too many connections from 2001:db8::/64" in await refused("2001:db8::3")
    # The proxy's own connections are not capped per address: here are seven from 127.0.0.1.
    assert len(first + others + v6) == 6
    plain = await WsStomp.connect(node.ws_url, "plain")
    # A slot comes back when its WebSocket ends.
    await first[0].ws.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            again = await ws("203.0.113.5")
            break
        except InvalidStatus:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    # The session's address is the client's: a failed login names it.
    await again.send(Frame("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0", "login": "bad\x1b"}))
    assert (await again.recv()).command == "ERROR"
    log = await wait_for_log(node, "login failed from 203.0.113.5")
    assert '203.0.113.5 "GET /ws HTTP/1.1" 101 ' in log and '2001:db8::1 "GET /ws HTTP/1.1" 101 ' in log
    for client in [first[1], *others, *v6, plain]:
        await client.ws.close()
    with pytest.raises(Closed):
        await again.recv()


async def test_forwarded_header_when_configured(node_factory) -> None:
    node = node_factory(
        {
            "server": {"trusted_proxies": ["127.0.0.0/8"], "client_address_header": "forwarded"},
            "logging": {"format": "json"},
        }
    )
    headers = {"Forwarded": 'for="[2001:db8::7]:1234";proto=http', "X-Forwarded-For": "9.9.9.9"}
    client = await WsStomp.open(node.ws_url, additional_headers=headers)
    await client.ws.close()
    # Only the configured header is read: X-Forwarded-For here comes from the client.
    answer = await raw_http(
        node.port, b"GET /health HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 9.9.9.9\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200")
    await wait_for_log(node, '"path":"/health","status":200')
    recs = records(node)
    assert access(recs, path="/ws", remote="2001:db8::7")
    assert [r["remote"] for r in access(recs, path="/health")][-1] == "127.0.0.1"
    assert not access(recs, remote="9.9.9.9")


def test_trusted_proxies_are_checked(tmp_path: Path) -> None:
    from stompgate.config import ConfigError, load_config

    def problems(text: str) -> str:
        path = tmp_path / "c.yaml"
        path.write_text("auth: {mode: dev}\napi: {enabled: false}\n" + text)
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        return str(info.value)

    text = problems("logging: {format: xml, access_log: maybe}\nserver: {client_address_header: X-Real-IP}\n")
    assert "server.client_address_header: must be one of x-forwarded-for, forwarded" in text
    assert "logging.format: must be one of text, json, got 'xml'" in text
    assert "logging.access_log: expected true or false, got 'maybe'" in text
    text = problems("server: {trusted_proxies: [10.0.0.0/8, nginx]}\n")
    assert "server.trusted_proxies[1]: expected an IP address or network (10.0.0.0/8), got 'nginx'" in text


async def test_the_connect_proxy_is_told_the_clients_address(node_factory) -> None:
    """``remote`` in what the connect backend is sent is the session's address: the forwarded client."""
    seen: list[str] = []

    async def connect(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        assert signed(request, body)
        seen.append(json.loads(body)["remote"])
        return web.json_response({"user": "alice"})

    async with serving("/connect", connect) as base:
        node = node_factory(
            {
                "auth": {"mode": None},
                "server": {"trusted_proxies": ["127.0.0.1"]},
                "proxy": {"connect_url": f"{base}/connect", "secret": SECRET, "timeout_s": 1},
            }
        )
        forwarded = {"X-Forwarded-For": "6.6.6.6, 203.0.113.44"}
        for source in ("127.0.0.1", "127.0.0.2"):  # trusted, then not
            client = await WsStomp.open(node.ws_url, additional_headers=forwarded, local_addr=(source, 0))
            await client.send(Frame("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0"}))
            assert (await client.recv()).command == "CONNECTED"
            await client.ws.close()
    assert seen == ["203.0.113.44", "127.0.0.2"]


# ------------------------------------------------------------------ behind a real nginx

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_CONF = """
daemon off;
{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


@contextmanager
def nginx_in_front(tmp_path: Path, upstream: int) -> Iterator[int]:
    """nginx on a free loopback port proxying to ``upstream`` (its own X-Forwarded-For appended)."""
    directory = tmp_path / "nginx"
    directory.mkdir()
    port = free_port()
    user = "user root root;" if os.getuid() == 0 else ""  # its workers must enter the tmp directory
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, d=directory, port=port, upstream=upstream))
    log = open(directory / "out.log", "wb")
    proc = subprocess.Popen(
        [NGINX, "-e", str(directory / "error.log"), "-c", str(conf), "-p", str(directory)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, (directory / "out.log").read_text()
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is needed: scripts/bootstrap.sh test")
async def test_behind_nginx_the_cap_and_the_logs_see_each_client(node_factory, tmp_path: Path) -> None:
    """Clients from 127.0.0.2 and 127.0.0.3 reach the node through nginx (from 127.0.0.1, trusted)."""
    node = node_factory({**limited(2, trusted_proxies=["127.0.0.1"]), "logging": {"format": "json"}})
    with nginx_in_front(tmp_path, node.port) as port:
        url = f"ws://127.0.0.1:{port}/ws"
        spoofed = {"X-Forwarded-For": "203.0.113.1"}  # appended to by nginx: read from the right
        held = [
            await WsStomp.open(url, additional_headers=spoofed, local_addr=("127.0.0.2", 0)) for _ in range(2)
        ]
        with pytest.raises(InvalidStatus) as info:
            await WsStomp.open(url, additional_headers=spoofed, local_addr=("127.0.0.2", 0))
        assert info.value.response.status_code == 503
        assert b"too many connections from 127.0.0.2" in (info.value.response.body or b"")
        other = await WsStomp.open(url, local_addr=("127.0.0.3", 0))
        await other.send(Frame("CONNECT", {"accept-version": "1.2", "heart-beat": "0,0", "login": "bob"}))
        assert (await other.recv()).command == "CONNECTED"
        for client in [*held, other]:
            await client.ws.close()
        await wait_for_log(node, '"remote":"127.0.0.3"')
    handshakes = access(records(node), path="/ws")
    assert sorted(r["remote"] for r in handshakes) == ["127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3"]
    assert sorted(r["status"] for r in handshakes) == [101, 101, 101, 503]
