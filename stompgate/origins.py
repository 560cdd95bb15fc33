"""Which pages may open a session: the Origin check of every browser-facing endpoint.

A browser sends a WebSocket handshake or a SockJS request with the user's
cookies whatever page started it, so without this check any site the user
visits could open a session as the user (cross-site WebSocket hijacking). As
Spring's ``setAllowedOrigins`` / ``setAllowedOriginPatterns``, the default is
the same origin only; a list can add exact origins (``https://app.example.com``),
patterns with ``*`` in the host (``https://*.example.com``) or ``*`` for any.

A request without an ``Origin`` header is not from a browser page (stomp.py, a
backend, curl) and passes: a cookie alone is not what such clients authenticate
with. ``Origin: null`` (sandboxed frames, ``file:`` pages) passes only when
``null`` or ``*`` is listed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .broker.destinations import SegmentGlob

_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def _host_port(origin: str) -> tuple[str, str, str] | None:
    """(scheme, host, port) of ``scheme://host[:port]``, or None when it is not one."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path not in ("", "/") or parts.query:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), str(port or _DEFAULT_PORTS.get(scheme, ""))


def origin_problem(entry: str) -> str | None:
    """Why an ``allowed_origins`` entry is not usable, or None."""
    if entry in ("*", "null"):
        return None
    if _host_port(entry.replace("*", "wildcard")) is None:
        return f"expected '*', 'null' or scheme://host[:port] (a '*' may stand in the host), got {entry!r}"
    return None


class OriginPolicy:
    """``allowed``: the configured entries; empty means the same origin only."""

    def __init__(self, allowed: list[str]) -> None:
        self.any = "*" in allowed
        self.null = "null" in allowed
        self._exact: set[tuple[str, str, str]] = set()
        self._patterns: list[tuple[str, SegmentGlob, str]] = []
        for entry in allowed:
            if entry in ("*", "null"):
                continue
            if "*" in entry:
                parsed = _host_port(entry.replace("*", "wildcard"))
                assert parsed is not None, entry  # checked with the config
                host = urlsplit(entry).netloc.rsplit("@", 1)[-1]
                host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
                self._patterns.append((parsed[0], SegmentGlob(host.lower()), parsed[2]))
            else:
                parsed = _host_port(entry)
                assert parsed is not None, entry
                self._exact.add(parsed)

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a request with this ``Origin`` may go on, for a node reached as ``host``
        (the request's Host header)."""
        if origin is None or self.any:
            return True
        if origin == "null":
            return self.null
        parsed = _host_port(origin)
        if parsed is None:
            return False
        if parsed in self._exact:
            return True
        for want_scheme, glob, port in self._patterns:
            if parsed[0] == want_scheme and parsed[2] == port and glob.match(parsed[1]):
                return True
        return self.same_origin(parsed, host)

    @staticmethod
    def same_origin(origin: tuple[str, str, str], host: str | None) -> bool:
        """The page came from this node: the Origin's host and port are the Host header's.

        The scheme is not compared: behind a proxy that ends TLS the node is
        reached over http while the page was https, and the proxy passes Host on.
        """
        if not host:
            return False
        seen = _host_port(f"{origin[0]}://{host}")
        return seen is not None and seen[1:] == origin[1:]
