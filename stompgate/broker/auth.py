"""Pluggable identity: who is this CONNECT?

An authenticator sees the CONNECT headers and what the WebSocket handshake
carried (its ``Authorization`` header and ``access_token`` query parameter), and
returns the user name (or a :class:`~.authz.Principal` with roles and an expiry)
or raises :class:`AuthError` with a message for the client.
Every login (STOMP CONNECT, HTTP API, extensions) goes through :func:`login`,
which also refuses names no mode may produce (controls, surrogates, too long)
and logs failures, rate-limited, with the remote address.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Protocol
from urllib.parse import unquote

import jwt

from ..logs import RateLimitedLog
from .authz import Principal
from .names import shown, user_name_problem

log = logging.getLogger(__name__)

# A client can fail logins as fast as it can connect: each is worth a line, a flood is not.
_failed_logins = RateLimitedLog(log, "failed logins", burst=20, interval_s=60.0)


class AuthError(Exception):
    """Login refused; the message is shown to the client in the ERROR frame."""


@dataclass(slots=True)
class Credentials:
    connect_headers: dict[str, str]
    handshake_headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    query: dict[str, str] = field(default_factory=dict)

    def cookie(self, name: str | None) -> str | None:
        """A cookie the handshake carried (a page's login cookie), if any."""
        raw = self.handshake_headers.get("cookie")
        if not name or not raw:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return None
        morsel = jar.get(name)
        if morsel is None:
            return None
        return unquote(morsel.value).strip() or None  # pages write cookies with encodeURIComponent


class Authenticator(Protocol):
    def authenticate(self, creds: Credentials) -> str | Principal | None:
        """The user name (or who, with roles and expiry), None for an anonymous session,
        or raise AuthError."""


class DevAuthenticator:
    """Development mode: the CONNECT ``login`` header (or the login cookie) is the user name, no password."""

    def __init__(self, cookie: str | None = None) -> None:
        self.cookie = cookie  # the node warns about this mode at start (app.py), at every log level

    def authenticate(self, creds: Credentials) -> str | None:
        login = creds.connect_headers.get("login", "").strip() or creds.cookie(self.cookie)
        if not login:
            where = f" or a {self.cookie} cookie" if self.cookie else ""
            raise AuthError(f"a login header{where} is required (auth.mode is dev: login is the user name)")
        return login


class StaticAuthenticator:
    """Users and passwords listed in the config."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {name: pw.encode("utf-8") for name, pw in users.items()}

    def authenticate(self, creds: Credentials) -> str | None:
        login = creds.connect_headers.get("login", "")
        passcode = creds.connect_headers.get("passcode", "").encode("utf-8")
        expected = self._users.get(login)
        # Compare even for unknown users so timing does not reveal which names exist.
        ok = hmac.compare_digest(passcode, expected if expected is not None else b"\0" * 16)
        if expected is None or not ok:
            raise AuthError("invalid login or passcode")
        return login


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class JwtAuthenticator:
    """JWT (HS256 or RS256) with ``exp`` checked; the user name is a claim (``sub``),
    roles another (``roles_claim``: a list, or a string of names separated by spaces)."""

    def __init__(
        self,
        *,
        algorithm: str,
        key: str,
        user_claim: str = "sub",
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: float = 0.0,
        require_exp: bool = True,
        cookie: str | None = None,
        roles_claim: str | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.key = key
        self.user_claim = user_claim
        self.audience = audience
        self.issuer = issuer
        self.leeway_s = leeway_s
        self.required = ["exp"] if require_exp else []
        self.cookie = cookie
        self.roles_claim = roles_claim

    def token_from(self, creds: Credentials) -> str | None:
        """CONNECT Authorization, CONNECT passcode, handshake Authorization, access_token, cookie."""
        h = creds.connect_headers
        return (
            _bearer(h.get("Authorization") or h.get("authorization"))
            or (h.get("passcode") or None)
            or _bearer(creds.handshake_headers.get("authorization"))
            or creds.query.get("access_token")
            or creds.cookie(self.cookie)
            or None
        )

    def authenticate(self, creds: Credentials) -> Principal:
        token = self.token_from(creds)
        if token is None:
            raise AuthError(
                "no token: send a JWT in the CONNECT passcode or Authorization header, "
                "or in the handshake's Authorization header or access_token parameter"
                + (f", or in the {self.cookie} cookie" if self.cookie else "")
            )
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": self.required, "verify_aud": self.audience is not None},
            )
        except jwt.InvalidTokenError as exc:
            raise AuthError(_jwt_problem(exc)) from None
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not user:
            raise AuthError(f"token has no string claim {self.user_claim!r}")
        roles: frozenset[str] = frozenset()
        if self.roles_claim is not None:
            raw = claims.get(self.roles_claim, [])
            if isinstance(raw, str):
                raw = raw.split()
            if not isinstance(raw, list) or not all(isinstance(role, str) for role in raw):
                raise AuthError(f"invalid token: claim {self.roles_claim!r} is not a list of role names")
            roles = frozenset(raw)
        exp = claims.get("exp")
        expires_at = float(exp) + self.leeway_s if isinstance(exp, (int, float)) else None
        return Principal(user, roles, expires_at)


# Claims PyJWT names in MissingRequiredClaimError: ours (require, audience, issuer), never the token's.
_CLAIMS = frozenset({"exp", "nbf", "iat", "aud", "iss", "sub", "jti"})


def _jwt_problem(exc: jwt.InvalidTokenError) -> str:
    """A fixed, short reason: PyJWT's own texts can quote the token's content and name internals."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "invalid token: not yet valid"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "invalid token: bad signature"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "invalid token: wrong audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "invalid token: wrong issuer"
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return "invalid token: bad issued-at (iat) claim"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        claim = f" {exc.claim!r}" if exc.claim in _CLAIMS else ""
        return f"invalid token: missing{claim} claim"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "invalid token: algorithm not allowed"
    if isinstance(exc, jwt.DecodeError):
        return "invalid token: malformed"
    return "invalid token"


def login(
    authenticator: Authenticator,
    creds: Credentials,
    remote: str = "",
    roles: Mapping[str, frozenset[str]] | None = None,
) -> Principal:
    """Who a CONNECT (or an HTTP request) speaks for, by ``authenticator``; raises AuthError.

    ``roles`` adds the roles the config gives users by name (``auth.roles``) to
    those the credential carries (a JWT's roles claim).

    Whatever the mode (a dev login header or cookie, a static user, a JWT
    claim), the name is checked here, so a name with a newline or a lone
    surrogate never reaches a registry, a log line or Redis. A refusal is
    logged with the remote address and the login tried (never a password or
    token), at most 20 lines a minute.
    """
    try:
        who = authenticator.authenticate(creds)
    except AuthError as exc:
        _log_failure(remote, creds.connect_headers.get("login"), str(exc))
        raise
    principal = who if isinstance(who, Principal) else Principal(who)
    user = principal.name
    problem = None if user is None else user_name_problem(user)
    if user is not None and problem is not None:
        # Not the name itself: before CONNECTED an ERROR's headers go unescaped, and the
        # backslashes of a quoted control character would read differently in each client.
        problem = " ".join(problem.replace(shown(user), "", 1).split())
        _log_failure(remote, user, problem)
        raise AuthError(problem)
    extra = roles.get(user) if roles and user is not None else None
    if extra:
        principal = Principal(user, principal.roles | extra, principal.expires_at)
    return principal


def _log_failure(remote: str, tried: str | None, reason: str) -> None:
    _failed_logins.log(
        "login failed from %s%s: %s",
        remote or "an unknown address",
        f" as {shown(tried)}" if tried else "",
        reason,
        key=remote,
    )
