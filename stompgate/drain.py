"""Graceful drain of a node: not ready, no new sessions, sessions closed in batches, the bus settled.

When a node stops, every client it holds reconnects to another node. Closed
all at once they would arrive there together (handshakes, logins, subscriptions
fetching their stored messages): a stampede on the nodes that stay. So a
draining node closes its sessions in batches spread over ``server.drain_s``,
each batch at a random moment of its slot, with an ERROR ("server restarting")
and close code 1012 (Service Restart), which STOMP clients that reconnect take
as "try again, elsewhere".

No user message is lost on the way. The sessions of one user close together.
Before a batch closes, the bus unsubscribes this node from its users' channels
and waits for Redis to confirm (:meth:`stompgate.bus.redis_bus.RedisBus.release`):
what Redis routed here until then reaches the sessions, still open, before their
ERROR; what comes after is stored, or goes to the users' sessions on other nodes.
Stored messages being fetched for them are handed over first too. And the node
exits only once its outbox is sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .broker.closes import SHUTDOWN
from .broker.ports import CLOSE_RESTART

if TYPE_CHECKING:
    from .broker import Broker
    from .bus.contract import ClusterBus
    from .sockjs import SockJSEndpoint

log = logging.getLogger("stompgate.drain")

CLOSE_MESSAGE = "server restarting"
# Batches come at most this often: more would not spread clients any better.
BATCH_SPACING_S = 0.25
# Before a batch: how long Redis may take to confirm the unsubscriptions of its users.
SETTLE_BATCH_S = 0.5
# After the last batch: closing handshakes, then the outbox sent to Redis.
HANDSHAKES_S = 2.0
SETTLE_END_S = 5.0

S = TypeVar("S")


@dataclass
class DrainState:
    """Whether (and since when, Unix time) the node is draining."""

    since: float | None = None

    @property
    def draining(self) -> bool:
        return self.since is not None

    def begin(self) -> None:
        if self.since is None:
            self.since = time.time()


def plan(
    sessions: Iterable[S], user_of: Callable[[S], str | None], period_s: float, rng: random.Random
) -> list[tuple[float, list[S]]]:
    """When each session closes: (seconds from now, sessions), in time order.

    The sessions of one user go in the same batch (a user whose sessions close
    one by one would have messages delivered to the last of them only). Users
    are shuffled, batches are at most every ``BATCH_SPACING_S`` and each comes
    at a random moment of its slot of ``period_s``, the last by its end.
    """
    groups: dict[object, list[S]] = {}
    for session in sessions:
        user = user_of(session)
        groups.setdefault(user if user is not None else object(), []).append(session)
    order = list(groups.values())
    rng.shuffle(order)
    if not order:
        return []
    count = 1 if period_s <= 0 else max(1, min(len(order), math.ceil(period_s / BATCH_SPACING_S)))
    slot = period_s / count if period_s > 0 else 0.0
    batches: list[list[S]] = [[] for _ in range(count)]
    for i, group in enumerate(order):
        batches[i * count // len(order)].extend(group)
    return [((b + rng.random()) * slot, batch) for b, batch in enumerate(batches)]


async def close_in_batches(
    broker: Broker, bus: ClusterBus, period_s: float, rng: random.Random | None = None
) -> None:
    """Close every session of ``broker`` over ``period_s`` (ERROR, then close code 1012)."""
    schedule = plan(list(broker.open_sessions), lambda s: s.user, period_s, rng or random.Random())
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, (at, batch) in enumerate(schedule, 1):
        delay = start + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        # Redis stops routing these users' messages here before their sessions close, and
        # stored messages being fetched for them reach them first.
        users = {session.user for session in batch if session.user is not None}
        if users and not await bus.release(users, SETTLE_BATCH_S):
            log.warning("drain: redis did not confirm the unsubscriptions of %d users in time", len(users))
        log.info(
            "drain: batch %d of %d: closing %d sessions",
            index,
            len(schedule),
            len(batch),
            extra={"event": "node.drain", "reason": "shutdown"},
        )
        for session in batch:
            # A no-op for one closed meanwhile.
            session.fail(CLOSE_MESSAGE, code=CLOSE_RESTART, cause=SHUTDOWN)
    broker.shutdown(CLOSE_MESSAGE)  # those whose handshake was under way when the drain began


def refuse_new_sessions(
    state: DrainState, websocket_paths: Sequence[str], sockjs: Sequence[SockJSEndpoint]
) -> Middleware:
    """An aiohttp middleware: while draining, requests that would open a session get 503.

    The listener stays open: ``/health`` and ``/ready`` answer (the load balancer
    must see "not ready", not a refused connection), the publish API works, and
    the SockJS sessions still open keep polling until their batch closes them.
    """
    ws_paths = frozenset(websocket_paths)

    def opens_session(path: str) -> bool:
        if path in ws_paths:
            return True
        for endpoint in sockjs:
            prefix = endpoint.prefix
            if not path.startswith(prefix + "/"):
                continue
            parts = path[len(prefix) + 1 :].split("/")
            if parts in (["info"], ["websocket"]):
                return True
            # A session's own requests go on; a new session id (or a WebSocket) does not.
            return len(parts) == 3 and (parts[2] == "websocket" or parts[1] not in endpoint.sessions)
        return False

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if state.since is not None and opens_session(request.path):
            return web.Response(
                status=503,
                text="this node is draining (restarting): connect to another node\n",
                headers={"Retry-After": "1", "Connection": "close"},
            )
        return await handler(request)

    return middleware


__all__ = ["CLOSE_MESSAGE", "DrainState", "close_in_batches", "plan", "refuse_new_sessions"]
