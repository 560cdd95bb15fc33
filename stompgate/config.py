"""Configuration: YAML file + ``STOMPGATE_...`` environment overrides, validated at load.

The schema is the dataclasses below. Every problem is reported with the dotted
key it concerns (``auth.jwt.secret: required when auth.mode is jwt``), all of them
at once, and unknown keys are errors (with a suggestion) rather than ignored.

Environment overrides use ``__`` between levels: ``STOMPGATE_SERVER__PORT=9000``,
``STOMPGATE_AUTH__JWT__SECRET=...``. Values are read as YAML scalars. What they
changed is reported as :class:`ConfigNote`s (key names, never values: they hold
secrets), so that a stray variable cannot switch a node's login mode unnoticed.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .broker.authz import SEND, SUBSCRIBE, Authorizer, Rule
from .broker.names import canonical, header_problem, is_reserved, reserved_headers, user_name_problem
from .broker.settings import DestinationSettings, HeartbeatSettings, RateLimit, SessionLimits
from .bus.address import Address
from .bus.base import OfflineLimits
from .origins import origin_problem
from .sockjs.settings import SockJSSettings
from .tls import VERSIONS, TlsError, build_context, client_auth_of, expiry_warning

ENV_PREFIX = "STOMPGATE_"


class ConfigError(Exception):
    """One or more configuration problems, each naming its key."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        head = f"invalid configuration{f' in {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


# --------------------------------------------------------------------- schema


@dataclass
class TcpConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 61613


@dataclass
class TlsConfig:
    """TLS on the node's own listeners (HTTP and STOMP over TCP), on when ``certificate`` is set.

    The files are loaded into an ``ssl.SSLContext`` here already, so check-config
    names a bad certificate or key (stompgate/tls.py, docs/tls.md)."""

    certificate: str | None = None  # PEM: the server certificate, then its intermediates
    key: str | None = None  # PEM private key, without a passphrase
    client_ca: str | None = None  # PEM CA(s) that client certificates must chain to
    client_auth: Literal["none", "optional", "required"] | None = None  # default: required with client_ca
    min_version: str = "1.2"
    handshake_timeout_s: float = 10.0

    def validate(self, path: str, problems: list[str]) -> None:
        before = len(problems)
        if self.min_version not in VERSIONS:
            problems.append(f"{path}.min_version: must be 1.2 or 1.3, got {self.min_version!r}")
        _positive(self.handshake_timeout_s, f"{path}.handshake_timeout_s", problems)
        mode = client_auth_of(self)
        if mode != "none" and self.client_ca is None:
            problems.append(
                f"{path}.client_auth: {mode} needs {path}.client_ca (the CA client certificates chain to)"
            )
        if mode == "none" and self.client_ca is not None:
            problems.append(f"{path}.client_ca: set, but {path}.client_auth is none: remove one of them")
        if self.certificate is None:
            for name in ("key", "client_ca"):
                if getattr(self, name) is not None:
                    problems.append(f"{path}.{name}: needs {path}.certificate (TLS is on when it is set)")
            return
        if len(problems) == before:
            try:
                build_context(self, path)
            except TlsError as exc:
                problems.extend(exc.problems)


@dataclass
class SockJSConfig(SockJSSettings):
    """A STOMP-over-SockJS endpoint, like Spring's ``addEndpoint(path).withSockJS()``;
    its settings and their defaults are the SockJS layer's own (sockjs/endpoint.py)."""

    path: str = ""

    def validate(self, path: str, problems: list[str]) -> None:
        if not self.path.startswith("/") or self.path == "/" or self.path.endswith("/"):
            problems.append(
                f"{path}.path: required, starts with '/' and does not end with one, got {self.path!r}"
            )
        _positive(self.heartbeat_s, f"{path}.heartbeat_s", problems)
        _positive(self.disconnect_delay_s, f"{path}.disconnect_delay_s", problems)
        _positive(self.streaming_limit, f"{path}.streaming_limit", problems)
        _origins(self.allowed_origins or [], f"{path}.allowed_origins", problems)


@dataclass
class StaticConfig:
    """Files served as they are, e.g. a page and its npm libraries."""

    path: str = ""
    dir: str = ""  # relative to the config file's directory

    def validate(self, path: str, problems: list[str]) -> None:
        if not self.path.startswith("/"):
            problems.append(f"{path}.path: required, must start with '/', got {self.path!r}")
        if not self.dir:
            problems.append(f"{path}.dir: required")
        elif not Path(self.dir).is_dir():
            problems.append(f"{path}.dir: no such directory: {self.dir}")


@dataclass
class ConnectionsConfig:
    """Caps and timeouts of client connections, per node process (docs/configuration.md says why)."""

    # Open connections in total over every listener; None: the open-file limit less a reserve.
    max: int | None = None
    # Open connections from one client address (IPv6: one /64).
    per_address: int = 256
    # Addresses and networks the per-address cap does not apply to: a reverse proxy
    # on the same host makes every connection come from loopback.
    exempt: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1"])
    # A request head (request line and headers) must be complete this long after the
    # connection opened or its previous response ended; also how long an idle
    # keep-alive connection stays open.
    header_timeout_s: float = 10.0
    # A request body the node reads (publish API, SockJS sends) must arrive within this.
    body_timeout_s: float = 15.0

    def validate(self, path: str, problems: list[str]) -> None:
        if self.max is not None:
            _positive(self.max, f"{path}.max", problems)
        _positive(self.per_address, f"{path}.per_address", problems)
        _networks(self.exempt, f"{path}.exempt", problems)
        _positive(self.header_timeout_s, f"{path}.header_timeout_s", problems)
        _positive(self.body_timeout_s, f"{path}.body_timeout_s", problems)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    websocket_paths: list[str] = field(default_factory=lambda: ["/ws"])
    # Pages that may open a WebSocket or SockJS session (stompgate/origins.py); empty:
    # the same origin only, as Spring's default. A SockJS endpoint may set its own.
    allowed_origins: list[str] = field(default_factory=list)
    sockjs: list[SockJSConfig] = field(default_factory=list)
    static: list[StaticConfig] = field(default_factory=list)
    # Python files whose setup(node) adds HTTP routes (an application's endpoints).
    extensions: list[str] = field(default_factory=list)
    # A session whose unsent output passes this many bytes is a slow consumer: closed
    # (Spring's send buffer limit is 512 KiB too). One frame may go past it.
    max_outbound_buffer: int = 512 * 1024
    # Bytes all sessions of this process may hold in buffers (unsent output, unread
    # input, open transactions, publishes the bus has not taken); past it the
    # heaviest sessions are closed first. 0: no budget.
    memory_budget: int = 1024 * 1024 * 1024
    tcp: TcpConfig = field(default_factory=TcpConfig)
    # Processes serving this config's ports (SO_REUSEPORT), each a node of the cluster.
    workers: int = 1
    connections: ConnectionsConfig = field(default_factory=ConnectionsConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    # Reverse proxies (addresses, networks) whose client_address_header names the client
    # (stompgate/forwarded.py); from any other peer the header is ignored.
    trusted_proxies: list[str] = field(default_factory=list)
    client_address_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    # On SIGTERM the sessions are closed in batches spread over this many seconds
    # (stompgate/drain.py), so that their clients reconnect elsewhere without a stampede.
    drain_s: float = 10.0

    def validate(self, path: str, problems: list[str]) -> None:
        _port(self.port, f"{path}.port", problems)
        _networks(self.trusted_proxies, f"{path}.trusted_proxies", problems)
        if self.drain_s < 0:
            problems.append(f"{path}.drain_s: must be >= 0 (0: every session at once), got {self.drain_s:g}")
        _positive(self.workers, f"{path}.workers", problems)
        _port(self.tcp.port, f"{path}.tcp.port", problems)
        _origins(self.allowed_origins, f"{path}.allowed_origins", problems)
        for i, ws_path in enumerate(self.websocket_paths):
            if not ws_path.startswith("/"):
                problems.append(f"{path}.websocket_paths[{i}]: must start with '/', got {ws_path!r}")
        if len(set(self.websocket_paths)) != len(self.websocket_paths):
            problems.append(f"{path}.websocket_paths: paths must be unique")
        for i, sockjs in enumerate(self.sockjs):
            sockjs.validate(f"{path}.sockjs[{i}]", problems)
        taken = list(self.websocket_paths) + [s.path for s in self.sockjs]
        if len(set(taken)) != len(taken):
            problems.append(
                f"{path}.sockjs: a path is used twice (websocket_paths and sockjs paths must differ)"
            )
        for i, static in enumerate(self.static):
            static.validate(f"{path}.static[{i}]", problems)
        for i, ext in enumerate(self.extensions):
            if not Path(ext).is_file():
                problems.append(f"{path}.extensions[{i}]: no such file: {ext}")
        _positive(self.max_outbound_buffer, f"{path}.max_outbound_buffer", problems)
        if self.memory_budget < 0:
            problems.append(f"{path}.memory_budget: must be >= 0 (0: none), got {self.memory_budget}")


# The stomp and destinations sections are the broker's own settings classes
# (broker/settings.py, where the defaults and their reasons are); here they only
# gain validation.


@dataclass
class HeartbeatConfig(HeartbeatSettings):
    def validate(self, path: str, problems: list[str]) -> None:
        for name in ("send_ms", "receive_ms"):
            if getattr(self, name) < 0:
                problems.append(f"{path}.{name}: must be >= 0 (0 disables), got {getattr(self, name)}")
        if self.read_margin < 1.0:
            problems.append(f"{path}.read_margin: must be >= 1.0, got {self.read_margin}")


@dataclass
class RateLimitConfig(RateLimit):
    def validate(self, path: str, problems: list[str]) -> None:
        for name in ("frames_per_s", "bytes_per_s"):
            if getattr(self, name) < 0:
                problems.append(f"{path}.{name}: must be >= 0 (0: no limit), got {getattr(self, name)}")
        _positive(self.burst_s, f"{path}.burst_s", problems)


@dataclass
class StompConfig(SessionLimits):
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)

    def validate(self, path: str, problems: list[str]) -> None:
        for f in dataclasses.fields(self):
            if f.name not in ("heartbeat", "rate_limit", "sender_header"):
                _positive(getattr(self, f.name), f"{path}.{f.name}", problems)
        name = self.sender_header
        problem = header_problem(name, "")
        if problem is None and name != canonical(name):
            problem = f"{name!r}: lower case, without surrounding blanks"
        if problem is None and is_reserved(name, reserved_headers("")):
            problem = f"{name!r} is a header the broker sets for another purpose"
        if problem is not None:
            problems.append(f"{path}.sender_header: {problem}")


@dataclass
class DestinationsConfig(DestinationSettings):
    def validate(self, path: str, problems: list[str]) -> None:
        if not self.broker_prefixes:
            problems.append(f"{path}.broker_prefixes: at least one prefix is required")
        for i, prefix in enumerate(self.broker_prefixes):
            if not prefix.startswith("/"):
                problems.append(f"{path}.broker_prefixes[{i}]: must start with '/', got {prefix!r}")
            if prefix.startswith(self.user_prefix.rstrip("/")):
                problems.append(f"{path}.broker_prefixes[{i}]: {prefix!r} overlaps user_prefix")
        if not self.user_prefix.startswith("/") or self.user_prefix == "/":
            problems.append(
                f"{path}.user_prefix: must start with '/' and not be '/', got {self.user_prefix!r}"
            )
        for i, prefix in enumerate(self.application_prefixes):
            key = f"{path}.application_prefixes[{i}]"
            if not prefix.startswith("/") or prefix == "/":
                problems.append(f"{key}: must start with '/' and not be '/', got {prefix!r}")
            whole = prefix if prefix.endswith("/") else prefix + "/"  # as DestinationRules reads it
            if any(whole.startswith(p) or p.startswith(whole) for p in self.broker_prefixes):
                problems.append(f"{key}: {prefix!r} overlaps a broker prefix")
            elif whole.startswith(self.user_prefix) or self.user_prefix.startswith(whole):
                problems.append(f"{key}: {prefix!r} overlaps user_prefix")
        if self.path_separator not in ("/", "."):
            problems.append(f"{path}.path_separator: must be '/' or '.', got {self.path_separator!r}")


@dataclass
class JwtConfig:
    algorithm: Literal["HS256", "RS256"] = "HS256"
    secret: str | None = None
    public_key: str | None = None
    public_key_file: str | None = None
    user_claim: str = "sub"
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 0.0
    require_exp: bool = True
    # A claim holding the user's roles (a list, or names separated by spaces), for authorization rules.
    roles_claim: str | None = None

    def key(self) -> str:
        if self.algorithm == "HS256":
            assert self.secret is not None
            return self.secret
        if self.public_key:
            return self.public_key
        assert self.public_key_file is not None
        return Path(self.public_key_file).read_text()


@dataclass
class AuthConfig:
    mode: Literal["dev", "static", "jwt"] | None = None
    users: dict[str, str] = field(default_factory=dict)
    jwt: JwtConfig = field(default_factory=JwtConfig)
    # A cookie of the handshake (WebSocket or SockJS) that carries the credential
    # when CONNECT does not: the user name in dev mode, the token in jwt mode.
    cookie: str | None = None
    # Dev mode lets anyone log in as anyone: only on loopback addresses unless this says so.
    dev_allow_remote: bool = False

    def validate(self, path: str, problems: list[str]) -> None:
        for name in self.users:
            problem = user_name_problem(name)
            if problem is not None:
                problems.append(f"{path}.users: {problem}")
        if self.cookie is not None and self.mode == "static":
            problems.append(f"{path}.cookie: only for mode dev or jwt (static checks login and passcode)")
        if self.cookie is not None and (not self.cookie or any(c in self.cookie for c in "=;, \t")):
            problems.append(f"{path}.cookie: not a valid cookie name: {self.cookie!r}")
        if self.mode == "static" and not self.users:
            problems.append(f"{path}.users: required when {path}.mode is static (user name: password)")
        if self.mode == "jwt":
            jwt = self.jwt
            if jwt.algorithm == "HS256" and not jwt.secret:
                problems.append(f"{path}.jwt.secret: required when {path}.mode is jwt and algorithm is HS256")
            if jwt.algorithm == "RS256":
                if not (jwt.public_key or jwt.public_key_file):
                    problems.append(
                        f"{path}.jwt.public_key: required (or public_key_file) when algorithm is RS256"
                    )
                elif jwt.public_key_file and not Path(jwt.public_key_file).is_file():
                    problems.append(f"{path}.jwt.public_key_file: no such file: {jwt.public_key_file}")
            if jwt.leeway_s < 0:
                problems.append(f"{path}.jwt.leeway_s: must be >= 0")


@dataclass
class ApiConfig:
    enabled: bool = True
    key: str | None = None
    prefix: str = "/api"

    def validate(self, path: str, problems: list[str]) -> None:
        if self.enabled and not self.key:
            problems.append(
                f"{path}.key: required when {path}.enabled is true (or set {path}.enabled: false)"
            )
        if not self.prefix.startswith("/"):
            problems.append(f"{path}.prefix: must start with '/', got {self.prefix!r}")


@dataclass
class AdminConfig:
    """The admin page and API (stompgate/admin/, docs/admin.md): off unless enabled, and then
    only behind a credential: ``password`` (HTTP Basic) and/or the HTTP API's key."""

    enabled: bool = False
    path: str = "/admin"
    user: str = "admin"  # the HTTP Basic user name that goes with password
    password: str | None = None
    api_key: bool = False  # accept api.key (Authorization: Bearer / X-API-Key) as well
    sample_interval_s: float = 5.0  # how often the node samples its counters for the page's charts
    history: int = 120  # samples kept (120 x 5 s: the last 10 minutes)
    timeout_s: float = 2.0  # how long a cluster-wide question waits for the other nodes

    def validate(self, path: str, problems: list[str]) -> None:
        if not self.path.startswith("/") or self.path == "/" or self.path.endswith("/"):
            problems.append(f"{path}.path: must start with '/' and not end with it, got {self.path!r}")
        if self.password is not None and len(self.password) < 12:
            problems.append(f"{path}.password: at least 12 characters")
        if not self.user or ":" in self.user:
            problems.append(f"{path}.user: must be non-empty, without ':'")
        if self.enabled and self.password is None and not self.api_key:
            problems.append(
                f"{path}.password: required when {path}.enabled is true (or set {path}.api_key: true "
                "to use api.key): the admin page is never open without a credential"
            )
        _positive(self.sample_interval_s, f"{path}.sample_interval_s", problems)
        _positive(self.timeout_s, f"{path}.timeout_s", problems)
        if not 2 <= self.history <= 10_000:
            problems.append(f"{path}.history: must be 2..10000, got {self.history}")


@dataclass
class RedisConfig:
    url: str = "redis://127.0.0.1:6379/0"
    # Seed nodes ("host:port") of a Redis Cluster; when set, url is not used.
    cluster_nodes: list[str] = field(default_factory=list)
    # Namespace of every key and channel, so several deployments can share a Redis.
    prefix: str = "stompgate"


@dataclass
class BusConfig:
    type: Literal["memory", "redis"] = "memory"
    # broadcast: every node receives every user message (one pattern subscription);
    # directed: only nodes holding a subscriber of that user's destination do.
    routing: Literal["broadcast", "directed"] = "directed"
    redis: RedisConfig = field(default_factory=RedisConfig)
    node_heartbeat_s: float = 2.0
    # A node silent this long is dead: gone from the registry.
    node_timeout_s: float = 6.0
    # Messages, and bytes, the outbox holds while Redis is slow or unreachable. Past
    # 80 % of either, sessions that publish are not read until it is back under 50 %;
    # at the limit, what still comes (HTTP API) is refused.
    outbox_limit: int = 10_000
    outbox_max_bytes: int = 64 * 1024 * 1024
    # The outbox is "not draining" (GET /ready says 503) when its oldest message has
    # waited this long.
    outbox_stall_s: float = 5.0

    def validate(self, path: str, problems: list[str]) -> None:
        _positive(self.node_heartbeat_s, f"{path}.node_heartbeat_s", problems)
        if self.node_timeout_s < 2 * self.node_heartbeat_s:
            problems.append(f"{path}.node_timeout_s: must be at least twice node_heartbeat_s")
        _positive(self.outbox_limit, f"{path}.outbox_limit", problems)
        _positive(self.outbox_max_bytes, f"{path}.outbox_max_bytes", problems)
        _positive(self.outbox_stall_s, f"{path}.outbox_stall_s", problems)
        if self.type == "redis" and not self.redis.cluster_nodes:
            try:
                Address.from_url(self.redis.url)
            except ValueError as exc:
                problems.append(f"{path}.redis.url: {exc}")
        for i, seed in enumerate(self.redis.cluster_nodes):
            host, _, port = seed.rpartition(":")
            if not host or not port.isdigit():
                problems.append(f"{path}.redis.cluster_nodes[{i}]: expected host:port, got {seed!r}")
        if not self.redis.prefix or any(c in self.redis.prefix for c in "{} "):
            problems.append(f"{path}.redis.prefix: must be non-empty, without braces or spaces")


@dataclass
class OfflineConfig:
    """The offline store: user messages for a (user, destination) with no subscriber anywhere.

    Sizes are a message's bytes on the bus: its body, plus its destination, user
    and headers as JSON. What happens at each limit: docs/cluster.md.
    """

    # Per (user, destination): the oldest are dropped past it (counted, and logged per user).
    max_messages: int = 1000
    # Kept this long after the last message stored for that (user, destination).
    ttl_s: float = 7 * 24 * 3600
    # Per user, all destinations together: past any of them the new message is refused.
    max_user_messages: int = 10_000
    max_user_bytes: int = 10 * 1024 * 1024
    max_user_destinations: int = 100
    # One message: a larger one for a user with no subscriber is refused (delivered live, it may be larger).
    max_message_bytes: int = 64 * 1024
    # The whole store of a node on the memory bus (a Redis bus has Redis's maxmemory): refused past it.
    max_total_bytes: int = 256 * 1024 * 1024

    def validate(self, path: str, problems: list[str]) -> None:
        for f in dataclasses.fields(self):
            _positive(getattr(self, f.name), f"{path}.{f.name}", problems)
        if self.max_message_bytes > self.max_user_bytes:
            problems.append(
                f"{path}.max_message_bytes: must not be above {path}.max_user_bytes ({self.max_user_bytes}): "
                "such a message could never be stored"
            )
        if 0 < self.ttl_s < 0.001:
            problems.append(f"{path}.ttl_s: at least 0.001 (Redis expires in milliseconds)")

    def limits(self) -> OfflineLimits:
        return OfflineLimits(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclass
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    # text: one readable line per record; json: one JSON object per line (docs/logging.md).
    format: Literal["text", "json"] = "text"
    # One line per HTTP request at logger stompgate.access, level info.
    access_log: bool = True


@dataclass
class MetricsConfig:
    """``GET /metrics`` for Prometheus (stompgate/metrics.py, docs/metrics.md)."""

    enabled: bool = True
    path: str = "/metrics"
    # When set, a scrape must send ``Authorization: Bearer <token>`` (the figures are counts only).
    token: str | None = None
    # One dispatched message in this many is timed for stompgate_delivery_seconds (0: none).
    latency_sample: int = 100
    # A scrape within this many seconds of the last gets the same page: a scrape walks
    # every session, so a client asking in a loop must not cost more than one a second.
    cache_s: float = 1.0

    def validate(self, path: str, problems: list[str]) -> None:
        if not self.path.startswith("/"):
            problems.append(f"{path}.path: must start with '/', got {self.path!r}")
        if self.token is not None and not self.token.strip():
            problems.append(f"{path}.token: empty; leave it out for an open endpoint")
        if self.latency_sample < 0:
            problems.append(f"{path}.latency_sample: must be >= 0 (0: no sampling)")
        if self.cache_s < 0:
            problems.append(f"{path}.cache_s: must be >= 0 (0: every scrape builds its page)")


@dataclass
class ProxyConfig:
    """A backend in any language answers application destinations over HTTP (stompgate/proxy.py)."""

    # POSTed to for application SENDs and SUBSCRIBEs no Python handler takes.
    application_url: str | None = None
    # Who a CONNECT is (instead of auth.mode), whether a SUBSCRIBE or a SEND may go on.
    connect_url: str | None = None
    subscribe_url: str | None = None
    publish_url: str | None = None
    secret: str | None = None  # HMAC-SHA256 key the requests are signed with
    timeout_s: float = 5.0
    concurrency: int = 64  # calls in flight at once, Python handlers included
    # Of those, one user's: a user with many sessions cannot take every slot.
    max_calls_per_user: int = 8
    max_response_bytes: int = 1024 * 1024

    URLS = ("application_url", "connect_url", "subscribe_url", "publish_url")

    def validate(self, path: str, problems: list[str]) -> None:
        given = [name for name in self.URLS if getattr(self, name) is not None]
        for name in given:
            url = getattr(self, name)
            if not url.startswith(("http://", "https://")):
                problems.append(f"{path}.{name}: an http:// or https:// URL, got {url!r}")
        if given and (self.secret is None or len(self.secret) < 16):
            problems.append(f"{path}.secret: required with {path}.{given[0]}, at least 16 characters")
        for name in ("timeout_s", "concurrency", "max_calls_per_user", "max_response_bytes"):
            _positive(getattr(self, name), f"{path}.{name}", problems)


# Who each rule lets through when it names no users or roles.
_WHO = Literal["anyone", "authenticated", "nobody"]


@dataclass
class AccessRuleConfig:
    """One ``authorization.rules`` entry: a frame and a destination pattern, and who may."""

    send: str | None = None  # SEND to destinations matching this
    subscribe: str | None = None  # SUBSCRIBE to them
    destination: str | None = None  # both
    allow: _WHO | None = None
    users: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)

    def validate(self, path: str, problems: list[str]) -> None:
        given = [k for k in ("send", "subscribe", "destination") if getattr(self, k) is not None]
        if len(given) != 1:
            problems.append(f"{path}: needs exactly one of send, subscribe, destination (a pattern)")
        for key in given:
            pattern = getattr(self, key)
            if not pattern.startswith("/"):
                problems.append(f"{path}.{key}: a destination pattern starts with '/', got {pattern!r}")
        named = bool(self.users or self.roles)
        if (self.allow is None) == (not named):
            problems.append(
                f"{path}: needs either allow (anyone, authenticated or nobody) or users / roles, not both"
            )

    def rule(self, name: str) -> Rule:
        if self.send is not None:
            frames, pattern = {SEND}, self.send
        elif self.subscribe is not None:
            frames, pattern = {SUBSCRIBE}, self.subscribe
        else:
            frames, pattern = {SEND, SUBSCRIBE}, self.destination or ""
        users, roles = frozenset(self.users), frozenset(self.roles)
        return Rule(frozenset(frames), pattern, self.allow, users, roles, name)


@dataclass
class AuthorizationConfig:
    """Who may SEND and SUBSCRIBE where (broker/authz.py; docs/security.md#authorization)."""

    # What a frame no rule matches gets. Unset: deny, unless auth.mode is dev.
    default: Literal["allow", "deny"] | None = None
    rules: list[AccessRuleConfig] = field(default_factory=list)
    # role -> user names, in every auth mode (a JWT's roles_claim adds to these).
    roles: dict[str, list[str]] = field(default_factory=dict)

    def validate(self, path: str, problems: list[str]) -> None:
        for i, rule in enumerate(self.rules):
            rule.validate(f"{path}.rules[{i}]", problems)
        for role, users in self.roles.items():
            for name in users:
                problem = user_name_problem(name)
                if problem is not None:
                    problems.append(f"{path}.roles.{role}: {problem}")

    def authorizer(self, auth_mode: str | None, separator: str) -> Authorizer:
        default_allow = self.default == "allow" if self.default is not None else auth_mode == "dev"
        rules = [rule.rule(f"authorization.rules[{i}]") for i, rule in enumerate(self.rules)]
        return Authorizer(rules, default_allow, separator)

    def user_roles(self) -> dict[str, frozenset[str]]:
        """user -> roles, from ``roles`` (role -> users)."""
        out: dict[str, set[str]] = {}
        for role, users in self.roles.items():
            for name in users:
                out.setdefault(name, set()).add(role)
        return {name: frozenset(roles) for name, roles in out.items()}


@dataclass
class Config:
    node_id: str | None = None
    server: ServerConfig = field(default_factory=ServerConfig)
    stomp: StompConfig = field(default_factory=StompConfig)
    destinations: DestinationsConfig = field(default_factory=DestinationsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    authorization: AuthorizationConfig = field(default_factory=AuthorizationConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def validate(self, path: str, problems: list[str]) -> None:
        if self.server.workers > 1:
            # Each worker is a node of its own: they reach each other's sessions only through Redis.
            if self.bus.type != "redis":
                problems.append(
                    "server.workers: more than 1 needs bus.type redis (workers reach each other through it)"
                )
            if self.server.sockjs:
                problems.append(
                    "server.workers: more than 1 cannot serve server.sockjs: SockJS's HTTP transports "
                    "need every request of a session on one process; run one worker per port behind a "
                    "proxy that hashes on the session (examples/cluster)"
                )
            if self.server.port == 0 or (self.server.tcp.enabled and self.server.tcp.port == 0):
                problems.append(
                    "server.workers: more than 1 needs fixed ports (not 0), shared by the workers"
                )
        ws = set(self.server.websocket_paths) | {s.path for s in self.server.sockjs}
        if self.api.enabled and any(p == self.api.prefix or p.startswith(self.api.prefix + "/") for p in ws):
            problems.append(
                f"server.websocket_paths/sockjs: a path lies under api.prefix {self.api.prefix!r}"
            )
        if self.auth.mode is None and self.proxy.connect_url is None:
            problems.append("auth.mode: required: one of dev, static, jwt (or set proxy.connect_url)")
        if self.proxy.connect_url is not None and self.proxy.timeout_s >= self.stomp.connect_timeout_s:
            problems.append(
                f"proxy.timeout_s: must be below stomp.connect_timeout_s ({self.stomp.connect_timeout_s:g}) "
                "with proxy.connect_url, or a slow backend reads as a client that sent no CONNECT"
            )
        if self.proxy.application_url is not None and not self.destinations.application_prefixes:
            problems.append(
                "proxy.application_url: needs destinations.application_prefixes (what goes to the backend)"
            )
        problem = dev_exposure_problem(self)
        if problem is not None:
            problems.append(problem)
        if self.admin.enabled and self.admin.api_key and not self.api.enabled:
            problems.append("admin.api_key: needs api.enabled (and api.key), the key it accepts")
        admin_path = self.admin.path
        if self.admin.enabled and any(p == admin_path or p.startswith(admin_path + "/") for p in ws):
            problems.append(f"server.websocket_paths/sockjs: a path lies under admin.path {admin_path!r}")


# ------------------------------------------------------------- dev mode


def is_loopback(host: str) -> bool:
    """Only this machine can reach ``host`` (a loopback address, or ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # "", 0.0.0.0's spellings, a host name: possibly reachable from elsewhere


def exposed_listeners(config: Config) -> list[str]:
    """The listeners (``key=host``) of ``config`` that other machines may reach."""
    server = config.server
    found = [] if is_loopback(server.host) else [f"server.host={server.host or '(all)'}"]
    if server.tcp.enabled and not is_loopback(server.tcp.host):
        found.append(f"server.tcp.host={server.tcp.host or '(all)'}")
    return found


def dev_exposure_problem(config: Config) -> str | None:
    """Dev login (no password) on an address others reach needs auth.dev_allow_remote: true."""
    if config.auth.mode != "dev" or config.auth.dev_allow_remote:
        return None
    exposed = exposed_listeners(config)
    if not exposed:
        return None
    return (
        f"auth.mode: dev (any client logs in as any user, without a password) on an address other "
        f"machines may reach ({', '.join(exposed)}): listen on 127.0.0.1, use mode static or jwt, "
        f"or set auth.dev_allow_remote: true if that is really meant"
    )


def startup_warnings(config: Config) -> list[str]:
    """What a node says at start, at every log level (and check-config prints): dev
    mode, a production login with no authorization at all, an expired TLS certificate."""
    certificate = config.server.tls.certificate
    expired = expiry_warning(certificate) if certificate else None
    return _login_warnings(config) + ([expired] if expired else [])


def _login_warnings(config: Config) -> list[str]:
    auth = config.auth
    if auth.mode != "dev":
        authorization = config.authorization
        if authorization.default == "allow" and not authorization.rules:
            return [
                "authorization.default is allow and there are no authorization.rules: any logged-in "
                "user may SEND to and SUBSCRIBE to any destination, another user's included"
            ]
        return []
    cookie = f" (or the {auth.cookie} cookie)" if auth.cookie else ""
    lines = [
        f"auth.mode is dev: the CONNECT login header{cookie} is trusted as the user name without a "
        f"password; for development only"
    ]
    exposed = exposed_listeners(config)
    if exposed:
        lines.append(
            f"auth.mode is dev on an address other machines may reach ({', '.join(exposed)}; "
            f"auth.dev_allow_remote is true): anyone who reaches the node can log in as anyone"
        )
    return lines


# ----------------------------------------------------------------- validation


def _origins(entries: list[str], key: str, problems: list[str]) -> None:
    for i, entry in enumerate(entries):
        problem = origin_problem(entry)
        if problem is not None:
            problems.append(f"{key}[{i}]: {problem}")


def _networks(entries: list[str], key: str, problems: list[str]) -> None:
    for i, entry in enumerate(entries):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            problems.append(f"{key}[{i}]: expected an IP address or network (10.0.0.0/8), got {entry!r}")


def _port(value: int, key: str, problems: list[str]) -> None:
    if not 0 <= value <= 65535:
        problems.append(f"{key}: must be a port number 0-65535, got {value}")


def _positive(value: float, key: str, problems: list[str]) -> None:
    if value <= 0:
        problems.append(f"{key}: must be > 0, got {value}")


def _type_name(tp: Any) -> str:
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    return str(tp)


def _convert(tp: Any, value: Any, key: str, problems: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; append problems, return the value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key, problems)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            problems.append(f"{key}: must be one of {choices}, got {value!r}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            problems.append(f"{key}: expected a mapping, got {_shown(value)}")
            return tp()
        return _build(tp, value, key, problems)
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{key}: expected a list, got {_shown(value)}")
            return []
        return [_convert(args[0], v, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            problems.append(f"{key}: expected a mapping, got {_shown(value)}")
            return {}
        return {str(k): _convert(args[1], v, f"{key}.{k}", problems) for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. a numeric password
    if tp in (int, bool, str) and (type(value) is tp):
        return value
    problems.append(f"{key}: expected {_type_name(tp)}, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _build(cls: type, data: Mapping[str, Any], path: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        dotted = f"{path}.{key}" if path else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(names)})"
            problems.append(f"{dotted}: unknown key{hint}")
            continue
        kwargs[key] = _convert(hints[key], value, dotted, problems)
    return cls(**kwargs)


def _validate_tree(obj: Any, path: str, problems: list[str]) -> None:
    """Run every section's ``validate`` (after types are known to be right)."""
    for f in dataclasses.fields(obj):
        child = getattr(obj, f.name)
        if dataclasses.is_dataclass(child):
            _validate_tree(child, f"{path}.{f.name}" if path else f.name, problems)
    if hasattr(obj, "validate"):
        obj.validate(path or "config", problems)


@dataclass
class ConfigNote:
    """Something the operator should hear about a loaded configuration (no secret values)."""

    text: str
    warning: bool = False


def _auth_mode(data: Mapping[str, Any]) -> Any:
    auth = data.get("auth")
    return auth.get("mode") if isinstance(auth, Mapping) else None


def _env_overrides(env: Mapping[str, str], data: dict[str, Any], notes: list[ConfigNote]) -> None:
    mode_before = _auth_mode(data)
    applied: list[tuple[str, list[str]]] = []
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
        if not all(keys):
            continue
        applied.append((name, keys))
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set(data, keys, value)
    if applied:
        notes.append(
            ConfigNote(
                "environment overrides: " + ", ".join(f"{'.'.join(keys)} ({name})" for name, keys in applied)
            )
        )
    mode_after = _auth_mode(data)
    if mode_after != mode_before:
        by = [name for name, keys in applied if keys == ["auth", "mode"][: len(keys)]]
        before = "none" if mode_before is None else _shown(mode_before)
        notes.append(
            ConfigNote(
                f"{' and '.join(by)} changes auth.mode from {before} (the file) to {_shown(mode_after)}",
                warning=True,
            )
        )


def load_config(
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None = None,
    notes: list[ConfigNote] | None = None,
    overrides: Mapping[str, tuple[Any, str]] | None = None,
) -> Config:
    """Read, merge the environment and the command line into, and validate a configuration.

    ``notes``, when given, receives what the environment changed, for the
    caller to report once its logging is set up. ``overrides`` maps a dotted key
    to (value, where it came from: "--port"); they are validated with the rest,
    and a problem with one names where it came from.
    """
    source = str(path) if path is not None else "defaults"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"cannot read the file: {exc.strerror}"], source) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"not valid YAML: {exc}"], source) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"the top level must be a mapping, got {_shown(loaded)}"], source)
        data = loaded
    _env_overrides(os.environ if env is None else env, data, [] if notes is None else notes)
    for key, (value, _flag) in (overrides or {}).items():
        _set(data, key.split("."), value)
    problems: list[str] = []
    config: Config = _build(Config, data, "", problems)
    if not problems and path is not None:
        _resolve_paths(config, Path(path).resolve().parent)
    if not problems:
        _validate_tree(config, "", problems)
    if problems:
        for i, problem in enumerate(problems):
            for key, (_value, flag) in (overrides or {}).items():
                if key in problem:
                    problems[i] = f"{problem} (set by {flag})"
                    break
        raise ConfigError(problems, source)
    return config


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    node = data
    for k in keys[:-1]:
        nxt = node.get(k)
        if not isinstance(nxt, dict):
            nxt = node[k] = {}
        node = nxt
    node[keys[-1]] = value


def _resolve_paths(config: Config, base: Path) -> None:
    """Files named in the config are relative to the config file, wherever the node is started."""
    for static in config.server.static:
        if static.dir:
            static.dir = str(base / static.dir)
    config.server.extensions = [str(base / ext) for ext in config.server.extensions]
    tls = config.server.tls
    for name in ("certificate", "key", "client_ca"):
        if getattr(tls, name):
            setattr(tls, name, str(base / getattr(tls, name)))
    if config.auth.jwt.public_key_file:
        config.auth.jwt.public_key_file = str(base / config.auth.jwt.public_key_file)
