"""The STOMP session state machine (sans-I/O).

A session is fed the bytes its transport received (:meth:`Session.receive_data`)
and writes through an :class:`~.ports.Outbound` the transport implements. Timers
come from a :class:`~.ports.Scheduler`, so tests drive time by hand. The session
never raises to its transport: protocol faults become an ERROR frame and a close.

This module holds the states and the frames each reads (:class:`State`),
the input loop with its pacing (frames per turn, rate limits, flow control),
CONNECT, SEND, SUBSCRIBE and delivery. The rest is a module per concern, each
an object the session makes when it first needs it: heart-beats
(``heartbeats.py``), acknowledgements (``acks.py``), transactions
(``transactions.py``), receipts (``receipts.py``), rate limits
(``ratelimit.py``). Who may SUBSCRIBE or SEND where is decided in
:meth:`Session._subscribe_target` and :meth:`Session._send_target`.
"""

from __future__ import annotations

import enum
import logging
import secrets
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from ..stomp import CLIENT_COMMANDS, Frame, FrameParser, ProtocolError, serialize
from ..stomp.errors import LimitExceeded
from ..stomp.headers import escape
from .acks import Acks, check_issued
from .application import AppCall
from .auth import AuthError, Credentials, login
from .authz import ANONYMOUS, SEND, SUBSCRIBE, Denied, Principal
from .closes import (
    AUTH,
    CLIENT,
    DENIED,
    INTERNAL,
    LIMIT,
    PROTOCOL,
    SLOW_CONSUMER,
    TOKEN_EXPIRED,
    bus_refusal_reason,
)
from .destinations import DestinationError, Target, has_wildcard, pattern_problem
from .errors import StompSessionError, required
from .gate import Gate, Pending
from .heartbeats import Heartbeats, negotiate
from .names import (
    REFRESH_TOKEN,
    RESERVED,
    RESERVED_HEADERS,
    destination_problem,
    header_name_verdict,
    is_reserved,
    user_name_problem,
)
from .ports import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_RESTART,
    HeartbeatAware,
    Outbound,
    Scheduler,
    TimerHandle,
)
from .ratelimit import TokenBuckets
from .receipts import Receipts, ReceiptSlot
from .settings import MESSAGE_OVERHEAD, SessionLimits
from .subscriptions import ACK_MODES, Subscription
from .transactions import Transactions

if TYPE_CHECKING:
    from .broker import Broker
    from .message import Message

# Re-exported: transports and tests import them from here.
__all__ = [
    "CLOSE_INTERNAL",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_RESTART",
    "MESSAGE_OVERHEAD",
    "HeartbeatAware",
    "Outbound",
    "Scheduler",
    "Session",
    "SessionLimits",
    "State",
    "StompSessionError",
    "TimerHandle",
]

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2")


class State(enum.Enum):
    """Where a session is, and the frames it reads there; any other frame is ERROR + close.

    CONNECTING -> CONNECTED (CONNECT accepted) -> DISCONNECTING (DISCONNECT read)
    -> CLOSED (its RECEIPT written); every state can go to CLOSED at once.
    """

    CONNECTING = ("no CONNECT yet", ("CONNECT", "STOMP"))
    CONNECTED = ("connected", ("SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK",
                               "BEGIN", "COMMIT", "ABORT", "DISCONNECT"))  # fmt: skip
    DISCONNECTING = ("DISCONNECT read; receipts before it still to write", ())
    CLOSED = ("closed", ())

    def __init__(self, meaning: str, reads: tuple[str, ...]) -> None:
        self.meaning = meaning
        self.reads = frozenset(reads)


_CONNECTING, _CONNECTED, _DISCONNECTING, _CLOSED = State

# Why a session is not reading its input now; the transport reads while none is set.
_TURN = 1  # this loop turn's share of frames is spent: the rest waits for the next turn
_RATE = 2  # over the rate limit (throttle policy): until the bucket refills
_FLOW = 4  # publishes the bus has not taken are over the session's share, or the bus is congested
_GATE = 8  # a backend decides on the frame being handled (broker/gate.py): until it answers
_APP = 16  # max_application_calls of this session are waiting or running: until one ends

# Shared by every session past CONNECT; never written to.
_NOTHING: dict[str, str] = {}


class Session:
    """One client connection's STOMP state, from CONNECT to close."""

    # Slots, not a __dict__: a node holds tens of thousands of sessions, and a
    # dict of ~40 attributes costs ~1.5 KB each (docs/benchmarks.md, idle).
    __slots__ = (  # fmt: skip
        "broker", "id", "inflight", "limits", "out", "parser", "principal", "remote", "scheduler",
        "since", "state", "subscriptions", "text_only", "transport", "user", "version", "wrote",
        "end_cause", "end_detail",
        "_acks", "_app_calls", "_beats", "_committing", "_deadline", "_flow_floor", "_frame_size",
        "_handshake_headers", "_mid_prefix", "_next_mid", "_nul_safe", "_paused", "_plain_tails",
        "_query", "_rate", "_rate_timer", "_receipt_of", "_receipts", "_transactions",
    )

    def __init__(
        self,
        broker: Broker,
        out: Outbound,
        scheduler: Scheduler,
        *,
        handshake_headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        transport: str = "websocket",
        remote: str = "",
        text_only: bool = False,
    ) -> None:
        self.broker = broker
        self.out = out
        self.scheduler = scheduler
        self.id = secrets.token_hex(8)
        self.transport = transport
        self.remote = remote
        self.since = broker.clock()  # when the connection came (wall clock), for the admin view
        # The transport carries text only (SockJS): bodies that are not UTF-8 are
        # delivered with invalid bytes replaced, as Spring does over SockJS.
        self.text_only = text_only
        self.state = State.CONNECTING
        self.principal = ANONYMOUS  # who CONNECT said it is
        self.user: str | None = None  # principal.name
        self.version: str | None = None  # set once CONNECT is accepted
        limits: SessionLimits = broker.limits
        self.limits = limits
        self.parser = FrameParser(
            commands=CLIENT_COMMANDS,
            max_frame_size=limits.max_frame_size,
            max_headers=limits.max_headers,
            max_header_length=limits.max_header_length,
        )
        self._handshake_headers = handshake_headers or {}
        self._query = query or {}
        self.subscriptions: dict[str, Subscription] = {}
        # Made when first needed: most sessions never use them.
        self._acks: Acks | None = None
        self._transactions: Transactions | None = None
        # RECEIPTs wait, in order, behind publishes the bus has not confirmed yet:
        # a SEND's RECEIPT means the cluster has the message.
        self._receipts: Receipts | None = None
        self._beats: Heartbeats | None = None
        self._frame_size = 0  # bytes of the frame being handled
        # Input: the reasons (bits) it is paused, and the rate-limit buckets.
        self._paused = 0
        self._rate_timer: TimerHandle | None = None
        rate = limits.rate_limit
        rated = rate.frames_per_s or rate.bytes_per_s
        self._rate = TokenBuckets(rate, scheduler.time()) if rated else None
        # Bytes of this session's publishes the bus has not taken yet (see settle).
        self.inflight = 0
        self._flow_floor = limits.max_inflight_bytes // 8
        # MESSAGE bodies go out as sent, unless this peer may be stompjs 2.x (see _on_connect).
        self._nul_safe = False
        self._plain_tails = not text_only
        self._mid_prefix = (self.id + "-").encode()
        self._next_mid = 1
        self._receipt_of: str | None = None  # receipt of the frame being handled
        self._committing = False
        self._app_calls = 0  # application calls not finished yet
        self.wrote = True  # written to since the last heart-beat tick (heartbeats.py)
        # Why the session ended (broker/closes.py), set once by what ended it; None: the peer left.
        self.end_cause: str | None = None
        self.end_detail = ""
        # The connect timeout; after CONNECT, the end of the session's credential (JWT exp).
        self._deadline: TimerHandle | None = scheduler.call_later(
            limits.connect_timeout_s, self._connect_timeout
        )
        broker.attach(self)

    @property
    def connected(self) -> bool:
        """CONNECT was accepted (it stays so once the session closes)."""
        return self.version is not None

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    @property
    def messages_sent(self) -> int:
        """MESSAGE frames written to this session (its message ids are numbered from 1)."""
        return self._next_mid - 1

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes) -> None:
        """Bytes from the transport, in order; any chunking.

        Frames are handled at once, up to ``frames_per_turn`` of them; past that,
        or while the session is paused (rate limit, flow control), they wait in
        the parser and the transport is asked to stop reading (``pause_reading``)
        until the session can take more. One connection therefore never holds the
        loop for more than a bounded batch of frames, and what waits is at most
        what the transport had already read.
        """
        if self.state is _CLOSED:
            return
        if self._beats is not None:
            self._beats.read()
        self.parser.feed(data)
        self._pump()

    @property
    def reading(self) -> bool:
        """Whether the session takes input now (the transport reads only then)."""
        return not (self._paused or self.state is _CLOSED)

    def _pump(self) -> None:
        """Handle the frames waiting in the parser while this turn's budget lasts."""
        if self._paused or self.state is _CLOSED:
            return
        parser = self.parser
        budget = self.limits.frames_per_turn
        try:
            while self.state.reads:
                before = parser.consumed
                frame = parser.next_frame()
                if frame is None:
                    return
                self._frame_size = parser.consumed - before
                if self._rate is not None and self.state is _CONNECTED and not self._charge(self._frame_size):
                    return
                self._handle(frame)
                budget -= 1
                if self._paused:
                    return
                if budget <= 0 and parser.buffered:
                    self._pause(_TURN)
                    self.scheduler.call_soon(lambda: self._unpause(_TURN))
                    return
        except ProtocolError as exc:
            self.fail(exc.message, cause=LIMIT if isinstance(exc, LimitExceeded) else PROTOCOL)
        except StompSessionError as exc:
            self.fail(
                exc.message, detail=exc.detail, headers=exc.headers, receipt=self._receipt_of, cause=exc.cause
            )
        except Exception:
            log.exception("session %s: internal error", self.id)
            self.fail("internal server error", code=CLOSE_INTERNAL, cause=INTERNAL)

    def _pause(self, reason: int) -> None:
        paused = self._paused
        self._paused = paused | reason
        if not paused and self.state is not _CLOSED:
            self.out.pause_reading()

    def _unpause(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if self._paused or self.state is _CLOSED:
            return
        self._pump()  # what the transport had read already goes first
        if not (self._paused or self.state is _CLOSED):
            self.out.resume_reading()

    def _charge(self, size: int) -> bool:
        """Take one frame from the rate-limit buckets; False if the session stops here."""
        assert self._rate is not None
        wait = self._rate.charge(self.scheduler.time(), size)
        if wait <= 0:
            return True
        rate = self.limits.rate_limit
        if rate.policy == "close":
            self.fail(
                f"rate limit exceeded: at most {rate.frames_per_s:g} frames and "
                f"{rate.bytes_per_s:g} bytes per second",
                code=CLOSE_POLICY,
                cause=LIMIT,
            )
            return False
        # This frame is handled; the next ones wait until the buckets are out of debt.
        self._pause(_RATE)
        self._rate_timer = self.scheduler.call_later(wait, self._rate_refilled)
        return True

    def _rate_refilled(self) -> None:
        self._rate_timer = None
        self._unpause(_RATE)

    # ------------------------------------------------------------ flow control

    def settle(self, size: int) -> None:
        """The bus took (or refused) ``size`` bytes this session published."""
        self.inflight -= size
        if self._paused & _FLOW and not self.broker.flow_blocked(self):
            self._unpause(_FLOW)

    @property
    def flow_paused(self) -> bool:
        return bool(self._paused & _FLOW) and self.state is not _CLOSED

    def resume_flow(self) -> None:
        """The broker says the bus has room again."""
        if not self.broker.flow_blocked(self):
            self._unpause(_FLOW)

    def memory(self) -> int:
        """Bytes this session holds: unread input, open transactions, unsent output, unsent publishes."""
        held = self._transactions.bytes if self._transactions is not None else 0
        return self.parser.buffered + held + self.out.buffered() + max(self.inflight, 0)

    # ----------------------------------------------------------------- frames

    def _handle(self, frame: Frame) -> None:
        self._receipt_of = frame.headers.get("receipt")
        command = frame.command
        self.broker.stats.frames_in[command] += 1
        state = self.state
        if command not in state.reads:
            if state is _CONNECTING:
                raise StompSessionError(f"expected CONNECT, got {command}")
            raise StompSessionError(f"unexpected {command}: the session is already connected")
        if state is _CONNECTING:
            self._on_connect(frame)
            return
        if REFRESH_TOKEN in frame.headers:
            self._refresh(frame.headers[REFRESH_TOKEN])
        handler = self._HANDLERS[command]
        tx = frame.headers.get("transaction")
        if tx is not None and command in ("SEND", "ACK", "NACK"):
            self._buffer_in_transaction(tx, frame)
        elif command in ("SEND", "DISCONNECT"):
            handler(self, frame)  # these place their own RECEIPT
            return
        else:
            handler(self, frame)
        if self._receipt_of is not None and self.state is not _CLOSED:
            self._queue_receipt(ReceiptSlot(self._receipt_of, True))

    # -------------------------------------------------------------- CONNECT

    def _on_connect(self, frame: Frame) -> None:
        headers = frame.headers
        accept = headers.get("accept-version")
        offered = [v.strip() for v in accept.split(",")] if accept else ["1.0"]
        common = [v for v in SUPPORTED_VERSIONS if v in offered]
        if not common:
            raise StompSessionError(
                "Supported protocol versions are " + ",".join(SUPPORTED_VERSIONS),
                detail=f"the client accepts {accept!r}",
                headers={"version": ",".join(SUPPORTED_VERSIONS)},
            )
        version = common[-1]
        creds = Credentials(dict(headers), self._handshake_headers, self._query)
        # Only CONNECT reads them; an idle session should not hold a browser's headers.
        self._handshake_headers = self._query = _NOTHING
        gate = self.broker.gate
        if gate is not None and gate.connects:
            self._ask(
                lambda p: gate.connect(creds, self.remote, lambda who, why: self._answered(p, why, who)),
                lambda who: self._connected(frame, version, who),
                denied="authentication failed",
                receipt=frame.headers.get("receipt"),
                code=CLOSE_POLICY,
                cause=AUTH,
            )
            return
        try:
            principal = login(self.broker.authenticator, creds, self.remote, self.broker.roles)
        except AuthError as exc:
            self.fail(f"authentication failed: {exc}", code=CLOSE_POLICY, cause=AUTH)
            return
        self._connected(frame, version, principal)

    def _connected(self, frame: Frame, version: str, principal: Principal | None) -> None:
        """CONNECT accepted for ``principal``: CONNECTED, heart-beats, registration."""
        assert principal is not None
        headers = frame.headers
        user = principal.name
        beats = self.broker.settings.heartbeat
        send_ms, recv_ms = negotiate(version, headers.get("heart-beat", "0,0"), beats)
        self.version = version
        self.parser.version = version
        self.user = user
        self.principal = principal
        self.state = State.CONNECTED
        # stompjs 2.x (STOMP 1.0/1.1, in browsers) splits what it receives at every
        # NUL, content-length or not: a NUL in a body would start a forged frame.
        # Browser transports below 1.2 get NULs replaced; 1.2 clients and TCP get bodies as sent.
        self._nul_safe = version != "1.2" and self.transport != "tcp"
        self._plain_tails = not (self.text_only or self._nul_safe)
        self._expire_at(principal.expires_at)  # the connect timeout gives way to the credential's end
        connected = {"version": version}
        if version != "1.0":  # heart-beats arrived with 1.1
            connected["heart-beat"] = f"{beats.send_ms},{beats.receive_ms}"
        connected["session"] = self.id
        connected["server"] = self.broker.server_name
        if user is not None:
            connected["user-name"] = user
        self._write(serialize(Frame("CONNECTED", connected), version), "CONNECTED")
        self.broker.register(self)
        if send_ms or recv_ms:
            self._beats = Heartbeats(self, self.scheduler)
        if isinstance(self.out, HeartbeatAware):
            self.out.heartbeats(send_ms, recv_ms)
        if self._beats is not None:
            self._beats.start(send_ms, recv_ms, beats.read_margin)
        log.debug("session %s connected: user=%s version=%s", self.id, user, version)

    # ------------------------------------------------------------------ gate

    def _ask(
        self,
        ask: Callable[[Pending], None],
        go: Callable[[Principal | None], None],
        *,
        denied: str,
        receipt: str | None,
        code: int = CLOSE_PROTOCOL_ERROR,
        cause: str = DENIED,
    ) -> None:
        """Ask the gate; ``go`` once it allows. A refusal is an ERROR (``denied: why``)
        with the asked frame's ``receipt`` as its receipt-id, however late it comes.

        An answer that comes during ``ask`` (a cached one) goes on at once;
        otherwise the session stops reading until the answer comes.
        """
        pending = Pending(go, denied, code, cause, receipt)
        ask(pending)
        if pending.answered:
            if pending.error is not None:
                self.fail(f"{denied}: {pending.error}", code=code, receipt=receipt, cause=cause)
                return
            go(pending.principal)
            return
        pending.waiting = True
        self._pause(_GATE)

    def _answered(self, pending: Pending, error: str | None, principal: Principal | None = None) -> None:
        pending.answered, pending.error, pending.principal = True, error, principal
        if not pending.waiting or self.state is _CLOSED:
            return  # answered during _ask, which goes on by itself; or too late
        if error is not None:
            message = f"{pending.denied}: {error}"
            self.fail(message, code=pending.code, receipt=pending.receipt, cause=pending.cause)
            return
        try:
            pending.go(principal)
        except StompSessionError as exc:
            self.fail(exc.message, detail=exc.detail, headers=exc.headers, cause=exc.cause)
            return
        except Exception:
            log.exception("session %s: internal error", self.id)
            self.fail("internal server error", code=CLOSE_INTERNAL, cause=INTERNAL)
            return
        self._unpause(_GATE)

    def _expire_at(self, expires_at: float | None) -> None:
        """The session ends with its credential (a JWT's exp)."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if expires_at is not None:
            left = max(0.0, expires_at - self.broker.clock())
            self._deadline = self.scheduler.call_later(left, self._expired)

    def _expired(self) -> None:
        if self.state is not _CLOSED:
            self.fail("token expired", code=CLOSE_POLICY, cause=TOKEN_EXPIRED)

    def _refresh(self, token: str) -> None:
        """A ``refresh-token`` header: the session goes on under a new token of the same user.

        Only sessions whose credential expires take one; any other refusal
        (bad, expired, another user's) ends the session, as a failed CONNECT would.
        """
        if self.principal.expires_at is None:
            return  # nothing expires here: the header is dropped like any reserved one
        creds = Credentials({"passcode": token}, {}, {})
        try:
            principal = login(self.broker.authenticator, creds, self.remote, self.broker.roles)
        except AuthError as exc:
            raise StompSessionError(f"token refresh failed: {exc}", cause=AUTH) from None
        if principal.name != self.user:
            raise StompSessionError("token refresh failed: the token is for another user", cause=AUTH)
        self.principal = principal
        self._expire_at(principal.expires_at)

    def _connect_timeout(self) -> None:
        if self.state is _CONNECTING:
            self.fail(
                f"no CONNECT frame within {self.limits.connect_timeout_s:g} s", code=CLOSE_POLICY
            )

    # ------------------------------------------------------ SEND, SUBSCRIBE

    def _destination(self, frame: Frame) -> str:
        """The frame's destination, refused when it is too long or holds control characters."""
        destination = frame.headers.get("destination")
        if destination is None:
            raise StompSessionError(f"{frame.command} frame has no destination header")
        problem = destination_problem(destination, self.limits.max_destination_length)
        if problem is not None:
            raise StompSessionError(problem)
        return destination

    def _authorize(self, frame: str, destination: str) -> None:
        """The authorization rules (broker/authz.py), for SEND and SUBSCRIBE alike."""
        authorizer = self.broker.authorizer
        if authorizer.open:
            return
        try:
            authorizer.check(frame, destination, self.principal)
        except Denied as exc:
            rule = exc.rule.name if exc.rule is not None else "authorization.default"
            log.info("session %s (%s): %s (%s)", self.id, self.user or "anonymous", exc, rule)
            raise StompSessionError(str(exc), cause=DENIED) from None

    def _send_target(self, frame: Frame) -> Target:
        """Where a SEND goes; refused (ERROR) when the session may not send there."""
        destination = self._destination(frame)
        try:
            target = self.broker.rules.send_target(destination)
        except DestinationError as exc:
            raise StompSessionError(str(exc)) from None
        self._authorize(SEND, destination)
        user = target.user
        if user is not None:  # decoded from %-escapes: checked again
            problem = user_name_problem(user)
            if problem is not None:
                raise StompSessionError(f"user destination: {problem}")
        return target

    def _on_send(self, frame: Frame) -> None:
        target = self._send_target(frame)
        headers = {}
        reserved = self.broker.reserved
        for name, value in frame.headers.items():
            if name in RESERVED_HEADERS:  # destination, content-length...: the common case
                continue
            verdict = header_name_verdict(name, reserved)
            if verdict is None:
                headers[name] = value
            elif verdict is not RESERVED:  # headers the broker writes are dropped, however spelled
                raise StompSessionError(verdict)
        size = self._frame_size + MESSAGE_OVERHEAD
        receipt = frame.headers.get("receipt") if "transaction" not in frame.headers else None
        slot = None
        if receipt is not None or self._committing:
            slot = ReceiptSlot(receipt, False)
            self._wait_receipt(slot)
        gate = self.broker.gate
        if gate is None or SEND not in gate.checks or self._committing:  # a transaction's: checked on arrival
            self._publish(target, headers, frame.body, size, slot)
            return
        destination = frame.headers["destination"]
        self._ask(
            lambda p: self._check(gate, p, SEND, destination, headers, frame.body),
            lambda _who: self._publish(target, headers, frame.body, size, slot),
            denied=f"access denied: SEND {destination}",
            receipt=frame.headers.get("receipt"),
        )

    def _publish(
        self, target: Target, headers: dict[str, str], body: bytes, size: int, slot: ReceiptSlot | None
    ) -> None:
        self.inflight += size
        if target.application:
            self._call_application(SEND, target.destination, headers, body, None, size, slot)
        else:
            message = self.broker.message(
                target.destination, headers, body, target.user, sender=self.user
            )
            message.size = size
            if slot is None:
                self.broker.publish(message, None, self)
            else:
                self.broker.publish(message, lambda error: self._confirmed(slot, error), self)
        self._check_flow()

    def _check_flow(self) -> None:
        # Flow control needs at least an eighth of the share held (Broker.flow_blocked).
        if self.inflight > self._flow_floor and self.state is not _CLOSED and self.broker.flow_blocked(self):
            self._pause(_FLOW)
            self.broker.wait_for_room(self)

    def _call_application(
        self,
        frame: str,
        destination: str,
        headers: dict[str, str],
        body: bytes,
        sub_id: str | None,
        size: int,
        slot: ReceiptSlot | None,
    ) -> None:
        """Hand a SEND or SUBSCRIBE to an application destination to the application.

        It counts against the session's in-flight share until the application is
        done, and a session has at most ``max_application_calls`` of them
        waiting or running: a client cannot pile up calls (each a task) faster
        than its handlers finish.
        """
        path = self.broker.rules.application_path(destination)
        assert path is not None

        def finish(error: str | None) -> None:
            self._app_calls -= 1
            self.settle(size)
            if self.state is _CLOSED:
                return
            if error is not None:  # the application (a handler, the backend) refused or failed the frame
                self.fail(
                    error, receipt=slot.receipt if slot is not None else None, code=CLOSE_POLICY, cause=DENIED
                )
                return
            if slot is not None:
                slot.ready = True
                self._flush_receipts()
            if self._paused & _APP and self._app_calls < self.limits.max_application_calls:
                self._unpause(_APP)

        reply = (lambda message: self._reply(sub_id, message)) if sub_id is not None else _no_reply
        call = AppCall(
            frame, destination, path, headers, body, self.principal, self.id, sub_id, size, finish, reply
        )
        self._app_calls += 1
        self.broker.application.handle(call)  # may finish at once (no handler)
        if self._app_calls >= self.limits.max_application_calls:
            self._pause(_APP)

    def _reply(self, sub_id: str, message: Message) -> None:
        """One MESSAGE on a subscription the session does not keep (``@SubscribeMapping``)."""
        if self.state is _CLOSED:
            return
        once = Subscription(self, sub_id, message.destination, "auto", None, self._head(sub_id))
        self.deliver(once, message)

    def _head(self, sub_id: str) -> bytes:
        """The start of every MESSAGE frame for subscription ``sub_id``, encoded once."""
        return b"MESSAGE\nsubscription:" + escape(sub_id, self.version).encode("utf-8") + b"\nmessage-id:"

    def _subscribe_target(self, frame: Frame, destination: str) -> tuple[str, str | None]:
        """What a SUBSCRIBE listens to (a destination, and the user for ``/user/...``);
        refused (ERROR) when the session may not subscribe there."""
        try:
            target = self.broker.rules.subscribe_target(destination)
        except DestinationError as exc:
            raise StompSessionError(str(exc)) from None
        self._authorize(SUBSCRIBE, destination)
        if target.user is not None:
            if self.user is None:
                raise StompSessionError(f"cannot subscribe to {destination!r}: the session has no user")
            if has_wildcard(target.destination):
                raise StompSessionError(
                    f"cannot subscribe to {destination!r}: user destinations take no wildcards"
                )
            return target.destination, self.user
        if has_wildcard(target.destination):
            problem = pattern_problem(target.destination, self.broker.settings.destinations.path_separator)
            if problem is not None:
                raise StompSessionError(f"cannot subscribe to {destination!r}: {problem}")
            problem = self.broker.pattern_refusal(self, target.destination)
            if problem is not None:
                raise StompSessionError(f"cannot subscribe to {destination!r}: {problem}", cause=LIMIT)
        return target.destination, None

    def _on_subscribe(self, frame: Frame) -> None:
        destination = self._destination(frame)
        sub_id = frame.headers.get("id")
        if sub_id is None:
            if self.version != "1.0":
                raise StompSessionError("SUBSCRIBE frame has no id header")
            sub_id = destination  # STOMP 1.0 makes id optional
        if sub_id in self.subscriptions:
            raise StompSessionError(f"subscription id {sub_id!r} is already in use in this session")
        if len(self.subscriptions) >= self.limits.max_subscriptions:
            raise StompSessionError(f"more than {self.limits.max_subscriptions} subscriptions", cause=LIMIT)
        ack = frame.headers.get("ack", "auto")
        if ack not in ACK_MODES:
            raise StompSessionError(f"invalid ack mode {ack!r}: use auto, client or client-individual")
        if self.broker.rules.application_path(destination) is not None:
            # One reply from the application, on this id; nothing is kept (Spring's @SubscribeMapping).
            self._authorize(SUBSCRIBE, destination)
            slot = None
            if self._receipt_of is not None:
                slot, self._receipt_of = ReceiptSlot(self._receipt_of, False), None
                self._wait_receipt(slot)
            size = self._frame_size + MESSAGE_OVERHEAD
            self.inflight += size
            headers = {k: v for k, v in frame.headers.items() if not is_reserved(k, self.broker.reserved)}
            self._call_application(SUBSCRIBE, destination, headers, b"", sub_id, size, slot)
            self._check_flow()
            return
        listened, user = self._subscribe_target(frame, destination)
        slot = None
        if self._receipt_of is not None and user is not None:
            # The RECEIPT says the subscription is live across the cluster: it waits
            # for the bus to subscribe and comes before the stored messages it fetched.
            slot, self._receipt_of = ReceiptSlot(self._receipt_of, False), None
            self._wait_receipt(slot)
        gate = self.broker.gate
        if gate is None or SUBSCRIBE not in gate.checks:
            self._subscribe(sub_id, listened, ack, user, slot)
            return
        if slot is None and self._receipt_of is not None:  # the RECEIPT waits for the gate too
            slot, self._receipt_of = ReceiptSlot(self._receipt_of, False), None
            self._wait_receipt(slot)
        self._ask(
            lambda p: self._check(gate, p, SUBSCRIBE, destination, {}, b""),
            lambda _who: self._subscribe(sub_id, listened, ack, user, slot),
            denied=f"access denied: SUBSCRIBE {destination}",
            receipt=frame.headers.get("receipt"),
        )

    def _check(
        self, gate: Gate, pending: Pending, frame: str, destination: str, headers: dict[str, str], body: bytes
    ) -> None:
        answer = partial(self._answered, pending)
        gate.check(frame, destination, self.principal, self.id, headers, body, answer)

    def _subscribe(
        self, sub_id: str, listened: str, ack: str, user: str | None, slot: ReceiptSlot | None
    ) -> None:
        sub = Subscription(self, sub_id, listened, ack, user, self._head(sub_id))
        self.subscriptions[sub_id] = sub
        if ack != "auto" and self._acks is None:
            self._acks = Acks()
        if user is not None:
            sub.receipt = slot  # written once live
        if self.broker.subscribe(sub):
            self.went_live(sub)
        if user is None and slot is not None:
            slot.ready = True
            self._flush_receipts()

    def went_live(self, sub: Subscription) -> None:
        """``sub`` gets every message from now on; stored ones it waited for come next."""
        slot = sub.receipt
        if slot is not None:
            sub.receipt = None
            self._confirmed(slot, None)

    def _on_unsubscribe(self, frame: Frame) -> None:
        sub_id = frame.headers.get("id")
        if sub_id is None:
            if self.version != "1.0" or "destination" not in frame.headers:
                raise StompSessionError("UNSUBSCRIBE frame has no id header")
            sub_id = frame.headers["destination"]
        sub = self.subscriptions.pop(sub_id, None)
        if sub is None:
            return  # unsubscribing twice is harmless
        self.broker.unsubscribe(sub)
        if self._acks is not None:
            self._acks.forget(sub)

    # ------------------------------------------------- ACK, NACK, transactions

    def _on_ack(self, frame: Frame, nack: bool = False) -> None:
        mid = required(frame, "id" if self.version == "1.2" else "message-id")
        if self._acks is None or not self._acks.settle(mid):
            self._check_issued(mid, frame.command)
            return  # already covered by an earlier cumulative ACK or NACK
        self.broker.acked(nack)

    def _on_nack(self, frame: Frame) -> None:
        if self.version == "1.0":
            raise StompSessionError("NACK is not part of STOMP 1.0")
        self._on_ack(frame, nack=True)

    def _check_issued(self, mid: str, command: str) -> None:
        check_issued(mid, self._mid_prefix.decode(), self._next_mid, command)

    def _txs(self) -> Transactions:
        if self._transactions is None:
            self._transactions = Transactions(self.limits)
        return self._transactions

    def _on_begin(self, frame: Frame) -> None:
        self._txs().begin(frame)

    def _on_commit(self, frame: Frame) -> None:
        # Buffered frames were validated on arrival, so COMMIT applies all of them
        # unless applying one closes the session (e.g. max_unacked).
        self._committing = True  # the COMMIT's RECEIPT waits for its SENDs
        try:
            for buffered, size in self._txs().end(frame):
                if self.state is _CLOSED:
                    return
                self._frame_size = size
                self._HANDLERS[buffered.command](self, buffered)
        finally:
            self._committing = False

    def _on_abort(self, frame: Frame) -> None:
        self._txs().end(frame)

    def _buffer_in_transaction(self, tx: str, frame: Frame) -> None:
        txs = self._txs()
        size = self._frame_size
        txs.check_room(tx, frame, size)
        # Validate now, so a bad frame fails on arrival and COMMIT is all-or-nothing.
        if frame.command == "SEND":
            self._send_target(frame)
            for name in frame.headers:
                verdict = header_name_verdict(name, self.broker.reserved)
                if verdict is not None and verdict is not RESERVED:
                    raise StompSessionError(verdict)
        else:
            if frame.command == "NACK" and self.version == "1.0":
                raise StompSessionError("NACK is not part of STOMP 1.0")
            mid = required(frame, "id" if self.version == "1.2" else "message-id")
            if self._acks is None or mid not in self._acks.unacked:
                self._check_issued(mid, frame.command)
        gate = self.broker.gate
        if frame.command != "SEND" or gate is None or SEND not in gate.checks:
            txs.hold(tx, frame, size)
            return
        destination = frame.headers["destination"]  # asked now, so COMMIT applies all or nothing
        headers = {k: v for k, v in frame.headers.items() if not is_reserved(k, self.broker.reserved)}
        slot = None
        if self._receipt_of is not None:  # the frame's RECEIPT waits for the gate
            slot, self._receipt_of = ReceiptSlot(self._receipt_of, False), None
            self._wait_receipt(slot)

        def held(_who: Principal | None) -> None:
            txs.hold(tx, frame, size)
            if slot is not None:
                slot.ready = True
                self._flush_receipts()

        self._ask(
            lambda p: self._check(gate, p, SEND, destination, headers, frame.body),
            held,
            denied=f"access denied: SEND {destination}",
            receipt=frame.headers.get("receipt"),
        )

    def _on_disconnect(self, frame: Frame) -> None:
        # After every earlier RECEIPT; nothing after DISCONNECT is read.
        self.state = State.DISCONNECTING
        self._queue_receipt(ReceiptSlot(frame.headers.get("receipt"), True, disconnect=True))

    _HANDLERS: dict[str, Callable[[Session, Frame], None]] = {
        "SEND": _on_send,
        "SUBSCRIBE": _on_subscribe,
        "UNSUBSCRIBE": _on_unsubscribe,
        "ACK": _on_ack,
        "NACK": _on_nack,
        "BEGIN": _on_begin,
        "COMMIT": _on_commit,
        "ABORT": _on_abort,
        "DISCONNECT": _on_disconnect,
    }
    assert set(_HANDLERS) == State.CONNECTED.reads

    # ---------------------------------------------------------------- output

    def _write(self, data: bytes, command: str) -> None:
        """A frame other than MESSAGE (those are :meth:`deliver`'s), counted by command."""
        self.wrote = True
        frames_out = self.broker.stats.frames_out
        frames_out[command] = frames_out.get(command, 0) + 1
        self.out.send(data, False)

    def _queue_receipt(self, slot: ReceiptSlot) -> None:
        self._wait_receipt(slot)
        self._flush_receipts()

    def _wait_receipt(self, slot: ReceiptSlot) -> None:
        if self._receipts is None:
            self._receipts = Receipts()
        self._receipts.wait(slot)

    def _confirmed(self, slot: ReceiptSlot, error: str | None) -> None:
        """The bus has (or could not take) a published message, or a subscription is live."""
        if self.state is _CLOSED:
            return
        if error is not None:
            self.fail(
                f"message not accepted: {error}",
                receipt=slot.receipt,
                code=CLOSE_INTERNAL,
                cause=bus_refusal_reason(error),
            )
            return
        slot.ready = True
        self._flush_receipts()

    def _flush_receipts(self) -> None:
        receipts = self._receipts
        if receipts is None or self.state is _CLOSED:
            return
        for slot in receipts.ready():
            if slot.receipt is not None:
                receipt = serialize(Frame("RECEIPT", {"receipt-id": slot.receipt}), self.version)
                self._write(receipt, "RECEIPT")
            if slot.disconnect:
                self.close(CLOSE_NORMAL, "disconnect", cause=CLIENT)
            if self.state is _CLOSED:
                break
        if not receipts and self._receipts is receipts:
            self._receipts = None

    def deliver(self, sub: Subscription, message: Message) -> None:
        """Write ``message`` as a MESSAGE frame for ``sub``; the broker's hot path."""
        if self.state is _CLOSED:
            return
        n = self._next_mid
        self._next_mid = n + 1
        mid = self._mid_prefix + b"%d" % n
        if self._plain_tails:
            binary = message.binary
            tail = message.tail(self.version)
        else:
            tail, binary = message.tail_for(self.version, self.text_only, self._nul_safe)
        if sub.ack == "auto":
            data = b"".join((sub.head, mid, b"\n", tail))
        else:
            acks = self._acks
            assert acks is not None  # made with the subscription
            if len(acks.unacked) >= self.limits.max_unacked:
                self.fail(f"more than {self.limits.max_unacked} unacknowledged messages", cause=LIMIT)
                return
            acks.track(sub, mid.decode())
            if self.version == "1.2":
                data = b"".join((sub.head, mid, b"\nack:", mid, b"\n", tail))
            else:
                data = b"".join((sub.head, mid, b"\n", tail))
        self.wrote = True
        self.out.send(data, binary)

    # ------------------------------------------------------------------ close

    def fail(
        self,
        message: str,
        *,
        code: int = CLOSE_PROTOCOL_ERROR,
        detail: str = "",
        headers: dict[str, str] | None = None,
        receipt: str | None = None,
        cause: str = PROTOCOL,
    ) -> None:
        """Send ERROR (flushed before the close) and close the session; ``cause`` is
        the close reason (broker/closes.py) the metrics and the ``session.close`` line show.

        Before CONNECTED the client cannot know the version, so the ERROR is
        written unescaped (as CONNECT/CONNECTED are).
        """
        if self.state is _CLOSED:
            return
        self._ending(cause, message)
        error = {"message": message, "content-type": "text/plain"}
        if receipt is not None:
            error["receipt-id"] = receipt
        if headers:
            error.update(headers)
        body = (detail or message).encode("utf-8")
        if code == CLOSE_INTERNAL:
            log.error("session %s closed: %s", self.id, message)
        self.broker.session_failed(self, message)
        # Before CONNECTED the version is None: the ERROR goes unescaped.
        self._write(serialize(Frame("ERROR", error, body), self.version), "ERROR")
        self.close(code, message)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "", *, cause: str = CLIENT) -> None:
        """End the session: drop its state from the broker, then close the transport."""
        if self.state is _CLOSED:
            return
        self._ending(cause, reason)
        self.state = State.CLOSED
        self._cleanup()
        self.out.close(code, reason)

    def drop(self, reason: str, *, cause: str = SLOW_CONSUMER) -> None:
        """End a session whose peer does not read: closed, and its unsent output dropped now.

        A plain close waits for the unsent bytes to be flushed, which for such a
        peer is never: its buffers (and file descriptor) would stay.
        """
        self.close(CLOSE_POLICY, reason, cause=cause)
        self.out.abort()

    def _ending(self, cause: str, detail: str) -> None:
        """The first reason given for the end is the one kept."""
        if self.end_cause is None:
            self.end_cause = cause
            self.end_detail = detail

    def connection_lost(self) -> None:
        """The transport is gone (peer closed, network error)."""
        if self.state is not _CLOSED:
            self.state = State.CLOSED
            self._cleanup()

    def _cleanup(self) -> None:
        for timer in (self._deadline, self._rate_timer):
            if timer is not None:
                timer.cancel()
        self._deadline = self._rate_timer = None
        if self._beats is not None:
            self._beats.cancel()
        if self._transactions is not None:
            self._transactions.clear()  # open transactions abort
        for sub in self.subscriptions.values():
            self.broker.unsubscribe(sub)
        self.subscriptions.clear()
        if self._acks is not None:
            self._acks.unacked.clear()
        self.broker.detach(self)
        self.broker.session_closed(self, self.end_cause or CLIENT, self.end_detail)


def _no_reply(message: Message) -> None:
    raise RuntimeError("a SEND has no subscription to reply on")
