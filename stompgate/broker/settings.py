"""Every setting of the broker core with its default: the one place both are written.

The classes mirror the config file's sections (``destinations``, ``stomp``,
``stomp.heartbeat``, ``stomp.rate_limit``): ``config.py`` subclasses each to add
validation and nothing else, so a loaded config *is* the broker's settings and
no layer copies them field by field. Why each default is what it is, is said
next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..stomp.parser import DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HEADER_LENGTH, DEFAULT_MAX_HEADERS

# What a message costs the node besides its frame's bytes while the bus holds it
# (its outbox entry, the bus's JSON head): counted in flow control and the outbox
# limits, so that a flood of tiny frames is bounded in number, too.
MESSAGE_OVERHEAD = 256


@dataclass
class DestinationSettings:
    """Spring's ``enableSimpleBroker(prefixes)`` and ``setUserDestinationPrefix``."""

    broker_prefixes: list[str] = field(default_factory=lambda: ["/topic", "/queue"])
    user_prefix: str = "/user/"
    # Spring's setApplicationDestinationPrefixes: SENDs here go to the application's
    # handlers (Python ones in an extension), never to the broker.
    application_prefixes: list[str] = field(default_factory=list)
    # '/' as Spring's AntPathMatcher by default; '.' for RabbitMQ-style destinations.
    path_separator: str = "/"


@dataclass
class HeartbeatSettings:
    """What the server offers in CONNECTED's heart-beat header (0: none)."""

    send_ms: int = 10_000
    receive_ms: int = 10_000
    # A peer is dead after the negotiated receive interval x read_margin without a byte from it.
    read_margin: float = 1.5


@dataclass
class RateLimit:
    """Per session: frames and bytes per second a client may send (0: no limit)."""

    frames_per_s: float = 1000.0
    bytes_per_s: float = 1024 * 1024.0
    # The bucket holds this many seconds of the rate: bursts up to that pass at once.
    burst_s: float = 2.0
    # throttle: stop reading the session until it is back under the rate; close: ERROR and close it.
    policy: Literal["throttle", "close"] = "throttle"


@dataclass
class SessionLimits:
    """What one session may hold and do (the ``stomp`` section)."""

    rate_limit: RateLimit = field(default_factory=RateLimit)
    connect_timeout_s: float = 10.0
    # Parser limits (stomp/parser.py): a frame, its header count, one header line.
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_headers: int = DEFAULT_MAX_HEADERS
    max_header_length: int = DEFAULT_MAX_HEADER_LENGTH
    # Bytes of a destination or subscription pattern (RabbitMQ's routing keys: 255).
    max_destination_length: int = 1024
    max_subscriptions: int = 1000
    # Distinct wildcard patterns one user may hold on a node: each is work on every publish.
    max_user_patterns: int = 100
    max_unacked: int = 10_000
    max_transactions: int = 16
    max_transaction_frames: int = 1000
    # Bytes of frames held by the open transactions of a session, all together.
    max_transaction_bytes: int = 4 * 1024 * 1024
    # Bytes of this session's messages the bus has not taken yet; past it the session
    # is not read until they are taken (flow control, as a TCP broker does).
    max_inflight_bytes: int = 1024 * 1024
    # Frames handled per loop turn before other connections get a turn.
    frames_per_turn: int = 64
    # Calls to application destinations one session may have waiting or running
    # (each a task until its handler or the backend is done); past it, not read.
    max_application_calls: int = 16
    # The header the broker sets to the sender's user name on every message a client
    # SENT (a client cannot set or forge it); what the server publishes has server-sent.
    sender_header: str = "sender"


@dataclass
class BrokerSettings:
    destinations: DestinationSettings = field(default_factory=DestinationSettings)
    heartbeat: HeartbeatSettings = field(default_factory=HeartbeatSettings)
    limits: SessionLimits = field(default_factory=SessionLimits)
