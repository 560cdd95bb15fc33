"""The admin API (JSON under ``{admin.path}/api``) and the admin page's files (docs/admin.md).

Cluster-wide answers come from every live node through the bus
(:meth:`~stompgate.bus.contract.ClusterBus.admin_call`); a node that does not
answer within ``admin.timeout_s`` is named in ``missing`` rather than waited for.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..bus.admin import MAX_LIMIT, AdminCommand, AdminReplies
from ..bus.base import BusUnavailable
from ..http.api import BadRequest, read_json_object
from .guard import AdminGuard
from .redact import redacted_config

if TYPE_CHECKING:
    from ..bus.contract import ClusterBus
    from ..config import Config
    from .answers import NodeAnswers

log = logging.getLogger("stompgate.admin")

STATIC = Path(__file__).resolve().parent / "static"
# The page's own files, and the chart library's (installed by scripts/bootstrap.sh), by the name served.
PAGE_FILES = {"admin.js": STATIC / "admin.js", "admin.css": STATIC / "admin.css"}
VENDOR_FILES = {
    "uPlot.iife.min.js": STATIC / "node_modules" / "uplot" / "dist" / "uPlot.iife.min.js",
    "uPlot.min.css": STATIC / "node_modules" / "uplot" / "dist" / "uPlot.min.css",
}
# The page runs only its own scripts, and no other site may frame it (clickjacking).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers={"Cache-Control": "no-store"})


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer 1..{MAX_LIMIT}, got {raw!r}")
    return int(raw)


class AdminApi:
    def __init__(self, config: Config, bus: ClusterBus, answers: NodeAnswers) -> None:
        admin = config.admin
        self.config = config
        self.bus = bus
        self.answers = answers
        self.timeout_s = admin.timeout_s
        self.body_timeout_s = config.server.connections.body_timeout_s
        key = config.api.key if admin.api_key and config.api.enabled else None
        self.guard = AdminGuard(admin.user, admin.password, key)

    def _guarded(self, handler: Handler) -> Handler:
        """Refuse other origins and wrong credentials; Redis away is a 503, a bad request a 4xx."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            origin = self.guard.cross_origin(request)
            if origin is not None:
                return _error(403, f"admin API calls from another origin ({origin}) are refused")
            if not self.guard.authorized(request):
                return _error(
                    401,
                    "missing or wrong admin credentials: HTTP Basic with admin.user and admin.password"
                    + (", or the API key ('Authorization: Bearer <key>')" if self.guard.has_key else ""),
                )
            try:
                return await handler(request)
            except BadRequest as exc:
                return _error(exc.status, str(exc))
            except BusUnavailable as exc:
                return _error(503, str(exc))

        return guarded

    async def _call(self, command: AdminCommand) -> AdminReplies:
        got = await self.bus.admin_call(command, self.timeout_s)
        got.replies.sort(key=lambda r: str(r.get("node")))
        return got

    # ------------------------------------------------------------ this node

    async def info(self, request: web.Request) -> web.StreamResponse:
        """This node: id, version, uptime, counts, recent rates, the bus's state."""
        return web.json_response({**self.answers.summary(with_rates=True), "bus_status": self.bus.status()})

    async def config_view(self, request: web.Request) -> web.StreamResponse:
        """The effective configuration, every secret value replaced."""
        return web.json_response({"node": self.answers.node_id, "config": redacted_config(self.config)})

    # ------------------------------------------------------------ the cluster

    async def nodes(self, request: web.Request) -> web.StreamResponse:
        got = await self._call(AdminCommand("node"))
        return web.json_response({"nodes": got.replies, "missing": got.missing})

    async def users(self, request: web.Request) -> web.StreamResponse:
        limit = _limit(request)
        users = await self.bus.online_users()
        return web.json_response(
            {"users": users[:limit], "total": len(users), "truncated": len(users) > limit}
        )

    async def sessions(self, request: web.Request) -> web.StreamResponse:
        user = request.query.get("user") or None
        return web.json_response(await self._sessions(user, _limit(request)))

    async def user(self, request: web.Request) -> web.StreamResponse:
        user = request.match_info["user"]
        return web.json_response({"user": user, **await self._sessions(user, _limit(request))})

    async def _sessions(self, user: str | None, limit: int) -> dict[str, Any]:
        """Sessions on every node, at most ``limit`` per node and in all."""
        got = await self._call(AdminCommand("sessions", user=user, limit=limit))
        sessions: list[dict[str, Any]] = []
        per_node = []
        truncated = False
        for reply in got.replies:
            listed = reply.get("sessions", [])
            room = max(limit - len(sessions), 0)
            sessions.extend(listed[:room])
            truncated = truncated or bool(reply.get("truncated")) or len(listed) > room
            per_node.append({"node": reply.get("node"), "sessions": reply.get("total", 0)})
        return {
            "total": sum(n["sessions"] for n in per_node),
            "truncated": truncated,
            "nodes": per_node,
            "sessions": sessions,
            "missing": got.missing,
        }

    async def disconnect(self, request: web.Request) -> web.StreamResponse:
        """Close a user's sessions, or one session, wherever in the cluster they are."""
        data = await read_json_object(request, self.body_timeout_s)
        user, session = data.get("user"), data.get("session")
        if (user is None) == (session is None):
            raise BadRequest("give exactly one of 'user' or 'session'")
        for value in (user, session):
            if value is not None and (not isinstance(value, str) or not value):
                raise BadRequest("'user' and 'session' are non-empty strings")
        got = await self._call(AdminCommand("disconnect", user=user, session=session))
        closed = {str(r.get("node")): int(r.get("closed", 0)) for r in got.replies}
        log.warning(
            "admin disconnect of %s asked from %s: %d session(s) closed%s",
            f"user {user!r}" if user is not None else f"session {session}",
            request.remote,
            sum(closed.values()),
            f" (no answer from {', '.join(got.missing)})" if got.missing else "",
        )
        return web.json_response({"closed": sum(closed.values()), "nodes": closed, "missing": got.missing})

    async def drain(self, request: web.Request) -> web.StreamResponse:
        """Drain one node of the cluster, as SIGTERM would, but without exiting:
        it stays up, not ready and refusing sessions, until it is stopped."""
        data = await read_json_object(request, self.body_timeout_s)
        node = data.get("node")
        if not isinstance(node, str) or not node:
            raise BadRequest("give 'node': the id of the node to drain")
        got = await self._call(AdminCommand("drain", node=node))
        draining = [str(r.get("node")) for r in got.replies if r.get("draining") is True]
        log.warning(
            "admin drain of node %s asked from %s: %s",
            node,
            request.remote,
            "draining" if draining else "no such node answered",
        )
        answer: dict[str, Any] = {"draining": draining, "missing": got.missing}
        if not draining:
            answer["error"] = f"no live node {node!r} answered (GET nodes lists them)"
        return web.json_response(answer, status=200 if draining else 404)

    # ------------------------------------------------------------ the page

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def page_file(self, request: web.Request) -> web.StreamResponse:
        path = PAGE_FILES.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers=PAGE_HEADERS)

    async def vendor_file(self, request: web.Request) -> web.StreamResponse:
        path = VENDOR_FILES.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        if not path.is_file():
            raise web.HTTPNotFound(text="the chart library is not installed: run scripts/bootstrap.sh")
        return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    def routes(self, prefix: str) -> list[web.RouteDef]:
        api = prefix + "/api"
        g = self._guarded

        async def to_slash(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(prefix + "/")

        return [
            web.get(prefix, to_slash),
            web.get(prefix + "/", self.page),
            web.get(prefix + "/static/{name}", self.page_file),
            web.get(prefix + "/vendor/{name}", self.vendor_file),
            web.get(api + "/info", g(self.info)),
            web.get(api + "/config", g(self.config_view)),
            web.get(api + "/nodes", g(self.nodes)),
            web.get(api + "/users", g(self.users)),
            web.get(api + "/users/{user}", g(self.user)),
            web.get(api + "/sessions", g(self.sessions)),
            web.post(api + "/disconnect", g(self.disconnect)),
            web.post(api + "/drain", g(self.drain)),
        ]
