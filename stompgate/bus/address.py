"""Where a Redis is and how to reach it, from the URL in ``bus.redis.url``.

Its own module so that reading a configuration (stompgate.config) does not load
the bus's wire code (hiredis) just to check a URL.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True, slots=True)
class Address:
    """Where and how to connect: what a ``redis://``, ``rediss://`` or ``unix://`` URL says."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a Unix socket instead of host:port
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_verify: bool = True
    tls_ca_certs: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Address:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{url!r}: expected a redis://, rediss:// or unix:// URL")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{url!r}: {exc}") from None
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else query.get("password")
        db_text = query.get("db") or (parts.path.lstrip("/") if parts.scheme != "unix" else "") or "0"
        if not db_text.isdigit():
            raise ValueError(f"{url!r}: the database must be a number, got {db_text!r}")
        db = int(db_text)
        if parts.scheme == "unix":
            return cls(path=parts.path, db=db, username=username, password=password)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port or 6379,
            tls=parts.scheme == "rediss",
            tls_verify=query.get("ssl_cert_reqs", "required") != "none",
            tls_ca_certs=query.get("ssl_ca_certs"),
            db=db,
            username=username,
            password=password,
        )

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca_certs)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
