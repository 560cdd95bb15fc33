"""Every setting of the broker core, with its default: the one place they are written.

``config.py`` takes its defaults from here and adds validation and the YAML
layout (``stomp.rate_limit.*``, ``stomp.heartbeat.*``); ``app.make_broker``
copies a loaded config into these by field name. Why each default is what it
is, is said next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..stomp.parser import DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HEADER_LENGTH, DEFAULT_MAX_HEADERS

# What a message costs the node besides its frame's bytes while the bus holds it
# (its outbox entry, the bus's JSON head): counted in flow control and the outbox
# limits, so that a flood of tiny frames is bounded in number, too.
MESSAGE_OVERHEAD = 256


@dataclass(slots=True)
class SessionLimits:
    """What one session may hold and do (``stomp.*`` in the config)."""

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
    # Rate limits (stomp.rate_limit): frames and bytes per second (0: none), a bucket
    # of burst_s seconds of the rate (bursts up to that pass at once); throttle stops
    # reading the session until it is back under the rate, close ends it.
    frames_per_s: float = 1000.0
    bytes_per_s: float = 1024 * 1024.0
    burst_s: float = 2.0
    rate_policy: str = "throttle"  # or "close"
    # Frames handled per loop turn before other connections get a turn (not configurable).
    frames_per_turn: int = 64


# The limits that are keys of the config's ``stomp.rate_limit`` section, by their name there.
RATE_LIMIT_KEYS = {"frames_per_s": "frames_per_s", "bytes_per_s": "bytes_per_s",
                   "burst_s": "burst_s", "policy": "rate_policy"}  # fmt: skip


@dataclass(slots=True)
class BrokerSettings:
    """The broker's rules (``destinations.*``), heart-beats and timeouts (``stomp.*``)."""

    broker_prefixes: list[str] = field(default_factory=lambda: ["/topic", "/queue"])
    user_prefix: str = "/user/"
    path_separator: str = "/"
    # What the server offers in CONNECTED's heart-beat header (0: none).
    heartbeat_send_ms: int = 10_000
    heartbeat_receive_ms: int = 10_000
    # A peer is dead after the negotiated receive interval x this margin without a byte.
    heartbeat_read_margin: float = 1.5
    connect_timeout_s: float = 10.0
    limits: SessionLimits = field(default_factory=SessionLimits)
