"""Hostile clients at the connection level (issue 11, item 8): slow and idle connections, caps.

Each attack runs against a real node while ``tests/hostile.py``'s probe (an
innocent STOMP user and a /health check) measures it. The node's limits are
lowered in its config, and for the file-descriptor attack its open-file limit
too, so that a few hundred sockets do what 20,000 would do to a default node.
Attackers come from other loopback addresses (127.0.0.2...) than the probe
(127.0.0.1): the whole of 127.0.0.0/8 reaches the loopback interface on Linux.
"""

from __future__ import annotations

import asyncio
import re
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import pytest

from harness.nodes import API_KEY, NodeProcess
from harness.stompclient import WsStomp
from stompgate.stomp import ALL_COMMANDS, Frame, FrameParser
from stompgate.transport.limits import ConnectionGate, RefusalLog, parse_networks

from .. import hostile
from ..hostile import Probe, assert_unharmed
from ..sockjsclient import Connection

pytestmark = pytest.mark.usefixtures("close_ws_clients")

# A frozen node shows as samples that hit this (instead of hostile's 20 s), so a
# run without the fixes fails in seconds rather than minutes.
SAMPLE_TIMEOUT_S = 5.0


@pytest.fixture(autouse=True)
def short_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostile, "SAMPLE_TIMEOUT_S", SAMPLE_TIMEOUT_S)


@contextmanager
def open_file_limit(soft: int) -> Iterator[None]:
    """Processes started inside inherit an open-file limit of ``soft``."""
    old_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))


async def connect_from(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 5)


async def read_all(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """Everything until the server closes; None if it is still open after ``timeout``."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except TimeoutError:
        return None
    except ConnectionError:
        return b""


def close(writer: asyncio.StreamWriter) -> None:
    with suppress(Exception):
        writer.close()


async def new_probe(node: NodeProcess) -> Probe:
    try:
        return await asyncio.wait_for(Probe(node).start(), SAMPLE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - a timeout, or a handshake the node dropped
        raise AssertionError(f"the innocent user could not even connect: {exc!r}") from None


async def idle_stats(node: NodeProcess) -> hostile.Stats:
    probe = await new_probe(node)
    try:
        return await probe.measure()
    finally:
        await probe.close()


def stomp_error(data: bytes) -> Frame:
    parser = FrameParser(commands=ALL_COMMANDS, version=None)
    parser.feed(data)
    frame = parser.next_frame()
    assert frame is not None and frame.command == "ERROR", data
    return frame


# ------------------------------------------------ the gate, without a network


async def test_gate_counts_per_address_and_in_total() -> None:
    gate = ConnectionGate(max_total=5, per_address=2, exempt=parse_networks(["127.0.0.0/8", "::1"]))
    a1, refused = gate.admit(("10.0.0.1", 1000))
    assert (a1, refused) == ("10.0.0.1", None)
    assert gate.admit(("10.0.0.1", 1001)) == ("10.0.0.1", None)
    key, refused = gate.admit(("10.0.0.1", 1002))
    assert key is None and (
        refused == "too many connections from 10.0.0.1 (server.connections.per_address = 2)"
    )
    # An IPv4 client on a dual-stack listener is the same address.
    assert gate.admit(("::ffff:10.0.0.1", 1003, 0, 0))[0] is None
    # Exempt addresses skip the per-address cap but count in the total.
    assert gate.admit(("127.0.0.1", 1)) == ("", None)
    assert gate.admit(("::1", 2, 0, 0)) == ("", None)
    assert gate.admit(("127.0.0.1", 3)) == ("", None)
    assert gate.total == 5
    key, refused = gate.admit(("127.0.0.1", 4))
    assert key is None and refused == "too many connections to this node (server.connections.max = 5)"
    gate.release("10.0.0.1")
    gate.release("")
    assert gate.total == 3 and gate.by_address == {"10.0.0.1": 1}
    gate.release("10.0.0.1")
    assert gate.by_address == {}
    gate.close()


async def test_gate_counts_ipv6_clients_per_64() -> None:
    """Anyone with a /64 can pick any address in it: the /64 is the client."""
    gate = ConnectionGate(max_total=100, per_address=2)
    assert gate.admit(("2001:db8:1:2::1", 1, 0, 0))[0] == "2001:db8:1:2::/64"
    assert gate.admit(("2001:db8:1:2:ffff::9", 1, 0, 0))[0] == "2001:db8:1:2::/64"
    assert gate.admit(("2001:db8:1:2:abcd::1", 1, 0, 0))[1] is not None
    assert gate.admit(("2001:db8:1:3::1", 1, 0, 0))[1] is None
    gate.close()


async def test_refusals_are_logged_per_address_and_interval(caplog: pytest.LogCaptureFixture) -> None:
    log = RefusalLog(interval_s=0.1, max_lines=2)
    with caplog.at_level("WARNING", logger="stompgate.transport.limits"):
        for _ in range(1000):
            log.refused("10.0.0.1", "limit A")
        log.refused("10.0.0.2", "limit A")
        for _ in range(5):
            log.refused("10.0.0.3", "limit A")  # past max_lines: counted, not listed
        assert [r.getMessage() for r in caplog.records] == [
            "refusing connections from 10.0.0.1: limit A",
            "refusing connections from 10.0.0.2: limit A",
        ]
        caplog.clear()
        await asyncio.sleep(0.15)
        assert [r.getMessage() for r in caplog.records] == [
            "refused 999 more connections from 10.0.0.1 in the last 0.1 s: limit A",
            "refused 5 more connections in the last 0.1 s (addresses not listed)",
        ]
        caplog.clear()
        log.refused("10.0.0.1", "limit A")  # still refusing: counted, not announced again
        await asyncio.sleep(0.15)
        assert [r.getMessage() for r in caplog.records] == [
            "refused 1 more connections from 10.0.0.1 in the last 0.1 s: limit A"
        ]
    log.close()


# ----------------------------------------------- slow and idle connections


HEADER_S = 1.0
CONNECT_S = 1.0
NOFILE = 320  # the node's open-file limit: its connections cap is derived from it (320 - 128)


@dataclass
class SlowAttack:
    """Waves of connections that never finish what they started, each kept until the node closes it."""

    http_port: int
    tcp_port: int
    source: str = "127.0.0.1"
    lifetimes: dict[str, list[float]] = field(default_factory=dict)  # kind -> open..closed by the node
    refused: int = 0
    opened: int = 0

    async def _one(self, kind: str) -> None:
        port = self.tcp_port if kind.startswith("tcp") else self.http_port
        try:
            reader, writer = await connect_from(self.source, port)
        except (TimeoutError, OSError):
            return
        self.opened += 1
        start = time.monotonic()
        trickle: asyncio.Future[None] | None = None
        try:
            if kind == "http-half-line":
                writer.write(b"GET /health HTT")
            elif kind == "http-slowloris":
                trickle = asyncio.ensure_future(
                    self._trickle(writer, b"GET /health HTTP/1.1\r\nHost: a\r\nX-Slow: ")
                )
            elif kind == "tcp-half-frame":
                writer.write(b"CONNECT\naccept-version:1.2\nlog")
            elif kind.endswith("half-hello"):  # TLS: a record header announcing a 512-byte ClientHello
                writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            # tcp-silent, http-silent: nothing at all
            data = await read_all(reader, 30)
            if data is None:
                return
            if data.startswith(b"HTTP/1.1 503") or b"too many connections" in data:
                self.refused += 1
            else:
                self.lifetimes.setdefault(kind, []).append(time.monotonic() - start)
        finally:
            if trickle is not None:
                trickle.cancel()
            close(writer)

    @staticmethod
    async def _trickle(writer: asyncio.StreamWriter, head: bytes) -> None:
        with suppress(Exception):
            for i in range(len(head)):
                writer.write(head[i : i + 1])
                await asyncio.sleep(0.1)
            while True:
                writer.write(b"x")
                await asyncio.sleep(0.1)

    async def run(self, per_wave: dict[str, int], interval_s: float) -> None:
        tasks: set[asyncio.Future[None]] = set()
        try:
            while True:
                for kind, count in per_wave.items():
                    for _ in range(count):
                        task = asyncio.ensure_future(self._one(kind))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                await asyncio.sleep(interval_s)
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def probed_mid_attack(node: NodeProcess, attack: SlowAttack, waves: dict[str, int]) -> hostile.Stats:
    """The innocent user's stats when it arrives 3 s into ``attack`` (waves every 0.2 s)."""
    task = asyncio.ensure_future(attack.run(waves, 0.2))
    probe: Probe | None = None
    try:
        await asyncio.sleep(3.0)  # past the point where the attack, unchecked, has used every file
        probe = await new_probe(node)  # the innocent user arrives in the middle of the attack
        attacked = await probe.measure()
        await asyncio.sleep(0.5)
    finally:
        if probe is not None:
            await probe.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return attacked


async def test_idle_and_slow_connections_are_closed_before_they_exhaust_the_node(node_factory) -> None:
    """Half request lines, slowloris headers, silent and half STOMP frames: closed on time.

    The node may open 320 files; the attack opens 130 connections a second and
    never completes one. Without a header timeout they pile up until the node
    cannot accept anyone (EMFILE) and the probe's /health times out; with it,
    each is closed about ``header_timeout_s`` (HTTP) or ``connect_timeout_s``
    (STOMP over TCP) after it opened, so about 140 are open at any time.
    """
    with open_file_limit(NOFILE):
        node = node_factory(
            {
                "server": {"connections": {"header_timeout_s": HEADER_S}},
                "stomp": {"connect_timeout_s": CONNECT_S},
            }
        )
    idle = await idle_stats(node)
    attack = SlowAttack(node.port, node.tcp_port)
    waves = {"http-half-line": 16, "http-slowloris": 4, "tcp-silent": 3, "tcp-half-frame": 3}
    attacked = await probed_mid_attack(node, attack, waves)
    assert_unharmed(idle, attacked, what="half requests, slowloris, silent STOMP")
    assert attack.refused == 0, "the node's derived cap (192) should leave room for this attack"
    limit = {
        "http-half-line": HEADER_S,
        "http-slowloris": HEADER_S,
        "tcp-silent": CONNECT_S,
        "tcp-half-frame": CONNECT_S,
    }
    for kind, timeout in limit.items():
        lifetimes = attack.lifetimes.get(kind, [])
        assert len(lifetimes) >= 20, f"{kind}: only {len(lifetimes)} connections were closed by the node"
        assert max(lifetimes) < timeout + 1.0, f"{kind}: a connection lived {max(lifetimes):.2f} s"
        assert min(lifetimes) > timeout * 0.8, (
            f"{kind}: closed after {min(lifetimes):.2f} s, before its timeout"
        )


async def test_long_lived_requests_are_not_cut_by_the_header_timeout(node_factory) -> None:
    """WebSocket sessions and SockJS streaming and polling responses outlive header_timeout_s."""
    node = node_factory(
        {
            "server": {
                "connections": {"header_timeout_s": HEADER_S},
                "sockjs": [{"path": "/sjs", "heartbeat_s": 0.5}],
            }
        }
    )
    idle = await idle_stats(node)
    probe = await new_probe(node)
    try:
        ws = await WsStomp.connect(node.ws_url, "quiet")
        await ws.subscribe("/user/queue/a")
        streaming = await connect_from("127.0.0.1", node.port)
        streaming[1].write(b"POST /sjs/000/s1/xhr_streaming HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        await asyncio.sleep(2.5 * HEADER_S)  # nothing from either client meanwhile
        attacked = await probe.measure()
        await ws.publish("/user/quiet/queue/a", "still here", receipt=False)
        assert (await ws.recv()).body == b"still here"
        received = await asyncio.wait_for(streaming[0].read(65536), 1)
        assert b"\nh\n" in received, received[-200:]  # heartbeats keep coming over the open response
        assert not streaming[0].at_eof()
        close(streaming[1])
        # A long poll waits for a heartbeat (0.5 s) or a message; polls back to back for 3 s.
        poll = await Connection.open("127.0.0.1", node.port)
        for _ in range(6):
            head = await poll.request("POST", "/sjs/000/s2/xhr", timeout=2)
            assert head.status == 200
            assert await poll.read_body(2) in (b"o\n", b"h\n")
        await poll.close()
    finally:
        await probe.close()
    assert_unharmed(idle, attacked, what="long-lived requests")


# ----------------------------------------------------------------- caps


PER_ADDRESS = 10
MAX_TOTAL = 40


async def hold_http(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A keep-alive HTTP connection that was admitted (its request answered)."""
    reader, writer = await connect_from(source, port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    return reader, writer


async def refused_http(source: str, port: int) -> bytes:
    """What a connection over the cap gets: the whole answer, then the close."""
    reader, writer = await connect_from(source, port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
    try:
        data = await read_all(reader, 3)
    finally:
        close(writer)
    assert data is not None, "a connection over the cap was kept open"
    return data


async def refused_stomp(source: str, port: int) -> Frame:
    reader, writer = await connect_from(source, port)
    writer.write(b"CONNECT\naccept-version:1.2\nlogin:x\n\n\0")
    try:
        data = await read_all(reader, 3)
    finally:
        close(writer)
    assert data is not None, "a STOMP connection over the cap was kept open"
    return stomp_error(data)


def assert_503(data: bytes, limit: str) -> None:
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), data
    assert b"\r\nConnection: close" in head, head
    assert limit.encode() in body, body


async def test_per_address_cap_refuses_clearly_and_spares_other_addresses(node_factory) -> None:
    """One address holds per_address connections; its next ones get a 503 / an ERROR, others connect."""
    node = node_factory(
        {
            "server": {
                "connections": {
                    "exempt": [],
                    "per_address": PER_ADDRESS,
                    "max": MAX_TOTAL,
                    "header_timeout_s": 10,
                },
            },
        }
    )
    idle = await idle_stats(node)
    held = [await hold_http("127.0.0.2", node.port) for _ in range(PER_ADDRESS)]
    answers: list[bytes] = []
    errors: list[Frame] = []

    async def hammer() -> None:  # the same address keeps trying, over both listeners
        while True:
            answers.append(await refused_http("127.0.0.2", node.port))
            errors.append(await refused_stomp("127.0.0.2", node.tcp_port))
            await asyncio.sleep(0.005)  # leave this process's loop to the probe it shares

    probe = await new_probe(node)
    try:
        attacked = await hostile.while_attacked(probe, hammer())
    finally:
        await probe.close()
    assert_unharmed(idle, attacked, what="one address over its cap")
    assert len(answers) >= 5 and len(errors) >= 5
    for data in answers:
        assert_503(
            data, f"too many connections from 127.0.0.2 (server.connections.per_address = {PER_ADDRESS})"
        )
    for frame in errors:
        assert frame.headers["message"] == (
            f"too many connections from 127.0.0.2 (server.connections.per_address = {PER_ADDRESS})"
        ), frame
    # Refusals are logged once per address and interval, not once per connection.
    lines = [line for line in node.log().splitlines() if "refus" in line and "127.0.0.2" in line]
    assert lines and (
        "refusing connections from 127.0.0.2: server.connections.per_address (10) reached" in lines[0]
    )
    assert len(lines) <= 2, lines  # the first refusal, then a count every 10 s

    # Slots come back when connections end.
    for _, writer in held:
        close(writer)
    await asyncio.sleep(0.3)
    again = [await hold_http("127.0.0.2", node.port) for _ in range(PER_ADDRESS)]
    for _, writer in again:
        close(writer)


async def test_total_cap_counts_every_listener_and_refuses_clearly(node_factory) -> None:
    """HTTP and STOMP-over-TCP connections share one count; past it everyone is refused."""
    node = node_factory(
        {
            "server": {
                "connections": {
                    "exempt": [],
                    "per_address": PER_ADDRESS,
                    "max": MAX_TOTAL,
                    "header_timeout_s": 10,
                },
            },
            "stomp": {"connect_timeout_s": 10},
        }
    )
    idle = await idle_stats(node)
    user = await WsStomp.connect(node.ws_url, "early")  # one connection, from 127.0.0.1
    await user.subscribe("/user/queue/a")
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for i in range(3):  # 30 HTTP connections from three addresses
            held += [await hold_http(f"127.0.0.{i + 2}", node.port) for _ in range(PER_ADDRESS)]
        for _ in range(PER_ADDRESS - 1):  # 9 STOMP connections from a fourth: 40 in all
            reader, writer = await connect_from("127.0.0.5", node.tcp_port)
            held.append((reader, writer))
            writer.write(b"CONNECT\naccept-version:1.2\nlogin:held\n\n\0")
            assert (await asyncio.wait_for(reader.readuntil(b"\0"), 5)).startswith(b"CONNECTED")
        text = f"too many connections to this node (server.connections.max = {MAX_TOTAL})"
        for _ in range(3):
            assert_503(await refused_http("127.0.0.6", node.port), text)
            assert (await refused_stomp("127.0.0.7", node.tcp_port)).headers["message"] == text
        # Who is in keeps working.
        await user.publish("/user/early/queue/a", "in", receipt=False)
        assert (await user.recv()).body == b"in"
    finally:
        for _, writer in held:
            close(writer)
        await user.close()
    await asyncio.sleep(0.3)
    after = await idle_stats(node)  # every slot came back
    assert_unharmed(idle, after, what="after the total cap was reached")


# ----------------------------------------------------------- slow bodies


BODY_S = 1.0


async def slow_body(port: int, head: bytes, first: bytes, trickle: bool) -> tuple[float, bytes, float]:
    """Send a head and part of a body, then nothing (or a byte now and then).

    Returns (seconds to the response, the response, seconds to the close).
    """
    reader, writer = await connect_from("127.0.0.1", port)
    start = time.monotonic()
    writer.write(head + first)

    async def drip() -> None:
        with suppress(Exception):
            while True:
                await asyncio.sleep(0.2)
                writer.write(b" ")

    dripping = asyncio.ensure_future(drip()) if trickle else None
    try:
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BODY_S + 3)
        answered = time.monotonic() - start
        rest = await read_all(reader, BODY_S + 3)
        assert rest is not None, "the connection stayed open after the 408"
        return answered, response + rest, time.monotonic() - start
    finally:
        if dripping is not None:
            dripping.cancel()
        close(writer)


def post_head(path: str, length: int, content_type: str = "application/json", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


async def test_slow_bodies_get_408_within_the_body_timeout(node_factory) -> None:
    """The publish API's JSON and SockJS xhr_send / jsonp_send bodies: 408 and a close, on time."""
    node = node_factory(
        {
            "server": {
                "connections": {"body_timeout_s": BODY_S, "header_timeout_s": 10},
                "sockjs": [{"path": "/sjs", "disconnect_delay_s": 60}],
            }
        }
    )
    # A SockJS session to send to.
    reader, writer = await connect_from("127.0.0.1", node.port)
    writer.write(b"POST /sjs/000/slow/xhr HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"o\n"), 5)).startswith(b"HTTP/1.1 200")
    cases: list[tuple[str, bytes, bytes]] = [
        (
            "api",
            post_head("/api/publish", 200, extra=f"Authorization: Bearer {API_KEY}\r\n"),
            b'{"destination": ',
        ),
        ("xhr_send", post_head("/sjs/000/slow/xhr_send", 200, "text/plain"), b'["CONNE'),
        (
            "jsonp_send",
            post_head("/sjs/000/slow/jsonp_send", 200, "application/x-www-form-urlencoded"),
            b"d=%5B",
        ),
    ]
    idle = await idle_stats(node)
    probe = await new_probe(node)

    async def attack() -> None:  # 30 slow bodies at a time, over and over
        while True:
            await asyncio.gather(
                *(slow_body(node.port, head, first, True) for _, head, first in cases * 10),
                return_exceptions=True,
            )

    try:
        attacked = await hostile.while_attacked(probe, attack())
    finally:
        await probe.close()
    assert_unharmed(idle, attacked, what="slow bodies")
    timed = [(name, head, first, trickle) for name, head, first in cases for trickle in (False, True)]
    results = await asyncio.gather(
        *(slow_body(node.port, head, first, trickle) for _, head, first, trickle in timed)
    )
    for (name, _, _, trickle), (answered, response, closed) in zip(timed, results):
        what = f"{name} ({'trickling' if trickle else 'stalled'})"
        assert response.startswith(b"HTTP/1.1 408"), f"{what}: {response[:200]!r}"
        assert b"Connection: close" in response, f"{what}: {response[:300]!r}"
        assert BODY_S * 0.9 < answered < BODY_S + 1.0, f"{what}: 408 after {answered:.2f} s"
        # after the 408 the node drains the body for at most min(5 s, body_timeout_s)
        assert closed < 2 * BODY_S + 1.0, f"{what}: closed after {closed:.2f} s"
    close(writer)
