"""Real third-party JavaScript STOMP clients against real stompgate nodes.

The clients are @stomp/stompjs 7 ("modern", STOMP 1.2) and stompjs 2.3.3
("legacy", STOMP 1.1, the library of Spring's guides and demos), run under Node
by tests/js/scenarios.js. A scenario prints what the clients observed as one
JSON line; the assertions are here. tests/js/lib.js wraps both libraries (and a
raw `ws` client for malformed input) behind one small interface.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.nodes import API_KEY, NodeProcess

from ..jsrun import run_scenario

pytestmark = pytest.mark.js

HEARTBEAT_NODE = {"stomp": {"heartbeat": {"send_ms": 500, "receive_ms": 500}}}
ACK_NODE = {"stomp": {"max_unacked": 3}}
BOTH_CLIENTS = pytest.mark.parametrize("client", ["modern", "legacy"])


def run_js(scenario: str, node: NodeProcess, **options: Any) -> dict[str, Any]:
    """Run one scenario against ``node``; return its report, or fail with everything it printed."""
    return run_scenario(
        "scenarios.js",
        [scenario, node.ws_url, json.dumps(options)],
        timeout=40,  # the scenario stops itself after 20 s
        server_log=node.log,
        needs=("@stomp/stompjs", "stompjs"),
    )


def bodies(messages: list[dict[str, Any]]) -> list[str]:
    return [m["body"] for m in messages]


# ----------------------------------------------------------------- connecting


@pytest.mark.parametrize(
    "client, version, protocols",
    [
        ("modern", "1.2", {"v12.stomp"}),  # offers v12.stomp, v11.stomp, v10.stomp
        ("legacy-over", "1.1", {""}),  # Stomp.over(new WebSocket(url)): no sub-protocol, like SockJS
        ("legacy-client", "1.1", {"v11.stomp"}),  # Stomp.client(url) offers v10.stomp, v11.stomp
        ("legacy-overws", "1.1", None),  # Stomp.overWS(url), stompjs's own Node transport
    ],
)
def test_connected_frame(node: NodeProcess, client: str, version: str, protocols: set[str] | None) -> None:
    """Each way of connecting gets its STOMP version and the CONNECTED headers apps read."""
    r = run_js("handshake", node, client=client)
    headers = r["connected"]
    assert headers["version"] == version
    assert headers["user-name"] == r["login"]
    assert headers["server"].startswith("stompgate/")
    assert re.fullmatch(r"[0-9a-f]{16}", headers["session"]), headers
    assert headers["heart-beat"] == "10000,10000"
    if protocols is not None:
        assert r["protocol"] in protocols
    assert r["roundTrip"] == ["ping"]


# ---------------------------------------------------------------- destinations


@BOTH_CLIENTS
def test_user_destination_reaches_every_session_of_that_user_only(node: NodeProcess, client: str) -> None:
    """SEND /user/bob/queue/chat (Spring's convertAndSendToUser) reaches each of bob's tabs as
    /user/queue/chat."""
    r = run_js("user-destination", node, client=client)
    assert r["kinds"]["bob1"] == client and r["kinds"]["bob2"] != client
    message_ids = []
    for tab in ("bob1", "bob2"):
        messages = r[tab]
        assert bodies(messages) == ["hello bob", "end"]
        headers = messages[0]["headers"]
        assert headers["destination"] == "/user/queue/chat"
        assert headers["subscription"] == r["subscriptions"][tab]
        assert headers["content-length"] == "9"
        assert headers["content-type"] == "text/plain"
        assert headers["x-trace"] == "42"
        assert headers["message-id"]
        message_ids.append(headers["message-id"])
    assert message_ids[0] != message_ids[1]
    # alice is subscribed to /user/queue/chat too, but only her own notes reach her
    assert bodies(r["alice"]) == ["note to self", "second note"]
    assert {m["headers"]["destination"] for m in r["alice"]} == {"/user/queue/chat"}


@BOTH_CLIENTS
def test_topic_fanout_with_ant_wildcards(node: NodeProcess, client: str) -> None:
    """/topic publish-subscribe: exact subscribers, /topic/chat.* and /topic/** get what they match,
    in order."""
    r = run_js("topics", node, client=client)["received"]
    general, random_, news, football = (
        "/topic/chat.general",
        "/topic/chat.random",
        "/topic/news",
        "/topic/sports/football",
    )
    assert r["exact"] == [[general, "m1"], [general, "end"]]
    assert r["exact2"] == [[general, "m1"], [general, "end"]]
    assert r["star"] == [[general, "m1"], [random_, "m2"], [general, "end"]]
    assert r["globstar"] == [
        [general, "m1"],
        [random_, "m2"],
        [news, "m3"],
        [football, "m4"],
        [general, "end"],
        [news, "end"],
    ]
    assert r["news"] == [[news, "m3"], [news, "end"]]


@BOTH_CLIENTS
def test_order_of_200_messages_from_one_sender(node: NodeProcess, client: str) -> None:
    """A burst of 200 SENDs reaches subscribers of both libraries complete, once each, in order."""
    r = run_js("order", node, client=client)
    for who in ("same", "other"):
        assert r[who]["bodies"] == [f"msg-{i}" for i in range(200)]
        assert r[who]["seq"] == [str(i) for i in range(200)]
        assert r[who]["distinctMessageIds"] == 200


# -------------------------------------------------------------------- receipts


@BOTH_CLIENTS
def test_receipts(node: NodeProcess, client: str) -> None:
    """SUBSCRIBE and SEND with a receipt header get a RECEIPT naming it; a refused frame's ERROR
    names it too."""
    r = run_js("receipts", node, client=client)
    tag = r["tag"]
    assert r["subscribeReceipt"] == {
        "command": "RECEIPT",
        "headers": {"receipt-id": f"subscribe-{tag}"},
        "body": "",
    }
    assert r["messagesAtSubscribeReceipt"] == 0
    assert r["sendReceipt"]["headers"] == {"receipt-id": f"send-{tag}"}
    assert r["receiptOrder"] == [f"subscribe-{tag}", f"send-{tag}"]
    assert r["message"]["body"] == "with receipt"
    assert r["message"]["headers"]["destination"] == f"/topic/receipts.{tag}"
    error = r["error"]
    assert error["command"] == "ERROR"
    assert error["headers"]["receipt-id"] == f"bad-{tag}"
    assert "/app/not-a-broker-destination" in error["headers"]["message"]
    if client == "modern":
        # Client.deactivate() waits for the RECEIPT of its DISCONNECT
        assert re.fullmatch(r"close-\d+", r["disconnectReceipt"]["receipt-id"]), r["disconnectReceipt"]


# ------------------------------------------------------------------ heart-beats


def test_heartbeats_keep_idle_clients_connected(node_factory: Any) -> None:
    """With 500 ms heart-beats both libraries get server EOLs and stay connected through 3 s of silence."""
    r = run_js("heartbeat", node_factory(HEARTBEAT_NODE))
    for lib in ("modern", "legacy"):
        facts = r[lib]
        assert facts["heartBeatHeader"] == "500,500"
        # both libraries drop the connection after 2 x 500 ms without server activity
        assert facts["heartbeatLost"] == [] and facts["closes"] == [] and facts["open"], (lib, facts)
        assert facts["errors"] == []
        assert facts["pongs"] >= 3, facts  # ~5 expected in 3 s
        assert facts["rawHeartbeats"] == facts["pongs"]
        assert facts["pings"] >= 3, facts
    assert r["afterIdle"] == ["still here"]


def test_server_heartbeats_arrive_every_interval(node_factory: Any) -> None:
    """A client that wants heart-beats every 500 ms (heart-beat:0,500) never waits much longer for
    server data.

    STOMP: the server must send something at least every max(500, 500) ms; the
    libraries give up after 2 x 500 ms, so a gap near 1 s loses the connection.
    """
    r = run_js("heartbeat-gaps", node_factory(HEARTBEAT_NODE))
    assert r["connected"]["heart-beat"] == "500,500"
    assert r["closeCode"] is None
    assert len(r["gapsMs"]) >= 3, r["gapsMs"]
    # the first gap runs from CONNECTED to the first EOL
    assert max(r["gapsMs"]) <= 500 + 150, r["gapsMs"]


def test_client_that_stops_heartbeating_is_disconnected(node_factory: Any) -> None:
    """A client that promised heart-beats and goes silent is closed with ERROR and 1008, not while
    it pings."""
    r = run_js("heartbeat-dead", node_factory(HEARTBEAT_NODE))
    for name in ("steady", "late"):
        client = r[name]
        assert client["connected"]["heart-beat"] == "500,500"
        assert client["closedWhilePinging"] is False
        assert client["heartbeatsReceived"] >= 2, client
        [error] = client["frames"]
        assert error["command"] == "ERROR"
        assert "heart-beat" in error["headers"]["message"]
        assert client["closeCode"] == 1008
        # not before one interval of silence, nor after two of the server's 750 ms read checks (+ slack)
        assert 500 <= client["silentMs"] <= 2000, client


def test_silent_client_is_closed_after_interval_times_read_margin(node_factory: Any) -> None:
    """heartbeat.read_margin (1.5) promises a close after 500 ms x 1.5 of silence, wherever the
    silence starts.

    The 'late' client stops just after the server's first periodic read check,
    the worst case for a check that only looks at a flag.
    """
    r = run_js("heartbeat-dead", node_factory(HEARTBEAT_NODE))
    silences = {name: r[name]["silentMs"] for name in ("steady", "late")}
    assert {r[name]["closeCode"] for name in silences} == {1008}
    # 750 ms, plus 200 ms for timers and the loopback. 'steady' stops 250 ms
    # before one of the server's read checks (every 750 ms), 'late' 50 ms after
    # one: a check that only asks "anything since the last check?" closes them
    # after ~1000 and ~1450 ms of silence.
    assert all(ms <= 750 + 200 for ms in silences.values()), silences


# ----------------------------------------------------------------------- acks


@BOTH_CLIENTS
def test_client_ack_is_cumulative(node_factory: Any, client: str) -> None:
    """ack:client -- ACKing the 3rd of 3 settles all three (the node allows only 3 unacked, so c4..c6 fit)."""
    r = run_js("ack-client", node_factory(ACK_NODE), client=client)
    tag = r["tag"]
    assert r["errors"] == []
    assert r["bodies"] == ["c1", "c2", "c3", "c4", "c5", "c6"]
    assert r["ackReceipt"]["headers"] == {"receipt-id": f"ack-c3-{tag}"}
    assert r["secondAckReceipt"]["headers"] == {"receipt-id": f"ack-c6-{tag}"}
    if client == "modern":  # STOMP 1.2 MESSAGEs of client-ack subscriptions must carry an ack header
        assert all(r["ackHeaders"]) and len(set(r["ackHeaders"])) == 6, r["ackHeaders"]


@BOTH_CLIENTS
def test_client_individual_ack_and_nack(node_factory: Any, client: str) -> None:
    """ack:client-individual -- each ACK/NACK settles one message: after NACK i1, ACK i3, ACK i5,
    i2 and i4 stay pending."""
    r = run_js("ack-individual", node_factory(ACK_NODE), client=client)
    tag = r["tag"]
    assert r["receipts"] == [f"nack-i1-{tag}", f"ack-i3-{tag}", f"ack-i5-{tag}"]
    assert r["errorsBeforeLimit"] == []
    # i2, i4, i6 pending = the limit of 3: i7 is refused
    assert r["bodies"] == ["i1", "i2", "i3", "i4", "i5", "i6"]
    [error] = r["errors"]
    assert error["headers"]["message"] == "more than 3 unacknowledged messages"
    assert r["closeCode"] == 1002


@BOTH_CLIENTS
def test_ack_of_never_issued_message_is_an_error(node: NodeProcess, client: str) -> None:
    """ACK/NACK of an id the server never issued gets ERROR (with the receipt-id) and a 1002 close."""
    r = run_js("ack-unknown", node, client=client)["results"]
    for name, command in (("made-up", "ACK"), ("future", "NACK")):
        result = r[name]
        [error] = result["errors"]
        assert error["headers"]["message"] == f"{command} for unknown message '{result['messageId']}'"
        assert error["headers"]["receipt-id"] == f"bad-{name}"
        assert result["closeCode"] == 1002


# ---------------------------------------------------------------- transactions


@BOTH_CLIENTS
def test_transaction_commit_and_abort(node: NodeProcess, client: str) -> None:
    """Transactional SENDs are held until COMMIT, then delivered in order; ABORT drops them."""
    r = run_js("transactions", node, client=client)
    assert r["beforeCommit"] == ["outside"]
    assert r["all"] == ["outside", "tx-1", "tx-2", "after-commit", "after-abort"]
    assert r["errors"] == []


# --------------------------------------------------------------- frame content


@pytest.mark.parametrize("sender, chunk", [("legacy", 16 * 1024), ("modern-split", 8 * 1024)])
def test_frame_split_over_websocket_messages_arrives_whole(
    node: NodeProcess, sender: str, chunk: int
) -> None:
    """stompjs 2.x cuts frames into 16 KiB WebSocket messages; a 100 KB body must arrive whole and
    byte-exact."""
    r = run_js("large-split", node, sender=sender)
    assert r["errors"] == []
    assert r["maxChunk"] == chunk
    assert r["sentMessages"] >= 100_000 // chunk
    assert set(r["sentPieceLengths"][:-1]) == {chunk}
    assert r["bodyBytes"] > r["bodyChars"] >= 100_000  # multi-byte UTF-8 text
    assert r["receivedBytes"] == r["bodyBytes"]
    assert r["contentLength"] == str(r["bodyBytes"])
    assert r["contentType"] == "text/plain;charset=UTF-8"
    assert r["receivedSha256"] == r["sentSha256"]


def test_binary_body_travels_as_binary_websocket_message(node: NodeProcess) -> None:
    """@stomp/stompjs binaryBody with application/octet-stream arrives in a binary WebSocket message,
    byte-exact."""
    r = run_js("binary", node)
    assert r["sentAs"] == ["binary"]
    assert r["receivedAs"] == ["binary", "text"]
    binary, text = r["messages"]
    assert binary["bytes"] == list(range(256))
    assert binary["isBinaryBody"] is True
    assert binary["headers"]["content-type"] == "application/octet-stream"
    assert binary["headers"]["content-length"] == "256"
    assert text["bytes"] == list(b"plain text")
    assert text["headers"]["content-type"] == "text/plain"


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "case, reason",
    [
        ("garbage", "HELLO"),  # "HELLO\n\n\0" instead of CONNECT
        ("bad-header", "header line"),  # a header line without ':'
        ("oversized", "larger than 1048576"),  # 1 MiB + 1 KiB body, one WebSocket message
        ("oversized-2mib", "larger than 1048576"),  # 2 MiB body, one WebSocket message
        ("oversized-split", "larger than 1048576"),  # 2 MiB body in 16 KiB WebSocket messages
    ],
)
def test_malformed_input_gets_error_then_1002_and_others_carry_on(
    node: NodeProcess, case: str, reason: str
) -> None:
    """A broken client gets ERROR (with a message header) and close 1002; a connected session is
    unaffected."""
    r = run_js("malformed", node, case=case)
    assert r["bystander"] == {"bodies": ["before", "after"], "errors": [], "closes": []}
    assert [f["command"] for f in r["frames"]] == ["ERROR"], r
    assert reason in r["frames"][0]["headers"]["message"]
    assert r["closeCode"] == 1002


# -------------------------------------------------------------------- HTTP API


def test_http_send_to_user_reaches_subscribers(node: NodeProcess) -> None:
    """POST /api/send-to-user reaches every session of the user, with the content-type of the payload."""
    r = run_js("http-api", node, httpUrl=node.http_url, apiKey=API_KEY)
    assert [resp["status"] for resp in r["responses"]] == [200, 401, 200]
    assert r["responses"][0]["json"] == {"delivered": 2}
    assert r["responses"][2]["json"] == {"delivered": 2}
    for lib in ("modern", "legacy"):
        messages = r[lib]
        assert bodies(messages) == ['{"text":"hi"}', "plain hello"]
        assert [m["headers"]["content-type"] for m in messages] == [
            "application/json",
            "text/plain;charset=UTF-8",
        ]
        assert {m["headers"]["destination"] for m in messages} == {"/user/queue/notify"}


HANDLERS = {
    "destinations": {"application_prefixes": ["/app"]},
    "server": {"extensions": [str(Path(__file__).resolve().parent.parent / "app_handlers.py")]},
}


@BOTH_CLIENTS
def test_application_destinations_answered_by_handlers(node_factory: Any, client: str) -> None:
    """@stomp/stompjs and stompjs 2.3.3 against Python handlers: a reply where Spring sends it,
    a handler's error on /user/queue/errors, and the one reply of a @SubscribeMapping."""
    r = run_js("handlers", node_factory(HANDLERS), client=client)
    (greeting,) = r["greeting"]
    assert json.loads(greeting["body"]) == {"content": "Hello, Ada!"}
    assert greeting["headers"]["destination"] == "/topic/hello"
    assert greeting["headers"]["server-sent"] == "true" and "sender" not in greeting["headers"]
    (error,) = r["errors"]
    assert json.loads(error["body"]) == {"error": "no such room", "destination": "/app/fail"}
    (rooms,) = r["roomsAtReceipt"]  # the reply came before the SUBSCRIBE's RECEIPT
    assert json.loads(rooms["body"]) == ["lobby", "games"]
    assert rooms["headers"]["destination"] == "/app/rooms"
    assert r["peerErrors"] == []
