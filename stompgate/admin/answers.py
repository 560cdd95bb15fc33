"""How this node answers the admin commands of any node (:class:`~stompgate.bus.admin.AdminCommand`).

Every answer is small and bounded: a summary, at most ``limit`` sessions (each
with at most :data:`MAX_SUBSCRIPTIONS` subscriptions listed), or a count of
sessions closed, with "truncated" and the totals saying what was left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..broker.closes import ADMIN
from ..broker.session import CLOSE_POLICY
from ..bus.admin import AdminCommand

if TYPE_CHECKING:
    from ..broker import Broker
    from ..broker.session import Session
    from ..bus.base import BusStats
    from .sampler import RateSampler

log = logging.getLogger("stompgate.admin")

ADMIN_CLOSE_MESSAGE = "disconnected by an administrator"
ADMIN_CLOSE_REASON = ADMIN  # the close reason (broker/closes.py)
MAX_SUBSCRIPTIONS = 50  # listed per session; the count says how many there are


def session_json(session: Session, node: str) -> dict[str, Any]:
    subs = list(session.subscriptions.values())
    return {
        "id": session.id,
        "node": node,
        "user": session.user,
        "transport": session.transport,
        "remote": session.remote,
        "since": round(session.since, 3),
        "version": session.version,
        "subscription_count": len(subs),
        "subscriptions": [
            {"id": sub.id, "destination": sub.destination, "user": sub.user}
            for sub in subs[:MAX_SUBSCRIPTIONS]
        ],
    }


def node_answers(
    broker: Broker, bus_stats: BusStats, node_id: str, interval_s: float, history: int
) -> NodeAnswers:
    """Every node answers admin commands (whether or not it serves the admin API itself),
    and samples its counters for the charts."""
    from .sampler import RateSampler

    answers = NodeAnswers(broker, bus_stats, node_id)
    answers.sampler = RateSampler(answers.counters, answers.gauges, interval_s, history)
    return answers


class NodeAnswers:
    """This node's side of the admin commands (an :data:`~stompgate.bus.admin.AdminHandler`)."""

    def __init__(
        self, broker: Broker, bus_stats: BusStats, node_id: str, sampler: RateSampler | None = None
    ) -> None:
        self.broker = broker
        self.bus_stats = bus_stats
        self.node_id = node_id
        self.sampler = sampler
        self.started = time.time()
        # Starts this node's drain (Node.drain); set by the node once it can drain.
        self.drain: Callable[[], object] | None = None

    def __call__(self, command: AdminCommand) -> dict[str, Any]:
        if command.op == "node":
            return self.summary(with_rates=True)
        if command.op == "sessions":
            return self.sessions(command.user, command.limit)
        if command.op == "drain":
            return self.drain_if_named(command.node)
        return self.disconnect(command.user, command.session)

    def drain_if_named(self, node: str | None) -> dict[str, Any]:
        """Start draining when ``node`` is this node; every node answers whether it drains."""
        if node != self.node_id or self.drain is None:
            return {"node": self.node_id, "draining": False}
        log.warning(
            "draining on an administrator's request", extra={"event": "node.drain", "reason": "admin"}
        )
        self.drain()
        return {"node": self.node_id, "draining": True}

    def subscription_count(self) -> int:
        return sum(len(s.subscriptions) for s in self.broker.sessions.values())

    def counters(self) -> dict[str, int]:
        """The counters the sampler turns into rates."""
        stats = self.broker.stats
        return {
            "published": stats.messages_published,
            "delivered": stats.messages_delivered,
            "errors": stats.errors,
            "sessions_opened": stats.sessions_opened,
            "bus_published": self.bus_stats.published,
            "bus_received": self.bus_stats.received,
        }

    def gauges(self) -> tuple[int, int]:
        return len(self.broker.sessions), self.subscription_count()

    def summary(self, with_rates: bool = False) -> dict[str, Any]:
        broker = self.broker
        out: dict[str, Any] = {
            "node": self.node_id,
            "version": __version__,
            "started": round(self.started, 3),
            "uptime_s": round(time.time() - self.started, 1),
            "sessions": len(broker.sessions),
            "connections": len(broker.open_sessions),
            "subscriptions": self.subscription_count(),
            "users": len(broker.users),
            "broker": asdict(broker.stats),
            "bus": asdict(self.bus_stats),
        }
        if with_rates and self.sampler is not None:
            out["rates"] = self.sampler.rates()
        return out

    def sessions(self, user: str | None, limit: int) -> dict[str, Any]:
        """This node's sessions (of ``user`` only, when given), the first ``limit`` of them."""
        if user is not None:
            entry = self.broker.users.get(user)
            found: list[Session] = list(entry.sessions) if entry is not None else []
        else:
            found = list(self.broker.sessions.values())
        shown = found[:limit]
        return {
            "node": self.node_id,
            "total": len(found),
            "truncated": len(found) > len(shown),
            "sessions": [session_json(s, self.node_id) for s in shown],
        }

    def disconnect(self, user: str | None, session_id: str | None) -> dict[str, Any]:
        """ERROR "disconnected by an administrator", then close, for each session named."""
        if session_id is not None:
            one = self.broker.sessions.get(session_id)
            targets = [one] if one is not None else []
        else:
            entry = self.broker.users.get(user or "")
            targets = list(entry.sessions) if entry is not None else []
        for session in targets:
            log.info(
                "session %s (%s, %s) disconnected by an administrator",
                session.id,
                session.user or "-",
                session.remote,
                extra={
                    "event": "admin.disconnect",
                    "session": session.id,
                    "user": session.user,
                    "remote": session.remote,
                    "reason": ADMIN_CLOSE_REASON,
                    "transport": session.transport,
                },
            )
            session.fail(ADMIN_CLOSE_MESSAGE, code=CLOSE_POLICY, cause=ADMIN)
        return {"node": self.node_id, "closed": len(targets)}
