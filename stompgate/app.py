"""Wiring and lifecycle of one node: config -> broker -> aiohttp app and listeners."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import signal
from contextlib import suppress
from pathlib import Path

from aiohttp import web

from . import __version__
from .admin.answers import node_answers
from .application import CallRunner, PythonApplication
from .broker import (
    Broker,
    BrokerSettings,
    DevAuthenticator,
    JwtAuthenticator,
    StaticAuthenticator,
)
from .broker.auth import Authenticator, AuthError, Credentials
from .broker.closes import LIMIT
from .broker.session import CLOSE_POLICY
from .bus.contract import ClusterBus
from .bus.memory import MemoryBus
from .config import Config, startup_warnings
from .drain import (
    CLOSE_MESSAGE,
    HANDSHAKES_S,
    SETTLE_END_S,
    DrainState,
    close_in_batches,
    refuse_new_sessions,
)
from .extensions import NodeContext, load_extension
from .forwarded import TrustedProxies
from .http.api import PublishApi
from .logs import always, set_node
from .metrics import Metrics
from .origins import OriginPolicy
from .proxy import ProxyApplication, ProxyGate
from .sockjs import SockJSEndpoint, SockJSOptions
from .sockjs.settings import SockJSSettings
from .tls import ServerTls
from .transport.access import log_handshake
from .transport.clientaddr import client_address_middleware
from .transport.httpsite import GatedSite, handler_kwargs
from .transport.limits import ConnectionGate, derived_max_connections, open_file_limit, parse_networks
from .transport.sockjs import sockjs_message_limit, stomp_sockjs_endpoint
from .transport.tcp import start_tcp_server
from .transport.websocket import WebSocketOutbound, websocket_handler

log = logging.getLogger("stompgate")


class ProxyLoginOnly:
    """No auth.mode: CONNECTs are decided by the connect proxy; anything else that would
    log in here (the HTTP API's user calls, extensions, a refresh-token) is refused."""

    def authenticate(self, creds: Credentials) -> str | None:
        raise AuthError("logins go through the connect proxy (proxy.connect_url)")


def make_authenticator(config: Config) -> Authenticator:
    auth = config.auth
    for warning in startup_warnings(config):  # whatever logging.level is: it must not go unseen
        always(log, logging.WARNING, "%s", warning)
    if auth.mode is None:  # proxy.connect_url says who connects (config.py checks it is set)
        return ProxyLoginOnly()
    if auth.mode == "dev":
        return DevAuthenticator(auth.cookie)
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
        cookie=auth.cookie,
        roles_claim=jwt.roles_claim,
    )


def make_broker(config: Config) -> Broker:
    # The config's sections are the broker's settings classes (broker/settings.py).
    settings = BrokerSettings(
        destinations=config.destinations, heartbeat=config.stomp.heartbeat, limits=config.stomp
    )
    authorization = config.authorization
    return Broker(
        settings,
        make_authenticator(config),
        server_name=f"stompgate/{__version__}",
        authorizer=authorization.authorizer(config.auth.mode, config.destinations.path_separator),
        roles=authorization.user_roles(),
    )


class Node:
    """One stompgate node: HTTP + WebSocket server, optional TCP listener."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.node_id = config.node_id or secrets.token_hex(4)
        set_node(self.node_id)
        self.proxies = TrustedProxies(config.server.trusted_proxies, config.server.client_address_header)
        self.broker = make_broker(config)
        limits = config.offline.limits()
        if config.bus.type == "redis":
            from .bus.redis_bus import RedisBus

            self.bus: ClusterBus = RedisBus(config.bus, limits, self.node_id, self.broker)
        else:
            self.bus = MemoryBus(limits, self.node_id)
        self.broker.bus = self.bus
        admin = config.admin  # every node answers admin commands; admin.enabled serves the API
        self.admin = node_answers(
            self.broker, self.bus.stats, self.node_id, admin.sample_interval_s, admin.history
        )
        self.bus.serve_admin(self.admin)
        self.admin.drain = self.start_drain
        self._expiry: asyncio.TimerHandle | None = None
        self._budget_timer: asyncio.TimerHandle | None = None
        self._outbounds: set[WebSocketOutbound] = set()
        self._sockjs: list[SockJSEndpoint] = []
        self.application: PythonApplication | None = None
        self.proxy: ProxyApplication | None = None
        if config.destinations.application_prefixes:
            # One runner, so a session's calls keep their order across handlers and the proxy.
            runner = CallRunner(config.proxy.concurrency, config.proxy.max_calls_per_user)
            proxy = config.proxy
            if proxy.application_url is not None:
                assert proxy.secret is not None
                self.proxy = ProxyApplication(
                    self.broker, proxy.application_url, proxy.secret, runner,
                    timeout_s=proxy.timeout_s, max_response_bytes=proxy.max_response_bytes,
                )  # fmt: skip
            self.application = PythonApplication(self.broker, runner=runner, fallback=self.proxy)
            self.broker.application = self.application
        self.proxy_gate: ProxyGate | None = None  # the connect / subscribe / publish proxies
        proxy = config.proxy
        if proxy.connect_url or proxy.subscribe_url or proxy.publish_url:
            assert proxy.secret is not None
            self.proxy_gate = ProxyGate(
                self.broker, proxy.secret,
                connect_url=proxy.connect_url, subscribe_url=proxy.subscribe_url,
                publish_url=proxy.publish_url,
                timeout_s=proxy.timeout_s, max_response_bytes=proxy.max_response_bytes,
            )  # fmt: skip
            self.broker.gate = self.proxy_gate
        self._runner: web.AppRunner | None = None
        self._tcp: asyncio.Server | None = None
        self.tls = ServerTls(config.server.tls) if config.server.tls.certificate else None
        self.drain_state = DrainState()
        self._draining: asyncio.Future[None] | None = None
        self.gate = self._make_gate()
        self.metrics = Metrics(self) if config.metrics.enabled else None
        self.app = self._make_app()

    def _make_gate(self) -> ConnectionGate:
        """One count of open connections for every listener of this process."""
        conn = self.config.server.connections
        derived = derived_max_connections()
        if conn.max is not None and conn.max > derived:
            log.warning(
                "server.connections.max %d is above what the open-file limit (ulimit -n %d) leaves for "
                "connections (%d): past it, connections fail instead of being refused",
                conn.max,
                open_file_limit(),
                derived,
            )
        # A trusted proxy's connections carry many clients: each of those is counted per request.
        exempt = parse_networks(conn.exempt) + self.proxies.networks
        return ConnectionGate(conn.max or derived, conn.per_address, exempt)

    def _make_app(self) -> web.Application:
        cfg = self.config
        app = web.Application(
            client_max_size=cfg.stomp.max_frame_size + 64 * 1024,
            middlewares=[client_address_middleware(self.proxies, self.gate)],
        )
        if cfg.logging.access_log:
            app.on_response_prepare.append(log_handshake)
        origins = OriginPolicy(cfg.server.allowed_origins)
        handler = websocket_handler(self.broker, cfg.server.max_outbound_buffer, self._outbounds, origins)
        for path in cfg.server.websocket_paths:
            app.router.add_get(path, handler)
        for sj in cfg.server.sockjs:
            settings = {f.name: getattr(sj, f.name) for f in dataclasses.fields(SockJSSettings)}
            if sj.allowed_origins is None:
                settings["allowed_origins"] = list(cfg.server.allowed_origins)
            options = SockJSOptions(
                **settings,
                max_message_size=sockjs_message_limit(cfg.stomp.max_frame_size),
                body_timeout_s=cfg.server.connections.body_timeout_s,
                credential_cookies=(cfg.auth.cookie,) if cfg.auth.cookie else (),
            )
            endpoint = stomp_sockjs_endpoint(self.broker, sj.path, options, cfg.server.max_outbound_buffer)
            endpoint.add_routes(app.router)
            self._sockjs.append(endpoint)
        if cfg.api.enabled:
            assert cfg.api.key is not None
            api = PublishApi(self.broker, self.bus, cfg.api.key, cfg.server.connections.body_timeout_s)
            app.add_routes(api.routes(cfg.api.prefix))
        if cfg.admin.enabled:
            from .admin.api import AdminApi

            app.add_routes(AdminApi(cfg, self.bus, self.admin).routes(cfg.admin.path))
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        if self.metrics is not None:
            app.router.add_get(cfg.metrics.path, self.metrics.handle)
        for static in cfg.server.static:
            self._add_static(app, static.path.rstrip("/"), static.dir)
        context = NodeContext(
            app, self.broker, self.bus, self.node_id, cfg.server.connections.body_timeout_s, self.application
        )
        for path in cfg.server.extensions:
            load_extension(path, context)
        refuse = refuse_new_sessions(self.drain_state, cfg.server.websocket_paths, self._sockjs)
        app.middlewares.append(refuse)
        return app

    @staticmethod
    def _add_static(app: web.Application, prefix: str, directory: str) -> None:
        """A directory's files under ``prefix``; ``prefix`` and ``prefix/`` serve its index.html."""
        index = Path(directory) / "index.html"

        async def serve_index(request: web.Request) -> web.StreamResponse:
            if not index.is_file():
                raise web.HTTPNotFound()
            return web.FileResponse(index)

        async def to_slash(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(prefix + "/")

        if prefix:
            app.router.add_get(prefix, to_slash)
        app.router.add_get(prefix + "/", serve_index)
        app.router.add_static(prefix or "/", directory, follow_symlinks=False)

    async def health(self, request: web.Request) -> web.Response:
        """Liveness: the process serves HTTP."""
        body = {"status": "ok", "node": self.node_id, "sessions": len(self.broker.sessions)}
        if self.drain_state.draining:  # still alive: killing it early would cut the drain short
            body["draining"] = True
        return web.json_response(body)

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness: 503 while the cluster bus (Redis) is unreachable or the node drains."""
        if self.drain_state.draining:
            body = {"ready": False, "reason": "draining", "node": self.node_id}
            body |= {"since": self.drain_state.since, "sessions": len(self.broker.sessions)}
            return web.json_response(body, status=503)
        body = {"ready": self.bus.healthy, "node": self.node_id, **self.bus.status()}
        return web.json_response(body, status=200 if self.bus.healthy else 503)

    async def drain(self, period_s: float | None = None) -> None:
        """Take this node out of service without losing a message (stompgate/drain.py).

        At once: ``/ready`` answers 503 ("draining"), new WebSocket and SockJS
        sessions get 503, the STOMP TCP listener closes. Then the sessions are
        closed in batches over ``period_s`` (default ``server.drain_s``) with an
        ERROR and close code 1012, and the bus hands over what it holds. The node
        keeps serving ``/health``, ``/ready`` and the API until it is stopped. A
        second call joins the drain under way.
        """
        draining = self.start_drain(period_s)
        await asyncio.shield(draining)

    def start_drain(self, period_s: float | None = None) -> asyncio.Future[None]:
        """Start the drain (or return the one under way) without waiting for it: the admin call."""
        if self._draining is None:
            period = self.config.server.drain_s if period_s is None else period_s
            self._draining = asyncio.ensure_future(self._drain(period))
        return self._draining

    async def _drain(self, period_s: float) -> None:
        self.drain_state.begin()
        log.info(
            "draining: no new sessions; closing %d sessions over %g s",
            len(self.broker.open_sessions),
            period_s,
            extra={"event": "node.drain", "reason": "shutdown"},
        )
        if self._tcp is not None:
            self._tcp.close()  # STOMP clients over TCP are refused at once and try another node
        await close_in_batches(self.broker, self.bus, period_s)
        handlers = [o.done for o in self._outbounds]
        handlers += [asyncio.ensure_future(e.drain(HANDSHAKES_S)) for e in self._sockjs]
        if handlers:  # closing handshakes and last SockJS frames, bounded
            await asyncio.wait(handlers, timeout=HANDSHAKES_S)
        if await self.bus.settle(SETTLE_END_S):
            log.info("drained: every session closed, the bus has everything", extra={"event": "node.drain"})
        else:
            log.warning(
                "drained, but the bus did not hand everything over within %g s: %s",
                SETTLE_END_S,
                self.bus.status(),
                extra={"event": "node.drain"},
            )

    def _check_budget(self) -> None:
        """Once a second: if the sessions' buffers are past server.memory_budget, close the heaviest.

        Adding up every session costs about 1 us each; the process's resident size,
        which holds all of those buffers, is one read of /proc: while it is under
        the budget, so are they, and the sessions are not looked at.
        """
        budget = self.config.server.memory_budget
        rss = _resident_bytes()
        heaviest = self.broker.heaviest(budget) if rss is None or rss > budget else []
        for size, session in heaviest:
            log.warning(
                "memory budget of %d bytes exceeded: closing session %s (%s, %s) holding %d bytes",
                budget, session.id, session.user or "-", session.remote, size,
            )
            session.fail(
                f"server memory budget exceeded: this session held {size} bytes; "
                "closed first as the heaviest",
                code=CLOSE_POLICY,
                cause=LIMIT,
            )
            # The ERROR goes out if the peer reads; its buffers are freed in a second either way.
            asyncio.get_running_loop().call_later(1.0, session.out.abort)
        self._budget_timer = asyncio.get_running_loop().call_later(1.0, self._check_budget)

    def _expire_offline(self) -> None:
        self.bus.expire()
        self._expiry = asyncio.get_running_loop().call_later(60, self._expire_offline)

    async def start(self) -> None:
        cfg = self.config.server
        await self.bus.start()
        if self.admin.sampler is not None:
            self.admin.sampler.start()
        self._expire_offline()
        if self.config.server.memory_budget:
            self._check_budget()
        if self.metrics is not None:
            self.metrics.start()
        conn = cfg.connections
        # keepalive_timeout doubles as the header timeout (transport/httpsite.py).
        kwargs = handler_kwargs(conn.header_timeout_s, conn.body_timeout_s, self.config.logging.access_log)
        # handler_cancellation: a client that drops a waiting SockJS poll is noticed at once.
        self._runner = web.AppRunner(
            self.app, handle_signals=False, shutdown_timeout=1, handler_cancellation=True, **kwargs
        )
        await self._runner.setup()
        # TCP first: once /health answers, every listener accepts connections.
        shared = cfg.workers > 1  # the workers of stompgate.workers share the ports
        if cfg.tcp.enabled:
            self._tcp = await start_tcp_server(
                self.broker,
                cfg.tcp.host,
                cfg.tcp.port,
                cfg.max_outbound_buffer,
                reuse_port=shared,
                gate=self.gate,
                tls=self.tls,
            )
        site = GatedSite(
            self._runner, self.gate, cfg.host, cfg.port, kwargs=kwargs, reuse_port=shared, backlog=1024,
            tls=self.tls,
        )  # fmt: skip
        await site.start()
        log.info(
            "stompgate %s node %s listening on %s "
            "(websocket: %s; sockjs: %s; api: %s; admin: %s; tcp: %s; bus: %s)",
            __version__,
            self.node_id,
            site.name,
            ", ".join(cfg.websocket_paths) or "off",
            ", ".join(s.path for s in cfg.sockjs) or "off",
            self.config.api.prefix if self.config.api.enabled else "off",
            self.config.admin.path if self.config.admin.enabled else "off",
            f"{cfg.tcp.host}:{cfg.tcp.port}{' over TLS' if self.tls else ''}" if cfg.tcp.enabled else "off",
            "memory" if self.config.bus.type == "memory" else f"redis, {self.config.bus.routing}",
        )
        for static in cfg.static:
            log.info("serving %s at %s%s/", static.dir, site.name, static.path.rstrip("/"))
        log.info(
            "connections: at most %d, %d per address (exempt: %s); "
            "request heads within %g s, bodies within %g s",
            self.gate.max_total,
            self.gate.per_address,
            ", ".join(conn.exempt) or "none",
            conn.header_timeout_s,
            conn.body_timeout_s,
        )
        if self.proxies:
            log.info(
                "client addresses: from %s when the peer is a trusted proxy (%s)",
                cfg.client_address_header,
                ", ".join(cfg.trusted_proxies),
            )

    def reload(self) -> None:
        """SIGHUP: read the TLS certificate and key again (new connections get them, open ones
        keep theirs); a failure is logged and the previous ones stay."""
        if self.tls is None:
            log.info("SIGHUP: nothing to reload (server.tls is not set)")
            return
        self.tls.reload()

    async def stop(self) -> None:
        """Tell every client the server is going away (ERROR + 1012), then stop listening."""
        if self._draining is not None and not self._draining.done():
            self._draining.cancel()  # a second signal: whatever is left closes now
        if self._tcp is not None:
            self._tcp.close()
        self.broker.shutdown(CLOSE_MESSAGE)
        handlers = [o.done for o in self._outbounds]
        handlers += [asyncio.ensure_future(e.drain(2)) for e in self._sockjs]
        if handlers:  # closing handshakes and last SockJS frames, bounded
            await asyncio.wait(handlers, timeout=2)
        for timer in (self._expiry, self._budget_timer):
            if timer is not None:
                timer.cancel()
        if self.admin.sampler is not None:
            await self.admin.sampler.stop()
        if self.metrics is not None:
            self.metrics.stop()
        if self.application is not None:
            await self.application.stop()
        if self.proxy is not None:
            await self.proxy.stop()
        if self.proxy_gate is not None:
            await self.proxy_gate.stop()
        await self.bus.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tcp is not None:
            with suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1)
        self.gate.close()
        log.info("stompgate node %s stopped", self.node_id)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int | None:
    """This process's resident memory (Linux), or None where /proc does not tell."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


async def serve(config: Config) -> None:
    """Run a node until SIGTERM or SIGINT, drain it, then shut it down; a second signal skips the drain."""
    node = Node(config)
    await node.start()
    signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    loop.add_signal_handler(signal.SIGHUP, node.reload)
    first = await signals.get()
    period = config.server.drain_s
    log.info("%s received: draining over %g s (a second signal stops at once)", first.name, period)
    draining = asyncio.ensure_future(node.drain())
    second = asyncio.ensure_future(signals.get())
    await asyncio.wait([draining, second], return_when=asyncio.FIRST_COMPLETED)
    if second.done():
        log.info("%s received again: stopping now", second.result().name)
    second.cancel()
    await node.stop()
    if draining.done() and not draining.cancelled() and draining.exception() is not None:
        log.error("the drain failed", exc_info=draining.exception())


def run(config: Config) -> None:
    # SIGHUP reloads TLS files once the node is up (serve); until then it must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
