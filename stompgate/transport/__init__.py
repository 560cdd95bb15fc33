"""Transports: what carries a session's bytes (WebSocket, SockJS, plain TCP)."""

from __future__ import annotations

import logging

from ..broker.session import Session

log = logging.getLogger(__name__)


def slow_consumer(session: Session, unsent: int, limit: int) -> None:
    """Close a session that does not read what it is sent: every transport's one rule.

    Called before a write when what the peer has not taken yet is past
    ``server.max_outbound_buffer``, so a session holds at most that plus one frame.
    """
    log.warning(
        "session %s (%s, %s): slow consumer, %d bytes unsent (server.max_outbound_buffer %d); closing",
        session.id,
        session.user or "-",
        session.transport,
        unsent,
        limit,
    )
    session.drop("slow consumer: too much unsent data")
