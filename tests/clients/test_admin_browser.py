"""The admin page in headless Chromium against a real node with real STOMP clients.

An operator logs in (a wrong password first), sees alice online and the
charts, finds her session and disconnects her; alice's client gets the ERROR.
The screenshot it takes is docs/images/admin.png when STOMPGATE_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

import pytest

from harness.adminclient import ADMIN_CONFIG, ADMIN_PASSWORD
from harness.nodes import ROOT
from harness.stompclient import Closed, WsStomp
from stompgate.stomp import Frame

from ..jsrun import run_scenario

pytestmark = [pytest.mark.js, pytest.mark.usefixtures("close_ws_clients")]

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def node(node_factory):
    assert CHROMIUM.exists(), "chromium is needed: scripts/bootstrap.sh test installs it"
    return node_factory(ADMIN_CONFIG)


async def test_admin_page_finds_and_disconnects_a_user(node, tmp_path: Path) -> None:
    alice = await WsStomp.connect(node.ws_url, "alice")
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
    assert report["nodes"][0][0] == node.id and report["nodes"][0][3] == "3"
    assert report["charts"] == [1, 1, 1] and node.id in " ".join(report["chartLegend"])
    assert report["summary"].startswith(f"alice: 1 session(s) ({node.id}: 1)")
    [row] = report["aliceSessions"]
    assert row[0] == node.id and row[2] == "websocket" and row[3] == "127.0.0.1"
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
