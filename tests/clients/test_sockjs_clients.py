"""Real sockjs-client under Node against our SockJS layer and stompgate's SockJS endpoint.

sockjs-client 1.6.x and 1.1.4 (the version of Spring's guides and of the seed),
each limited to one transport at a time (websocket, xhr-streaming, xhr-polling,
eventsource), run by tests/js/sockjs_scenarios.js:

* against tests/sockjs_echo_server.py (started once for the module): echoes of
  awkward strings, and a session the server closes with 3000 "Go away!";
* against stompgate nodes with a SockJS endpoint at /chat-websocket: stompjs 2.3.3
  (``Stomp.over(sock)``) and @stomp/stompjs 7 (``webSocketFactory``) chatting
  through user destinations, messages stored for a user who is away, an idle
  connection kept alive by STOMP heart-beats or by SockJS ``h`` frames, and one
  large frame of emoji on every transport.

A scenario prints what the clients observed as one JSON line (ASCII only); the
assertions are here. Every test checks that the client really used the transport
it was limited to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from harness.nodes import API_KEY, NodeProcess

from ..jsrun import run_scenario
from ..sockjsecho import EchoServer

pytestmark = pytest.mark.js

TRANSPORTS = ["websocket", "xhr-streaming", "xhr-polling", "eventsource"]
LIBRARIES = ["1.6", "1.1.4"]
SOCKJS_PATH = "/chat-websocket"
# The base config serves a plain WebSocket at /chat-websocket too; a path is one or the other.
SOCKJS_NODE = {"server": {"websocket_paths": ["/ws"], "sockjs": [{"path": SOCKJS_PATH}]}}
# STOMP heart-beats every second; SockJS 'h' frames every second while STOMP's are off.
HEARTBEAT_NODE = {
    "server": {"websocket_paths": ["/ws"], "sockjs": [{"path": SOCKJS_PATH, "heartbeat_s": 1}]},
    "stomp": {"heartbeat": {"send_ms": 1000, "receive_ms": 1000}},
}

by_transport = pytest.mark.parametrize("transport", TRANSPORTS)
by_library = pytest.mark.parametrize("library", LIBRARIES)


@pytest.fixture
def echo_server(sockjs_echo: EchoServer) -> EchoServer:
    return sockjs_echo

@pytest.fixture
def sockjs_node(node_factory: Callable[..., NodeProcess]) -> NodeProcess:
    return node_factory(SOCKJS_NODE)


def endpoint(node: NodeProcess) -> str:
    return f"{node.http_url}{SOCKJS_PATH}"


def run_js(scenario: str, base_url: str, server_log: Callable[[], str], **options: Any) -> dict[str, Any]:
    """Run one scenario against ``base_url``; return its report, or fail with everything it printed."""
    return run_scenario(
        "sockjs_scenarios.js",
        [scenario, base_url, json.dumps(options)],
        timeout=40,  # the scenario stops itself after 20 s
        server_log=server_log,
        needs=("sockjs-client", "sockjs-client-114", "stompjs", "@stomp/stompjs"),
    )


def bodies(messages: list[dict[str, Any]]) -> list[str]:
    return [m["body"] for m in messages]


def check_library(report: dict[str, Any], library: str) -> None:
    """The scenario loaded the sockjs-client it was asked for."""
    assert report["version"] == library or report["version"].startswith(library + "."), report["version"]


def check_socket(socket: dict[str, Any], transport: str, library: str) -> None:
    """One SockJS socket: the transport it really used, one open frame, a clean client-side close."""
    assert socket["requested"] == transport and socket["library"] == library
    used = socket["transport"]
    assert used == transport, f"asked for {transport}, sockjs-client used {used}"
    assert socket["frameCounts"].get("o") == 1, socket
    assert "c" not in socket["frameCounts"], f"the server closed the session: {socket}"
    assert (socket["closeCode"], socket["closeReason"]) == (1000, "Normal closure"), socket


# ---------------------------------------------------------- echo server


def expected_echo_messages() -> list[str]:
    """What sockjs_scenarios.js echoMessages() sends, rebuilt here so a wrong list cannot pass."""
    pattern = '0123456789 abcdé€😀 "x" \\ \n' * 800
    # JavaScript's .slice(0, 20 * 1024) counts UTF-16 code units
    long = pattern.encode("utf-16-le")[: 2 * 20 * 1024].decode("utf-16-le", "surrogatepass")
    return [
        "hello",
        "é",
        "\u2028",
        "emoji 😀🎉 and a flag 🇫🇷",
        "quotes \" ' backslash \\ slash / newline \n cr \r tab \t end",
        '["not", "a", "frame"]',
        "controls \u0001\u001f\u007f\u0085 bom \ufeff rtl \u200f \u2029 ok",
        long,
        "after the long one",
        "last",
    ]


@by_library
@by_transport
def test_echo_round_trips_awkward_strings(echo_server: EchoServer, transport: str, library: str) -> None:
    """Unicode, U+2028, emoji, quotes/backslashes/newlines and 20 KB (over the 4096-byte
    streaming limit) come back exactly, in order."""
    r = run_js("echo", echo_server.url, echo_server.log, transport=transport, library=library)
    check_library(r, library)
    sent = r["sent"]
    assert sent == expected_echo_messages()
    assert r["received"] == sent, "echoes differ from what was sent (or arrived out of order)"
    check_socket(r, transport, library)
    assert r["frameCounts"].get("a", 0) >= 1
    if transport == "xhr-streaming":
        # a response ends after 4096 bytes: the 20 KB echo needs a second streaming request,
        # each of which starts with the 2 KiB prelude
        assert r["frameCounts"].get("prelude", 0) >= 2, r["frameCounts"]


@by_library
@by_transport
def test_server_close_reaches_onclose(echo_server: EchoServer, transport: str, library: str) -> None:
    """/close opens the session and closes it at once: onopen, then onclose(3000, "Go away!")."""
    r = run_js("close", echo_server.url, echo_server.log, transport=transport, library=library)
    check_library(r, library)
    assert r["opened"] is True
    assert r["transport"] == transport
    assert r["received"] == []
    assert (r["closeCode"], r["closeReason"]) == (3000, "Go away!")
    assert r["frameCounts"].get("c") == 1, r["frameCounts"]  # the server's close frame, not a lost connection


# ---------------------------------------------------------- stompgate


@by_library
@by_transport
def test_stomp_chat_over_sockjs(sockjs_node: NodeProcess, transport: str, library: str) -> None:
    """alice (stompjs 2.3.3) and bob (@stomp/stompjs 7) exchange 20 messages each way
    through /user/{name}/queue/chat."""
    r = run_js("stomp-chat", endpoint(sockjs_node), sockjs_node.log, transport=transport, library=library)
    check_library(r, library)
    tag = r["tag"]
    assert r["kinds"] == {"alice": "legacy", "bob": "modern"}
    assert r["versions"] == {"alice": "1.1", "bob": "1.2"}
    assert r["users"] == {"alice": f"alice-{tag}", "bob": f"bob-{tag}"}
    sent = [f"#{i} héllo 😀 from alice\nline 2" for i in range(1, 21)]
    assert bodies(r["bob"]) == sent
    assert bodies(r["alice"]) == [f"re: {b}" for b in sent]
    for who in ("alice", "bob"):
        for m in r[who]:
            assert m["destination"] == "/user/queue/chat", m
            assert m["subscription"] == r["subscriptions"][who], m
            assert m["content-type"] == "text/plain;charset=UTF-8", m
        assert r["errors"][who] == []
        assert r["closeCodes"][who] == 1000
        check_socket(r["sockets"][who], transport, library)


@pytest.mark.parametrize(
    "transport, client, library",
    [
        ("websocket", "legacy", "1.1.4"),
        ("xhr-streaming", "modern", "1.6"),
        ("xhr-polling", "legacy", "1.6"),
        ("eventsource", "modern", "1.1.4"),
    ],
)
def test_messages_for_an_absent_user_wait_for_him(
    sockjs_node: NodeProcess, transport: str, client: str, library: str
) -> None:
    """bob subscribes and disconnects; alice's 3 messages are stored and reach his next
    session, before a live one."""
    options = {"transport": transport, "library": library, "client": client, "apiKey": API_KEY}
    r = run_js("stomp-offline", endpoint(sockjs_node), sockjs_node.log, **options)
    assert r["kinds"]["bob"] == client and r["kinds"]["alice"] != client
    assert r["wasOnline"] is True
    assert r["firstClose"] == 1000
    # bob's DISCONNECT ends his session at once, not after the SockJS disconnect delay (5 s)
    assert r["offlineAfterMs"] < 3000, r["offlineAfterMs"]
    assert bodies(r["received"]) == ["while away #1 ✉", "while away #2 ✉", "while away #3 ✉", "live #4"]
    for m in r["received"]:
        assert m["destination"] == "/user/queue/chat", m
        assert m["subscription"] == r["subscription"], m
    assert r["errors"] == {"bob1": [], "bob2": [], "alice": []}
    for socket in r["sockets"].values():
        check_socket(socket, transport, library)


@by_transport
def test_idle_connections_stay_up_on_stomp_or_sockjs_heartbeats(
    node_factory: Callable[..., NodeProcess], transport: str
) -> None:
    """4 s idle with STOMP heart-beats at 1 s (both libraries), and with none (SockJS 'h'
    frames every second).

    Once STOMP heart-beats from the server are negotiated, SockJS's own 'h'
    frames stop; without them, 'h' frames keep the connection alive.
    """
    node = node_factory(HEARTBEAT_NODE)
    options = {"transport": transport, "library": "1.6", "heartbeat": 1000, "idleMs": 4000}
    r = run_js("stomp-heartbeat", endpoint(node), node.log, **options)
    clients = r["clients"]
    for name in ("legacy", "modern", "quiet"):
        c = clients[name]
        assert c["connectedHeartbeat"] == "1000,1000", c
        assert c["openAfterIdle"] is True, f"{name} lost its connection while idle: {c}"
        assert c["heartbeatLost"] == [], c
        assert c["roundTrip"] == ["still here"], c
        assert c["errors"] == [] and c["closes"] == [], c
        check_socket(c["socket"], transport, "1.6")
    for name in ("legacy", "modern"):
        c = clients[name]
        assert c["clientHeartbeat"] == 1000
        # the server writes an EOL at least every second; the client one every second
        assert c["pongsWhileIdle"] >= 3, c
        assert c["pingsWhileIdle"] >= 2, c
        assert c["hFramesWhileIdle"] == 0, f"SockJS 'h' frames still sent with STOMP heart-beats on: {c}"
    quiet = clients["quiet"]
    assert quiet["clientHeartbeat"] == 0 and quiet["kind"] == "modern"
    assert quiet["pongsWhileIdle"] == 0 and quiet["pingsWhileIdle"] == 0, quiet
    assert quiet["hFramesWhileIdle"] >= 2, f"no SockJS 'h' frames without STOMP heart-beats: {quiet}"


# sockjs-client JSON-escapes astral characters (\uXXXX\uXXXX: 12 bytes for 4 of
# UTF-8), so a 600 KB frame is a 1.8 MB xhr_send POST: the SockJS endpoint takes
# messages up to 6 x stomp.max_frame_size, past the application's client_max_size.
@pytest.mark.parametrize("transport", ["websocket", "xhr-streaming", "xhr-polling", "eventsource"])
def test_a_large_frame_within_max_frame_size_gets_through(sockjs_node: NodeProcess, transport: str) -> None:
    """A 600 KB SEND (150000 emoji; stomp.max_frame_size is 1 MiB) reaches its subscriber
    on every transport."""
    r = run_js("stomp-large", endpoint(sockjs_node), sockjs_node.log, transport=transport, library="1.6")
    assert r["utf8Bytes"] == 600_000
    assert r["sockets"]["sender"]["transport"] == transport
    assert r["senderOpen"] is True, f"the sender's SockJS socket closed: {r['sockets']['sender']}"
    assert r["errors"] == {"sender": [], "receiver": []}
    assert r["delivered"] == 1 and r["intact"] is True, r
    for socket in r["sockets"].values():
        check_socket(socket, transport, "1.6")
