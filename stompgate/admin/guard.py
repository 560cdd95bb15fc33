"""Who may use the admin API: the admin password (HTTP Basic) or, when allowed, the API key.

No cookie is ever set and no ``WWW-Authenticate`` challenge is ever sent, so a
browser never holds the credential for the node on its own: only the admin
page's script (or a CLI) sends it, in a header that a page of another origin
cannot add without a CORS preflight, which the node does not answer. On top of
that a request that says it comes from another origin (``Origin``) is refused,
and POSTs must be ``application/json`` (a preflighted type).
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from ..origins import OriginPolicy

# Only the node's own pages: no configured origin, not even server.allowed_origins.
_OWN_ORIGIN_ONLY = OriginPolicy([])


def _same(given: str, expected: bytes | None) -> bool:
    """Constant-time comparison; always compares, so timing says nothing about which failed."""
    ok = hmac.compare_digest(given.encode("utf-8"), expected or b"\0")
    return ok and expected is not None


class AdminGuard:
    def __init__(self, user: str, password: str | None, api_key: str | None) -> None:
        self._user = user.encode("utf-8")
        self._password = password.encode("utf-8") if password is not None else None
        self._key = api_key.encode("utf-8") if api_key is not None else None

    @property
    def has_key(self) -> bool:
        return self._key is not None

    def authorized(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            user_ok = hmac.compare_digest(user.encode("utf-8"), self._user)
            return _same(password, self._password) and user_ok
        if scheme == "bearer":
            return _same(value.strip(), self._key)
        given = request.headers.get("X-API-Key")
        return given is not None and _same(given, self._key)

    @staticmethod
    def cross_origin(request: web.Request) -> str | None:
        """The request's Origin when it is not this node's own (a page of another site), else None."""
        origin = request.headers.get("Origin")
        # None: not sent by a browser page (CLI, curl), or a same-origin GET.
        return None if _OWN_ORIGIN_ONLY.allows(origin, request.host) else origin
