"""GET /metrics against real nodes: real clients make traffic, the scrape is parsed with
prometheus-client's own parser, and the figures must move as the traffic says."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import stomp
from prometheus_client.parser import text_string_to_metric_families

from harness.nodes import NodeProcess
from harness.redisproc import start_redis
from harness.stompclient import Closed, WsStomp, stuck_subscriber
from stompgate.stomp import Frame
from stompgate.workers import STARTUP_S

pytestmark = pytest.mark.usefixtures("close_ws_clients")

HANDLERS = Path(__file__).resolve().parent.parent / "app_handlers.py"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fetch(node: NodeProcess, token: str | None = None, path: str = "/metrics") -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(node.http_url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(node: NodeProcess, token: str | None = None) -> Samples:
    status, text = fetch(node, token)
    assert status == 200, text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.05)


def moved(node: NodeProcess, before: Samples, name: str, by: float, **labels: str) -> bool:
    return value(scrape(node), name, **labels) - value(before, name, **labels) == by


CONFIG: dict[str, Any] = {
    "auth": {"mode": "static", "users": {"alice": "a", "bob": "b", "carol": "c"}},
    "authorization": {
        "default": "allow",
        "rules": [{"subscribe": "/topic/secret/**", "allow": "nobody"}],
    },
    "stomp": {"max_subscriptions": 2},
    "destinations": {"application_prefixes": ["/app"]},
    "server": {"extensions": [str(HANDLERS)]},
    "metrics": {"latency_sample": 1},
}


async def test_traffic_moves_frames_messages_and_latency(node_factory) -> None:
    node = node_factory(CONFIG)
    before = scrape(node)
    alice = await WsStomp.connect(node.ws_url, "alice", passcode="a")
    await alice.subscribe("/topic/t")
    # bob over plain TCP, with stomp.py
    bob = stomp.Connection12([("127.0.0.1", node.tcp_port)])
    bob.connect("bob", "b", wait=True)
    try:
        bodies = ["one", "two!", "three"]
        for body in bodies:
            bob.send("/topic/t", body)
        for body in bodies:
            assert (await alice.recv()).body == body.encode()
        after = scrape(node)
        assert value(after, "stompgate_sessions", transport="websocket") == 1
        assert value(after, "stompgate_sessions", transport="tcp") == 1
        assert value(after, "stompgate_subscriptions") == 1
        assert value(after, "stompgate_users") == 2

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert delta("stompgate_sessions_opened_total") == 2
        # stomp.py says STOMP, the other client CONNECT
        assert delta("stompgate_frames_received_total", command="CONNECT") == 1
        assert delta("stompgate_frames_received_total", command="STOMP") == 1
        assert delta("stompgate_frames_received_total", command="SEND") == 3
        assert delta("stompgate_frames_received_total", command="SUBSCRIBE") == 1
        assert delta("stompgate_frames_sent_total", command="CONNECTED") == 2
        assert delta("stompgate_frames_sent_total", command="MESSAGE") == 3
        assert delta("stompgate_frames_sent_total", command="RECEIPT") == 1
        assert delta("stompgate_messages_published_total") == 3
        assert delta("stompgate_messages_delivered_total") == 3
        assert delta("stompgate_message_bytes_published_total") == sum(len(b) for b in bodies)
        assert delta("stompgate_message_bytes_delivered_total") == sum(len(b) for b in bodies)
        # latency_sample: 1: every dispatched message is timed
        assert delta("stompgate_delivery_seconds_count") == 3
        assert value(after, "stompgate_delivery_seconds_bucket", le="+Inf") == 3
        assert 0 < delta("stompgate_delivery_seconds_sum") < 3

        # A Python handler's call is timed by kind and outcome.
        await alice.send(Frame("SEND", {"destination": "/app/hello", "content-type": "application/json"},
                               b'{"name": "x"}'))  # fmt: skip
        await alice.send(Frame("SEND", {"destination": "/app/fail"}, b""))
        wait_for(
            lambda: (
                value(scrape(node), "stompgate_call_seconds_count", kind="handler", outcome="ok") == 1
                and value(scrape(node), "stompgate_call_seconds_count", kind="handler", outcome="error") == 1
            ),
            "the handler calls counted",
        )
    finally:
        bob.disconnect()
    wait_for(lambda: value(scrape(node), "stompgate_sessions", transport="tcp") == 0, "bob's session gone")
    assert value(scrape(node), "stompgate_sessions_closed_total", reason="client") == 1


async def test_closes_are_counted_and_logged_by_reason(node_factory) -> None:
    node = node_factory(CONFIG)
    before = scrape(node)

    intruder = await WsStomp.open(node.ws_url)
    await intruder.send(Frame("CONNECT", {"accept-version": "1.2", "login": "alice", "passcode": "nope"}))
    assert (await intruder.recv()).command == "ERROR"
    await intruder.expect_closed()

    snoop = await WsStomp.connect(node.ws_url, "bob", passcode="b")
    await snoop.send(Frame("SUBSCRIBE", {"id": "1", "destination": "/topic/secret/plans"}))
    assert (await snoop.recv()).headers["message"].startswith("access denied")

    greedy = await WsStomp.connect(node.ws_url, "carol", passcode="c")
    for i in range(2):
        await greedy.subscribe(f"/topic/{i}", str(i))
    await greedy.send(Frame("SUBSCRIBE", {"id": "3", "destination": "/topic/3"}))
    assert "subscriptions" in (await greedy.recv()).headers["message"]

    garbled = await WsStomp.connect(node.ws_url, "alice", passcode="a")
    await garbled.send_raw("NONSENSE\n\n\x00")
    assert (await garbled.recv()).command == "ERROR"

    polite = await WsStomp.connect(node.ws_url, "alice", passcode="a")
    await polite.send(Frame("DISCONNECT", {"receipt": "bye"}))
    assert (await polite.recv()).command == "RECEIPT"

    for client in (snoop, greedy, garbled, polite):
        with pytest.raises(Closed):
            await client.recv()
    expected = {"auth": 1, "denied": 1, "limit": 1, "protocol": 1, "client": 1, "slow-consumer": 0}
    after = scrape(node)
    for reason, count in expected.items():
        got = value(after, "stompgate_sessions_closed_total", reason=reason)
        assert got - value(before, "stompgate_sessions_closed_total", reason=reason) == count, reason
    assert value(after, "stompgate_frames_sent_total", command="ERROR") == 4
    log = node.log()
    for reason in ("auth", "denied", "limit", "protocol", "client"):
        assert f"websocket) closed: {reason}" in log, reason
    assert "(carol, 127.0.0.1, websocket) closed: limit: more than 2 subscriptions" in log


def test_token_guards_the_endpoint_and_it_can_be_turned_off(node_factory) -> None:
    guarded = node_factory({"metrics": {"token": "scrape-me"}})
    assert fetch(guarded)[0] == 401
    assert fetch(guarded, "wrong")[0] == 401
    assert value(scrape(guarded, "scrape-me"), "stompgate_info", node=guarded.id, version="0.1.0") == 1
    off = node_factory({"metrics": {"enabled": False}})
    assert fetch(off)[0] == 404
    moved_path = node_factory({"metrics": {"path": "/internal/metrics"}})
    assert fetch(moved_path)[0] == 404
    assert fetch(moved_path, path="/internal/metrics")[0] == 200


async def test_bus_figures_with_redis(node_factory, bus_config_for) -> None:
    bus = bus_config_for("standalone", "directed")
    here, there = node_factory.many(2, bus)
    listener = await WsStomp.connect(here.ws_url, "alice")
    await listener.subscribe("/topic/news")
    await listener.subscribe("/user/queue/in", "2")
    sender = await WsStomp.connect(there.ws_url, "bob")
    before_here, before_there = scrape(here), scrape(there)
    for i in range(4):
        await sender.publish("/topic/news", f"n{i}")
    await sender.publish("/user/carol/queue/in", "for later")  # nobody anywhere: stored
    for i in range(4):
        assert (await listener.recv()).body == f"n{i}".encode()
    after_there = scrape(there)
    assert (
        value(after_there, "stompgate_bus_published_total")
        - value(before_there, "stompgate_bus_published_total")
        == 5
    )
    assert (
        value(after_there, "stompgate_messages_stored_total")
        - value(before_there, "stompgate_messages_stored_total")
        == 1
    )
    assert value(after_there, "stompgate_redis_batch_seconds_count") >= 1
    assert value(after_there, "stompgate_bus_up") == 1
    assert value(after_there, "stompgate_outbox_entries") == 0
    wait_for(
        lambda: moved(here, before_here, "stompgate_bus_received_total", 4), "4 received by the other node"
    )
    assert moved(here, before_here, "stompgate_messages_delivered_total", 4)


def test_redis_outage_counts_errors_and_one_reconnect(node_factory, tmp_path) -> None:
    redis = start_redis(tmp_path)
    try:
        node = node_factory({"bus": {"type": "redis", "redis": {"url": redis.url}, "node_heartbeat_s": 0.2,
                                     "node_timeout_s": 1.0}})  # fmt: skip
        wait_for(lambda: value(scrape(node), "stompgate_bus_up") == 1, "redis up")
        assert value(scrape(node), "stompgate_redis_reconnects_total") == 0
        redis.stop()
        wait_for(lambda: value(scrape(node), "stompgate_bus_up") == 0, "redis seen down")
        redis.start()
        wait_for(lambda: value(scrape(node), "stompgate_bus_up") == 1, "redis seen up again", 20)
        after = scrape(node)
        # At least one: under load a connection the pool kept from before the outage can
        # fail once more after Redis is back, and that short second outage counts too.
        assert value(after, "stompgate_redis_reconnects_total") >= 1
        assert sum(v for (name, _), v in after.items() if name == "stompgate_redis_errors_total") >= 1
    finally:
        redis.stop()


def workers_of(node: NodeProcess) -> list[int]:
    pid = node.proc.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_two_workers_answer_for_the_whole_node(node_factory, bus_config_for) -> None:
    """Any worker's /metrics adds up both (prometheus-client's multiprocess mode); a worker
    that dies takes its gauges with it but not its counters."""
    node = node_factory(
        {"node_id": "mw", "server": {"workers": 2}, **bus_config_for("standalone", "directed")}
    )
    started = time.monotonic()
    info = {("mw-w0",), ("mw-w1",)}
    wait_for(
        lambda: (
            {(dict(labels)["node"],) for (name, labels) in scrape(node) if name == "stompgate_info"} == info
        ),
        "both workers' figures",
    )
    homes: dict[str, int] = {}
    wait_for(lambda: homes.update({node.health()["node"]: 0}) or len(homes) == 2, "both workers listening")
    clients = [await WsStomp.connect(node.ws_url, f"u{i}") for i in range(16)]
    sessions = {}
    wait_for(
        lambda: sessions.update({(h := node.health())["node"]: h["sessions"]}) or len(sessions) == 2,
        "each worker's own count",
    )
    assert sum(sessions.values()) == 16 and 0 not in sessions.values(), sessions  # spread over both
    for _ in range(10):  # new connections: the kernel picks a worker for each scrape
        wait_for(
            lambda: value(scrape(node), "stompgate_sessions", transport="websocket") == 16, "16 in any scrape"
        )
        assert value(scrape(node), "stompgate_sessions_opened_total") == 16

    await asyncio.sleep(max(0.0, STARTUP_S - (time.monotonic() - started)) + 0.2)
    victim = workers_of(node)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(workers_of(node)) == 2 and victim not in workers_of(node), "a new worker")
    for client in clients:
        try:
            await client.recv(0.2)
        except (Closed, TimeoutError):
            pass
    alive = sum(1 for client in clients if client.ws.close_code is None)
    assert 0 < alive < 16
    for _ in range(5):
        wait_for(lambda: value(scrape(node), "stompgate_sessions", transport="websocket") == alive, "gauges")
        assert value(scrape(node), "stompgate_sessions_opened_total") == 16  # the dead worker's count stays


async def test_a_slow_consumer_is_counted_as_one(node_factory) -> None:
    """A TCP subscriber that stops reading is cut off at server.max_outbound_buffer: one
    ``slow-consumer`` close, the only close of the test."""
    node = node_factory(
        {"server": {"max_outbound_buffer": 256 * 1024}, "stomp": {"rate_limit": {"bytes_per_s": 0}}}
    )
    stuck = stuck_subscriber(node.tcp_port, "/topic/flood")
    sender = await WsStomp.connect(node.ws_url, "sender")
    chunk = b"y" * 64 * 1024
    try:
        for _ in range(200):  # 12.5 MiB: far past the kernel's buffers and the 256 KiB limit
            await sender.publish("/topic/flood", chunk, receipt=False)
            if value(scrape(node), "stompgate_sessions_closed_total", reason="slow-consumer"):
                break
        closes = {
            dict(labels)["reason"]: v
            for (name, labels), v in scrape(node).items()
            if name == "stompgate_sessions_closed_total" and v
        }
        assert closes == {"slow-consumer": 1}
        log = node.log()
        assert "(stuck, 127.0.0.1:" in log and "tcp) closed: slow-consumer: slow consumer" in log
    finally:
        stuck.close()
