"""The client's address behind trusted reverse proxies: ``X-Forwarded-For`` or RFC 7239 ``Forwarded``.

Any client can send these headers, so they are read only when the TCP peer is a
configured trusted proxy (``server.trusted_proxies``), and then walked from the
right: each hop a trusted proxy appended names who it got the request from; the
first address that is not itself a trusted proxy is the client. What lies further
left was written by the client (or by proxies it picked) and is never looked at.

Only one header is read (``server.client_address_header``): a proxy that sets one
of them passes the other through as the client sent it, so reading both would let
a client choose its address.

Bounded, whatever the header holds: at most :data:`MAX_HOPS` hops are split off
the right end of the header (``str.rsplit``, in C, never past them), each hop at
most :data:`MAX_HOP_CHARS` characters is parsed. Anything unreadable (garbage,
``unknown``, an obfuscated ``_name``, too many trusted hops) ends the walk with
the TCP peer's own address: the proxy, never an address the client made up.

Pure: no aiohttp, so that it is unit- and hypothesis-tested on its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
HeaderName = Literal["x-forwarded-for", "forwarded"]

# Hops walked from the right: a request passes a handful of proxies (CDN, load
# balancer, nginx); past this many trusted ones the chain is not believed.
MAX_HOPS = 16
# One hop: "[v6 with a zone]:port" in quotes fits; a Forwarded element may carry
# proto=, host= and by= beside for=.
MAX_HOP_CHARS = 100
MAX_ELEMENT_CHARS = 512


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write one, or None: ``1.2.3.4``, ``1.2.3.4:80``, ``::1``,
    ``[::1]``, ``[::1]:80``, any of these in double quotes (Forwarded); an IPv4-mapped
    IPv6 address as its IPv4 address; an IPv6 zone dropped."""
    text = text.strip(" \t")
    if len(text) > MAX_HOP_CHARS:
        return None
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].replace("\\", "")  # quoted-pair: backslash escapes the next character
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not (rest == "" or (rest[0] == ":" and _is_port(rest[1:]))):
            return None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not _is_port(port):
            return None
    else:
        host = text
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_port(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def forwarded_for(element: str) -> str | None:
    """The ``for=`` value of one RFC 7239 element (``for=1.2.3.4;proto=https``), or None."""
    if len(element) > MAX_ELEMENT_CHARS:
        return None
    for pair in element.split(";"):
        name, equals, value = pair.partition("=")
        if equals and name.strip(" \t").lower() == "for":
            return value
    return None


def hops_from_the_right(lines: Sequence[str]) -> Iterator[str]:
    """The comma-separated hops of a header's lines (in the order received), last first;
    never more than :data:`MAX_HOPS` + 1 split off, however long the lines are."""
    for line in reversed(lines):
        yield from reversed(line.rsplit(",", MAX_HOPS))


class TrustedProxies:
    """``server.trusted_proxies`` and the header they set: who the client of a request is."""

    def __init__(self, entries: Iterable[str], header: HeaderName = "x-forwarded-for") -> None:
        self.networks: list[Network] = [ipaddress.ip_network(e, strict=False) for e in entries]
        self.header = header
        networks = tuple(self.networks)

        @lru_cache(maxsize=1024)
        def trusted(ip: IPAddress) -> bool:
            return any(ip in net for net in networks if net.version == ip.version)

        self._trusted = trusted

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, peer: str) -> bool:
        """Whether the TCP peer ``peer`` (``request.remote``) is a trusted proxy."""
        if not self.networks:
            return False
        ip = parse_address(peer)
        return ip is not None and self._trusted(ip)

    def client(self, peer: str, lines: Sequence[str]) -> str:
        """The client's address for a request from ``peer`` carrying ``lines`` (every
        line of :attr:`header`, in order); ``peer`` itself unless the peer is trusted
        and the header names someone."""
        if not self.trusts(peer):
            return peer
        last: IPAddress | None = None
        for walked, hop in enumerate(hops_from_the_right(lines)):
            if walked >= MAX_HOPS:
                return peer
            if not hop.strip(" \t"):
                continue  # an empty list element ("a, , b"), as HTTP lists allow
            value = forwarded_for(hop) if self.header == "forwarded" else hop
            ip = parse_address(value) if value is not None else None
            if ip is None:
                return peer
            if not self._trusted(ip):
                return str(ip)
            last = ip
        return str(last) if last is not None else peer


__all__ = [
    "MAX_HOPS", "HeaderName", "TrustedProxies", "forwarded_for", "hops_from_the_right", "parse_address",
]  # fmt: skip
