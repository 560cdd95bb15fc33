"""Wiring and lifecycle of one node: config -> broker -> aiohttp app and listeners."""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from contextlib import suppress

from aiohttp import web

from . import __version__
from .broker import Broker, BrokerSettings, DevAuthenticator, JwtAuthenticator, SessionLimits, StaticAuthenticator
from .broker.auth import Authenticator
from .bus.base import OfflineLimits
from .bus.memory import MemoryBus
from .config import Config
from .http.api import PublishApi
from .transport.tcp import start_tcp_server
from .transport.websocket import WebSocketOutbound, websocket_handler

log = logging.getLogger("stompgate")


def make_authenticator(config: Config) -> Authenticator:
    auth = config.auth
    if auth.mode == "dev":
        return DevAuthenticator()
    if auth.mode == "static":
        return StaticAuthenticator(auth.users)
    jwt = auth.jwt
    return JwtAuthenticator(
        algorithm=jwt.algorithm,
        key=jwt.key(),
        user_claim=jwt.user_claim,
        audience=jwt.audience,
        issuer=jwt.issuer,
        leeway_s=jwt.leeway_s,
        require_exp=jwt.require_exp,
    )


def make_broker(config: Config) -> Broker:
    s = config.stomp
    settings = BrokerSettings(
        broker_prefixes=list(config.destinations.broker_prefixes),
        user_prefix=config.destinations.user_prefix,
        path_separator=config.destinations.path_separator,
        heartbeat_send_ms=s.heartbeat.send_ms,
        heartbeat_receive_ms=s.heartbeat.receive_ms,
        heartbeat_read_margin=s.heartbeat.read_margin,
        connect_timeout_s=s.connect_timeout_s,
        limits=SessionLimits(
            max_frame_size=s.max_frame_size,
            max_headers=s.max_headers,
            max_header_length=s.max_header_length,
            max_subscriptions=s.max_subscriptions,
            max_unacked=s.max_unacked,
            max_transactions=s.max_transactions,
            max_transaction_frames=s.max_transaction_frames,
        ),
    )
    return Broker(settings, make_authenticator(config), server_name=f"stompgate/{__version__}")


class Node:
    """One stompgate node: HTTP + WebSocket server, optional TCP listener."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.node_id = config.node_id or secrets.token_hex(4)
        self.broker = make_broker(config)
        limits = OfflineLimits(config.offline.max_messages, config.offline.ttl_s)
        if config.bus.type == "redis":
            from .bus.redis_bus import RedisBus

            self.bus: MemoryBus | RedisBus = RedisBus(config.bus, limits, self.node_id, self.broker)
        else:
            self.bus = MemoryBus(limits, self.node_id)
        self.broker.bus = self.bus
        self._expiry: asyncio.TimerHandle | None = None
        self._outbounds: set[WebSocketOutbound] = set()
        self._runner: web.AppRunner | None = None
        self._tcp: asyncio.Server | None = None
        self.app = self._make_app()

    def _make_app(self) -> web.Application:
        cfg = self.config
        app = web.Application(client_max_size=cfg.stomp.max_frame_size + 64 * 1024)
        handler = websocket_handler(self.broker, cfg.server.max_outbound_buffer, self._outbounds)
        for path in cfg.server.websocket_paths:
            app.router.add_get(path, handler)
        if cfg.api.enabled:
            assert cfg.api.key is not None
            app.add_routes(PublishApi(self.broker, self.bus, cfg.api.key).routes(cfg.api.prefix))
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        return app

    async def health(self, request: web.Request) -> web.Response:
        """Liveness: the process serves HTTP."""
        return web.json_response(
            {"status": "ok", "node": self.node_id, "sessions": len(self.broker.sessions)}
        )

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness: 503 while the cluster bus (Redis) is unreachable."""
        body = {"ready": self.bus.healthy, "node": self.node_id, **self.bus.status()}
        return web.json_response(body, status=200 if self.bus.healthy else 503)

    def _expire_offline(self) -> None:
        if isinstance(self.bus, MemoryBus):
            self.bus.expire()
            self._expiry = asyncio.get_running_loop().call_later(60, self._expire_offline)

    async def start(self) -> None:
        cfg = self.config.server
        await self.bus.start()
        self._expire_offline()
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        # TCP first: once /health answers, every listener accepts connections.
        if cfg.tcp.enabled:
            self._tcp = await start_tcp_server(self.broker, cfg.tcp.host, cfg.tcp.port, cfg.max_outbound_buffer)
        site = web.TCPSite(self._runner, cfg.host, cfg.port, reuse_address=True, backlog=1024)
        await site.start()
        log.info(
            "stompgate %s node %s listening on http://%s:%d (websocket: %s; api: %s; tcp: %s; bus: %s)",
            __version__,
            self.node_id,
            cfg.host,
            cfg.port,
            ", ".join(cfg.websocket_paths),
            self.config.api.prefix if self.config.api.enabled else "off",
            f"{cfg.tcp.host}:{cfg.tcp.port}" if cfg.tcp.enabled else "off",
            "memory" if self.config.bus.type == "memory" else f"redis, {self.config.bus.routing}",
        )

    async def stop(self) -> None:
        """Tell every client the server is going away (ERROR + 1012), then stop listening."""
        if self._tcp is not None:
            self._tcp.close()
        self.broker.shutdown()
        handlers = [o.done for o in self._outbounds]
        if handlers:  # closing handshakes, bounded
            await asyncio.wait(handlers, timeout=2)
        if self._expiry is not None:
            self._expiry.cancel()
        await self.bus.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tcp is not None:
            with suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1)
        log.info("stompgate node %s stopped", self.node_id)


async def serve(config: Config) -> None:
    """Run a node until SIGTERM or SIGINT, then shut it down cleanly."""
    node = Node(config)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: shutting down")
    await node.stop()


def run(config: Config) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
