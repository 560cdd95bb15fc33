"""The client address behind trusted proxies (stompgate.forwarded): X-Forwarded-For and Forwarded."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stompgate.forwarded import MAX_HOPS, TrustedProxies, parse_address

PROXY = "127.0.0.1"
XFF = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])
FWD = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"], "forwarded")


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7\t", "203.0.113.7"),
        ("203.0.113.7:4711", "203.0.113.7"),  # Azure and others add the port
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ('"[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),  # RFC 7239's own example
        ('"203.0.113.7"', "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # a dual-stack proxy's view of an IPv4 client
        ("fe80::1%eth0", "fe80::1"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("203.0.113.7:", None),
        ("203.0.113.7:http", None),
        ("203.0.113.7:123456", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("[2001:db8::1]:", None),
        ("1.2.3.4.5", None),
        ("999.1.1.1", None),
        ("example.com", None),
        ('"', None),
        ("1" * 200, None),
    ],
)
def test_one_address(text: str, address: str | None) -> None:
    ip = parse_address(text)
    assert (str(ip) if ip is not None else None) == address


def test_an_untrusted_peer_is_the_client_whatever_it_sends() -> None:
    assert XFF.client("198.51.100.9", ["203.0.113.7"]) == "198.51.100.9"
    assert FWD.client("198.51.100.9", ["for=203.0.113.7"]) == "198.51.100.9"
    assert TrustedProxies([]).client(PROXY, ["203.0.113.7"]) == PROXY
    assert not TrustedProxies([])


def test_x_forwarded_for_is_walked_from_the_right() -> None:
    assert XFF.client(PROXY, ["203.0.113.7"]) == "203.0.113.7"
    # What the client wrote itself sits left of what the proxy appended: never read.
    assert XFF.client(PROXY, ["6.6.6.6, 203.0.113.7"]) == "203.0.113.7"
    assert XFF.client(PROXY, ["garbage, 203.0.113.7"]) == "203.0.113.7"
    # Trusted hops (a load balancer behind the proxy) pass the question on.
    assert XFF.client(PROXY, ["6.6.6.6, 203.0.113.7, 10.1.2.3, 10.9.9.9"]) == "203.0.113.7"
    # Several header lines are one list, in order.
    assert XFF.client(PROXY, ["6.6.6.6", "203.0.113.7, 10.1.2.3"]) == "203.0.113.7"
    assert XFF.client(PROXY, ["203.0.113.7, ,10.1.2.3"]) == "203.0.113.7"  # empty elements
    # Every hop trusted: the leftmost is the client (a machine of the proxy's network).
    assert XFF.client(PROXY, ["10.0.0.5, 10.1.2.3"]) == "10.0.0.5"
    assert XFF.client(PROXY, ["[2001:db8::1]:443"]) == "2001:db8::1"
    assert XFF.client("::ffff:127.0.0.1", ["203.0.113.7"]) == "203.0.113.7"  # the peer, mapped


def test_what_cannot_be_read_falls_back_to_the_peer() -> None:
    assert XFF.client(PROXY, []) == PROXY
    assert XFF.client(PROXY, [""]) == PROXY
    assert XFF.client(PROXY, ["203.0.113.7, garbage"]) == PROXY  # the proxy's own hop unreadable
    assert XFF.client(PROXY, ["203.0.113.7, unknown, 10.1.2.3"]) == PROXY
    assert XFF.client(PROXY, ["x" * 1_000_000]) == PROXY
    chain = ", ".join(["10.0.0.1"] * (MAX_HOPS + 1))
    assert XFF.client(PROXY, [f"203.0.113.7, {chain}"]) == PROXY  # too many trusted hops
    assert XFF.client(PROXY, ["10.0.0.1"] * (MAX_HOPS + 1)) == PROXY  # ... over many lines too


def test_forwarded_for() -> None:
    assert FWD.client(PROXY, ["for=203.0.113.7"]) == "203.0.113.7"
    rfc = 'For="[2001:db8:cafe::17]:4711";proto=https;by=10.0.0.1'
    assert FWD.client(PROXY, [rfc]) == "2001:db8:cafe::17"
    assert FWD.client(PROXY, ["proto=http;for=203.0.113.7, for=10.1.2.3;by=10.0.0.2"]) == "203.0.113.7"
    assert FWD.client(PROXY, ['for="_hidden", for=203.0.113.7']) == "203.0.113.7"
    assert FWD.client(PROXY, ["for=6.6.6.6", "for=203.0.113.7"]) == "203.0.113.7"
    assert FWD.client(PROXY, ["for=unknown"]) == PROXY
    assert FWD.client(PROXY, ["proto=https"]) == PROXY  # no for=
    assert FWD.client(PROXY, ["for=203.0.113.7;" + "a=b;" * 1000]) == PROXY  # an element too long
    # A proxy configured for Forwarded passes the client's X-Forwarded-For through: not read.
    assert XFF.client(PROXY, ["for=203.0.113.7"]) == PROXY


# ------------------------------------------------------------------ hypothesis

ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
# Addresses outside every trusted network above.
untrusted = st.one_of(ipv4, ipv6).filter(
    lambda ip: not XFF._trusted(ip.ipv4_mapped if getattr(ip, "ipv4_mapped", None) else ip)
)
trusted_hop = st.sampled_from(["10.0.0.1", "10.200.3.4", "127.0.0.1", "fd00::1", "[fd12::5]:8080"])


def spelled_xff(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int | None) -> str:
    if port is None:
        return str(ip)
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def expected(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


@given(st.lists(st.text(), max_size=5), st.text(), st.sampled_from([XFF, FWD]))
def test_any_header_gives_an_address_or_the_peer(
    lines: list[str], peer: str, proxies: TrustedProxies
) -> None:
    for who in (peer, PROXY):
        client = proxies.client(who, lines)
        assert client == who or ipaddress.ip_address(client)


@given(
    st.text(),
    untrusted,
    st.none() | st.integers(1, 65535),
    st.lists(trusted_hop, max_size=MAX_HOPS - 1),
)
def test_nothing_the_client_writes_changes_its_address(
    junk: str, client: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int | None, hops: list[str]
) -> None:
    """A client controls everything left of the hop the first trusted proxy appended."""
    line = ", ".join([junk, spelled_xff(client, port), *hops])
    assert XFF.client(PROXY, [line]) == expected(client)
    assert XFF.client(PROXY, [junk, ", ".join([spelled_xff(client, port), *hops])]) == expected(client)
    quoted = f'"{spelled_xff(client, port)}"' if port is not None or client.version == 6 else str(client)
    elements = [f"for={quoted};proto=https", *(f'for="{h}"' for h in hops)]
    assert FWD.client(PROXY, [", ".join([junk, *elements])]) == expected(client)


@given(st.lists(st.text(alphabet=",; =\"[]:.0123456789abcdef\t", max_size=300), max_size=4))
def test_garbage_made_of_the_headers_own_characters(lines: list[str]) -> None:
    for proxies in (XFF, FWD):
        client = proxies.client(PROXY, lines)
        assert client == PROXY or ipaddress.ip_address(client)
