"""The admin page in headless Chromium on a 2-node cluster (a real Redis) with real STOMP clients.

An operator logs in on node A (a wrong password first), sees both nodes, their
charts and alice online, finds her session on node B and disconnects her from
the page; alice's client on B gets the ERROR. The screenshot it takes is
docs/images/admin.png when STOMPGATE_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

import pytest

from harness.adminclient import ADMIN_CONFIG, ADMIN_PASSWORD
from harness.clusterkit import wait_ready
from harness.nodes import ROOT, deep_merge
from harness.stompclient import Closed, WsStomp
from stompgate.stomp import Frame

from ..jsrun import run_scenario

pytestmark = [pytest.mark.js, pytest.mark.usefixtures("close_ws_clients")]

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def two(node_factory, bus_config_for):
    assert CHROMIUM.exists(), "chromium is needed: scripts/bootstrap.sh test installs it"
    nodes = node_factory.many(2, deep_merge(bus_config_for("standalone", "directed"), ADMIN_CONFIG))
    for node in nodes:
        wait_ready(node)
    return nodes


async def test_admin_page_finds_and_disconnects_a_user(two, tmp_path: Path) -> None:
    node, other = two
    alice = await WsStomp.connect(other.ws_url, "alice")
    await alice.subscribe("/user/queue/inbox", "inbox")
    await alice.subscribe("/topic/news", "news")
    carol = await WsStomp.connect(node.ws_url, "carol")
    await carol.subscribe("/topic/news", "news")
    bob = await WsStomp.connect(node.ws_url, "bob")

    async def traffic() -> None:  # messages for the charts to show
        n = 0
        while True:
            n += 1
            await bob.publish("/topic/news", f"news {n}", receipt=False)
            await asyncio.sleep(0.05 if n % 40 < 20 else 0.15)

    publisher = asyncio.create_task(traffic())
    shot = tmp_path / "admin.png"
    try:
        report = await asyncio.to_thread(
            run_scenario,
            "browser_admin.js",
            [node.http_url, ADMIN_PASSWORD, str(shot)],
            timeout=120,
            server_log=node.log,
            needs=("playwright-core",),
        )
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher

    assert report["wrongPassword"].startswith("missing or wrong admin credentials")
    assert report["dashboardAfterWrong"] is False and report["loginVisible"] is False
    assert report["users"] == ["alice", "bob", "carol"]
    assert sorted((row[0], row[3]) for row in report["nodes"]) == sorted([(node.id, "2"), (other.id, "1")])
    legend = " ".join(report["chartLegend"])
    assert report["charts"] == [1, 1, 1] and node.id in legend and other.id in legend
    assert report["summary"].startswith(f"alice: 1 session(s) ({other.id}: 1)")
    [row] = report["aliceSessions"]
    assert row[0] == other.id and row[2] == "websocket" and row[3] == "127.0.0.1"
    assert row[5] == "/queue/inbox, /topic/news"
    assert report["confirm"] == "Disconnect every session of alice?"
    assert report["status"].startswith("updated") or "1 session(s) closed" in report["status"]
    assert "alice" not in report["usersAfter"]
    assert report["pageErrors"] == [] and report["failedRequests"] == []

    # alice's own client: the ERROR, then the close (MESSAGEs of /topic/news may come first).
    while True:
        try:
            frame = await alice.recv()
        except Closed:
            pytest.fail("closed without an ERROR")
        if frame.command == "ERROR":
            break
    assert frame.headers["message"] == "disconnected by an administrator"
    await alice.expect_closed()
    # carol is still connected: after the news queued for her, the RECEIPT of a new frame.
    await carol.send(Frame("SUBSCRIBE", {"id": "2", "destination": "/topic/other", "receipt": "still-here"}))
    while (frame := await carol.recv()).command == "MESSAGE":
        pass
    assert (frame.command, frame.headers.get("receipt-id")) == ("RECEIPT", "still-here")
    assert shot.stat().st_size > 10_000
    if os.environ.get("STOMPGATE_UPDATE_SCREENSHOTS") == "1":
        (ROOT / "docs" / "images").mkdir(exist_ok=True)
        shutil.copy(shot, ROOT / "docs" / "images" / "admin.png")
