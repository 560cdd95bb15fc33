"""Hostile clients against a real node: CPU and forged frames (issue 11, classes 1, 2 and 7).

Each attack is made by a logged-in user with ordinary frames while an innocent
user and a health probe measure the node (tests/hostile.py); the verdict is a
ratio to the same probe on the idle node. Before the fixes each of these froze
the node for seconds to minutes (ratios in the thousands) or showed a forged
frame in a victim's page.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from harness.clusterkit import api
from harness.nodes import NodeProcess
from harness.stompclient import WsStomp
from stompgate.stomp import Frame, serialize

from ..hostile import SAMPLE_TIMEOUT_S, Probe, assert_unharmed, while_attacked
from ..jsrun import run_scenario

pytestmark = pytest.mark.usefixtures("close_ws_clients")

# The probes measure what the node does, not what a rate limit lets through.
NO_RATE_LIMIT = {"stomp": {"rate_limit": {"frames_per_s": 0, "bytes_per_s": 0}}}


async def measured(node: NodeProcess, attack: Any, samples: int = 20) -> tuple[Any, Any]:
    probe = await Probe(node).start()
    idle = await probe.measure()
    attacked = await while_attacked(probe, attack, samples)
    await probe.close()
    return idle, attacked


# ----------------------------------------------------------------- 1. wildcard matching


async def test_a_backtracking_pattern_costs_nothing(node: NodeProcess) -> None:
    """SUBSCRIBE /topic/*x*x...*xy, then SENDs to a long /topic/xxx...x: a regex tried every split."""
    evil = await WsStomp.connect(node.ws_url, "evil")
    await evil.subscribe("/topic/" + "*x" * 30 + "y", "e")

    async def attack() -> None:
        for i in range(20):
            await evil.publish(f"/topic/{'x' * 900}{i}", b"", receipt=True)

    idle, attacked = await measured(node, attack())
    assert_unharmed(idle, attacked, what="backtracking pattern")
    await evil.publish("/topic/" + "x" * 30 + "y", b"hit", receipt=False)  # the pattern still matches
    while (frame := await evil.recv()).command == "RECEIPT":  # one left by the cancelled attack
        pass
    assert frame.body == b"hit"


async def test_many_patterns_are_indexed_not_scanned(node_factory: Any) -> None:
    """100 users x 100 distinct wildcard patterns, and a stream of SENDs to new destinations.

    Scanning every pattern for each SEND cost ~40 ms of loop per message with
    100,000 patterns; the trie visits only the branches a destination leads into.
    """
    node = node_factory(NO_RATE_LIMIT)
    holders = []
    for n in range(100):
        holder = await WsStomp.connect(node.ws_url, f"holder{n}")
        frames = b"".join(
            serialize(Frame("SUBSCRIBE", {"id": str(i), "destination": f"/topic/s{n}/p{i}/*"}), "1.2")
            for i in range(100)
        )
        await holder.send_raw(
            frames + serialize(Frame("SEND", {"destination": "/topic/x", "receipt": "r"}), "1.2")
        )
        assert (await holder.recv(10)).command == "RECEIPT"
        holders.append(holder)
    sender = await WsStomp.connect(node.ws_url, "sender")

    async def attack() -> None:
        i = 0
        while True:
            batch = b"".join(
                serialize(Frame("SEND", {"destination": f"/topic/s{i % 100}/fresh{i + k}/x"}), "1.2")
                for k in range(50)
            )
            i += 50
            await sender.send_raw(batch)
            await sender.publish("/topic/sync", b"", receipt=True)

    idle, attacked = await measured(node, attack())
    assert_unharmed(idle, attacked, what="10,000 patterns")
    # A destination a pattern does match still reaches it.
    await sender.publish("/topic/s7/p42/match", b"hit")
    assert (await holders[7].recv()).body == b"hit"


# ----------------------------------------------------------------- 2. packed frames


@pytest.mark.parametrize("carrier", ["websocket", "tcp"])
async def test_a_megabyte_of_packed_frames_does_not_hold_the_loop(node_factory: Any, carrier: str) -> None:
    """1 MB of small SENDs in one WebSocket message (or one TCP write): parsed in linear time,
    handled in bounded batches per loop turn. Before: ~10 s of frozen loop for one message."""
    node = node_factory(NO_RATE_LIMIT)
    frame = serialize(Frame("SEND", {"destination": "/topic/sink"}, b"z"), "1.2")
    blob = frame * (1_000_000 // len(frame))
    connect = serialize(Frame("CONNECT", {"accept-version": "1.2", "login": "packer", "heart-beat": "0,0"}))

    async def attack() -> None:
        for _ in range(3):
            if carrier == "websocket":
                async with websockets.connect(node.ws_url, max_size=None) as ws:
                    await ws.send(connect)
                    await ws.recv()
                    await ws.send(blob)
                    await ws.send(serialize(Frame("DISCONNECT", {"receipt": "bye"}), "1.2"))
                    while "RECEIPT" not in str(await ws.recv()):
                        pass
            else:
                reader, writer = await asyncio.open_connection("127.0.0.1", node.tcp_port)
                writer.write(connect + blob + serialize(Frame("DISCONNECT", {"receipt": "bye"}), "1.2"))
                await writer.drain()
                await reader.read()  # CONNECTED ... RECEIPT, then the node closes
                writer.close()

    idle, attacked = await measured(node, attack())
    assert_unharmed(idle, attacked, what=f"packed frames over {carrier}")


# ----------------------------------------------------------------- 7. forged frames


async def test_nul_in_a_header_value_is_refused(node: NodeProcess) -> None:
    mallory = await WsStomp.connect(node.ws_url, "mallory")
    await mallory.send_raw(b"SEND\ndestination:/topic/a\nx-note:a\0MESSAGE\n\nforged\0")
    error = await mallory.recv()
    assert error.command == "ERROR" and "NUL" in error.headers["message"]


def test_no_frame_can_be_forged_inside_a_stompjs_page(node: NodeProcess) -> None:
    """stompjs 2.3.3 and @stomp/stompjs, subscribed as "sub-0", get mallory's messages and nothing forged."""
    report = run_scenario(
        "scenarios.js",
        ["forgery", node.ws_url, "{}"],
        timeout=40,
        server_log=node.log,
        needs=("@stomp/stompjs", "stompjs"),
    )
    for victim in ("legacy", "modern"):
        seen = report[victim]
        assert len(seen) == 3, (victim, seen)
        assert all(m["id"] != "forged-id" and m["subscription"] == "sub-0" for m in seen), (victim, seen)
        assert [m["body"] for m in seen][1:] == ["second", "third"], (victim, seen)
        assert all(m["destination"].startswith("/topic/forge.") for m in seen), (victim, seen)
    # stompjs 2.x (STOMP 1.1) gets the NUL replaced; @stomp/stompjs (1.2) gets the body as sent.
    assert report["legacy"][0]["body"].startswith("hello\ufffdMESSAGE")
    assert report["modern"][0]["body"].startswith("hello\u0000MESSAGE")


def test_the_http_api_refuses_what_stomp_refuses(node: NodeProcess) -> None:
    """Headers from the publish API pass the same checks as a SEND's: NUL, names, reserved names,
    count, length."""
    cases = [
        ({"x-a": "a\u0000b"}, "NUL"),
        ({"a:b": "v"}, "header name"),
        ({"bad\nname": "v"}, "header name"),
        ({"message-id ": "forged"}, "set by the broker"),
        ({"Subscription": "forged"}, "set by the broker"),
        ({f"h{i}": "v" for i in range(65)}, "more than 64 headers"),
        ({"long": "v" * 9000}, "longer than 8192"),
    ]
    for headers, problem in cases:
        status, body = api(
            node, "POST", "/api/publish", {"destination": "/topic/a", "payload": "x", "headers": headers}
        )
        assert status == 400 and problem in body["error"], (headers, status, body)
    for field, value, problem in [
        ("destination", "/topic/a\u0001", "control character"),
        ("destination", "/topic/" + "d" * 1100, "longer than 1024 bytes"),
        ("user", "bob\n", "control character"),
        ("user", "}x", None),  # braces are fine: they cannot reach a Redis hash tag any more
    ]:
        body = {"user": "bob", "destination": "/queue/a", "payload": "x", field: value}
        status, answer = api(node, "POST", "/api/send-to-user", body)
        if problem is None:
            assert status == 200, answer
        else:
            assert status == 400 and problem in answer["error"], (field, value, status, answer)



# ------------------------------------------------------ application destinations

APP_HANDLERS = {
    **NO_RATE_LIMIT,
    "destinations": {"application_prefixes": ["/app"]},
    "server": {"extensions": [str(Path(__file__).resolve().parent.parent / "app_handlers.py")]},
}


async def open_tasks(node: NodeProcess) -> int:
    """The node's asyncio tasks, as its @SubscribeMapping /app/tasks tells a fresh session."""
    reader = await WsStomp.connect(node.ws_url, "counter")
    await reader.send(Frame("SUBSCRIBE", {"destination": "/app/tasks", "id": "t"}))
    count = int((await reader.recv()).body)
    await reader.close()
    return count


async def test_a_flood_of_calls_to_a_stuck_handler_holds_a_bounded_few(node_factory: Any) -> None:
    """5,000 SENDs to a handler that never answers: the session holds max_application_calls
    of them (16 tasks), the rest stay unread in its socket; others are served as before."""
    node = node_factory(APP_HANDLERS)
    before = await open_tasks(node)
    evil = await WsStomp.connect(node.ws_url, "evil")
    frame = serialize(Frame("SEND", {"destination": "/app/stuck"}, b"x"), "1.2")
    flood = frame * 5000

    async def attack() -> None:
        await evil.send_raw(flood)
        await asyncio.sleep(3600)  # holds the calls open while the probe measures

    idle, attacked = await measured(node, attack())
    assert_unharmed(idle, attacked, what="calls to a stuck handler")
    assert await open_tasks(node) <= before + 16 + 4  # the session's calls, not 5,000


class CallProbe(Probe):
    """The innocent user's round trip through a handler: SEND /app/all-sessions, whose
    reply comes back on its own /user/queue/me."""

    async def start(self) -> CallProbe:
        await super().start()
        assert self.client is not None
        await self.client.subscribe("/user/queue/me", "me")
        return self

    async def _roundtrip(self) -> float:
        assert self.client is not None
        self._seq += 1
        body = f"call-{self._seq}".encode()
        start = time.perf_counter()
        headers = {"destination": "/app/all-sessions", "content-type": "text/plain"}
        await self.client.send(Frame("SEND", headers, body))
        while (frame := await self.client.recv(SAMPLE_TIMEOUT_S)).body != body:
            assert frame.command == "MESSAGE", f"the innocent user got {frame}"
        return time.perf_counter() - start


async def test_one_user_with_many_sessions_cannot_take_every_call_slot(node_factory: Any) -> None:
    """A user opens more sessions than there are call slots and has each call a handler
    that never answers: it holds its share (proxy.max_calls_per_user), and an innocent
    user's calls through a handler go on as when idle. Without the share every slot
    is held until the handler timeout and the innocent's calls wait for it."""
    node = node_factory({**APP_HANDLERS, "proxy": {"concurrency": 8, "max_calls_per_user": 2}})
    probe = await CallProbe(node).start()
    idle = await probe.measure(10)
    evil = [await WsStomp.connect(node.ws_url, "evil") for _ in range(10)]
    stuck = serialize(Frame("SEND", {"destination": "/app/stuck"}, b"x"), "1.2")

    async def attack() -> None:
        for session in evil:
            await session.send_raw(stuck * 3)
        await asyncio.sleep(3600)

    attacked = await while_attacked(probe, attack(), 10)
    await probe.close()
    assert_unharmed(idle, attacked, what="one user's sessions holding call slots")


# ------------------------------------------------------------------------ metrics


async def open_idle_tcp_sessions(node: NodeProcess, count: int) -> list[asyncio.StreamWriter]:
    """``count`` connected STOMP sessions over TCP, each with a subscription: what a scrape walks."""
    connect = {"accept-version": "1.2", "heart-beat": "0,0", "login": "idle"}
    frames = serialize(Frame("CONNECT", connect), "1.0") + serialize(
        Frame("SUBSCRIBE", {"id": "1", "destination": "/topic/idle", "receipt": "r"}), "1.2"
    )
    writers = []
    for start in range(0, count, 200):
        pairs = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", node.tcp_port) for _ in range(min(200, count - start)))
        )
        for _reader, writer in pairs:
            writer.write(frames)
        for reader, writer in pairs:
            data = b""
            while b"receipt-id:r" not in data:
                chunk = await asyncio.wait_for(reader.read(4096), 10)
                assert chunk, f"the node closed an idle session: {data!r}"
                data += chunk
            writers.append(writer)
    return writers


async def test_scraping_metrics_in_a_loop_costs_one_page_a_second(node_factory: Any) -> None:
    """/metrics is open by default and a scrape walks every session: 3,000 sessions and 64
    clients asking for it as fast as they can. With metrics.cache_s (1 s, the default;
    the harness sets 0) the node builds one page a second and the innocent user does
    not notice; with 0, /health took 450 ms and the innocent's round trip 160 ms
    (ratios of 250 and more), waiting behind the queue of scrapes."""
    cache_s = 1.0
    node = node_factory({**NO_RATE_LIMIT, "metrics": {"cache_s": cache_s}})
    idle_sessions = await open_idle_tcp_sessions(node, 3000)
    url = node.http_url + "/metrics"

    async def scraper(http: aiohttp.ClientSession) -> None:
        while True:
            async with http.get(url) as resp:
                assert resp.status == 200
                await resp.read()

    async def attack() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
            await asyncio.gather(*(scraper(http) for _ in range(64)))

    idle, attacked = await measured(node, attack())
    for writer in idle_sessions:
        writer.close()
    assert_unharmed(idle, attacked, what=f"scraping /metrics in a loop (cache_s {cache_s})")
