"""The bus's lean Redis connection (stompgate.bus.resp) against a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.nodes import free_port
from harness.redisproc import RedisProcess, start_redis
from stompgate.bus.address import Address
from stompgate.bus.resp import ReplyError, RespConnection, RespConnectionError, pack


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server this test may reconfigure or stop."""
    server = start_redis(tmp_path)
    yield server
    server.stop()


# ------------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6380/0", Address("127.0.0.1", 6380)),
        ("redis://localhost", Address("localhost", 6379)),
        ("redis://:s%40cret@h:1/2", Address("h", 1, db=2, password="s@cret")),
        ("redis://u:p@h:1/?db=3", Address("h", 1, db=3, username="u", password="p")),
        ("rediss://h:1/0", Address("h", 1, tls=True)),
        (
            "rediss://h:1/0?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem",
            Address("h", 1, tls=True, tls_verify=False, tls_ca_certs="/ca.pem"),
        ),
        ("unix:///run/redis.sock?db=4", Address(path="/run/redis.sock", db=4)),
        ("unix://:pw@/run/redis.sock", Address(path="/run/redis.sock", password="pw")),
    ],
)
def test_address_from_url(url: str, expected: Address) -> None:
    assert Address.from_url(url) == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [("http://h:1", "expected a redis://"), ("redis://h:1/zero", "must be a number")],
)
def test_address_from_bad_url(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Address.from_url(url)


# ------------------------------------------------------------------- commands


async def test_pipelined_replies_in_order_errors_in_place(standalone_redis: RedisProcess) -> None:
    conn = await RespConnection.open(Address(port=standalone_redis.port))
    try:
        key = f"resp-{free_port()}"
        data = b"".join(
            [
                pack(("DEL", key)),
                pack(("SET", key, b"v\x00\xff")),
                pack(("INCR", key)),
                pack(("GET", key)),
                pack(("RPUSH", f"{key}:l", 1, 2)),
            ]
        )
        deleted, ok, incr, value, pushed = await conn.request(data, 5)
        assert (deleted, ok, value, pushed) == (0, b"OK", b"v\x00\xff", 2)
        assert isinstance(incr, ReplyError) and "not an integer" in str(incr)
        # Requests sent back to back are answered in order, each with its own replies.
        first = conn.request(pack(("ECHO", "a")), 1)
        second = conn.request(pack(("ECHO", "b")) + pack(("ECHO", "c")), 2)
        assert await second == [b"b", b"c"]
        assert await first == [b"a"]
    finally:
        conn.close()


async def test_auth_and_database(own_redis: RedisProcess) -> None:
    own_redis.client().config_set("requirepass", "pa ss")
    with pytest.raises(RespConnectionError, match="refused"):
        await RespConnection.open(Address(port=own_redis.port, password="wrong"))
    conn = await RespConnection.open(Address.from_url(f"redis://:pa%20ss@127.0.0.1:{own_redis.port}/5"))
    try:
        assert await conn.request(pack(("SET", "k", "in five")), 1) == [b"OK"]
    finally:
        conn.close()
    import redis

    assert redis.Redis(port=own_redis.port, password="pa ss", db=5).get("k") == b"in five"


async def test_connect_failure_names_the_address() -> None:
    port = free_port()
    with pytest.raises(RespConnectionError, match=f"127.0.0.1:{port}"):
        await RespConnection.open(Address(port=port))


async def test_lost_connection_fails_waiting_requests(own_redis: RedisProcess) -> None:
    conn = await RespConnection.open(Address(port=own_redis.port))
    # Redis answers BLPOP only after its timeout; stopping Redis first leaves it waiting.
    waiting = conn.request(pack(("BLPOP", "nothing", 30)), 1)
    await asyncio.sleep(0.1)
    await asyncio.to_thread(own_redis.stop)
    with pytest.raises(RespConnectionError):
        await asyncio.wait_for(waiting, 5)
    assert isinstance(await asyncio.wait_for(conn.closed, 5), RespConnectionError)
    with pytest.raises(RespConnectionError, match="closed"):
        await conn.request(pack(("PING",)), 1)


# -------------------------------------------------------------------- pub/sub


async def test_pubsub_pushes_every_message_in_order(standalone_redis: RedisProcess) -> None:
    got: list[Any] = []
    conn = await RespConnection.open(Address(port=standalone_redis.port), on_push=got.append)
    channel = f"resp-{free_port()}"
    try:
        conn.send(pack(("SSUBSCRIBE", channel)))
        while not got:  # noqa: ASYNC110 - on_push is a plain list.append: the test polls the list it fills
            await asyncio.sleep(0.01)
        assert got.pop(0) == [b"ssubscribe", channel.encode(), 1]
        pipe = standalone_redis.client().pipeline(transaction=False)
        for i in range(2000):
            pipe.execute_command("SPUBLISH", channel, f"m{i}")
        await asyncio.to_thread(pipe.execute)
        for _ in range(200):
            if len(got) == 2000:
                break
            await asyncio.sleep(0.02)
        assert got == [[b"smessage", channel.encode(), f"m{i}".encode()] for i in range(2000)]
    finally:
        conn.close()


async def test_a_failing_handler_does_not_end_the_connection(
    standalone_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[Any] = []

    def handler(reply: Any) -> None:
        if reply[-1] == b"bad":
            raise RuntimeError("handler broke")
        got.append(reply)

    conn = await RespConnection.open(Address(port=standalone_redis.port), on_push=handler)
    channel = f"resp-{free_port()}"
    try:
        conn.send(pack(("SUBSCRIBE", channel)))
        client = standalone_redis.client()
        for _ in range(100):
            if client.pubsub_numsub(channel)[0][1] == 1:
                break
            await asyncio.sleep(0.02)
        with caplog.at_level(logging.ERROR, logger="stompgate.bus.resp"):
            for body in ("bad", "good"):
                client.publish(channel, body)
            for _ in range(100):
                if len(got) == 2:
                    break
                await asyncio.sleep(0.02)
        assert got[-1] == [b"message", channel.encode(), b"good"]
        assert "handler broke" in caplog.text
        assert not conn.closed.done()
    finally:
        conn.close()


async def test_garbage_from_the_server_closes_the_connection() -> None:
    async def speak_nonsense(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"?what is this\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(speak_nonsense, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = await RespConnection.open(Address(port=port))
        error = await asyncio.wait_for(conn.closed, 5)
        assert isinstance(error, RespConnectionError) and "protocol error" in str(error)
    finally:
        server.close()
        await server.wait_closed()


# ------------------------------------------------------------------------ TLS


def _tls_files(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and a localhost certificate it signed: (ca.pem, cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stompgate test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server speaking only TLS: (port, its CA file)."""
    import subprocess

    from harness.redisproc import REDIS_SERVER

    ca, cert, key = _tls_files(tmp_path)
    port = free_port()
    log = tmp_path / "redis.log"
    proc = subprocess.Popen(
        [
            REDIS_SERVER, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--dir", str(tmp_path), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no", "--logfile", str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while "Ready to accept connections" not in (log.read_text() if log.exists() else ""):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server with TLS did not start: {log.read_text() if log.exists() else ''}")
            time.sleep(0.02)
        yield port, ca
    finally:
        proc.terminate()
        proc.wait(5)


async def test_tls(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    for url in (f"rediss://localhost:{port}/0?ssl_ca_certs={ca}", f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none"):
        conn = await RespConnection.open(Address.from_url(url))
        try:
            assert await conn.request(pack(("PING",)), 1) == [b"PONG"]
        finally:
            conn.close()
    # Verified against the system's CAs, the test CA's certificate is refused.
    with pytest.raises(RespConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await RespConnection.open(Address.from_url(f"rediss://localhost:{port}/0"))
