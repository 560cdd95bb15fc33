"""Authentication: dev mode, static passwords, JWT HS256 / RS256, the authenticator interface."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from stompgate.broker import AuthError, Credentials, JwtAuthenticator, StaticAuthenticator
from stompgate.broker.session import CLOSE_POLICY

from .harness import Client, Env, make_env


class TestDevMode:
    """Dev mode: login is the user name."""

    @pytest.mark.parametrize("login", [None, "", "   "])
    def test_dev_mode_requires_login(self, env: Env, login: str | None) -> None:
        """Dev mode trusts login as the user name, but there must be one: ERROR + close 1008."""
        client = env.client()
        headers = {"accept-version": "1.2"}
        if login is not None:
            headers["login"] = login
        client.send("CONNECT", headers)
        error = client.expect_error(CLOSE_POLICY)
        assert error.headers["message"].startswith("authentication failed")
        assert b"login" in error.body
        env.assert_empty()

    def test_dev_mode_strips_login(self, env: Env) -> None:
        """Surrounding blanks are not part of the dev-mode user name."""
        frame = env.client().connect("  bob  ")
        assert frame.headers["user-name"] == "bob"


@pytest.fixture
def static_env() -> Env:
    return make_env(StaticAuthenticator({"alice": "s3cret", "bob": "pw"}))


class TestStatic:
    """StaticAuthenticator: fixed passwords."""

    def test_static_good_password(self, static_env: Env) -> None:
        """StaticAuthenticator: the right passcode logs in as that user."""
        frame = static_env.client().connect("alice", passcode="s3cret")
        assert frame.headers["user-name"] == "alice"

    @pytest.mark.parametrize(
        "login, passcode",
        [
            ("alice", "wrong"),
            ("alice", ""),
            ("alice", None),
            ("alice", "pw"),  # bob's password
            ("carol", "s3cret"),  # unknown user
            (None, "s3cret"),
        ],
    )
    def test_static_bad_credentials(self, static_env: Env, login: str | None, passcode: str | None) -> None:
        """Wrong password, unknown user, another user's password: all the same ERROR, close 1008."""
        client = static_env.client()
        headers = {"accept-version": "1.2"}
        if login is not None:
            headers["login"] = login
        if passcode is not None:
            headers["passcode"] = passcode
        client.send("CONNECT", headers)
        error = client.expect_error(CLOSE_POLICY)
        assert b"invalid login or passcode" in error.body
        static_env.assert_empty()


SECRET = "0123456789abcdef0123456789abcdef-test-secret"


def hs256(claims: dict[str, Any], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def exp(seconds: float = 300) -> int:
    return int(time.time() + seconds)


def jwt_connect(env: Env, *, connect: dict[str, str] | None = None, **session_kwargs: Any) -> Client:
    client = env.client(**session_kwargs)
    client.send("CONNECT", {"accept-version": "1.2", **(connect or {})})
    return client


@pytest.fixture
def jwt_env() -> Env:
    return make_env(JwtAuthenticator(algorithm="HS256", key=SECRET))


def _jwt_refused(env: Env, token: str | None, contains: str) -> None:
    client = jwt_connect(env, connect={"passcode": token} if token else {})
    error = client.expect_error(CLOSE_POLICY)
    assert error.headers["message"].startswith("authentication failed")
    assert contains in error.body.decode(), error.body


class TestJwtHs256:
    """JwtAuthenticator with HS256: where the token is found, what is checked."""

    @pytest.mark.parametrize("where", ["passcode", "authorization", "Authorization", "handshake", "query"])
    def test_jwt_hs256_token_sources(self, jwt_env: Env, where: str) -> None:
        """The token is found in the CONNECT passcode or Authorization, the handshake, or ?access_token."""
        token = hs256({"sub": "alice", "exp": exp()})
        kwargs: dict[str, Any] = {}
        if where == "passcode":
            kwargs["connect"] = {"login": "ignored", "passcode": token}
        elif where in ("authorization", "Authorization"):
            kwargs["connect"] = {where: f"Bearer {token}"}
        elif where == "handshake":
            kwargs["handshake_headers"] = {"authorization": f"Bearer {token}"}
        else:
            kwargs["query"] = {"access_token": token}
        client = jwt_connect(jwt_env, **kwargs)
        frame = client.frame()
        assert frame.command == "CONNECTED", frame
        assert frame.headers["user-name"] == "alice"
        assert jwt_env.broker.online("alice") == 1

    def test_jwt_connect_header_wins_over_handshake(self, jwt_env: Env) -> None:
        """The CONNECT frame's token is used before the handshake's."""
        good = hs256({"sub": "alice", "exp": exp()})
        other = hs256({"sub": "mallory", "exp": exp()})
        client = jwt_connect(
            jwt_env, connect={"passcode": good}, handshake_headers={"authorization": f"Bearer {other}"}
        )
        assert client.frame().headers["user-name"] == "alice"

    def test_jwt_expired(self, jwt_env: Env) -> None:
        """exp in the past is refused with a clear message."""
        _jwt_refused(jwt_env, hs256({"sub": "alice", "exp": exp(-60)}), "token expired")

    def test_jwt_wrong_key(self, jwt_env: Env) -> None:
        """A token signed with another key is refused."""
        token = hs256({"sub": "alice", "exp": exp()}, key="another-key-of-sufficient-length-123456")
        _jwt_refused(jwt_env, token, "invalid token")

    def test_jwt_missing_exp(self, jwt_env: Env) -> None:
        """exp is required by default."""
        _jwt_refused(jwt_env, hs256({"sub": "alice"}), "exp")

    def test_jwt_garbage_token(self, jwt_env: Env) -> None:
        """A token that is not a JWT is refused, not a crash."""
        _jwt_refused(jwt_env, "not.a.jwt", "invalid token")

    def test_jwt_no_token(self, jwt_env: Env) -> None:
        """No token anywhere: the ERROR says where to put one."""
        _jwt_refused(jwt_env, None, "no token")

    def test_jwt_non_bearer_authorization_is_not_a_token(self, jwt_env: Env) -> None:
        """Authorization: Basic ... is not mistaken for a JWT."""
        client = jwt_connect(jwt_env, connect={"Authorization": "Basic " + hs256({"sub": "a", "exp": exp()})})
        client.expect_error(CLOSE_POLICY, contains="authentication failed")

    def test_jwt_missing_sub(self, jwt_env: Env) -> None:
        """Without the user claim there is no user name."""
        _jwt_refused(jwt_env, hs256({"exp": exp(), "name": "alice"}), "sub")

    def test_jwt_custom_user_claim(self) -> None:
        """user_claim picks the claim that names the user; it must be a non-empty string."""
        env = make_env(JwtAuthenticator(algorithm="HS256", key=SECRET, user_claim="preferred_username"))
        token = hs256({"sub": "id-1", "preferred_username": "alice", "exp": exp()})
        client = jwt_connect(env, connect={"passcode": token})
        assert client.frame().headers["user-name"] == "alice"
        _jwt_refused(env, hs256({"sub": "id-1", "exp": exp()}), "preferred_username")
        _jwt_refused(env, hs256({"preferred_username": 42, "exp": exp()}), "preferred_username")

    def test_jwt_audience_and_issuer(self) -> None:
        """Configured aud and iss are enforced."""
        env = make_env(JwtAuthenticator(algorithm="HS256", key=SECRET, audience="gw", issuer="idp"))
        ok = hs256({"sub": "a", "exp": exp(), "aud": "gw", "iss": "idp"})
        assert jwt_connect(env, connect={"passcode": ok}).frame().command == "CONNECTED"
        _jwt_refused(env, hs256({"sub": "a", "exp": exp(), "aud": "other", "iss": "idp"}), "invalid token")
        _jwt_refused(env, hs256({"sub": "a", "exp": exp(), "aud": "gw", "iss": "evil"}), "invalid token")

    def test_jwt_require_exp_off(self) -> None:
        """require_exp=False accepts tokens without exp."""
        env = make_env(JwtAuthenticator(algorithm="HS256", key=SECRET, require_exp=False))
        assert jwt_connect(env, connect={"passcode": hs256({"sub": "a"})}).frame().command == "CONNECTED"


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str, str]:
    """(private PEM, public PEM, another private PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    def pair() -> tuple[str, str]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        return private, public

    private, public = pair()
    other_private, _ = pair()
    return private, public, other_private


class TestJwtRs256:
    """JwtAuthenticator with RS256."""

    def test_jwt_rs256(self, rsa_keys: tuple[str, str, str]) -> None:
        """RS256: signed with the private key, verified with the configured public key."""
        private, public, other_private = rsa_keys
        env = make_env(JwtAuthenticator(algorithm="RS256", key=public))
        token = jwt.encode({"sub": "alice", "exp": exp()}, private, algorithm="RS256")
        client = jwt_connect(env, connect={"Authorization": f"Bearer {token}"})
        assert client.frame().headers["user-name"] == "alice"
        forged = jwt.encode({"sub": "alice", "exp": exp()}, other_private, algorithm="RS256")
        _jwt_refused(env, forged, "invalid token")
        expired = jwt.encode({"sub": "alice", "exp": exp(-10)}, private, algorithm="RS256")
        _jwt_refused(env, expired, "token expired")
        # an HS256 token is refused outright when RS256 is configured
        _jwt_refused(env, hs256({"sub": "alice", "exp": exp()}), "invalid token")


class TestAuthenticators:
    """What any authenticator sees, and what a refusal leaves alone."""

    def test_auth_failure_closes_with_policy_and_frees_nothing_else(self, jwt_env: Env) -> None:
        """A refused CONNECT leaves the other sessions alone."""
        good = jwt_connect(jwt_env, connect={"passcode": hs256({"sub": "alice", "exp": exp()})})
        good.frames()
        bad = jwt_connect(jwt_env, connect={"passcode": "bad"})
        bad.expect_error(CLOSE_POLICY)
        assert jwt_env.broker.online("alice") == 1

    def test_authenticator_sees_all_credentials(self) -> None:
        """CONNECT headers, handshake headers and the query all reach the authenticator."""
        seen: list[Credentials] = []

        class Spy:
            def authenticate(self, creds: Credentials) -> str | None:
                seen.append(creds)
                raise AuthError("nope")

        env = make_env(Spy())
        client = env.client(handshake_headers={"authorization": "Bearer h"}, query={"access_token": "q"})
        client.send("CONNECT", {"accept-version": "1.2", "login": "l", "passcode": "p"})
        client.expect_error(CLOSE_POLICY, contains="nope")
        (creds,) = seen
        assert creds.connect_headers["login"] == "l" and creds.connect_headers["passcode"] == "p"
        assert creds.handshake_headers == {"authorization": "Bearer h"}
        assert creds.query == {"access_token": "q"}
