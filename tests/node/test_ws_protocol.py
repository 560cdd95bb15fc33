"""STOMP over WebSocket against a real node process, byte-exact, with our own client.

Third-party clients are covered in test_js_clients.py and test_stomppy.py; here we
send exactly the bytes a case needs (splits, packing, garbage) and check exactly
what comes back.
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.error
import urllib.request

import pytest
import websockets

from harness.stompclient import WsStomp, stuck_subscriber
from stompgate.stomp import ALL_COMMANDS, Frame, FrameParser, serialize

pytestmark = pytest.mark.usefixtures("close_ws_clients")


async def test_subprotocol_negotiation(node) -> None:
    """The server picks the highest STOMP sub-protocol the client offered, whatever the
    order (tests/node/test_subprotocol_choice.py), and accepts none offered."""
    async with websockets.connect(node.ws_url, subprotocols=["v12.stomp"]) as ws:
        assert ws.subprotocol == "v12.stomp"
    async with websockets.connect(node.ws_url, subprotocols=["v10.stomp", "v11.stomp"]) as ws:
        assert ws.subprotocol == "v11.stomp"
    # stompjs 2.x `Stomp.over(socket)` and SockJS pages offer no sub-protocol at all.
    async with websockets.connect(node.ws_url) as ws:
        assert ws.subprotocol is None
        await ws.send(serialize(Frame("CONNECT", {"accept-version": "1.1", "login": "x"})).decode())
        reply = await asyncio.wait_for(ws.recv(), 5)
        assert reply.startswith("CONNECTED\nversion:1.1\n")


def test_plain_http_get_on_the_endpoint_is_a_clear_400(node) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(node.ws_url.replace("ws://", "http://"), timeout=5)
    assert info.value.code == 400
    assert "WebSocket" in json.loads(info.value.read())["error"]


async def test_frames_packed_in_one_message_and_split_over_many(node) -> None:
    """CONNECT+SUBSCRIBE in one message, then a SEND cut into 1-byte messages with EOLs around."""
    bob = await WsStomp.open(node.ws_url)
    packed = serialize(Frame("CONNECT", {"accept-version": "1.2", "login": "bob", "heart-beat": "0,0"}))
    packed += serialize(Frame("SUBSCRIBE", {"id": "s1", "destination": "/user/queue/in", "receipt": "r1"}))
    await bob.send_raw(packed.decode())
    assert (await bob.recv()).command == "CONNECTED"
    assert (await bob.recv()).headers["receipt-id"] == "r1"

    alice = await WsStomp.connect(node.ws_url, "alice")
    body = "x" * 40_000 + "é"
    data = b"\n\r\n" + serialize(Frame("SEND", {"destination": "/user/bob/queue/in"}, body.encode())) + b"\n"
    for i in range(0, len(data), 16 * 1024):  # stomp.js 2.x splits at 16 KiB
        await alice.send_raw(data[i : i + 16 * 1024])
    msg = await bob.recv()
    assert msg.command == "MESSAGE"
    assert msg.body.decode() == body
    assert msg.headers["destination"] == "/user/queue/in"
    assert msg.headers["content-length"] == str(len(body.encode()))
    # and a tiny frame fed one byte per WebSocket message
    for byte in serialize(Frame("SEND", {"destination": "/user/bob/queue/in"}, b"tiny")):
        await alice.send_raw(bytes([byte]))
    assert (await bob.recv()).body == b"tiny"
    await alice.close()
    await bob.close()


async def test_text_and_binary_websocket_messages(node) -> None:
    """octet-stream bodies go out as binary WebSocket messages, everything else as text."""
    bob = await WsStomp.connect(node.ws_url, "bob")
    await bob.subscribe("/topic/t")
    alice = await WsStomp.connect(node.ws_url, "alice")
    await alice.publish("/topic/t", "text body")
    await alice.publish("/topic/t", bytes(range(256)), **{"content-type": "application/octet-stream"})
    await alice.publish("/topic/t", b"\xff\xfe not utf-8")
    first, second, third = await bob.recv(), await bob.recv(), await bob.recv()
    assert first.body == b"text body" and isinstance(bob.raw[-3], str)
    assert second.body == bytes(range(256)) and isinstance(bob.raw[-2], bytes)
    # A text WebSocket message must be UTF-8, so such a body is sent as binary.
    assert third.body == b"\xff\xfe not utf-8" and isinstance(bob.raw[-1], bytes)


async def test_malformed_input_gets_error_and_close_while_others_are_served(node) -> None:
    bob = await WsStomp.connect(node.ws_url, "bob")
    await bob.subscribe("/user/queue/in")
    cases = [
        "HELLO\n\n\0",  # unknown command
        "CONNECT\naccept-version:1.2\nlogin:m\n\n\0SEND\nno colon here\n\n\0",
        "CONNECT\naccept-version:1.2\nlogin:m\n\n\0SEND\ndestination:/topic/a\nbad:\\t\n\n\0",
        "CONNECT\naccept-version:1.2\nlogin:m\n\n\0SUBSCRIBE\nid:1\ndestination:/topic/a\ncontent-length:2\n\nab\0",
        "SEND\ndestination:/topic/a\n\nbefore connect\0",
    ]
    for raw in cases:
        bad = await WsStomp.open(node.ws_url)
        await bad.send_raw(raw)
        frame = await bad.recv()
        if frame.command == "CONNECTED":
            frame = await bad.recv()
        assert frame.command == "ERROR", raw
        assert frame.headers["message"], raw
        closed = await bad.expect_closed()
        assert closed.code == 1002, raw
    alice = await WsStomp.connect(node.ws_url, "alice")
    await alice.publish("/user/bob/queue/in", "still here")
    assert (await bob.recv()).body == b"still here"


async def test_oversized_frame_is_refused(node_factory) -> None:
    node = node_factory({"stomp": {"max_frame_size": 4096}})
    client = await WsStomp.connect(node.ws_url, "alice")
    await client.send(Frame("SEND", {"destination": "/topic/a"}, b"x" * 5000))
    error = await client.recv()
    assert error.command == "ERROR"
    assert "4096" in error.headers["message"]
    assert (await client.expect_closed()).code == 1002


async def test_no_connect_in_time_closes_the_socket(node_factory) -> None:
    node = node_factory({"stomp": {"connect_timeout_s": 0.3}})
    idle = await WsStomp.open(node.ws_url)
    error = await idle.recv()
    assert error.command == "ERROR" and "CONNECT" in error.headers["message"]
    assert (await idle.expect_closed()).code == 1008


async def test_server_heartbeats_and_dead_client_detection(node_factory) -> None:
    """Server sends EOLs at the negotiated rate and closes a client that went silent."""
    node = node_factory({"stomp": {"heartbeat": {"send_ms": 200, "receive_ms": 200}}})
    client = await WsStomp.connect(node.ws_url, "alice", heart_beat="200,200")
    loop = asyncio.get_running_loop()
    start = loop.time()
    received: list[str] = []
    # The client sends nothing: the server must heart-beat, then give up on it.
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            received.append(await asyncio.wait_for(client.ws.recv(), 5))
    elapsed = loop.time() - start
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    assert received[:-1] and set(received[:-1]) == {"\n"}, received
    assert received[-1].startswith("ERROR\n") and "heart-beat" in received[-1]
    # 200 ms x 1.5 margin without a byte, checked once per 300 ms window
    assert 0.3 <= elapsed < 2.0, elapsed


async def test_receipt_and_error_receipt_id(node) -> None:
    client = await WsStomp.connect(node.ws_url, "alice")
    await client.send(Frame("BEGIN", {"transaction": "t1", "receipt": "b"}))
    assert (await client.recv()).headers == {"receipt-id": "b"}
    await client.send(Frame("SEND", {"destination": "/nowhere", "receipt": "77"}, b"x"))
    error = await client.recv()
    assert error.command == "ERROR"
    assert error.headers["receipt-id"] == "77"
    assert "/nowhere" in error.headers["message"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_shutdown_signal_tells_every_client_and_exits_cleanly(node_factory, sig) -> None:
    node = node_factory()
    clients = [await WsStomp.connect(node.ws_url, f"u{i}") for i in range(3)]
    pending = await WsStomp.open(node.ws_url)  # not yet CONNECTed
    node.proc.send_signal(sig)
    for c in clients + [pending]:
        error = await c.recv()
        assert error.command == "ERROR"
        assert error.headers["message"] == "server restarting"
        assert (await c.expect_closed()).code == 1012
    assert await asyncio.to_thread(node.proc.wait, 10) == 0


async def test_jwt_from_the_handshake(node_factory) -> None:
    """Browsers cannot set CONNECT-time headers on the handshake: access_token and Authorization work."""
    import time

    import jwt

    node = node_factory({"auth": {"mode": "jwt", "jwt": {"secret": "k" * 32}}})
    token = jwt.encode({"sub": "erin", "exp": int(time.time()) + 60}, "k" * 32, algorithm="HS256")
    for url, headers in [
        (f"{node.ws_url}?access_token={token}", {}),
        (node.ws_url, {"Authorization": f"Bearer {token}"}),
    ]:
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send(serialize(Frame("CONNECT", {"accept-version": "1.2"})).decode())
            reply = await asyncio.wait_for(ws.recv(), 5)
            assert reply.startswith("CONNECTED\n") and "\nuser-name:erin\n" in reply
    expired = jwt.encode({"sub": "erin", "exp": int(time.time()) - 60}, "k" * 32, algorithm="HS256")
    async with websockets.connect(f"{node.ws_url}?access_token={expired}") as ws:
        await ws.send(serialize(Frame("CONNECT", {"accept-version": "1.2"})).decode())
        parser = FrameParser(commands=ALL_COMMANDS, version="1.2")
        parser.feed((await asyncio.wait_for(ws.recv(), 5)).encode())
        error = parser.next_frame()
        assert error is not None and error.command == "ERROR"
        assert error.headers["message"] == "authentication failed: token expired"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008


async def test_slow_consumer_is_closed_and_others_keep_going(node_factory) -> None:
    """A subscriber that stops reading is cut off at max_outbound_buffer, not buffered forever."""
    # No rate limit: the sender pushes 12.5 MiB as fast as it can (a backend, not the attacker here).
    node = node_factory(
        {"server": {"max_outbound_buffer": 256 * 1024}, "stomp": {"rate_limit": {"bytes_per_s": 0}}}
    )
    stuck = stuck_subscriber(node.tcp_port, "/topic/flood")
    healthy = await WsStomp.connect(node.ws_url, "healthy")
    await healthy.subscribe("/topic/other")
    sender = await WsStomp.connect(node.ws_url, "sender")
    chunk = b"y" * 64 * 1024
    for _ in range(200):  # 12.5 MiB in all: far past kernel buffers and the 256 KiB limit
        await sender.publish("/topic/flood", chunk, receipt=False)
        if "slow consumer" in node.log():
            break
    await sender.publish("/topic/other", "after")
    assert (await healthy.recv()).body == b"after"
    assert "slow consumer" in node.log()
    # And the node really let go of it, the kernel's copy included: reading what is left
    # ends in a reset after at most what this socket's receive side held. Without the
    # reset, the node's kernel kept trickling its send buffer (megabytes) to the
    # slow reader for a minute and more, holding that memory and the descriptor.
    stuck.settimeout(5)
    left = 0
    try:
        while data := stuck.recv(65536):
            left += len(data)
            assert left < 1024 * 1024, "the node's kernel is still sending to the dropped consumer"
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail("the slow consumer's connection is still open 5 s after it was logged as closed")
    finally:
        stuck.close()
