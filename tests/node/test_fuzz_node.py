"""Random and mutated input thrown at a real node over WebSocket and TCP.

Whatever arrives, each connection ends with at most one ERROR and a close, or
stays usable; the node never crashes, logs no internal error, and keeps serving.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import websockets

from harness.stompclient import WsStomp
from stompgate.stomp import SERVER_COMMANDS, Frame, FrameParser, serialize

SEED_FRAMES = [
    serialize(Frame("CONNECT", {"accept-version": "1.0,1.1,1.2", "login": "fz", "heart-beat": "0,0"})),
    serialize(Frame("SUBSCRIBE", {"id": "1", "destination": "/topic/f", "ack": "client", "receipt": "r"})),
    serialize(Frame("SEND", {"destination": "/topic/f", "transaction": "t"}, b"body\0x")),
    serialize(Frame("BEGIN", {"transaction": "t"})),
    serialize(Frame("COMMIT", {"transaction": "t"})),
    serialize(Frame("ACK", {"id": "x-1"})),
    serialize(Frame("SEND", {"destination": "/user/fz/queue/q"}, b"q")),
    serialize(Frame("UNSUBSCRIBE", {"id": "1"})),
    b"\n\r\n",
]

pytestmark = pytest.mark.usefixtures("close_ws_clients")


def mutated(rng: random.Random) -> bytes:
    """A plausible conversation with random damage: flips, cuts, inserted junk."""
    data = bytearray(SEED_FRAMES[0] + b"".join(rng.choice(SEED_FRAMES) for _ in range(rng.randint(0, 6))))
    for _ in range(rng.randint(0, 4)):
        op = rng.randrange(4)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = bytes(rng.choice(b"\0\n\r:\\\xff") for _ in range(rng.randint(1, 3)))
        elif op == 2:
            del data[pos : pos + rng.randint(1, 8)]
        else:
            data[pos:pos] = rng.randbytes(rng.randint(1, 20))
    return bytes(data)


def check_answer(received: bytes, closed: bool, what: str) -> None:
    """At most one ERROR per connection, and after it nothing but the close."""
    parser = FrameParser(commands=SERVER_COMMANDS, max_frame_size=1 << 24)
    parser.feed(received)
    commands = [frame.command for frame in parser.frames()]
    errors = commands.count("ERROR")
    assert errors <= 1, f"{what}: {errors} ERROR frames: {commands}"
    if errors:
        assert commands[-1] == "ERROR", f"{what}: frames after the ERROR: {commands}"
        assert closed, f"{what}: an ERROR, but the connection stayed open"


async def drain_ws(data: bytes, url: str, rng: random.Random) -> None:
    received = bytearray()
    closed = False
    async with websockets.connect(url) as ws:
        try:
            for i in range(0, len(data), rng.randint(1, 64)):
                chunk = data[i : i + 64]
                await ws.send(chunk if rng.random() < 0.5 else chunk.decode("utf-8", "replace"))
        except websockets.ConnectionClosed:
            pass  # closed after an ERROR while we were still sending: what arrived is read below
        try:
            while True:
                message = await asyncio.wait_for(ws.recv(), 0.3)
                received += message if isinstance(message, bytes) else message.encode("utf-8")
        except TimeoutError:
            pass
        except websockets.ConnectionClosed:
            closed = True
    check_answer(bytes(received), closed, f"websocket {data!r}")


async def drain_tcp(data: bytes, port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    closed = False
    try:
        writer.write(data)
        await writer.drain()
        while chunk := await asyncio.wait_for(reader.read(65536), 0.3):
            received += chunk
        closed = True  # EOF
    except TimeoutError:
        pass
    except ConnectionError:
        closed = True
    finally:
        writer.close()
    check_answer(bytes(received), closed, f"tcp {data!r}")


async def test_random_and_mutated_input_never_hurts_the_node(node) -> None:
    rng = random.Random(20261127)
    watcher = await WsStomp.connect(node.ws_url, "watcher")
    await watcher.subscribe("/user/queue/ok")
    cases = [mutated(rng) for _ in range(60)] + [rng.randbytes(rng.randint(1, 400)) for _ in range(20)]
    for i in range(0, len(cases), 10):
        batch = cases[i : i + 10]
        await asyncio.gather(
            *(drain_ws(c, node.ws_url, rng) for c in batch[:5]),
            *(drain_tcp(c, node.tcp_port) for c in batch[5:]),
        )
    sender = await WsStomp.connect(node.ws_url, "sender")
    await sender.publish("/user/watcher/queue/ok", "alive")
    assert (await watcher.recv()).body == b"alive"
    assert node.health()["status"] == "ok"
    log = node.log()
    assert "internal server error" not in log and "Traceback" not in log, log[-3000:]
