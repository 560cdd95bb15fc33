"""examples/nginx in a real nginx: TLS in front of two nodes, and a drain that clients do not see.

The example's files as they are, with only ports and certificate paths
replaced: WSS and SockJS through it, /ready for the load balancer, STOMP over
TLS on the stream listener (when nginx's stream module is installed), and one
node draining: its sessions end with 1012 while every new connection, WebSocket
or SockJS, lands on the other node (nginx retries the drained node's 503).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.clusterkit import api
from harness.nodes import ROOT, NodeProcess, free_port
from harness.stompclient import WsStomp
from stompgate.stomp import Frame

from .test_drain import closed_by_drain

pytestmark = pytest.mark.usefixtures("close_ws_clients")

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
EXAMPLE = ROOT / "examples" / "nginx"
Factory = Callable[..., NodeProcess]


def self_signed(directory: Path) -> Path:
    """A certificate for 127.0.0.1 (fullchain.pem, privkey.pem in ``directory``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    loopback = x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([loopback]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return directory / "fullchain.pem"


def localized(text: str, replacements: dict[str, str]) -> str:
    """The example with its ports and paths replaced (each must be found), IPv6 listens left out."""
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in the example"
        text = text.replace(old, new)
    return "\n".join(line for line in text.splitlines() if "listen [::]" not in line)


@pytest.fixture
def proxied(tmp_path: Path, node_factory: Factory) -> Iterator[dict[str, object]]:
    """Two nodes behind nginx configured by examples/nginx."""
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx is not installed")
    config = {
        "server": {"websocket_paths": ["/ws"], "sockjs": [{"path": "/chat-websocket"}], "drain_s": 30}
    }
    nodes = [node_factory(config, name=f"node{i}") for i in (1, 2)]
    run = tmp_path / "nginx"
    (run / "tmp").mkdir(parents=True)
    cert = self_signed(run)
    http_port, https_port, tls_port = free_port(), free_port(), free_port()
    site = localized(
        (EXAMPLE / "stompgate.conf").read_text(),
        {
            "127.0.0.1:8080": f"127.0.0.1:{nodes[0].port}",
            "127.0.0.1:8081": f"127.0.0.1:{nodes[1].port}",
            "listen 80;": f"listen 127.0.0.1:{http_port};",
            "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
            "/etc/ssl/stompgate": str(run),
            "/var/www/acme": str(run),
        },
    )
    (run / "site.conf").write_text(site)
    stream = ""
    if STREAM_MODULE.exists():
        (run / "stream.conf").write_text(
            localized(
                (EXAMPLE / "stomp-tls-stream.conf").read_text(),
                {
                    "127.0.0.1:61613": f"127.0.0.1:{nodes[0].tcp_port}",
                    "127.0.0.1:61623": f"127.0.0.1:{nodes[1].tcp_port}",
                    "listen 61614 ssl;": f"listen 127.0.0.1:{tls_port} ssl;",
                    "/etc/ssl/stompgate": str(run),
                },
            )
        )
        stream = f"load_module {STREAM_MODULE};\ninclude {run}/stream.conf;\n"
    temp = " ".join(f"{kind}_temp_path {run}/tmp/{kind};" for kind in ("proxy", "fastcgi", "uwsgi", "scgi"))
    main = (
        ("user root root;\n" if os.getuid() == 0 else "")
        + f"daemon off;\npid {run}/nginx.pid;\nerror_log {run}/error.log warn;\n"
        + stream
        + "events { worker_connections 256; }\n"
        + f"http {{ access_log {run}/access.log; client_body_temp_path {run}/tmp/body; {temp}\n"
        + f"include {run}/site.conf; }}\n"
    )
    (run / "nginx.conf").write_text(main)
    proc = subprocess.Popen(
        [NGINX, "-e", str(run / "error.log"), "-c", str(run / "nginx.conf"), "-p", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while socket.socket().connect_ex(("127.0.0.1", https_port)) != 0:
        assert proc.poll() is None, (run / "error.log").read_text()
        assert time.monotonic() < deadline, "nginx did not listen"
        time.sleep(0.05)
    context = ssl.create_default_context(cafile=str(cert))
    yield {
        "nodes": nodes,
        "https": f"https://127.0.0.1:{https_port}",
        "wss": f"wss://127.0.0.1:{https_port}/ws",
        "http": f"http://127.0.0.1:{http_port}",
        "tls_port": tls_port if stream else None,
        "ssl": context,
    }
    proc.send_signal(signal.SIGQUIT)  # graceful: open connections finish first
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def connect(url: str, user: str, context: ssl.SSLContext) -> WsStomp:
    """A STOMP session over WSS (WsStomp.connect takes no TLS context)."""
    client = await WsStomp.open(url, ssl=context)
    await client.send(Frame("CONNECT", {"accept-version": "1.2", "login": user, "heart-beat": "0,0"}))
    connected = await client.recv()
    assert connected.command == "CONNECTED", connected
    return client


async def sockjs_info(http: aiohttp.ClientSession, base: str, context: ssl.SSLContext) -> int:
    async with http.get(base + "/chat-websocket/info", ssl=context) as resp:
        return resp.status


async def stomp_over_tls(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.write(b"CONNECT\naccept-version:1.2\nlogin:tcp\nheart-beat:0,0\n\n\0")
    head = await asyncio.wait_for(reader.readuntil(b"\0"), 5)
    writer.close()
    return head


async def test_the_nginx_example_serves_tls_and_hides_a_drain(proxied: dict[str, object]) -> None:
    nodes: list[NodeProcess] = proxied["nodes"]  # type: ignore[assignment]
    context: ssl.SSLContext = proxied["ssl"]  # type: ignore[assignment]
    https, wss = str(proxied["https"]), str(proxied["wss"])
    async with aiohttp.ClientSession() as http:
        async with http.get(str(proxied["http"]) + "/ws", allow_redirects=False) as resp:
            assert resp.status == 301 and resp.headers["Location"].startswith("https://")
        async with http.get(https + "/ready", ssl=context) as resp:
            assert resp.status == 200
        assert await sockjs_info(http, https, context) == 200
        if proxied["tls_port"] is not None:
            assert (await stomp_over_tls(int(str(proxied["tls_port"])), context)).startswith(b"CONNECTED")

        # Sessions over WSS, spread over both nodes by nginx.
        clients = [await connect(wss, f"user{i}", context) for i in range(12)]
        by_node = {n.port: n.health()["sessions"] for n in nodes}
        assert all(by_node.values()), f"nginx did not spread the sessions: {by_node}"

        # Node 1 drains (30 s here): its sessions are closed over that time, and meanwhile
        # every new connection through nginx reaches node 2, as does /ready.
        first = nodes[0]
        on_first = [c for i, c in enumerate(clients) if api(first, "GET", f"/api/users/user{i}")[1]["online"]]
        assert len(on_first) == first.health()["sessions"]
        first.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while first.health().get("draining") is not True:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        before = nodes[1].health()["sessions"]
        late = [await connect(wss, f"late{i}", context) for i in range(6)]
        assert nodes[1].health()["sessions"] == before + len(late)
        assert first.health()["draining"] is True  # still draining: nginx routed around it
        for _ in range(6):
            assert await sockjs_info(http, https, context) == 200
            async with http.get(https + "/ready", ssl=context) as resp:
                assert resp.status == 200
        if proxied["tls_port"] is not None:
            assert (await stomp_over_tls(int(str(proxied["tls_port"])), context)).startswith(b"CONNECTED")

        # A second signal ends the drain: node 1's sessions get 1012 through nginx.
        first.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*(closed_by_drain(c) for c in on_first))
        assert await asyncio.to_thread(first.proc.wait, 10) == 0
