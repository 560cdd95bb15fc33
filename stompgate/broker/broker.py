"""The broker: sessions, subscriptions and the routing of messages to them.

Everything here is synchronous and in memory; the cross-node bus (a later
layer) hands remote messages to :meth:`Broker.dispatch` the same way local
publishes reach it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .auth import Authenticator
from .destinations import DestinationRules
from .message import Message
from .session import Session, SessionLimits, CLOSE_RESTART
from .subscriptions import Subscription, SubscriptionIndex

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BrokerSettings:
    broker_prefixes: list[str] = field(default_factory=lambda: ["/topic", "/queue"])
    user_prefix: str = "/user/"
    path_separator: str = "/"
    heartbeat_send_ms: int = 10_000
    heartbeat_receive_ms: int = 10_000
    heartbeat_read_margin: float = 1.5
    connect_timeout_s: float = 10.0
    limits: SessionLimits = field(default_factory=SessionLimits)


@dataclass(slots=True)
class BrokerStats:
    """Counters for metrics and tests."""

    messages_published: int = 0
    messages_delivered: int = 0
    messages_unrouted: int = 0
    acked: int = 0
    nacked: int = 0
    errors: int = 0
    sessions_opened: int = 0


class UserEntry:
    """A user's sessions on this node and their ``/user/...`` subscriptions."""

    __slots__ = ("sessions", "subscriptions")

    def __init__(self, separator: str) -> None:
        self.sessions: dict[Session, None] = {}
        self.subscriptions = SubscriptionIndex(separator)


class Broker:
    def __init__(
        self,
        settings: BrokerSettings,
        authenticator: Authenticator,
        *,
        server_name: str = "stompgate",
    ) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.authenticator = authenticator
        self.server_name = server_name
        self.rules = DestinationRules(settings.broker_prefixes, settings.user_prefix)
        self.open_sessions: dict[Session, None] = {}  # every live session, CONNECTed or not
        self.sessions: dict[str, Session] = {}  # CONNECTed sessions by id
        self.topics = SubscriptionIndex(settings.path_separator)
        self.users: dict[str, UserEntry] = {}
        self.stats = BrokerStats()

    # --------------------------------------------------------------- sessions

    def attach(self, session: Session) -> None:
        self.open_sessions[session] = None

    def detach(self, session: Session) -> None:
        self.open_sessions.pop(session, None)
        if session.connected:
            self.unregister(session)

    def register(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.stats.sessions_opened += 1
        if session.user is not None:
            entry = self.users.get(session.user)
            if entry is None:
                entry = self.users[session.user] = UserEntry(self.settings.path_separator)
            entry.sessions[session] = None

    def unregister(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        if session.user is not None:
            entry = self.users.get(session.user)
            if entry is not None:
                entry.sessions.pop(session, None)
                if not entry.sessions:
                    del self.users[session.user]

    def subscribe(self, sub: Subscription) -> None:
        if sub.user is None:
            self.topics.add(sub)
        else:
            self.users[sub.user].subscriptions.add(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.user is None:
            self.topics.remove(sub)
        else:
            entry = self.users.get(sub.user)
            if entry is not None:
                entry.subscriptions.remove(sub)

    # ---------------------------------------------------------------- routing

    def message(
        self, destination: str, headers: dict[str, str], body: bytes, user: str | None = None
    ) -> Message:
        """Build a message for ``destination`` (or a user's destination) with the shown name set."""
        shown = self.rules.user_root + destination if user is not None else destination
        return Message(destination, headers, body, user=user, shown=shown)

    def publish(self, message: Message) -> int:
        """Route a message from a client, the HTTP API or the template; returns deliveries here."""
        self.stats.messages_published += 1
        return self.dispatch(message)

    def dispatch(self, message: Message) -> int:
        """Deliver to the matching subscriptions held by this node."""
        if message.user is None:
            subs = self.topics.match(message.destination)
        else:
            entry = self.users.get(message.user)
            if entry is None:
                self.stats.messages_unrouted += 1
                return 0
            subs = entry.subscriptions.match(message.destination)
        count = 0
        for sub in subs:
            sub.session.deliver(sub, message)
            count += 1
        if count:
            self.stats.messages_delivered += count
        else:
            self.stats.messages_unrouted += 1
        return count

    # -------------------------------------------------------------- lifecycle

    def shutdown(self, message: str = "server shutting down") -> None:
        """ERROR and close (1012) for every session, connected or not."""
        for session in list(self.open_sessions):
            session.fail(message, code=CLOSE_RESTART)

    def online(self, user: str) -> int:
        entry = self.users.get(user)
        return len(entry.sessions) if entry else 0
