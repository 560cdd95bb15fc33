"""The broker: sessions, subscriptions and the routing of messages to them.

Everything here is synchronous and in memory. A :class:`Bus` (in-memory for one
node, Redis for a cluster) carries what must leave this node and hands remote
messages back to :meth:`Broker.dispatch`; it also keeps messages for users with
no subscriber anywhere and gives them back when one subscribes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..stomp import CLIENT_COMMANDS
from .application import Application, NoApplication
from .auth import Authenticator
from .authz import Authorizer
from .closes import SHUTDOWN, log_close, log_open
from .destinations import DestinationRules, has_wildcard
from .gate import Gate
from .message import Message
from .names import SERVER_SENT, reserved_headers
from .ports import CLOSE_RESTART
from .session import Session
from .settings import BrokerSettings

__all__ = ["Broker", "BrokerSettings", "BrokerStats", "Bus", "Done", "Sender", "UserEntry"]
from .subscriptions import Subscription, SubscriptionIndex

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BrokerStats:
    """Counters for metrics and tests; only the broker writes them (``stompgate/metrics.py``
    reads them when scraped: plain integers, nothing per message beyond an addition)."""

    messages_published: int = 0
    messages_delivered: int = 0
    messages_unrouted: int = 0
    messages_replayed: int = 0
    bytes_published: int = 0  # message bodies
    bytes_delivered: int = 0  # message bodies, once per delivery
    acked: int = 0
    nacked: int = 0
    errors: int = 0
    sessions_opened: int = 0
    closes: dict[str, int] = field(default_factory=dict)  # sessions ended, by reason (broker/closes.py)
    # Frames read, by command; frames written other than MESSAGE (see messages_sent_closed), by command.
    frames_in: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLIENT_COMMANDS, 0))
    frames_out: dict[str, int] = field(default_factory=dict)
    # MESSAGE frames written to sessions that have ended (the live ones count their own).
    messages_sent_closed: int = 0


# Called once a publish has been accepted by the cluster (None) or refused (a reason).
Done = Callable[[str | None], None]


class Sender(Protocol):
    """Who published a message, told when the bus has taken it (flow control)."""

    def settle(self, size: int) -> None: ...


class Bus(Protocol):
    """What the broker needs from the layer that connects nodes."""

    # True while the bus holds so much unsent that publishing sessions must wait;
    # it calls Broker.room() once it has drained.
    @property
    def congested(self) -> bool: ...

    def publish(
        self, message: Message, delivered_here: int, done: Done | None, sender: Sender | None = None
    ) -> None:
        """Carry a message already dispatched on this node to the rest of the cluster;
        a user message nobody is subscribed to anywhere is stored. ``sender.settle(message.size)``
        is called once the bus has taken (or refused) it."""

    def user_sessions(self, user: str, count: int) -> None:
        """``user`` now has ``count`` sessions on this node (0: none left)."""

    def user_subscribed(self, user: str, destination: str, replay: Callable[[list[Message]], None]) -> None:
        """This node's first subscription to ``user``'s ``destination``: once live
        delivery is assured, call ``replay`` with the stored messages (removed from the store)."""

    def user_unsubscribed(self, user: str, destination: str) -> None:
        """This node's last subscription to ``user``'s ``destination`` went away."""


class UserEntry:
    """A user's sessions on this node, their ``/user/...`` subscriptions by destination,
    and the wildcard patterns they hold (with how many subscriptions use each)."""

    __slots__ = ("sessions", "subscriptions", "patterns")

    def __init__(self) -> None:
        self.sessions: dict[Session, None] = {}
        self.subscriptions: dict[str, dict[Subscription, None]] = {}
        self.patterns: dict[str, int] = {}


class Broker:
    """The sessions of this node and what they subscribe to; routes every message.

    Sessions call it (attach, register, subscribe, publish...); it calls them
    back only to deliver (:meth:`Session.deliver`), to say a subscription is
    live (:meth:`Session.went_live`) and to resume or close them. A :class:`Bus`
    carries what leaves the node; the bus calls back through the methods of
    ``bus.contract.BrokerPort`` (dispatch, begin_recovery, room, session_counts).
    """

    def __init__(
        self,
        settings: BrokerSettings,
        authenticator: Authenticator,
        *,
        server_name: str = "stompgate",
        bus: Bus | None = None,
        authorizer: Authorizer | None = None,
        roles: dict[str, frozenset[str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.authenticator = authenticator
        # Who may SEND and SUBSCRIBE where (none given: everyone, everywhere).
        self.authorizer = authorizer or Authorizer([], True, settings.destinations.path_separator)
        self.roles = roles or {}  # user -> roles the config gives them
        self.clock = clock  # wall-clock time, for credentials that expire
        # Headers only the broker writes, however a client spells them.
        self.sender_header = settings.limits.sender_header
        self.reserved = reserved_headers(self.sender_header)
        self.server_name = server_name
        where = settings.destinations
        self.rules = DestinationRules(where.broker_prefixes, where.user_prefix, where.application_prefixes)
        # Where SENDs to application destinations go (extensions register handlers on it).
        self.application: Application = NoApplication()
        # A backend that decides on CONNECTs, SUBSCRIBEs or SENDs (the proxies), if any.
        self.gate: Gate | None = None
        self.open_sessions: dict[Session, None] = {}  # every live session, CONNECTed or not
        self.sessions: dict[str, Session] = {}  # CONNECTed sessions by id
        self.topics = SubscriptionIndex(where.path_separator)
        self.users: dict[str, UserEntry] = {}
        self.stats = BrokerStats()
        self.bus = bus  # None: this node alone, nothing stored
        # (user, destination) -> subscriptions waiting for their stored messages
        self._replaying: dict[tuple[str, str], list[Subscription]] = {}
        # Sessions paused until the bus has room for what they publish.
        self._waiting_room: dict[Session, None] = {}
        # Delivery latency, sampled: every ``latency_every``-th dispatched message is
        # timed from here until its deliveries are written (``latency_probe`` is given
        # its perf_counter() start once they are queued; the node does the rest).
        self.latency_probe: Callable[[float], None] | None = None
        self.latency_every = 0
        self._latency_left = -1  # counts down to the next sample; never 0 while off

    # --------------------------------------------------------------- sessions

    def attach(self, session: Session) -> None:
        self.open_sessions[session] = None

    def detach(self, session: Session) -> None:
        self.open_sessions.pop(session, None)
        self._waiting_room.pop(session, None)
        if self.sessions.get(session.id) is session:
            self.unregister(session)

    def register(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.stats.sessions_opened += 1
        log_open(session)
        user = session.user
        if user is not None:
            entry = self.users.get(user)
            if entry is None:
                entry = self.users[user] = UserEntry()
            entry.sessions[session] = None
            if self.bus is not None:
                self.bus.user_sessions(user, len(entry.sessions))

    def unregister(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        user = session.user
        if user is not None:
            entry = self.users.get(user)
            if entry is not None:
                entry.sessions.pop(session, None)
                if not entry.sessions:
                    del self.users[user]
                if self.bus is not None:
                    self.bus.user_sessions(user, len(entry.sessions))

    def pattern_refusal(self, session: Session, pattern: str) -> str | None:
        """Why ``session`` may not add a subscription to the wildcard ``pattern``, or None.

        Each distinct pattern is work on every publish, so one user holds at most
        ``max_user_patterns`` of them on this node (however many sessions share them).
        """
        entry = self.users.get(session.user) if session.user is not None else None
        if entry is None or pattern in entry.patterns:
            return None
        if len(entry.patterns) >= self.limits.max_user_patterns:
            held = len(entry.patterns)
            return f"the user holds {held} distinct wildcard patterns on this node, the most allowed"
        return None

    def _count_pattern(self, sub: Subscription, delta: int) -> None:
        entry = self.users.get(sub.session.user) if sub.session.user is not None else None
        if entry is not None:
            count = entry.patterns.get(sub.destination, 0) + delta
            if count > 0:
                entry.patterns[sub.destination] = count
            else:
                entry.patterns.pop(sub.destination, None)

    def subscribe(self, sub: Subscription) -> bool:
        """Add ``sub``; True when it is live at once.

        False when it waits for the bus: the first subscription of this node to a
        user destination waits until the bus is subscribed cluster-wide and has
        fetched the messages stored for it. The broker then calls
        ``sub.session.went_live(sub)`` and delivers the stored messages, then the
        ones that came live meanwhile (this may happen before ``subscribe`` returns).
        """
        if sub.user is None:
            self.topics.add(sub)
            if has_wildcard(sub.destination):
                self._count_pattern(sub, 1)
            return True
        subs = self.users[sub.user].subscriptions.setdefault(sub.destination, {})
        subs[sub] = None
        key = (sub.user, sub.destination)
        waiting = self._replaying.get(key)
        if waiting is not None:  # joins a replay under way (the bus is still subscribed for it)
            sub.replay = []
            waiting.append(sub)
            return False
        if len(subs) == 1 and self.bus is not None:
            sub.replay = []
            pending = self._replaying[key] = [sub]
            self.bus.user_subscribed(
                sub.user, sub.destination, lambda stored: self._replay(key, pending, stored)
            )
            return False
        return True

    def _replay(self, key: tuple[str, str], waiting: list[Subscription], stored: list[Message]) -> None:
        """Stored messages first, then what arrived live meanwhile, then live delivery.

        ``waiting`` are the subscriptions this replay was for, less those ended since.
        If they all ended, the replay was given up (:meth:`unsubscribe`) and what it
        fetched is routed again: to a newer subscription, or back to the store.
        """
        if self._replaying.get(key) is waiting:
            del self._replaying[key]
        for sub in waiting:
            live, sub.replay = sub.replay or [], None
            sub.session.went_live(sub)
            for message in stored + live:
                sub.session.deliver(sub, message)
        self.stats.messages_replayed += len(stored)
        if not waiting and stored:
            self._reroute(key, stored)

    def _reroute(self, key: tuple[str, str], stored: list[Message]) -> None:
        """What a given-up replay fetched: to the subscriptions made since (before the live
        messages a newer replay holds for them), or, with none here, back to the bus."""
        entry = self.users.get(key[0])
        subs = entry.subscriptions.get(key[1]) if entry is not None else None
        if not subs:
            if self.bus is not None:
                for message in stored:
                    self.bus.publish(message, 0, None)
            return
        for sub in subs:
            if sub.replay is not None:
                sub.replay[:0] = stored
            else:
                for message in stored:
                    sub.session.deliver(sub, message)
        self.stats.messages_delivered += len(subs) * len(stored)

    def begin_recovery(self, user: str, destination: str) -> Callable[[list[Message]], None] | None:
        """The bus lost its subscription for a while: messages of the gap were stored.

        Live deliveries to the user's subscriptions wait from now until the bus
        hands over those stored messages through the returned callback, so the
        order stays as sent. None when there is nothing to recover here.
        """
        key = (user, destination)
        entry = self.users.get(user)
        subs = entry.subscriptions.get(destination) if entry is not None else None
        if not subs or key in self._replaying:  # a replay under way takes the store anyway
            return None
        for sub in subs:
            sub.replay = []
        waiting = self._replaying[key] = list(subs)
        return lambda stored: self._replay(key, waiting, stored)

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.user is None:
            self.topics.remove(sub)
            if has_wildcard(sub.destination):
                self._count_pattern(sub, -1)
            return
        entry = self.users.get(sub.user)
        if entry is None:
            return
        subs = entry.subscriptions.get(sub.destination)
        if subs is None or sub not in subs:
            return
        del subs[sub]
        key = (sub.user, sub.destination)
        waiting = self._replaying.get(key)
        if waiting is not None and sub.replay is not None:  # it waits for a replay no more
            waiting.remove(sub)
            sub.replay = None
            sub.session.went_live(sub)  # its SUBSCRIBE's RECEIPT is due (the ones after wait for it)
        if not subs:
            del entry.subscriptions[sub.destination]
            # The bus unsubscribes: a replay under way is given up, so that the next
            # subscription subscribes the bus again rather than join it.
            self._replaying.pop(key, None)
            if self.bus is not None:
                self.bus.user_unsubscribed(sub.user, sub.destination)

    # ---------------------------------------------------------------- routing

    def message(
        self,
        destination: str,
        headers: dict[str, str],
        body: bytes,
        user: str | None = None,
        *,
        sender: str | None = None,
        server_sent: bool = False,
    ) -> Message:
        """Build a message for ``destination`` (or a user's destination) with the shown name set.

        Who sent it is written here, the one place: ``sender`` (a client's user name)
        in ``stomp.sender_header``, or ``server-sent: true`` for the API, extensions
        and the template. ``headers`` has been cleared of both already.
        """
        if sender is not None:
            headers[self.sender_header] = sender
        if server_sent:
            headers[SERVER_SENT] = "true"
        shown = self.rules.user_root + destination if user is not None else destination
        return Message(destination, headers, body, user=user, shown=shown)

    def publish(self, message: Message, done: Done | None = None, sender: Sender | None = None) -> int:
        """Route a message from a client, the HTTP API or the template.

        It is delivered here at once, then handed to the bus for the other nodes
        (or the offline store); ``done`` learns when the cluster has it, and
        ``sender`` when the bus no longer holds it. Returns the deliveries made on this node.
        """
        stats = self.stats
        stats.messages_published += 1
        stats.bytes_published += len(message.body)
        count = self.dispatch(message)
        if self.bus is not None:
            self.bus.publish(message, count, done, sender)
        else:
            if done is not None:
                done(None)
            if sender is not None:
                sender.settle(message.size)
        return count

    # ----------------------------------------------------------- flow control

    def flow_blocked(self, session: Session) -> bool:
        """Whether ``session`` must stop publishing for now.

        Its own unsent share is spent; or the bus as a whole holds too much (Redis
        slow or away) and this session holds an eighth of its share or more: the
        big senders wait, one that sends now and then does not.
        """
        inflight = session.inflight
        share = self.limits.max_inflight_bytes
        return inflight > share or (inflight > share // 8 and self.bus is not None and self.bus.congested)
    # Session keeps share // 8 as its floor for asking: change both together.

    def wait_for_room(self, session: Session) -> None:
        self._waiting_room[session] = None

    def session_counts(self) -> list[tuple[str, int]]:
        """Every user with sessions on this node, and how many."""
        return [(user, len(entry.sessions)) for user, entry in self.users.items()]

    def room(self) -> None:
        """The bus drained: sessions paused for it may read again."""
        waiting, self._waiting_room = self._waiting_room, {}
        for session in waiting:
            session.resume_flow()
            if session.flow_paused:  # its own share is still spent, or the bus filled again
                self._waiting_room[session] = None

    def heaviest(self, budget: int) -> list[tuple[int, Session]]:
        """Sessions to close, heaviest first, so the node's buffers fit ``budget`` bytes again.

        None while the total is within the budget; past it, enough of the heaviest
        to bring it back to nine tenths.
        """
        sizes = [(session.memory(), session) for session in self.open_sessions]
        total = sum(size for size, _session in sizes)
        if total <= budget:
            return []
        sizes.sort(key=lambda pair: pair[0], reverse=True)
        out = []
        target = budget * 9 // 10
        for size, session in sizes:
            if total <= target or size == 0:
                break
            out.append((size, session))
            total -= size
        return out

    def deliver_to_session(self, session_id: str, message: Message) -> int:
        """A user message for one session only (Spring's ``@SendToUser(broadcast=false)``):
        its subscriptions to the message's user destination, on this node."""
        session = self.sessions.get(session_id)
        entry = self.users.get(message.user) if message.user is not None else None
        if session is None or entry is None or session.user != message.user:
            return 0
        count = 0
        for sub in list(entry.subscriptions.get(message.destination, ())):
            if sub.session is session:
                if sub.replay is not None:  # after the stored messages it waits for, as dispatch does
                    sub.replay.append(message)
                else:
                    session.deliver(sub, message)
                count += 1
        self.stats.messages_delivered += count
        self.stats.bytes_delivered += count * len(message.body)
        return count

    def dispatch(self, message: Message) -> int:
        """Deliver to the matching subscriptions held by this node; where a message is routed."""
        count = 0
        left = self._latency_left - 1
        self._latency_left = left
        started = time.perf_counter() if left == 0 else 0.0
        if message.user is None:
            for sub in self.topics.match(message.destination):
                sub.session.deliver(sub, message)
                count += 1
        else:
            entry = self.users.get(message.user)
            found = entry.subscriptions.get(message.destination) if entry is not None else None
            for sub in list(found or ()):
                if sub.replay is not None:  # stored messages go first (_replay)
                    sub.replay.append(message)
                else:
                    sub.session.deliver(sub, message)
                count += 1
        stats = self.stats
        if count:
            stats.messages_delivered += count
            stats.bytes_delivered += count * len(message.body)
        else:
            stats.messages_unrouted += 1
        if started:
            self._latency_left = self.latency_every
            if count and self.latency_probe is not None:
                self.latency_probe(started)
        return count

    def sample_latency(self, every: int, probe: Callable[[float], None] | None) -> None:
        """Time one dispatched message in ``every`` (0: none) with ``probe``."""
        self.latency_every = every
        self.latency_probe = probe
        self._latency_left = every if every > 0 and probe is not None else -1

    # ------------------------------------------------------------------ stats

    def acked(self, nack: bool) -> None:
        """A session settled a message (ACK, or NACK when ``nack``)."""
        if nack:
            self.stats.nacked += 1
        else:
            self.stats.acked += 1

    def session_failed(self, session: Session, reason: str) -> None:
        """``session`` is closed with an ERROR frame saying ``reason``."""
        self.stats.errors += 1

    def session_closed(self, session: Session, reason: str, detail: str) -> None:
        """``session`` ended (once per session), for ``reason`` (broker/closes.py)."""
        stats = self.stats
        stats.closes[reason] = stats.closes.get(reason, 0) + 1
        stats.messages_sent_closed += session.messages_sent
        log_close(session, reason, detail)

    # -------------------------------------------------------------- lifecycle

    def shutdown(self, message: str = "server shutting down") -> None:
        """ERROR and close (1012) for every session, connected or not."""
        for session in list(self.open_sessions):
            session.fail(message, code=CLOSE_RESTART, cause=SHUTDOWN)

    def online(self, user: str) -> int:
        entry = self.users.get(user)
        return len(entry.sessions) if entry else 0
