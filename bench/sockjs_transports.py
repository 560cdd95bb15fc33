"""What each carrier costs a node: STOMP over a plain WebSocket and over each SockJS transport.

    .venv/bin/python bench/sockjs_transports.py [--messages 20000]   # prints a markdown table

One node (memory bus) on a free loopback port. A publisher on a plain WebSocket
sends ``--messages`` SEND frames of 100 bytes to /topic/bench as fast as the node
takes them; one subscriber receives them over the carrier under test. Reported:
delivered messages per second, and the node's CPU time per message (user +
system, from /proc), which is what a transport adds on the server. The
subscriber runs in this process, so on this 2-core machine the client side
(JSON decoding for SockJS) can be what limits the rate; the node CPU column is
the number to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import yaml
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.nodes import free_port  # noqa: E402

BODY = "x" * 100
TICK = os.sysconf("SC_CLK_TCK")


def stomp(command: str, headers: dict[str, str], body: str = "") -> str:
    return command + "\n" + "".join(f"{k}:{v}\n" for k, v in headers.items()) + "\n" + body + "\0"


CONNECT = stomp("CONNECT", {"accept-version": "1.2", "login": "bench", "heart-beat": "0,0"})
SUBSCRIBE = stomp("SUBSCRIBE", {"id": "1", "destination": "/topic/bench", "receipt": "ready"})


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Counter:
    """Counts MESSAGE frames in whatever the carrier hands over; sets ``ready`` on the RECEIPT."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.got = 0
        self.ready = asyncio.Event()
        self.done = asyncio.Event()

    def frames(self, frames: list[str]) -> None:
        for f in frames:
            if f.startswith("MESSAGE"):
                self.got += 1
            elif f.startswith("RECEIPT"):
                self.ready.set()
        if self.got >= self.want:
            self.done.set()

    def text(self, data: str) -> None:
        self.frames([f.lstrip("\n") for f in data.split("\0") if f.strip("\n")])


async def plain_websocket(base: str, counter: Counter) -> None:
    async with connect(base.replace("http", "ws") + "/ws", max_size=None) as ws:
        await ws.send(CONNECT)
        await ws.send(SUBSCRIBE)
        while not counter.done.is_set():
            counter.text(await ws.recv())


def sockjs_frame(raw: str, counter: Counter) -> None:
    if raw.startswith("a"):
        counter.frames(json.loads(raw[1:]))


async def sockjs_websocket(base: str, counter: Counter) -> None:
    async with connect(
        f"{base.replace('http', 'ws')}/sj/000/{uuid.uuid4().hex[:8]}/websocket", max_size=None
    ) as ws:
        assert await ws.recv() == "o"
        await ws.send(json.dumps([CONNECT, SUBSCRIBE]))
        while not counter.done.is_set():
            sockjs_frame(await ws.recv(), counter)


async def _send_handshake(http: aiohttp.ClientSession, url: str) -> None:
    async with http.post(url + "/xhr_send", data=json.dumps([CONNECT, SUBSCRIBE])) as resp:
        assert resp.status == 204


async def xhr_streaming(base: str, counter: Counter) -> None:
    url = f"{base}/sj/000/{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as http:
        first = True
        while not counter.done.is_set():  # a new response each time the streaming limit ends one
            async with http.post(url + "/xhr_streaming") as resp:
                await resp.content.readline()  # prelude
                if first:
                    assert (await resp.content.readline()).strip() == b"o"
                    await _send_handshake(http, url)
                    first = False
                while not counter.done.is_set():
                    line = await resp.content.readline()
                    if not line:
                        break
                    sockjs_frame(line.decode().rstrip("\n"), counter)


async def xhr_polling(base: str, counter: Counter) -> None:
    url = f"{base}/sj/000/{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/xhr") as resp:
            assert (await resp.text()).strip() == "o"
        await _send_handshake(http, url)
        while not counter.done.is_set():
            async with http.post(url + "/xhr") as resp:
                sockjs_frame((await resp.text()).rstrip("\n"), counter)


async def eventsource(base: str, counter: Counter) -> None:
    url = f"{base}/sj/000/{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as http:
        first = True
        while not counter.done.is_set():
            async with http.get(url + "/eventsource") as resp:
                await resp.content.readline()  # prelude
                while not counter.done.is_set():
                    line = await resp.content.readline()
                    if not line:
                        break
                    line = line.decode().rstrip("\r\n")
                    if not line.startswith("data: "):
                        continue
                    if first and line == "data: o":
                        await _send_handshake(http, url)
                        first = False
                        continue
                    sockjs_frame(line[6:], counter)


CARRIERS: dict[str, Callable[[str, Counter], Awaitable[None]]] = {
    "WebSocket (plain STOMP)": plain_websocket,
    "SockJS websocket": sockjs_websocket,
    "SockJS xhr-streaming": xhr_streaming,
    "SockJS eventsource": eventsource,
    "SockJS xhr-polling": xhr_polling,
}


async def publish(base: str, count: int) -> None:
    frame = stomp("SEND", {"destination": "/topic/bench"}, BODY)
    async with connect(base.replace("http", "ws") + "/ws", max_size=None) as ws:
        await ws.send(CONNECT)
        await ws.recv()
        for i in range(0, count, 100):
            await ws.send(frame * min(100, count - i))  # 100 frames per WebSocket message


async def measure(
    base: str, pid: int, carrier: Callable[[str, Counter], Awaitable[None]], count: int
) -> tuple[float, float]:
    counter = Counter(count)
    task = asyncio.create_task(carrier(base, counter))
    await asyncio.wait_for(counter.ready.wait(), 10)
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    await publish(base, count)
    await asyncio.wait_for(counter.done.wait(), 120)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the carrier's end, however it came, is moot
        pass
    return count / elapsed, cpu / count * 1e6


def start_node(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = {
        "server": {"port": port, "websocket_paths": ["/ws"], "sockjs": [{"path": "/sj"}]},
        # No rate limit: the publisher sends as fast as the node takes frames (cost, not policy).
        "stomp": {
            "heartbeat": {"send_ms": 0, "receive_ms": 0},
            "rate_limit": {"frames_per_s": 0, "bytes_per_s": 0},
        },
        "auth": {"mode": "dev"},
        "api": {"enabled": False},
        "logging": {"level": "warning"},
    }
    (tmp / "node.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "stompgate", "serve", "--config", str(tmp / "node.yaml")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "node.log", "wb"),
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(base + "/health", timeout=1).close()
            return proc, base
        except OSError:
            time.sleep(0.05)
    raise RuntimeError((tmp / "node.log").read_text())


async def run(count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_node(Path(tmp))
        try:
            await measure(base, proc.pid, plain_websocket, 2000)  # warm-up
            print(
                f"Python {platform.python_version()}, {os.cpu_count()} cores, "
                f"{count} messages of 100 bytes, best of {rounds}\n"
            )
            print("| carrier | delivered msg/s | node CPU per message |")
            print("|---|---|---|")
            for name, carrier in CARRIERS.items():
                results = [await measure(base, proc.pid, carrier, count) for _ in range(rounds)]
                rate = max(r[0] for r in results)
                cpu = min(r[1] for r in results)
                print(f"| {name} | {rate:,.0f} | {cpu:.1f} us |", flush=True)
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.rounds))


if __name__ == "__main__":
    main()
