"""The WebSocket sub-protocol a node answers: the highest STOMP version offered, in any order.

webstomp-client (a stompjs 2.x fork) offers ``v10.stomp, v11.stomp, v12.stomp`` in
that order and sends the CONNECT ``accept-version`` of the sub-protocol the server
answered. Answering its first offer would hold it to STOMP 1.0: no heart-beats, no
NACK, although both sides speak 1.2.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable

import aiohttp
import pytest

from harness.nodes import NodeProcess
from stompgate.transport.websocket import choose_subprotocol

from ..jsrun import run_scenario

Factory = Callable[..., NodeProcess]
WEBSTOMP_ORDER = "v10.stomp, v11.stomp, v12.stomp"
# The node can send heart-beats every 200 ms.
HEARTBEAT_NODE = {"stomp": {"heartbeat": {"send_ms": 200, "receive_ms": 10000}}}
# The STOMP version each sub-protocol stands for, as webstomp-client maps them.
VERSION_OF = {"v10.stomp": "1.0", "v11.stomp": "1.1", "v12.stomp": "1.2"}


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ("v10.stomp, v11.stomp, v12.stomp", "v12.stomp"),
        ("v12.stomp,v10.stomp", "v12.stomp"),
        ("v10.stomp,v11.stomp", "v11.stomp"),
        ("v10.stomp", "v10.stomp"),
        ("mqtt, V12.STOMP", "V12.STOMP"),  # in the client's spelling: aiohttp answers only what was offered
        ("mqtt", None),
        ("", None),
        (None, None),
    ],
)
def test_choose_subprotocol(offered: str | None, chosen: str | None) -> None:
    assert choose_subprotocol(offered) == chosen


async def test_raw_handshake_offering_v10_first_gets_v12(node_factory: Factory) -> None:
    """The handshake's bytes: offered in webstomp-client's order, answered with v12.stomp."""
    node = node_factory()
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /ws HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{node.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {WEBSTOMP_ORDER}\r\n\r\n"
            ).encode()
        )
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    finally:
        writer.close()
    assert head.startswith("HTTP/1.1 101"), head
    answered = [
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("sec-websocket-protocol:")
    ]
    assert answered == ["v12.stomp"], head


async def test_session_offered_v10_first_speaks_stomp_12(node_factory: Factory) -> None:
    """After the handshake the client connects as webstomp-client does, asking for the
    version of the answered sub-protocol: the session is STOMP 1.2, the server's heart-beats
    arrive and NACK is accepted (STOMP 1.0 has neither)."""
    node = node_factory(HEARTBEAT_NODE)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(node.ws_url, protocols=WEBSTOMP_ORDER.split(", ")) as ws:
            assert ws.protocol == "v12.stomp"
            version = VERSION_OF[ws.protocol]
            await ws.send_str(f"CONNECT\naccept-version:{version}\nheart-beat:0,200\nlogin:ada\n\n\0")
            connected = await asyncio.wait_for(ws.receive_str(), 5)
            assert connected.startswith("CONNECTED\nversion:1.2\n"), connected
            assert "heart-beat:200,10000" in connected.split("\n\n")[0].split("\n"), connected
            pings = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.0
            while loop.time() < deadline:  # a count of what arrived in 1 s, not a timing assert
                try:
                    message = await asyncio.wait_for(ws.receive_str(), max(0.01, deadline - loop.time()))
                except TimeoutError:
                    break
                if message == "\n":
                    pings += 1
            assert pings >= 2, f"expected server heart-beats every 200 ms, got {pings} in 1 s"
            # NACK is a 1.2 (and 1.1) frame; with a receipt, a 1.0 session would answer ERROR.
            await ws.send_str("SUBSCRIBE\nid:s1\ndestination:/queue/nack-check\nack:client-individual\n\n\0")
            await ws.send_str("SEND\ndestination:/queue/nack-check\n\nhello\0")
            message = await asyncio.wait_for(_next_frame(ws), 5)
            assert message.startswith("MESSAGE\n"), message
            ack_id = next(line[4:] for line in message.split("\n") if line.startswith("ack:"))
            await ws.send_str(f"NACK\nid:{ack_id}\nreceipt:r1\n\n\0")
            reply = await asyncio.wait_for(_next_frame(ws), 5)
            assert reply.startswith("RECEIPT\nreceipt-id:r1\n"), reply


async def _next_frame(ws: aiohttp.ClientWebSocketResponse) -> str:
    """The next STOMP frame, past heart-beats."""
    while True:
        message = await ws.receive_str()
        if message != "\n":
            return message


@pytest.mark.js
def test_webstomp_client_gets_stomp_12(node_factory: Factory) -> None:
    """webstomp-client 1.2 under Node, as it connects by default (webstomp.client(url)):
    v12.stomp answered, a 1.2 session, server heart-beats received, NACK without ERROR."""
    node = node_factory(HEARTBEAT_NODE)
    needs = ("webstomp-client", "ws")
    report = run_scenario("webstomp_scenario.js", [node.ws_url], timeout=30, server_log=node.log, needs=needs)
    assert report["protocol"] == "v12.stomp"
    assert report["version"] == "1.2"
    assert report["heartBeat"] == "200,10000"
    assert report["serverPings"] >= 2, report
    assert report["errors"] == [], report
    assert report["bodies"][:1] == ["first"] and len(report["bodies"]) >= 2, report
