"""The HTTP access log: one line per request at logger ``stompgate.access`` (``logging.access_log``).

aiohttp calls :class:`AccessLog` once a request's handler has returned and its
response was written. A WebSocket's handler returns when the connection ends,
so WebSocket handshakes (ours and SockJS's) are logged when the ``101`` is sent
instead (:func:`log_handshake`, an ``on_response_prepare`` hook); their end is
the session's ``session.close`` line.

The path is logged as the client sent it (percent-encoded) without the query
string, which may hold a token (``?access_token=``); the address is the client's
behind a trusted proxy (:mod:`.clientaddr`).
"""

from __future__ import annotations

import logging
from time import perf_counter

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from .clientaddr import CLIENT, STARTED

log = logging.getLogger("stompgate.access")


class AccessLog(AbstractAccessLogger):
    """aiohttp's access logger hook, writing :func:`access_line`s."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        if isinstance(response, web.WebSocketResponse) and response.status == 101:
            return  # logged when its handshake completed
        access_line(self.logger, request, response.status, response.body_length, time)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


async def log_handshake(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: a WebSocket handshake is logged as its 101 goes out."""
    if isinstance(response, web.WebSocketResponse) and log.isEnabledFor(logging.INFO):
        access_line(log, request, response.status, 0, 0.0)


def access_line(
    logger: logging.Logger, request: BaseRequest, status: int, size: int, elapsed_s: float
) -> None:
    """``elapsed_s``: aiohttp's measure, used when the request never reached the app (a 400)."""
    started = request.get(STARTED)
    if started is not None:
        elapsed_s = perf_counter() - started
    remote = request.get(CLIENT) or request.remote or "-"
    path = request.rel_url.raw_path
    agent = request.headers.get("User-Agent", "")
    duration_ms = round(elapsed_s * 1000, 3)
    version = request.version
    logger.info(
        '%s "%s %s HTTP/%d.%d" %d %d %.1fms "%s"',
        remote, request.method, path, version.major, version.minor, status, size, duration_ms,
        agent.replace("\\", "\\\\").replace('"', '\\"'),
        extra={
            "event": "http.access", "remote": remote, "method": request.method, "path": path,
            "status": status, "bytes": size, "duration_ms": duration_ms, "agent": agent,
        },
    )  # fmt: skip
