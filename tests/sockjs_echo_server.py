"""The services the SockJS protocol test suite expects, on our SockJS layer.

    python -m tests.sockjs_echo_server --port 8081

/echo (streaming limit 4096 bytes), /disabled_websocket_echo,
/cookie_needed_echo, and /close (closes every session with 3000 "Go away!").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from stompgate.sockjs import Connection, SockJSEndpoint, SockJSOptions


class Echo:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def on_message(self, text: str) -> None:
        self.conn.send(text)

    def on_close(self) -> None:
        pass


class Closer(Echo):
    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        conn.close(3000, "Go away!")


def make_app() -> web.Application:
    app = web.Application()
    services = [
        ("/echo", Echo, SockJSOptions(streaming_limit=4096)),
        ("/disabled_websocket_echo", Echo, SockJSOptions(websocket=False)),
        ("/cookie_needed_echo", Echo, SockJSOptions(cookie_needed=True)),
        ("/close", Closer, SockJSOptions()),
    ]
    for prefix, handler, options in services:
        SockJSEndpoint(prefix, handler, options).add_routes(app.router)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(make_app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"sockjs echo server on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
