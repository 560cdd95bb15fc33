"""The HTTP/WebSocket listener behind the connection gate, with aiohttp's idle timer as header timeout.

aiohttp (3.14.5 and later) starts a connection's keep-alive timer when the
connection opens and again after each response, and closes the connection when
it fires while the connection is still waiting for a complete request head. So
``keepalive_timeout`` is a header timeout: a connection that sends nothing, half
a request line or headers one byte at a time is closed that long after it opened
(or after its previous response). The timer never closes a connection whose
request is being handled, so a WebSocket or a SockJS streaming or polling
response is never cut by it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..tls import ServerTls
from . import access
from .limits import ConnectionGate, GateProtocol, http_refusal

# After a response to a request whose body was not read (a 408 for a slow body,
# a 401 before the body), aiohttp reads and drops the rest for this long at most
# so that the client sees the answer rather than a reset; nginx's lingering_timeout.
MAX_LINGERING_S = 5.0


def handler_kwargs(
    header_timeout_s: float, body_timeout_s: float, access_log: bool = False
) -> dict[str, Any]:
    """The arguments of aiohttp's per-connection RequestHandler (also valid for AppRunner);
    ``access_log``: one line per request (transport/access.py)."""
    kwargs: dict[str, Any] = {
        "keepalive_timeout": header_timeout_s,
        "lingering_time": min(MAX_LINGERING_S, body_timeout_s),
        "access_log": None,
    }
    if access_log:
        kwargs.update(access_log=access.log, access_log_class=access.AccessLog)
    return kwargs


class CountedRequestHandler(RequestHandler):
    """aiohttp's connection protocol, giving its slot back to the gate when the connection ends."""

    __slots__ = ("_release",)

    def __init__(self, manager: web.Server, release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._release: Callable[[], None] | None = release

    def connection_lost(self, exc: BaseException | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class GatedSite(web.BaseSite):
    """A TCPSite whose accepted connections pass the gate before aiohttp sees them."""

    __slots__ = ("_host", "_port", "_gate", "_kwargs", "_reuse_port", "_tls")

    def __init__(
        self,
        runner: web.BaseRunner,
        gate: ConnectionGate,
        host: str,
        port: int,
        *,
        kwargs: dict[str, Any],
        backlog: int = 1024,
        reuse_port: bool = False,
        tls: ServerTls | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._gate = gate
        self._kwargs = kwargs
        self._reuse_port = reuse_port
        self._tls = tls  # HTTPS: the loop's TLS, then the gate (stompgate/tls.py)

    @property
    def name(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        gate, kwargs = self._gate, self._kwargs

        def handler(release: Callable[[], None]) -> asyncio.Protocol:
            return CountedRequestHandler(server, release, loop=loop, **kwargs)

        self._server = await loop.create_server(
            lambda: GateProtocol(gate, handler, http_refusal),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port,
            **(self._tls.server_kwargs() if self._tls is not None else {}),
        )
