"""One node of a python-socketio cluster (aiohttp + AsyncRedisManager): a peer for the benchmark.

    .venv/bin/python bench/peers/socketio_node.py --port 8201 --redis redis://127.0.0.1:6379/0
    .venv/bin/python bench/peers/socketio_node.py --port 8202 --redis redis://127.0.0.1:6379/0
    .venv/bin/python bench/peers/socketio_node.py --selftest --redis redis://127.0.0.1:6379/0

Several nodes that share one Redis URL (and ``--channel``, default "socketio") form one cluster: an
emit to a room on one node reaches the room's members on every node (python-socketio's pub/sub client
manager: the emitting node delivers locally and publishes to Redis for the others).

Protocol (Socket.IO v5 / Engine.IO v4, default namespace "/", path /socket.io/):
- connect: ``auth`` must be a dict ``{"user": name}``; the socket joins room ``name``.
  Without it the connection is refused (CONNECT_ERROR).
- event ``"subscribe"``, data ``topic`` (a string, e.g. ``"bench"``): joins room ``"topic:" + topic``
  and acknowledges with ``True``.
- event ``"send"``, data ``{"to": user, "body": str}``: emits ``"msg"`` with ``body`` to room ``user``.
- event ``"publish"``, data ``{"topic": t, "body": str}``: emits ``"msg"`` with ``body`` to room
  ``"topic:" + t``.
- ``GET /health`` -> 200 ``ok`` once the node listens (and Redis answered a PING at startup).

WebSocket permessage-deflate is off by default, like the Node socket.io server since v3 and like
stompgate (python-engineio's aiohttp driver would otherwise accept it whenever the client offers it);
``--ws-compress`` restores the stock python-engineio behaviour. Runs on uvloop when importable.
Prints nothing on stdout; SIGTERM or SIGINT stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import weakref

import socketio
from aiohttp import web
from aioserve import run, serve_until_signal

# Every WebSocketResponse the engine.io aiohttp driver opens, so that shutdown can close them at once.
OPEN_WEBSOCKETS: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()


def hook_websockets(compress: bool) -> None:
    """Make python-engineio's aiohttp driver open its WebSockets with ``compress`` and record them."""
    import engineio.async_drivers.aiohttp as eio_aiohttp

    def websocket_response(*args, **kwargs) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(*args, compress=compress, **kwargs)
        OPEN_WEBSOCKETS.add(ws)
        return ws

    eio_aiohttp.WebSocketResponse = websocket_response


def make_server(redis_url: str, channel: str = "socketio") -> socketio.AsyncServer:
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=socketio.AsyncRedisManager(redis_url, channel=channel),
        cors_allowed_origins="*",
    )

    @sio.event
    async def connect(sid, environ, auth):
        user = auth.get("user") if isinstance(auth, dict) else None
        if not isinstance(user, str) or not user:
            raise socketio.exceptions.ConnectionRefusedError("auth.user required")
        await sio.enter_room(sid, user)

    @sio.event
    async def subscribe(sid, topic):
        if not isinstance(topic, str) or not topic:
            return False
        await sio.enter_room(sid, "topic:" + topic)
        return True

    @sio.event
    async def send(sid, data):
        await sio.emit("msg", data["body"], room=data["to"])

    @sio.event
    async def publish(sid, data):
        await sio.emit("msg", data["body"], room="topic:" + data["topic"])

    return sio


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def check_redis(url: str) -> None:
    from redis import asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    try:
        await asyncio.wait_for(r.ping(), 5.0)
    finally:
        await r.aclose()


async def serve(host: str, port: int, redis_url: str, channel: str) -> None:
    try:
        await check_redis(redis_url)
    except Exception as e:  # noqa: BLE001 - any failure to reach Redis is reported and exits 2
        print(f"socketio_node: Redis at {redis_url} unreachable: {e!r}", file=sys.stderr)
        raise SystemExit(2) from None
    sio = make_server(redis_url, channel)
    app = web.Application()
    sio.attach(app)
    app.router.add_get("/health", health)

    async def close_sockets(app: web.Application) -> None:
        try:
            await asyncio.wait_for(sio.shutdown(), 2.0)
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass
        closing = [asyncio.ensure_future(ws.close(code=1001, message=b"server shutdown"))
                   for ws in list(OPEN_WEBSOCKETS)]
        if closing:
            await asyncio.wait(closing, timeout=2.0)

    app.on_shutdown.append(close_sockets)
    await serve_until_signal(app, host, port)


# --------------------------------------------------------------------------- selftest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_health(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node on port {port} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"node on port {port} not healthy after {timeout}s")


async def _selftest_clients(ports: list[int]) -> None:
    async def client(port: int, user: str) -> tuple[socketio.AsyncClient, asyncio.Queue]:
        c = socketio.AsyncClient()
        q: asyncio.Queue = asyncio.Queue()
        c.on("msg", q.put)
        await c.connect(f"http://127.0.0.1:{port}", auth={"user": user}, transports=["websocket"])
        return c, q

    a, qa = await client(ports[0], "alice")
    b, qb = await client(ports[1], "bob")
    c, qc = await client(ports[0], "carol")
    try:
        # refused without auth
        bad = socketio.AsyncClient()
        try:
            await bad.connect(f"http://127.0.0.1:{ports[0]}", transports=["websocket"])
        except socketio.exceptions.ConnectionError:
            pass
        else:
            await bad.disconnect()
            raise AssertionError("connection without auth.user was accepted")
        for cl in (a, b, c):
            assert await cl.call("subscribe", "bench", timeout=5) is True
        # point to point, across nodes and within a node
        await a.emit("send", {"to": "bob", "body": "hi bob"})
        assert await asyncio.wait_for(qb.get(), 5) == "hi bob"
        await b.emit("send", {"to": "carol", "body": "hi carol"})
        assert await asyncio.wait_for(qc.get(), 5) == "hi carol"
        # fan-out to every subscriber on both nodes, the publisher included
        await b.emit("publish", {"topic": "bench", "body": "to all"})
        for q in (qa, qb, qc):
            assert await asyncio.wait_for(q.get(), 5) == "to all"
        # a short cross-node round trip sample
        n = 200
        t = time.perf_counter()
        for i in range(n):
            await a.emit("send", {"to": "bob", "body": str(i)})
            assert await asyncio.wait_for(qb.get(), 5) == str(i)
        dt = time.perf_counter() - t
        print(f"selftest ok: auth refusal, subscribe ack, send across nodes, publish fan-out to 3; "
              f"{n} sequential cross-node sends {dt * 1e3 / n:.2f} ms each")
    finally:
        for cl in (a, b, c):
            await cl.disconnect()


def selftest(redis_url: str) -> int:
    ports = [_free_port(), _free_port()]
    channel = f"socketio-selftest-{os.getpid()}"
    cmd = [sys.executable, os.path.abspath(__file__), "--redis", redis_url, "--channel", channel]
    procs = [subprocess.Popen([*cmd, "--port", str(p)]) for p in ports]
    try:
        for p, proc in zip(ports, procs):
            _wait_health(p, proc)
        asyncio.run(_selftest_clients(ports))
        return 0
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL shared by all nodes")
    ap.add_argument("--channel", default="socketio",
                    help="Redis pub/sub channel; pub/sub ignores the DB number, so give clusters sharing a "
                    "Redis server distinct channels")
    ap.add_argument("--ws-compress", action="store_true",
                    help="allow permessage-deflate (stock python-engineio)")
    ap.add_argument("--selftest", action="store_true",
                    help="start 2 nodes on free ports, check the protocol, stop")
    args = ap.parse_args(argv)
    if args.selftest:
        raise SystemExit(selftest(args.redis))
    if args.port is None:
        ap.error("--port is required")
    hook_websockets(compress=args.ws_compress)
    run(serve(args.host, args.port, args.redis, args.channel))


if __name__ == "__main__":
    main()
