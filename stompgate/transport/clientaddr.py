"""Who an HTTP request comes from: the TCP peer, or behind a trusted proxy the client it names.

Every request passes :func:`client_address_middleware` first. Behind a proxy in
``server.trusted_proxies`` the handler is given a clone of the request whose
``remote`` is the client's address (:mod:`stompgate.forwarded`), so everything
that reads ``request.remote`` (sessions, the connect proxy's ``remote``, failed
login lines, the publish API) sees the client, not the proxy. The address is
also kept on the request (:data:`CLIENT`) for the access log, which aiohttp
hands the original request.

Per-address limits: a trusted proxy's own connections are exempt from
``server.connections.per_address`` (they carry many clients, and one keep-alive
connection may carry several); instead each forwarded client is counted for as
long as its request lasts (a WebSocket's: its whole life) and gets a 503 past the
cap. A peer that is not trusted is counted by the gate as it connects, whatever
headers it sends.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..forwarded import TrustedProxies
from .limits import ConnectionGate

CLIENT = web.RequestKey("stompgate.client", str)  # the client's address (the peer's, untrusted)
# perf_counter() when the request reached the app: uvloop's loop clock counts whole milliseconds.
STARTED = web.RequestKey("stompgate.started", float)


def client_address_middleware(proxies: TrustedProxies, gate: ConnectionGate) -> Middleware:
    @web.middleware
    async def client_address(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[STARTED] = time.perf_counter()
        peer = request.remote or ""
        if not proxies or not proxies.trusts(peer):
            request[CLIENT] = peer
            return await handler(request)
        client = proxies.client(peer, request.headers.getall(proxies.header, ()))
        request[CLIENT] = client
        if client == peer:
            return await handler(request)
        address, refusal = gate.admit_forwarded(client)
        if address is None:
            return web.Response(status=503, text=f"{refusal}\n")
        try:
            return await handler(request.clone(remote=client))
        finally:
            gate.release_forwarded(address)

    return client_address
