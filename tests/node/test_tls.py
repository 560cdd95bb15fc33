"""server.tls: HTTPS/WSS and STOMP over TLS on a real node, with a CA made by ``cryptography``.

Clients: stomp.py over TLS to the TCP listener, ``websockets`` over WSS, the
HTTP API over HTTPS, @stomp/stompjs under Node over WSS (tests/js), and raw
sockets for what a library would hide (no client certificate, a handshake
that never ends). The certificates come from harness/certs.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stomp
import yaml
from cryptography import x509

from harness.certs import Issued, Pki
from harness.clusterkit import api
from harness.nodes import STOMPGATE, NodeProcess, base_config, deep_merge, free_port, spawn_node
from harness.stompclient import WsStomp
from stompgate.config import ConfigError, load_config

from .. import hostile
from ..hostile import assert_unharmed
from ..jsrun import run_scenario
from .test_hostile_network import (
    SAMPLE_TIMEOUT_S,
    SlowAttack,
    idle_stats,
    open_file_limit,
    probed_mid_attack,
)
from .test_stomppy import Recorder

pytestmark = pytest.mark.usefixtures("close_ws_clients")

TIMEOUT = 5.0


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_node(tmp_path: Path, pki: Pki) -> Iterator[Callable[..., NodeProcess]]:
    """Start nodes serving ``pki``'s server certificate (plus ``overrides``); each must exit 0."""
    started: list[NodeProcess] = []

    def make(overrides: dict[str, Any] | None = None, client_cert: bool = False) -> NodeProcess:
        tls = {"server": {"tls": pki.server_config()}}
        config = deep_merge(tls, overrides or {})
        node = spawn_node(tmp_path, config, f"node{len(started) + 1}")
        node.ssl_context = pki.client_context(with_certificate=client_cert)
        started.append(node)
        node.wait_healthy()
        return node

    yield make
    codes = [(n, n.stop()) for n in started]
    for n, code in codes:
        assert code == 0, f"node exited with {code}:\n{n.log()}"


# ------------------------------------------------------------------ helpers


def stomp_tls(node: NodeProcess, pki: Pki, login: str, client: Issued | None = None) -> tuple[Any, Recorder]:
    """A connected stomp.py 1.2 connection over TLS to the node's TCP listener."""
    conn = stomp.Connection12([("127.0.0.1", node.tcp_port)], reconnect_attempts_max=1, heartbeats=(0, 0))
    extra = {"cert_file": str(client.cert), "key_file": str(client.key)} if client else {}
    conn.set_ssl([("127.0.0.1", node.tcp_port)], ca_certs=str(pki.ca), **extra)
    recorder = Recorder()
    conn.set_listener("r", recorder)
    conn.connect(login, "x", wait=True)
    return conn, recorder


def peer_serial(port: int, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new client of ``port`` is shown."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def raw_stomp_connect(port: int, context: ssl.SSLContext) -> bytes:
    """CONNECT over TLS with ``context``: what comes back (b"" or an exception's name if refused)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\nlogin:raw\n\n\x00")
                return tls.recv(4096)
    except (ssl.SSLError, ConnectionError) as exc:
        return type(exc).__name__.encode()


def wait_log(node: NodeProcess, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + TIMEOUT
    while node.log().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged {count} times:\n{node.log()[-3000:]}"
        time.sleep(0.05)


# --------------------------------------------------------------- clients


async def test_stomppy_websocket_sockjs_and_http_api_over_tls(tls_node, pki: Pki) -> None:
    """A stomp.py subscriber on STOMP over TLS gets what a WSS client and the HTTPS API send it."""
    node = tls_node({"server": {"sockjs": [{"path": "/sjs"}]}})
    assert node.http_url.startswith("https://") and node.health()["status"] == "ok"
    # SockJS's HTTP transports are served over HTTPS too: a session opens on xhr polling.
    poll = urllib.request.Request(node.http_url + "/sjs/000/s1/xhr", method="POST")
    opened = await asyncio.to_thread(urllib.request.urlopen, poll, context=node.ssl_context)
    with opened:
        assert opened.read() == b"o\n"
    conn, bob = await asyncio.to_thread(stomp_tls, node, pki, "bob")
    try:
        assert bob.connected_frame is not None
        conn.subscribe("/user/queue/in", id="1", ack="auto", receipt="sub")
        await asyncio.to_thread(bob.receipt, "sub")
        ws = await WsStomp.open(node.ws_url, ssl=node.ssl_context)
        await ws.send_raw("CONNECT\naccept-version:1.2\nlogin:alice\n\n\x00")
        assert (await ws.recv()).command == "CONNECTED"
        await ws.publish("/user/bob/queue/in", "over wss")
        assert (await asyncio.to_thread(bob.next_message)).body == "over wss"
        status, answer = await asyncio.to_thread(
            api,
            node,
            "POST",
            "/api/send-to-user",
            {"user": "bob", "destination": "/queue/in", "payload": "https"},
        )
        assert status == 200, answer
        assert (await asyncio.to_thread(bob.next_message)).body == "https"
        await ws.close()
    finally:
        conn.disconnect()
    # The node's certificate is checked: a client that does not trust its CA is refused.
    assert raw_stomp_connect(node.tcp_port, ssl.create_default_context()) == b"SSLCertVerificationError"
    # And nothing plain gets through: plain STOMP gets no CONNECTED, plain HTTP no page.
    assert b"CONNECTED" not in raw_request(
        node.tcp_port, None, b"CONNECT\naccept-version:1.2\nlogin:p\n\n\x00"
    )
    assert b"HTTP/1.1" not in raw_request(node.port, None, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")


@pytest.mark.js
@pytest.mark.parametrize("client", ["modern", "legacy-over"])
def test_stompjs_over_wss(tls_node, pki: Pki, client: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """@stomp/stompjs (and stompjs 2.3.3 over `ws`) under Node, trusting the CA by NODE_EXTRA_CA_CERTS."""
    node = tls_node()
    args = ["handshake", node.ws_url, json.dumps({"client": client})]
    needs = ("@stomp/stompjs", "stompjs")
    # Without the CA the client refuses the node (lib.js reports it as a close before CONNECTED).
    monkeypatch.delenv("NODE_EXTRA_CA_CERTS", raising=False)
    with pytest.raises(pytest.fail.Exception, match="before CONNECTED|certificate"):
        run_scenario("scenarios.js", args, timeout=40, needs=needs)
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", str(pki.ca))
    report = run_scenario("scenarios.js", args, timeout=40, server_log=node.log, needs=needs)
    assert report["roundTrip"] == ["ping"], report
    assert report["connected"]["version"] == ("1.2" if client == "modern" else "1.1")


# -------------------------------------------------------- client certificates


def test_client_certificate_required(tls_node, pki: Pki, tmp_path: Path) -> None:
    """With client_ca, STOMP over TLS and HTTPS admit only clients with a certificate from that CA."""
    node = tls_node({"server": {"tls": {"client_ca": str(pki.ca)}}}, client_cert=True)
    assert node.health()["status"] == "ok"  # the harness presents pki's client certificate
    with_cert = pki.client_context(with_certificate=True)
    assert raw_stomp_connect(node.tcp_port, with_cert).startswith(b"CONNECTED\n")
    stranger = Pki(tmp_path / "other", "another CA").client_pair
    foreign = pki.client_context()
    foreign.load_cert_chain(stranger.cert, stranger.key)
    for context in (pki.client_context(), foreign):  # no certificate; one of another CA
        assert not raw_stomp_connect(node.tcp_port, context).startswith(b"CONNECTED"), "admitted"
        with pytest.raises(OSError):  # the handshake fails, or the alert arrives at the first read
            api(dataclasses.replace(node, ssl_context=context), "GET", "/health")
    conn, alice = stomp_tls(node, pki, "alice", pki.client_pair)
    assert alice.connected_frame is not None
    conn.disconnect()


def test_client_certificate_optional(tls_node, pki: Pki) -> None:
    node = tls_node({"server": {"tls": {"client_ca": str(pki.ca), "client_auth": "optional"}}})
    assert raw_stomp_connect(node.tcp_port, pki.client_context()).startswith(b"CONNECTED\n")
    assert raw_stomp_connect(node.tcp_port, pki.client_context(True)).startswith(b"CONNECTED\n")


# ------------------------------------------------------------- configuration


def write_config(tmp_path: Path, tls: dict[str, Any]) -> Path:
    config = base_config(free_port(), free_port())
    config["server"]["tls"] = tls
    path = tmp_path / "tls.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def problems_of(tmp_path: Path, tls: dict[str, Any]) -> list[str]:
    try:
        load_config(write_config(tmp_path, tls), env={})
    except ConfigError as exc:
        return exc.problems
    return []


def test_bad_certificate_files_are_configuration_errors(tmp_path: Path, pki: Pki) -> None:
    cert, key = str(pki.server_pair.cert), str(pki.server_pair.key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", key, "-out", str(encrypted), "-aes256", "-passout", "pass:secret"],
        check=True,
    )
    other_key = str(pki.client_pair.key)
    ok = {"certificate": cert, "key": key}
    nope = str(tmp_path / "nope.crt")
    cases = [
        (ok, None),
        ({**ok, "min_version": 1.3}, None),
        ({**ok, "certificate": nope}, f"server.tls.certificate: no such file: {nope}"),
        ({"certificate": cert}, "server.tls.key: required with server.tls.certificate"),
        ({**ok, "certificate": str(garbage)}, f"server.tls.certificate: {garbage} holds no PEM certificate"),
        (
            {**ok, "key": str(garbage)},
            f"server.tls.key: cannot use {garbage} with {cert}: not a PEM private key",
        ),
        ({**ok, "key": other_key}, f"server.tls.key: cannot use {other_key} with {cert}: it does not match"),
        ({**ok, "key": str(encrypted)}, f"server.tls.key: {encrypted} is encrypted"),
        ({**ok, "client_ca": str(garbage)}, f"server.tls.client_ca: {garbage} holds no PEM certificate"),
        ({**ok, "client_auth": "required"}, "server.tls.client_auth: required needs server.tls.client_ca"),
        ({**ok, "client_ca": str(pki.ca), "client_auth": "none"}, "server.tls.client_ca: set, but"),
        ({"key": key}, "server.tls.key: needs server.tls.certificate"),
        ({**ok, "min_version": 1.1}, "server.tls.min_version: must be 1.2 or 1.3, got '1.1'"),
        ({**ok, "handshake_timeout_s": 0}, "server.tls.handshake_timeout_s: must be > 0"),
    ]
    for tls, expected in cases:
        found = problems_of(tmp_path, tls)
        if expected is None:
            assert found == [], (tls, found)
        else:
            assert len(found) == 1 and found[0].startswith(expected), (tls, found)


def test_check_config_names_the_key_and_the_file(tmp_path: Path, pki: Pki) -> None:
    """check-config loads the files into a context: a key of another certificate exits 2, naming both."""
    (tmp_path / "certs").mkdir()
    shutil.copy(pki.server_pair.cert, tmp_path / "certs" / "node.crt")
    shutil.copy(pki.client_pair.key, tmp_path / "certs" / "node.key")
    path = write_config(tmp_path, {"certificate": "certs/node.crt", "key": "certs/node.key"})  # relative
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOMPGATE_")}
    run = subprocess.run([*STOMPGATE, "check-config", str(path)], capture_output=True, text=True, env=env)
    assert run.returncode == 2, run
    assert (
        f"server.tls.key: cannot use {tmp_path}/certs/node.key with {tmp_path}/certs/node.crt: " in run.stderr
    )
    # An expired certificate is valid configuration, and a warning.
    now = datetime.datetime.now(datetime.UTC)
    old = pki.server("old", valid=(now - datetime.timedelta(days=60), now - datetime.timedelta(days=1)))
    path = write_config(tmp_path, {"certificate": str(old.cert), "key": str(old.key)})
    run = subprocess.run([*STOMPGATE, "check-config", str(path)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run
    assert f"stompgate: warning: server.tls.certificate: {old.cert} expired on " in run.stderr


# ------------------------------------------------------------------- reload


def replace_files(target: Issued, source: Issued) -> None:
    target.cert.write_bytes(source.cert.read_bytes())
    target.key.write_bytes(source.key.read_bytes())


def test_sighup_reloads_the_certificate_for_new_connections(tls_node, pki: Pki) -> None:
    """New connections get the new certificate on both listeners; open ones keep going on the old."""
    node = tls_node()
    first = pki.server_pair.serial
    trust = pki.client_context()
    assert peer_serial(node.port, trust) == peer_serial(node.tcp_port, trust) == first
    conn, carol = stomp_tls(node, pki, "carol")
    try:
        conn.subscribe("/user/queue/in", id="1", ack="auto", receipt="sub")
        carol.receipt("sub")

        renewed = pki.server("renewed")
        replace_files(pki.server_pair, renewed)
        node.proc.send_signal(signal.SIGHUP)
        wait_log(node, "TLS certificate reloaded: CN=localhost")
        assert peer_serial(node.port, trust) == peer_serial(node.tcp_port, trust) == renewed.serial
        # carol's connection was made before: it still works, on the certificate it was shown.
        assert conn.transport.socket.getpeercert(binary_form=True) is not None
        old_der = conn.transport.socket.getpeercert(binary_form=True)
        assert x509.load_der_x509_certificate(old_der).serial_number == first
        conn.send("/user/carol/queue/in", "after the reload")
        assert carol.next_message().body == "after the reload"
        assert node.health()["status"] == "ok"

        # A reload that fails (a half-written key) keeps the certificate of before.
        pki.server_pair.key.write_text("-----BEGIN PRIVATE KEY-----\ntruncated")
        node.proc.send_signal(signal.SIGHUP)
        wait_log(
            node, "TLS reload failed, still serving the previous certificate: server.tls.key: cannot use"
        )
        assert peer_serial(node.port, trust) == peer_serial(node.tcp_port, trust) == renewed.serial
        conn.send("/user/carol/queue/in", "after the failed reload")
        assert carol.next_message().body == "after the failed reload"
    finally:
        conn.disconnect()


def test_sighup_without_tls_is_harmless(node_factory) -> None:
    """SIGHUP's default action ends a process: a node without server.tls logs it and goes on."""
    node = node_factory()
    node.proc.send_signal(signal.SIGHUP)
    wait_log(node, "SIGHUP: nothing to reload (server.tls is not set)")
    assert node.health()["status"] == "ok"


def test_sighup_reaches_every_worker(tmp_path: Path, pki: Pki, bus_config_for) -> None:
    """server.workers: 2 serve TLS each; SIGHUP to the supervisor reloads both."""
    config = deep_merge(
        {"node_id": "tw", "server": {"workers": 2, "tls": pki.server_config()}},
        bus_config_for("standalone", "directed"),
    )
    node = spawn_node(tmp_path, config, "workers")
    node.ssl_context = pki.client_context()
    try:
        node.wait_healthy()
        trust = pki.client_context()

        def seen() -> set[tuple[str, int]]:
            """(worker, serial) over fresh TLS connections (the kernel spreads them over the workers)."""
            out = set()
            for _ in range(40):
                out.add((node.health()["node"], peer_serial(node.port, trust)))
            return out

        deadline = time.monotonic() + 15
        while {w for w, _ in seen()} != {"tw-w0", "tw-w1"}:
            assert time.monotonic() < deadline, "both workers answering over HTTPS"
        renewed = pki.server("renewed")
        replace_files(pki.server_pair, renewed)
        node.proc.send_signal(signal.SIGHUP)
        wait_log(node, "TLS certificate reloaded", count=2)
        assert {serial for _, serial in seen()} == {renewed.serial}
    finally:
        assert node.stop() == 0, node.log()


# -------------------------------------------------------------- hostile network


HANDSHAKE_S = 1.0
HEADER_S = 1.0
NOFILE = 320  # as test_hostile_network: the node's connection cap is derived from it


async def test_unfinished_handshakes_are_closed_on_time(tls_node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients that open TCP and never finish TLS are closed handshake_timeout_s after they opened.

    The node may open 320 files; the attack opens 130 sockets a second to both
    TLS listeners. With the event loop's default handshake timeout (60 s) they
    pile up past the open-file limit within 3 s and the innocent user cannot
    connect; closed after 1 s, about 130 are open at any time.
    """
    monkeypatch.setattr(hostile, "SAMPLE_TIMEOUT_S", SAMPLE_TIMEOUT_S)
    with open_file_limit(NOFILE):
        node = tls_node(
            {
                "server": {
                    "tls": {"handshake_timeout_s": HANDSHAKE_S},
                    "connections": {"header_timeout_s": HEADER_S},
                }
            }
        )
    idle = await idle_stats(node)
    attack = SlowAttack(node.port, node.tcp_port, source="127.0.0.2")
    # silent: nothing sent; half-hello: the first bytes of a ClientHello, then nothing
    waves = {"http-silent": 9, "http-half-hello": 4, "tcp-silent": 9, "tcp-half-hello": 4}
    attacked = await probed_mid_attack(node, attack, waves)  # the probe uses WSS and HTTPS
    assert_unharmed(idle, attacked, what="unfinished TLS handshakes")
    for kind in waves:
        lifetimes = attack.lifetimes.get(kind, [])
        assert len(lifetimes) >= 20, f"{kind}: only {len(lifetimes)} connections were closed by the node"
        assert max(lifetimes) < HANDSHAKE_S + 1.0, f"{kind}: a connection lived {max(lifetimes):.2f} s"
        assert min(lifetimes) > HANDSHAKE_S * 0.8, f"{kind}: closed after {min(lifetimes):.2f} s"


async def test_header_and_connect_timeouts_count_from_the_end_of_the_handshake(tls_node) -> None:
    """After its handshake, a silent HTTPS client is closed after header_timeout_s, a silent STOMP
    client after connect_timeout_s; a WSS session outlives both."""
    node = tls_node(
        {"server": {"connections": {"header_timeout_s": HEADER_S}}, "stomp": {"connect_timeout_s": HEADER_S}}
    )

    async def silent(port: int) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=node.ssl_context)
        start = time.monotonic()
        try:
            await asyncio.wait_for(reader.read(), 10)  # EOF (or an ERROR frame, then EOF)
        except ConnectionError:
            pass
        finally:
            writer.close()
        return time.monotonic() - start

    ws = await WsStomp.open(node.ws_url, ssl=node.ssl_context)
    await ws.send_raw("CONNECT\naccept-version:1.2\nlogin:quiet\nheart-beat:0,0\n\n\x00")
    assert (await ws.recv()).command == "CONNECTED"
    await ws.subscribe("/user/queue/a")
    lifetimes = await asyncio.gather(*(silent(port) for port in [node.port, node.tcp_port] * 3))
    assert all(HEADER_S * 0.8 < t < HEADER_S + 1.0 for t in lifetimes), lifetimes
    await asyncio.sleep(HEADER_S)  # the session has now been quiet for well past both timeouts
    await ws.publish("/user/quiet/queue/a", "still here", receipt=False)
    assert (await ws.recv()).body == b"still here"
    await ws.close()


def test_refusals_reach_the_client_over_tls(tls_node) -> None:
    """Past a connection cap, the 503 / ERROR is written over TLS: the client can read why."""
    node = tls_node({"server": {"connections": {"per_address": 1, "exempt": []}}})
    with socket.create_connection(("127.0.0.1", node.tcp_port), timeout=TIMEOUT) as raw:
        with node.ssl_context.wrap_socket(raw, server_hostname="localhost") as held:
            held.sendall(b"CONNECT\naccept-version:1.2\nlogin:held\n\n\x00")
            assert held.recv(4096).startswith(b"CONNECTED\n")
            http = raw_request(node.port, node.ssl_context, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            assert http.startswith(b"HTTP/1.1 503 "), http
            assert b"too many connections from 127.0.0.1 (server.connections.per_address = 1)" in http
            stomp_answer = raw_request(node.tcp_port, node.ssl_context, b"CONNECT\n\n\x00")
            assert stomp_answer.startswith(b"ERROR\n") and b"too many connections" in stomp_answer


def raw_request(port: int, context: ssl.SSLContext | None, request: bytes) -> bytes:
    """Everything the node answers until it closes, over TLS with ``context``, else in plain text."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        sock = context.wrap_socket(raw, server_hostname="localhost") if context else raw
        try:
            sock.sendall(request)
            while chunk := sock.recv(4096):
                received += chunk
        except (ssl.SSLError, ConnectionError):
            pass  # a reset or an alert after the answer, or instead of it
        finally:
            sock.close()
    return received
