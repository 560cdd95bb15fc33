"""Bare aiohttp WebSocket echo server: the floor under every WebSocket broker in the benchmark.

    .venv/bin/python bench/peers/ws_echo.py --port 8101 [--host 127.0.0.1]

- ``GET /ws``      WebSocket; every text frame is echoed as text, every binary frame as binary.
                   No permessage-deflate, no server pings; no subprotocol required (v12/v11/v10.stomp
                   are accepted when offered, so STOMP-minded clients can connect).
- ``GET /health``  200 ``ok`` (readiness check).

Runs on uvloop when it is importable. Prints nothing on stdout; SIGTERM or SIGINT stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import weakref

from aiohttp import WSMsgType, web
from aioserve import run, serve_until_signal

TEXT = WSMsgType.TEXT
BINARY = WSMsgType.BINARY
# Accepted (not required) so that a client insisting on a STOMP subprotocol can connect too.
PROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")
SOCKETS = web.AppKey("sockets", weakref.WeakSet)


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(
        protocols=PROTOCOLS, compress=False, autoping=True, max_msg_size=16 * 1024 * 1024
    )
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    send_str = ws.send_str
    send_bytes = ws.send_bytes
    async for msg in ws:
        t = msg.type
        if t is TEXT:
            await send_str(msg.data)
        elif t is BINARY:
            await send_bytes(msg.data)
    return ws


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def close_sockets(app: web.Application) -> None:
    closing = [ws.close(code=1001, message=b"server shutdown") for ws in list(app[SOCKETS])]
    if closing:
        await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=2.0)


def make_app() -> web.Application:
    app = web.Application()
    app[SOCKETS] = weakref.WeakSet()
    app.on_shutdown.append(close_sockets)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/health", health)
    return app


async def serve(host: str, port: int) -> None:
    await serve_until_signal(make_app(), host, port)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
