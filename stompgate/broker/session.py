"""The STOMP session state machine (sans-I/O).

A session is fed the bytes its transport received (:meth:`Session.receive_data`)
and writes through an :class:`Outbound` the transport implements. Timers come
from a :class:`Scheduler`, so tests drive time by hand. The session never
raises to its transport: protocol faults become an ERROR frame and a close.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..logs import RateLimitedLog
from ..stomp import CLIENT_COMMANDS, Frame, FrameParser, ProtocolError, serialize
from ..stomp.headers import escape
from .auth import AuthError, Credentials, login
from .destinations import DestinationError, Target, has_wildcard, pattern_problem
from .names import RESERVED, RESERVED_HEADERS, destination_problem, header_name_verdict, user_name_problem
from .subscriptions import ACK_MODES, Subscription

if TYPE_CHECKING:
    from .broker import Broker
    from .message import Message

log = logging.getLogger(__name__)
# A client can make closes happen at will (connect timeouts, bad frames): a line
# each, but a flood of them is counted, not written.
_closes = RateLimitedLog(log, "session closes", level=logging.INFO, burst=100, interval_s=10.0)

# WebSocket close codes (RFC 6455 section 7.4.1)
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012

SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2")


class Outbound(Protocol):
    """What a transport gives a session: write bytes, close, and stop or resume reading."""

    def send(self, data: bytes, binary: bool) -> None:
        """Queue one STOMP frame (or heart-beat EOL) for the peer, in order."""

    def close(self, code: int, reason: str) -> None:
        """Close after everything already sent has been flushed."""

    def pause_reading(self) -> None:
        """Hand the session no more input until :meth:`resume_reading` (at most what is in flight)."""

    def resume_reading(self) -> None:
        """Input may come again."""

    def buffered(self) -> int:
        """Bytes written to this peer and not yet taken by the kernel (the node's memory budget)."""

    def abort(self) -> None:
        """Close now, dropping what is unsent: for a peer that does not read (its buffers go at once)."""


@runtime_checkable
class HeartbeatAware(Protocol):
    """An Outbound that wants to know the negotiated heart-beats (SockJS turns its own off)."""

    def heartbeats(self, send_ms: int, receive_ms: int) -> None: ...


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """An event loop's clock and timers (``asyncio`` loops fit as they are)."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], Any]) -> TimerHandle: ...

    def call_soon(self, callback: Callable[[], Any]) -> TimerHandle:
        """Run ``callback`` on the next turn of the loop, after what is ready now."""


@dataclass(slots=True)
class SessionLimits:
    """What one session may hold and do; config.py documents each default and why."""

    max_frame_size: int = 1024 * 1024
    max_headers: int = 64
    max_header_length: int = 8192
    max_destination_length: int = 1024
    max_subscriptions: int = 1000
    # Distinct wildcard patterns one user may hold on a node (each is work on every publish).
    max_user_patterns: int = 100
    max_unacked: int = 10_000
    max_transactions: int = 16
    max_transaction_frames: int = 1000
    # Bytes of frames held by the open transactions of a session, all together.
    max_transaction_bytes: int = 4 * 1024 * 1024
    # Bytes of this session's messages the bus has not taken yet; past it the session
    # is not read until they are taken (flow control, as a TCP broker does).
    max_inflight_bytes: int = 1024 * 1024
    # Rate limits: frames and bytes per second (0: none), a bucket of burst_s seconds.
    frames_per_s: float = 1000.0
    bytes_per_s: float = 1024 * 1024.0
    burst_s: float = 2.0
    rate_policy: str = "throttle"  # or "close"
    # Frames handled per loop turn before others get a turn.
    frames_per_turn: int = 64


class StompSessionError(Exception):
    """A frame the session refuses; becomes ERROR + close."""

    def __init__(self, message: str, detail: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers or {}


# What a message costs the node besides its frame's bytes while the bus holds it
# (its outbox entry, the bus's JSON head): counted in flow control and the outbox
# limits, so that a flood of tiny frames is bounded in number, too.
MESSAGE_OVERHEAD = 256

# Why a session is not reading its input now; the transport reads while none is set.
_TURN = 1  # this loop turn's share of frames is spent: the rest waits for the next turn
_RATE = 2  # over the rate limit (throttle policy): until the bucket refills
_FLOW = 4  # publishes the bus has not taken are over the session's share, or the bus is congested


# Shared by every session past CONNECT; never written to.
_NOTHING: dict[str, str] = {}


class Session:
    """One client connection's STOMP state, from CONNECT to close."""

    # Slots, not a __dict__: a node holds tens of thousands of sessions, and a
    # dict of ~40 attributes costs ~1.5 KB each (docs/benchmarks.md, idle).
    __slots__ = (  # fmt: skip
        "broker", "closed", "connected", "id", "inflight", "limits", "out", "parser", "remote",
        "scheduler", "subscriptions", "text_only", "transport", "user", "version",
        "_bucket_time", "_byte_tokens", "_committing", "_connect_timer", "_disconnecting",
        "_flow_floor", "_frame_size", "_frame_tokens", "_handshake_headers", "_last_read",
        "_mid_prefix", "_next_mid", "_nul_safe", "_paused", "_plain_tails", "_query",
        "_rate_timer", "_rated", "_receipt_of", "_receipts", "_recv_timer", "_send_timer",
        "_transaction_bytes", "_transactions", "_unacked", "_wrote_since_tick",
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
        # The transport carries text only (SockJS): bodies that are not UTF-8 are
        # delivered with invalid bytes replaced, as Spring does over SockJS.
        self.text_only = text_only
        self.user: str | None = None
        self.version: str | None = None
        self.connected = False
        self.closed = False
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
        self._unacked: dict[str, Subscription] = {}
        # Open transactions: their frames, each with its size on the wire.
        self._transactions: dict[str, list[tuple[Frame, int]]] = {}
        self._transaction_bytes = 0  # frames held by all open transactions
        self._frame_size = 0  # bytes of the frame being handled
        # Input: the reasons (bits) it is paused, and the rate-limit buckets.
        self._paused = 0
        self._rate_timer: TimerHandle | None = None
        now = scheduler.time()
        self._rated = bool(limits.frames_per_s or limits.bytes_per_s)
        self._frame_tokens = limits.frames_per_s * limits.burst_s
        self._byte_tokens = limits.bytes_per_s * limits.burst_s
        self._bucket_time = now
        # Bytes of this session's publishes the bus has not taken yet (see settle).
        self.inflight = 0
        self._flow_floor = limits.max_inflight_bytes // 8
        # MESSAGE bodies go out as sent, unless this peer may be stompjs 2.x (see _on_connect).
        self._nul_safe = False
        self._plain_tails = not text_only
        self._mid_prefix = (self.id + "-").encode()
        self._next_mid = 1
        self._receipt_of: str | None = None  # receipt of the frame being handled
        # RECEIPTs wait, in order, behind publishes the bus has not confirmed yet:
        # a SEND's RECEIPT means the cluster has the message.
        self._receipts: deque[_ReceiptSlot] | None = None  # made when needed: an empty deque is ~600 bytes
        self._committing = False
        self._disconnecting = False
        # Heart-beats. Outgoing: a flag set per write, checked every half interval,
        # so the longest silence is one interval at no per-message clock cost.
        # Incoming: the time of the last read, so a silent peer is closed exactly
        # interval x margin after its last byte.
        self._wrote_since_tick = True
        self._last_read = 0.0
        self._connect_timer: TimerHandle | None = scheduler.call_later(
            broker.settings.connect_timeout_s, self._connect_timeout
        )
        self._send_timer: TimerHandle | None = None
        self._recv_timer: TimerHandle | None = None
        broker.attach(self)

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
        if self.closed:
            return
        if self._recv_timer is not None:
            self._last_read = self.scheduler.time()
        self.parser.feed(data)
        self._pump()

    @property
    def reading(self) -> bool:
        """Whether the session takes input now (the transport reads only then)."""
        return not (self._paused or self.closed)

    def _pump(self) -> None:
        """Handle the frames waiting in the parser while this turn's budget lasts."""
        if self._paused or self.closed:
            return
        parser = self.parser
        budget = self.limits.frames_per_turn
        try:
            while not (self.closed or self._disconnecting):
                before = parser.consumed
                frame = parser.next_frame()
                if frame is None:
                    return
                self._frame_size = parser.consumed - before
                if self._rated and self.connected and not self._charge(self._frame_size):
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
            self.fail(exc.message)
        except StompSessionError as exc:
            self.fail(exc.message, detail=exc.detail, headers=exc.headers, receipt=self._receipt_of)
        except Exception:
            log.exception("session %s: internal error", self.id)
            self.fail("internal server error", code=CLOSE_INTERNAL)

    def _pause(self, reason: int) -> None:
        paused = self._paused
        self._paused = paused | reason
        if not paused and not self.closed:
            self.out.pause_reading()

    def _unpause(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if self._paused or self.closed:
            return
        self._pump()  # what the transport had read already goes first
        if not (self._paused or self.closed):
            self.out.resume_reading()

    def _charge(self, size: int) -> bool:
        """Take one frame of ``size`` bytes from the rate-limit buckets; False if the session stops here.

        Token buckets that may go into debt: a frame is never held back once
        parsed; when a bucket is empty the session pauses until it has refilled
        (policy ``throttle``), or is closed (policy ``close``).
        """
        limits = self.limits
        now = self.scheduler.time()
        elapsed = now - self._bucket_time
        self._bucket_time = now
        wait = 0.0
        rate = limits.frames_per_s
        if rate:
            tokens = self._frame_tokens + elapsed * rate
            if tokens > rate * limits.burst_s:
                tokens = rate * limits.burst_s
            tokens -= 1
            self._frame_tokens = tokens
            if tokens < 0:
                wait = -tokens / rate
        rate = limits.bytes_per_s
        if rate:
            tokens = self._byte_tokens + elapsed * rate
            if tokens > rate * limits.burst_s:
                tokens = rate * limits.burst_s
            tokens -= size
            self._byte_tokens = tokens
            if tokens < 0 and -tokens / rate > wait:
                wait = -tokens / rate
        if wait <= 0:
            return True
        if limits.rate_policy == "close":
            self.fail(
                f"rate limit exceeded: at most {limits.frames_per_s:g} frames and "
                f"{limits.bytes_per_s:g} bytes per second",
                code=CLOSE_POLICY,
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
        return bool(self._paused & _FLOW) and not self.closed

    def resume_flow(self) -> None:
        """The broker says the bus has room again."""
        if not self.broker.flow_blocked(self):
            self._unpause(_FLOW)

    def memory(self) -> int:
        """Bytes this session holds: unread input, open transactions, unsent output, unsent publishes."""
        return self.parser.buffered + self._transaction_bytes + self.out.buffered() + max(self.inflight, 0)

    def _handle(self, frame: Frame) -> None:
        self._receipt_of = frame.headers.get("receipt")
        command = frame.command
        if not self.connected:
            if command in ("CONNECT", "STOMP"):
                self._on_connect(frame)
                return
            raise StompSessionError(f"expected CONNECT, got {command}")
        handler = self._HANDLERS.get(command)
        if handler is None:  # CONNECT twice
            raise StompSessionError(f"unexpected {command}: the session is already connected")
        tx = frame.headers.get("transaction")
        if tx is not None and command in ("SEND", "ACK", "NACK"):
            self._buffer_in_transaction(tx, frame)
        elif command in ("SEND", "DISCONNECT"):
            handler(self, frame)  # these place their own RECEIPT
            return
        else:
            handler(self, frame)
        if self._receipt_of is not None and not self.closed:
            self._queue_receipt(_ReceiptSlot(self._receipt_of, True))

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
        try:
            user = login(self.broker.authenticator, creds, self.remote)
        except AuthError as exc:
            self.fail(f"authentication failed: {exc}", code=CLOSE_POLICY)
            return
        send_ms, recv_ms = 0, 0
        settings = self.broker.settings
        sx, sy = settings.heartbeat_send_ms, settings.heartbeat_receive_ms
        if version != "1.0":
            cx, cy = _parse_heartbeat(headers.get("heart-beat", "0,0"))
            send_ms = 0 if sx == 0 or cy == 0 else max(sx, cy)
            recv_ms = 0 if cx == 0 or sy == 0 else max(cx, sy)
        self.version = version
        self.parser.version = version
        self.user = user
        self.connected = True
        # stompjs 2.x (STOMP 1.0/1.1, in browsers) splits what it receives at every
        # NUL, content-length or not: a NUL in a body would start a forged frame.
        # Browser transports below 1.2 get NULs replaced; 1.2 clients and TCP get bodies as sent.
        self._nul_safe = version != "1.2" and self.transport != "tcp"
        self._plain_tails = not (self.text_only or self._nul_safe)
        self._cancel_timers()
        connected = {"version": version}
        if version != "1.0":  # heart-beats arrived with 1.1
            connected["heart-beat"] = f"{sx},{sy}"
        connected["session"] = self.id
        connected["server"] = self.broker.server_name
        if user is not None:
            connected["user-name"] = user
        self._write(serialize(Frame("CONNECTED", connected), version), False)
        self.broker.register(self)
        if send_ms:
            half = send_ms / 2000
            self._send_timer = self.scheduler.call_later(half, lambda: self._send_tick(half))
        if isinstance(self.out, HeartbeatAware):
            self.out.heartbeats(send_ms, recv_ms)
        if recv_ms:
            wait = recv_ms * settings.heartbeat_read_margin / 1000
            self._last_read = self.scheduler.time()
            self._recv_timer = self.scheduler.call_later(wait, lambda: self._recv_tick(wait))
        log.debug("session %s connected: user=%s version=%s", self.id, user, version)

    def _connect_timeout(self) -> None:
        if not self.connected and not self.closed:
            self.fail(
                f"no CONNECT frame within {self.broker.settings.connect_timeout_s:g} s", code=CLOSE_POLICY
            )

    def _send_tick(self, half_s: float) -> None:
        """Every half interval: an EOL unless something was written in the last half."""
        if self.closed:
            return
        if not self._wrote_since_tick:
            self.out.send(b"\n", False)
        self._wrote_since_tick = False
        self._send_timer = self.scheduler.call_later(half_s, lambda: self._send_tick(half_s))

    def _recv_tick(self, wait_s: float) -> None:
        """Close a client that sent nothing, not even a heart-beat, for ``wait_s``."""
        if self.closed:
            return
        if self._paused:
            self._last_read = self.scheduler.time()  # not reading it is not the client's silence
        silent = self.scheduler.time() - self._last_read
        if silent >= wait_s:
            self.fail(f"no data or heart-beat from the client for {wait_s:g} s", code=CLOSE_POLICY)
            return
        self._recv_timer = self.scheduler.call_later(wait_s - silent, lambda: self._recv_tick(wait_s))

    # ----------------------------------------------------------------- frames

    def _destination(self, frame: Frame) -> str:
        """The frame's destination, refused when it is too long or holds control characters."""
        destination = frame.headers.get("destination")
        if destination is None:
            raise StompSessionError(f"{frame.command} frame has no destination header")
        problem = destination_problem(destination, self.limits.max_destination_length)
        if problem is not None:
            raise StompSessionError(problem)
        return destination

    def _send_target(self, frame: Frame) -> Target:
        try:
            target = self.broker.rules.send_target(self._destination(frame))
        except DestinationError as exc:
            raise StompSessionError(str(exc)) from None
        user = target.user
        if user is not None:  # decoded from %-escapes: checked again
            problem = user_name_problem(user)
            if problem is not None:
                raise StompSessionError(f"user destination: {problem}")
        return target

    def _on_send(self, frame: Frame) -> None:
        target = self._send_target(frame)
        headers = {}
        for name, value in frame.headers.items():
            if name in RESERVED_HEADERS:  # destination, content-length...: the common case
                continue
            verdict = header_name_verdict(name)
            if verdict is None:
                headers[name] = value
            elif verdict is not RESERVED:  # headers the broker writes are dropped, however spelled
                raise StompSessionError(verdict)
        message = self.broker.message(target.destination, headers, frame.body, target.user)
        message.size = self._frame_size + MESSAGE_OVERHEAD
        receipt = frame.headers.get("receipt") if "transaction" not in frame.headers else None
        self.inflight += message.size
        if receipt is None and not self._committing:
            self.broker.publish(message, None, self)
        else:
            slot = _ReceiptSlot(receipt, False)
            self._wait_receipt(slot)
            self.broker.publish(message, lambda error: self._confirmed(slot, error), self)
        # Flow control needs at least an eighth of the share held (Broker.flow_blocked).
        if self.inflight > self._flow_floor and not self.closed and self.broker.flow_blocked(self):
            self._pause(_FLOW)
            self.broker.wait_for_room(self)

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
            raise StompSessionError(f"more than {self.limits.max_subscriptions} subscriptions")
        ack = frame.headers.get("ack", "auto")
        if ack not in ACK_MODES:
            raise StompSessionError(f"invalid ack mode {ack!r}: use auto, client or client-individual")
        try:
            target = self.broker.rules.subscribe_target(destination)
        except DestinationError as exc:
            raise StompSessionError(str(exc)) from None
        user = None
        if target.user is not None:
            if self.user is None:
                raise StompSessionError(f"cannot subscribe to {destination!r}: the session has no user")
            if has_wildcard(target.destination):
                raise StompSessionError(
                    f"cannot subscribe to {destination!r}: user destinations take no wildcards"
                )
            user = self.user
        elif has_wildcard(target.destination):
            problem = pattern_problem(target.destination, self.broker.settings.path_separator)
            problem = problem or self.broker.pattern_refusal(self, target.destination)
            if problem is not None:
                raise StompSessionError(f"cannot subscribe to {destination!r}: {problem}")
        head = b"MESSAGE\nsubscription:" + escape(sub_id, self.version).encode("utf-8") + b"\nmessage-id:"
        sub = Subscription(self, sub_id, target.destination, ack, user, head)
        self.subscriptions[sub_id] = sub
        if user is not None and self._receipt_of is not None:
            # The RECEIPT says the subscription is live across the cluster: it waits
            # for the bus to subscribe and comes before the stored messages it fetched.
            slot = _ReceiptSlot(self._receipt_of, False)
            self._wait_receipt(slot)
            sub.on_live = lambda: self._confirmed(slot, None)
            self._receipt_of = None
        self.broker.subscribe(sub)
        if sub.on_live is not None and sub.replay is None:  # live at once: nothing to wait for
            on_live, sub.on_live = sub.on_live, None
            on_live()

    def _on_unsubscribe(self, frame: Frame) -> None:
        sub_id = frame.headers.get("id")
        if sub_id is None:
            if self.version != "1.0" or "destination" not in frame.headers:
                raise StompSessionError("UNSUBSCRIBE frame has no id header")
            sub_id = frame.headers["destination"]
        sub = self.subscriptions.pop(sub_id, None)
        if sub is None:
            return  # unsubscribing twice is harmless
        self._drop_subscription(sub)

    def _drop_subscription(self, sub: Subscription) -> None:
        self.broker.unsubscribe(sub)
        for mid in sub.pending:
            self._unacked.pop(mid, None)
        sub.pending.clear()

    def _on_ack(self, frame: Frame, nack: bool = False) -> None:
        if self.version == "1.2":
            mid = _required(frame, "id")
        else:
            mid = _required(frame, "message-id")
        sub = self._unacked.get(mid)
        if sub is None:
            self._check_issued(mid, frame.command)
            return  # already covered by an earlier cumulative ACK or NACK
        if sub.ack == "client":
            # cumulative: everything up to this message in that subscription
            for pending in list(sub.pending):
                del sub.pending[pending]
                del self._unacked[pending]
                if pending == mid:
                    break
        else:
            del sub.pending[mid]
            del self._unacked[mid]
        self.broker.stats.acked += 0 if nack else 1
        self.broker.stats.nacked += 1 if nack else 0

    def _on_nack(self, frame: Frame) -> None:
        if self.version == "1.0":
            raise StompSessionError("NACK is not part of STOMP 1.0")
        self._on_ack(frame, nack=True)

    def _check_issued(self, mid: str, command: str) -> None:
        """ERROR for an id this session never sent (settled ones are fine)."""
        prefix = self._mid_prefix.decode()
        number = mid[len(prefix) :] if mid.startswith(prefix) else ""
        issued = number.isascii() and number.isdigit() and not number.startswith("0")
        if not issued or int(number) >= self._next_mid:
            raise StompSessionError(f"{command} for unknown message {mid!r}")

    def _on_begin(self, frame: Frame) -> None:
        tx = _required(frame, "transaction")
        if tx in self._transactions:
            raise StompSessionError(f"transaction {tx!r} is already open")
        if len(self._transactions) >= self.limits.max_transactions:
            raise StompSessionError(f"more than {self.limits.max_transactions} open transactions")
        self._transactions[tx] = []

    def _on_commit(self, frame: Frame) -> None:
        # Buffered frames were validated on arrival, so COMMIT applies all of them
        # unless applying one closes the session (e.g. max_unacked).
        self._committing = True  # the COMMIT's RECEIPT waits for its SENDs
        try:
            for buffered, size in self._pop_transaction(frame):
                if self.closed:
                    return
                self._frame_size = size
                self._HANDLERS[buffered.command](self, buffered)
        finally:
            self._committing = False

    def _on_abort(self, frame: Frame) -> None:
        self._pop_transaction(frame)

    def _pop_transaction(self, frame: Frame) -> list[tuple[Frame, int]]:
        tx = _required(frame, "transaction")
        frames = self._transactions.pop(tx, None)
        if frames is None:
            raise StompSessionError(f"{frame.command} of unknown transaction {tx!r}")
        self._transaction_bytes -= sum(size for _frame, size in frames)
        return frames

    def _buffer_in_transaction(self, tx: str, frame: Frame) -> None:
        frames = self._transactions.get(tx)
        if frames is None:
            raise StompSessionError(f"{frame.command} in unknown transaction {tx!r}")
        if len(frames) >= self.limits.max_transaction_frames:
            raise StompSessionError(
                f"more than {self.limits.max_transaction_frames} frames in transaction {tx!r}"
            )
        size = self._frame_size
        if self._transaction_bytes + size > self.limits.max_transaction_bytes:
            raise StompSessionError(
                f"open transactions would hold more than {self.limits.max_transaction_bytes} bytes"
            )
        # Validate now, so a bad frame fails on arrival and COMMIT is all-or-nothing.
        if frame.command == "SEND":
            self._send_target(frame)
            for name in frame.headers:
                verdict = header_name_verdict(name)
                if verdict is not None and verdict is not RESERVED:
                    raise StompSessionError(verdict)
        else:
            if frame.command == "NACK" and self.version == "1.0":
                raise StompSessionError("NACK is not part of STOMP 1.0")
            mid = _required(frame, "id" if self.version == "1.2" else "message-id")
            if mid not in self._unacked:
                self._check_issued(mid, frame.command)
        frames.append((frame, size))
        self._transaction_bytes += size

    def _on_disconnect(self, frame: Frame) -> None:
        # After every earlier RECEIPT; nothing after DISCONNECT is read.
        self._disconnecting = True
        self._queue_receipt(_ReceiptSlot(frame.headers.get("receipt"), True, disconnect=True))

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

    # ---------------------------------------------------------------- output

    def _write(self, data: bytes, binary: bool) -> None:
        self._wrote_since_tick = True
        self.out.send(data, binary)

    def _queue_receipt(self, slot: _ReceiptSlot) -> None:
        self._wait_receipt(slot)
        self._flush_receipts()

    def _wait_receipt(self, slot: _ReceiptSlot) -> None:
        if self._receipts is None:
            self._receipts = deque()
        self._receipts.append(slot)

    def _confirmed(self, slot: _ReceiptSlot, error: str | None) -> None:
        """The bus has (or could not take) a published message."""
        if self.closed:
            return
        if error is not None:
            self.fail(f"message not accepted: {error}", receipt=slot.receipt, code=CLOSE_INTERNAL)
            return
        slot.ready = True
        self._flush_receipts()

    def _flush_receipts(self) -> None:
        receipts = self._receipts
        if receipts is None:
            return
        while receipts and receipts[0].ready and not self.closed:
            slot = receipts.popleft()
            if slot.receipt is not None:
                self._write(serialize(Frame("RECEIPT", {"receipt-id": slot.receipt}), self.version), False)
            if slot.disconnect:
                self.close(CLOSE_NORMAL, "disconnect")
        if not receipts and self._receipts is receipts:
            self._receipts = None

    def deliver(self, sub: Subscription, message: Message) -> None:
        """Write ``message`` as a MESSAGE frame for ``sub``; the broker's hot path."""
        if self.closed:
            return
        if sub.replay is not None:  # stored messages go first
            sub.replay.append(message)
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
            if len(self._unacked) >= self.limits.max_unacked:
                self.fail(f"more than {self.limits.max_unacked} unacknowledged messages")
                return
            key = mid.decode()
            sub.pending[key] = None
            self._unacked[key] = sub
            if self.version == "1.2":
                data = b"".join((sub.head, mid, b"\nack:", mid, b"\n", tail))
            else:
                data = b"".join((sub.head, mid, b"\n", tail))
        self._wrote_since_tick = True
        self.out.send(data, binary)

    def fail(
        self,
        message: str,
        *,
        code: int = CLOSE_PROTOCOL_ERROR,
        detail: str = "",
        headers: dict[str, str] | None = None,
        receipt: str | None = None,
    ) -> None:
        """Send ERROR (flushed before the close) and close the session.

        Before CONNECTED the client cannot know the version, so the ERROR is
        written unescaped (as CONNECT/CONNECTED are).
        """
        if self.closed:
            return
        error = {"message": message, "content-type": "text/plain"}
        if receipt is not None:
            error["receipt-id"] = receipt
        if headers:
            error.update(headers)
        body = (detail or message).encode("utf-8")
        if code == CLOSE_INTERNAL:
            log.error("session %s closed: %s", self.id, message)
        else:
            _closes.log(
                "session %s (%s %s) closed: %s",
                self.id,
                self.remote,
                self.user or "-",
                message,
                key=self.remote,
            )
        self.broker.stats.errors += 1
        self._write(serialize(Frame("ERROR", error, body), self.version if self.connected else None), False)
        self.close(code, message)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """End the session: drop its state from the broker, then close the transport."""
        if self.closed:
            return
        self.closed = True
        self._cleanup()
        self.out.close(code, reason)

    def drop(self, reason: str) -> None:
        """End a session whose peer does not read: closed, and its unsent output dropped now.

        A plain close waits for the unsent bytes to be flushed, which for such a
        peer is never: its buffers (and file descriptor) would stay.
        """
        self.close(CLOSE_POLICY, reason)
        self.out.abort()

    def connection_lost(self) -> None:
        """The transport is gone (peer closed, network error)."""
        if not self.closed:
            self.closed = True
            self._cleanup()

    def _cleanup(self) -> None:
        self._cancel_timers()
        self._transactions.clear()  # open transactions abort
        self._transaction_bytes = 0
        for sub in self.subscriptions.values():
            self.broker.unsubscribe(sub)
        self.subscriptions.clear()
        self._unacked.clear()
        self.broker.detach(self)

    def _cancel_timers(self) -> None:
        for timer in (self._connect_timer, self._send_timer, self._recv_timer, self._rate_timer):
            if timer is not None:
                timer.cancel()
        self._connect_timer = self._send_timer = self._recv_timer = self._rate_timer = None


class _ReceiptSlot:
    __slots__ = ("receipt", "ready", "disconnect")

    def __init__(self, receipt: str | None, ready: bool, disconnect: bool = False) -> None:
        self.receipt = receipt
        self.ready = ready
        self.disconnect = disconnect


def _required(frame: Frame, name: str) -> str:
    value = frame.headers.get(name)
    if value is None:
        raise StompSessionError(f"{frame.command} frame has no {name} header")
    return value


def _parse_heartbeat(value: str) -> tuple[int, int]:
    parts = value.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        cx, cy = int(parts[0]), int(parts[1])
        if cx < 0 or cy < 0:
            raise ValueError
    except ValueError:
        raise StompSessionError(
            f"invalid heart-beat header {value!r}: expected two non-negative integers"
        ) from None
    return cx, cy
