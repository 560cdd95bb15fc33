"""Connection caps of one node process: per client address and in total, over every listener.

File descriptors are a per-process resource, and a process out of them stops
accepting anyone (and cannot reach Redis or open a file either). So each
listener asks one :class:`ConnectionGate` before it builds anything for a new
connection: past a cap the connection is answered by :class:`Refusal` with a
few pre-encoded bytes that name the limit and is closed, with no request
parsing and no session. Refusals are logged per address and interval, never
per connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import cast

from ..stomp import Frame, serialize

log = logging.getLogger(__name__)

# Open files a node keeps for itself beyond its client connections: about 50
# (Redis connections, listeners, log, event loop), static files being sent,
# refusals lingering (MAX_LINGERING). 20,000 leaves 19,000; 1,024 leaves 896.
RESERVED_FDS_MIN = 128
RESERVED_FDS_SHARE = 0.05
# A refused connection stays open this long to read what the client already
# sent: closing a socket with unread input makes the kernel answer with a reset
# that can destroy the refusal before the client reads it.
LINGER_S = 1.0
# At most this many refusals linger at once; beyond it they are closed at once.
MAX_LINGERING = 64
# One log line per refused address per interval, at most this many lines per interval.
LOG_INTERVAL_S = 10.0
LOG_LINES_PER_INTERVAL = 20
# IPv6 clients are counted per /64: one subscriber (a phone, a home) gets a
# whole /64 and can pick any address in it.
IPV6_PREFIX = 64


def derived_max_connections() -> int:
    """The default total cap: the soft open-file limit less what the node needs for itself."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > 1 << 20:
        soft = 1 << 20  # Linux's nr_open default
    return max(1, soft - max(RESERVED_FDS_MIN, int(soft * RESERVED_FDS_SHARE)))


def open_file_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> list[Network]:
    """``exempt`` entries: addresses (``::1``) or networks (``10.0.0.0/8``); ValueError if not."""
    return [ipaddress.ip_network(entry, strict=False) for entry in entries]


def http_refusal(text: str) -> bytes:
    """A complete HTTP/1.1 503 response that closes the connection."""
    body = (text + "\n").encode("utf-8")
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def stomp_refusal(text: str) -> bytes:
    """An ERROR frame, unescaped as before CONNECTED (the client's version is not known yet)."""
    frame = Frame("ERROR", {"message": text, "content-type": "text/plain"}, text.encode("utf-8"))
    return serialize(frame, version=None)


class RefusalLog:
    """Refusals, logged as one line per (address, limit) and interval with a count."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S, max_lines: int = LOG_LINES_PER_INTERVAL) -> None:
        self.interval_s = interval_s
        self.max_lines = max_lines
        # (address, limit) -> refusals not yet logged; a key present with 0 was logged
        # this interval (its first refusal gets a line at once).
        self._counts: dict[tuple[str, str], int] = {}
        self._lines = 0
        self._unlogged = 0  # refusals of keys past max_lines
        self._timer: asyncio.TimerHandle | None = None

    def refused(self, address: str, limit: str) -> None:
        key = (address, limit)
        count = self._counts.get(key)
        if count is not None:
            self._counts[key] = count + 1
        elif self._lines < self.max_lines:
            self._lines += 1
            self._counts[key] = 0
            log.warning("refusing connections from %s: %s", address, limit)
        else:
            self._unlogged += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self.flush)

    def flush(self) -> None:
        """Log the counts of the interval that ended; keys still refusing stay quiet until the next."""
        self._timer = None
        lines = 0
        still: dict[tuple[str, str], int] = {}
        for (address, limit), count in self._counts.items():
            if count and lines < self.max_lines:
                lines += 1
                log.warning(
                    "refused %d more connections from %s in the last %g s: %s",
                    count,
                    address,
                    self.interval_s,
                    limit,
                )
                still[(address, limit)] = 0
            elif count:
                self._unlogged += count
        if self._unlogged:
            log.warning(
                "refused %d more connections in the last %g s (addresses not listed)",
                self._unlogged,
                self.interval_s,
            )
        self._unlogged = 0
        self._counts = still
        if still:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self.flush)
        self._lines = 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class ConnectionGate:
    """Counts the open connections of one process and decides whether a new one may stay.

    ``admit`` and ``release`` are a dict update each; the address key of a peer is
    computed once per address (cached), so a refusal costs about a microsecond.
    """

    def __init__(self, max_total: int, per_address: int, exempt: Iterable[Network] = ()) -> None:
        self.max_total = max_total
        self.per_address = per_address
        self.total = 0
        self.by_address: dict[str, int] = {}
        self.lingering = 0
        self.refusals = RefusalLog()
        self._total_text = f"too many connections to this node (server.connections.max = {max_total})"
        networks = tuple(exempt)

        @lru_cache(maxsize=4096)
        def key_of(host: str) -> tuple[str, bool]:
            """(the address to count under, whether it is exempt from the per-address cap)."""
            try:
                ip = ipaddress.ip_address(host.partition("%")[0])
            except ValueError:
                return host, True  # not an IP peer (a Unix socket): nothing to count it by
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
            exempt_ = any(ip in net for net in networks if net.version == ip.version)
            if isinstance(ip, ipaddress.IPv6Address):
                return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False)), exempt_
            return str(ip), exempt_

        self._key_of = key_of

    def admit(self, peername: object) -> tuple[str | None, str | None]:
        """(address key to release later, None if refused; refusal text, None if admitted)."""
        host = peername[0] if isinstance(peername, tuple) and peername else ""
        address, exempt = self._key_of(str(host))
        if self.total >= self.max_total:
            self.refusals.refused(address, f"server.connections.max ({self.max_total}) reached")
            return None, self._total_text
        if exempt:
            self.total += 1
            return "", None
        refusal = self._take(address)
        if refusal is not None:
            return None, refusal
        self.total += 1
        return address, None

    def admit_forwarded(self, host: str) -> tuple[str | None, str | None]:
        """:meth:`admit` for a client behind a trusted proxy (``host``: its address from the
        proxy's header), counted per address only: the proxy's connection, exempt from the
        per-address cap, counts in the total already. Released with :meth:`release_forwarded`."""
        address, exempt = self._key_of(host)
        if exempt:
            return "", None
        refusal = self._take(address)
        return (None, refusal) if refusal is not None else (address, None)

    def _take(self, address: str) -> str | None:
        """One more connection from ``address``, or the refusal text past the per-address cap."""
        count = self.by_address.get(address, 0)
        if count >= self.per_address:
            self.refusals.refused(address, f"server.connections.per_address ({self.per_address}) reached")
            cap = f"server.connections.per_address = {self.per_address}"
            return f"too many connections from {address} ({cap})"
        self.by_address[address] = count + 1
        return None

    def release(self, address: str) -> None:
        """A connection admitted under ``address`` ("" for an exempt one) has ended."""
        self.total -= 1
        self.release_forwarded(address)

    def release_forwarded(self, address: str) -> None:
        """A request admitted by :meth:`admit_forwarded` under ``address`` has ended."""
        if address:
            count = self.by_address[address] - 1
            if count:
                self.by_address[address] = count
            else:
                del self.by_address[address]

    def close(self) -> None:
        self.refusals.close()


InnerFactory = Callable[[Callable[[], None]], asyncio.Protocol]


class GateProtocol(asyncio.Protocol):
    """What a listener's server creates for each accepted socket: admit it or refuse it.

    An admitted connection is handed to the real protocol (``inner(release)``),
    which takes over the transport and must call ``release`` once when the
    connection is lost; from then on this object is out of the data path.
    """

    __slots__ = ("_gate", "_inner", "_encode")

    def __init__(self, gate: ConnectionGate, inner: InnerFactory, encode: Callable[[str], bytes]) -> None:
        self._gate = gate
        self._inner = inner
        self._encode = encode

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self._gate
        address, refusal = gate.admit(transport.get_extra_info("peername"))
        if refusal is not None:
            transport.set_protocol(Refusal(gate, transport, self._encode(refusal)))  # type: ignore[arg-type]
            return
        protocol = self._inner(_Release(gate, address))  # type: ignore[arg-type]
        transport.set_protocol(protocol)
        try:
            protocol.connection_made(transport)
        except BaseException:
            cast(asyncio.Transport, transport).abort()  # connection_lost follows and releases the slot
            raise


class _Release:
    """Give one admitted connection's slot back (a closure and its cell cost ~200 bytes more)."""

    __slots__ = ("_gate", "_address")

    def __init__(self, gate: ConnectionGate, address: str) -> None:
        self._gate = gate
        self._address = address

    def __call__(self) -> None:
        self._gate.release(self._address)


class Refusal(asyncio.Protocol):
    """Write the refusal, send FIN, drain what the client sends for a moment, then close."""

    __slots__ = ("_gate", "_transport", "_timer")

    def __init__(self, gate: ConnectionGate, transport: asyncio.Transport, data: bytes) -> None:
        self._gate = gate
        self._transport = transport
        self._timer: asyncio.TimerHandle | None = None
        transport.write(data)
        if gate.lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        gate.lingering += 1
        transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass  # the request we do not serve

    def eof_received(self) -> bool:
        return False  # the client read the answer and closed: close our side

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._gate.lingering -= 1


__all__ = [
    "ConnectionGate",
    "GateProtocol",
    "Refusal",
    "RefusalLog",
    "derived_max_connections",
    "http_refusal",
    "open_file_limit",
    "parse_networks",
    "stomp_refusal",
]
