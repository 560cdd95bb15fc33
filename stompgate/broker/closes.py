"""Why a session ended: one short machine reason per end, and the log lines of a session's life.

The reason is recorded once, by the first thing that ends the session (an ERROR
it is sent, a slow-consumer drop, the peer going away), and reaches the
``session.close`` log line and ``stompgate_sessions_closed_total{reason}``.
Stdlib only: this is part of the sans-I/O core.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..logs import RateLimitedLog

if TYPE_CHECKING:
    from .session import Session

CLIENT = "client"  # DISCONNECT, or the peer closed the connection
PROTOCOL = "protocol"  # a malformed frame or a protocol error (no CONNECT in time included)
AUTH = "auth"  # the login was refused (CONNECT, a refresh-token)
DENIED = "denied"  # authorization: a SEND or SUBSCRIBE refused (rules, a proxy, the application)
LIMIT = "limit"  # a size, rate or count limit (stomp.*, server.memory_budget, the offline store)
SLOW_CONSUMER = "slow-consumer"  # the peer did not read (server.max_outbound_buffer)
HEARTBEAT = "heartbeat"  # nothing from the client, not even a heart-beat
TOKEN_EXPIRED = "token-expired"  # the session's credential expired
SHUTDOWN = "shutdown"  # the node is stopping or draining
ADMIN = "admin"  # an operator disconnected it
INTERNAL = "internal"  # a fault of the node

REASONS = (
    CLIENT, PROTOCOL, AUTH, DENIED, LIMIT, SLOW_CONSUMER, HEARTBEAT, TOKEN_EXPIRED, SHUTDOWN, ADMIN, INTERNAL,
)  # fmt: skip

# The offline store's refusals (bus/base.py REFUSAL_STATUS): a limit was reached, not a fault.
_STORE_LIMITS = frozenset(("STOREFULL", "TOOBIG", "NODEFULL", "OOM"))


def bus_refusal_reason(error: str) -> str:
    """The reason for a session closed because the bus did not take its message."""
    return LIMIT if error.split(" ", 1)[0] in _STORE_LIMITS else INTERNAL


log = logging.getLogger("stompgate.sessions")
# Sessions that never got past CONNECT are ended by whoever opens connections
# (failed logins, scanners): a line each, but a flood is counted, not written.
_unconnected = RateLimitedLog(
    log, "closes of sessions not connected", level=logging.INFO, burst=100, interval_s=10.0
)


def transport_kind(transport: str) -> str:
    """websocket, sockjs or tcp: a session's ``transport`` names SockJS's own (sockjs-xhr-streaming...)."""
    return "sockjs" if transport.startswith("sockjs") else transport


def _extra(session: Session, event: str) -> dict[str, object]:
    return {
        "event": event,
        "session": session.id,
        "user": session.user,
        "remote": session.remote,
        "transport": transport_kind(session.transport),
    }


def log_open(session: Session) -> None:
    """``session.open``: CONNECT was accepted."""
    if log.isEnabledFor(logging.INFO):
        log.info(
            "session %s (%s, %s, %s) opened",
            session.id, session.user or "-", session.remote, session.transport,
            extra=_extra(session, "session.open"),
        )  # fmt: skip


def log_close(session: Session, reason: str, detail: str) -> None:
    """``session.close``, with its reason; sessions that never connected are rate-limited."""
    if not log.isEnabledFor(logging.INFO):
        return
    extra = _extra(session, "session.close")
    extra["reason"] = reason
    args = (session.id, session.user or "-", session.remote, session.transport, reason, detail)
    msg = "session %s (%s, %s, %s) closed: %s: %s" if detail else "session %s (%s, %s, %s) closed: %s%s"
    if session.connected:
        log.info(msg, *args, extra=extra)
    else:
        _unconnected.log(msg, *args, key=session.remote, extra=extra)
