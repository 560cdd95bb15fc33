"""The chat example in headless Chromium, through nginx, on a 3-node cluster.

examples/cluster/run.sh starts Redis, three nodes and nginx on free loopback
ports; tests/js/browser_chat.js drives Debian's chromium with playwright-core:
alice and bob log in from two browser contexts, land on different nodes (bob
reconnects until nginx puts him elsewhere), and chat with the seed's page;
bob closes his page, alice writes, bob reopens and reads. The page is left as
it is; the transport is restricted from outside, by wrapping ``SockJS``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.nodes import ROOT, free_port

from ..jsrun import JS_DIR, run_scenario

pytestmark = pytest.mark.js

CHROMIUM = "/usr/bin/chromium"
API_KEY = "dev-api-key"  # examples/cluster's nodes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """examples/cluster/run.sh on free ports, stopped with SIGTERM at the end."""
    assert Path(CHROMIUM).exists(), "chromium is needed: scripts/bootstrap.sh test installs it"
    assert (JS_DIR / "node_modules" / "playwright-core").is_dir(), "run `npm install` in tests/js"
    run_dir = tmp_path_factory.mktemp("cluster")
    ready = run_dir / "ready.json"
    env = dict(
        os.environ,
        NGINX_PORT=str(free_port()),
        NODE_PORTS=" ".join(str(free_port()) for _ in range(3)),
        REDIS_PORT=str(free_port()),
        RUN_DIR=str(run_dir / "run"),
        CLUSTER_READY_FILE=str(ready),
    )
    log = open(run_dir / "run.log", "wb")
    proc = subprocess.Popen(
        ["bash", str(ROOT / "examples" / "cluster" / "run.sh")], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the cluster did not start:\n{(run_dir / 'run.log').read_text()}")
            time.sleep(0.1)
        yield json.loads(ready.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.close()
    assert code in (0, 143), f"run.sh exited with {code}:\n{(run_dir / 'run.log').read_text()}"


def browse(scenario: str, base: str, **options: Any) -> dict[str, Any]:
    return run_scenario(
        "browser_chat.js",
        [scenario, base, json.dumps({"apiKey": API_KEY, **options})],
        timeout=150,  # the scenario stops itself after 90 s
        needs=("playwright-core",),
    )


def chat_lines(log: list[str], sender_prefix: str) -> list[str]:
    return [line for line in log if line.startswith(sender_prefix)]


def check_distinct_nodes(report: dict[str, Any]) -> None:
    nodes = report["nodes"]
    assert len(nodes["alice"]) == 1 and len(nodes["bob"]) == 1, nodes
    assert nodes["alice"] != nodes["bob"], f"alice and bob should be on different nodes: {nodes}"


# The transports the issue names, through the full story.
@pytest.mark.parametrize("transport", ["websocket", "xhr-streaming", "xhr-polling"])
def test_seed_page_chats_across_nodes_and_keeps_messages_for_a_closed_page(
    cluster: dict[str, Any], transport: str
) -> None:
    report = browse("chat", cluster["nginx"], transport=transport, distinctNodes=True)
    assert report["transports"] == {"alice": transport, "bob": transport}
    assert report["reopenedTransport"] == transport
    check_distinct_nodes(report)
    # The seed's Chinese placeholders, and what they mean for readers of English.
    assert report["placeholders"] == {
        "receiver": "接收者姓名 · receiver's user name",
        "message": "消息内容 · message text",
    }
    alice = next(line.split(" say: ")[0] for line in report["bobLog"] if " say: " in line)
    assert chat_lines(report["bobLog"], alice) == [f"{alice} say: hello bob"] + [
        f"{alice} say: burst {i}" for i in range(1, 6)
    ]
    bob = alice.replace("alice-", "bob-")
    assert chat_lines(report["aliceLog"], bob) == [f"{bob} say: hello alice"]
    # Stored while bob had no page, shown once when he came back, in order.
    assert chat_lines(report["reopenedLog"], alice) == [
        f"{alice} say: while you were away 1",
        f"{alice} say: while you were away 2",
    ]
    assert report["errors"] == []


# Every other transport sockjs-client 1.1.4 offers Chromium.
@pytest.mark.parametrize(
    "transport",
    [
        "eventsource",
        "htmlfile",
        "jsonp-polling",
        "iframe-eventsource",
        "iframe-htmlfile",
        "iframe-xhr-polling",
    ],
)
def test_seed_page_exchanges_messages_over_every_other_transport(
    cluster: dict[str, Any], transport: str
) -> None:
    report = browse("exchange", cluster["nginx"], transport=transport, distinctNodes=True)
    assert report["transports"] == {"alice": transport, "bob": transport}
    check_distinct_nodes(report)
    assert any(line.endswith(" say: hello bob") for line in report["bobLog"]), report["bobLog"]
    assert any(line.endswith(" say: hello alice") for line in report["aliceLog"]), report["aliceLog"]
    # sockjs-client deletes a JSONP callback when it closes a session (bob reconnects
    # to reach another node); a poll answer already on its way then finds none.
    errors = [e for e in report["errors"] if not re.fullmatch(r"pageerror: _jp\.\w+ is not a function", e)]
    assert errors == []


@pytest.mark.parametrize("transport", ["websocket", "xhr-streaming"])
def test_stompjs_variant_chats_across_nodes(cluster: dict[str, Any], transport: str) -> None:
    report = browse("chat", cluster["nginx"], transport=transport, distinctNodes=True, page="stompjs.html")
    assert report["transports"] == {"alice": transport, "bob": transport}
    check_distinct_nodes(report)
    alice = next(line.split(" say: ")[0] for line in report["bobLog"] if " say: " in line)
    assert chat_lines(report["reopenedLog"], alice) == [
        f"{alice} say: while you were away 1",
        f"{alice} say: while you were away 2",
    ]
    assert report["errors"] == []


def test_two_tabs_of_one_browser_are_two_users(cluster: dict[str, Any]) -> None:
    """make run's promise: two tabs of one browser chat (the login is per tab)."""
    report = browse("exchange", cluster["nginx"], transport="websocket", sameBrowser=True)
    alice = next(line.split(" say: ")[0] for line in report["bobLog"] if " say: " in line)
    assert alice.startswith("alice-") and report["bobLog"].count(f"{alice} say: hello bob") == 1
    bob = alice.replace("alice-", "bob-")
    assert report["aliceLog"].count(f"{bob} say: hello alice") == 1
    assert report["errors"] == []


def test_the_greeting_example_and_a_page_from_another_origin(node_factory, tmp_path: Path) -> None:
    """Spring's getting-started page, answered by a Python handler, in Chromium; a page
    of another origin cannot open a session with the node (the node refuses its
    handshake, as Spring's default same-origin check does)."""
    assert Path(CHROMIUM).exists(), "chromium is needed: scripts/bootstrap.sh test installs it"
    greeting = ROOT / "examples" / "greeting"
    node = node_factory(
        {
            "server": {
                "websocket_paths": ["/gs-guide-websocket"],
                "sockjs": [{"path": "/chat-websocket"}],
                "static": [
                    {"path": "/greeting", "dir": str(greeting / "public")},
                    {"path": "/chat", "dir": str(ROOT / "examples" / "chat" / "public")},
                ],
                "extensions": [str(greeting / "handlers.py")],
            },
            "destinations": {"application_prefixes": ["/app"]},
            "auth": {"mode": "dev", "cookie": "chat_user"},
        }
    )
    shot = tmp_path / "greeting.png"  # what the page showed, kept with the test's files
    report = run_scenario(
        "browser_greeting.js",
        [node.http_url, f"http://localhost:{node.port}", str(shot)],
        timeout=90,
        server_log=node.log,
        needs=("playwright-core",),
    )
    assert report["greetings"] == ["Hello, Ada!", "Hello, <b>Grace</b>!"], report
    assert report["pageErrors"] == [], report
    assert report["foreign"] == "error", report  # the handshake failed: no byte of STOMP came back
    assert report["foreignSockjs"].startswith("closed"), report  # never "open", on any transport
    assert f"origin http://localhost:{node.port} is not allowed" in node.log()
