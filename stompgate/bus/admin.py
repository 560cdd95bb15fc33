"""Admin commands carried by the bus: ask every node a question, or tell it to disconnect someone.

An operator's call on one node (the admin API) becomes an :class:`AdminCommand`
that every live node answers with a small JSON object (:data:`AdminHandler`).
The memory bus answers it alone; the Redis bus publishes it on one channel
every node listens to and collects the replies from a list key, until every
live node has answered or the timeout has passed (:class:`AdminReplies` says
which nodes did not). Each answer is bounded by the command's ``limit``, so a
user with 10,000 sessions cannot make an unbounded reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson

Op = Literal["node", "sessions", "disconnect", "drain"]
OPS: tuple[str, ...] = get_args(Op)

# Sessions one node lists in one answer, at most (the command may ask for fewer).
MAX_LIMIT = 1000


class BadCommand(ValueError):
    """An admin command that cannot be decoded (a foreign or newer writer on the channel)."""


@dataclass(frozen=True, slots=True)
class AdminCommand:
    """What each node is asked.

    ``node``: its summary (id, version, uptime, counts, recent rates).
    ``sessions``: its sessions, of ``user`` only when given, at most ``limit``.
    ``disconnect``: close ``user``'s sessions, or the session ``session``
    (ERROR "disconnected by an administrator", close reason ``admin``).
    ``drain``: the node ``node`` drains (the others only answer).
    """

    op: Op
    user: str | None = None
    session: str | None = None
    limit: int = 100
    node: str | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise BadCommand(f"unknown admin command {self.op!r}")
        if not 0 <= self.limit <= MAX_LIMIT:
            raise BadCommand(f"limit must be 0..{MAX_LIMIT}, got {self.limit}")
        if self.op == "disconnect" and (self.user is None) == (self.session is None):
            raise BadCommand("disconnect needs exactly one of user or session")
        if self.op == "drain" and not self.node:
            raise BadCommand("drain needs the node to drain")

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op, "user": self.user, "session": self.session, "limit": self.limit, "node": self.node
        }

    @classmethod
    def from_json(cls, data: Any) -> AdminCommand:
        if not isinstance(data, dict):
            raise BadCommand("an admin command is a JSON object")
        op, user, session, limit, node = (data.get(k) for k in ("op", "user", "session", "limit", "node"))
        if not isinstance(op, str) or not isinstance(limit, int) or isinstance(limit, bool):
            raise BadCommand("op (a string) and limit (an integer) are required")
        for value in (user, session, node):
            if value is not None and not isinstance(value, str):
                raise BadCommand("user, session and node are strings")
        return cls(op, user, session, limit, node)  # type: ignore[arg-type]  # op checked in __post_init__


# One node's answer to a command (JSON-ready, with its "node" id).
AdminHandler = Callable[[AdminCommand], dict[str, Any]]


@dataclass(slots=True)
class AdminReplies:
    """Every answer that came back, and the live nodes that did not answer in time."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def request_payload(request_id: str, reply_key: str, command: AdminCommand) -> bytes:
    """What the Redis bus publishes: the command, and where its answers go."""
    return orjson.dumps({"id": request_id, "reply": reply_key, "command": command.to_json()})


def parse_request(payload: bytes) -> tuple[str, AdminCommand]:
    """(reply key, command) of :func:`request_payload`'s bytes; BadCommand if they are not that."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise BadCommand("not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("reply"), str):
        raise BadCommand("no reply key")
    return data["reply"], AdminCommand.from_json(data.get("command"))
