"""Authorization in the session: a denied SEND or SUBSCRIBE is an ERROR naming it,
then a close (as Spring, whose AccessDeniedException ends the session); nothing
of the denied frame reaches the broker. Roles come from the config and from the
credential; a credential that expires ends its session."""

from __future__ import annotations

import time

import jwt
import pytest

from stompgate.broker import JwtAuthenticator
from stompgate.broker.authz import SEND, SUBSCRIBE, Authorizer, Rule
from stompgate.broker.session import CLOSE_POLICY, CLOSE_PROTOCOL_ERROR

from .harness import make_env

SECRET = "s" * 32


def rules(*entries: tuple[str, str, str | None, frozenset[str]]) -> Authorizer:
    made = [
        Rule(frozenset({SEND, SUBSCRIBE} if frames == "both" else {frames}), pattern, who, roles=roles)
        for frames, pattern, who, roles in entries
    ]
    return Authorizer(made, False)


CHAT = rules(
    ("both", "/topic/admin/**", None, frozenset({"admin"})),
    (SUBSCRIBE, "/topic/**", "authenticated", frozenset()),
    (SEND, "/topic/chat", "authenticated", frozenset()),
    (SUBSCRIBE, "/user/queue/**", "authenticated", frozenset()),
    (SEND, "/user/{user}/**", "authenticated", frozenset()),
)


class TestDenied:
    def test_send_denied_is_an_error_and_a_close(self) -> None:
        env = make_env(authorizer=CHAT)
        bob = env.connected("bob")
        bob.subscribe("/topic/**")  # wildcard, but /topic/admin/** is refused to bob
        error = bob.expect_error(CLOSE_PROTOCOL_ERROR, "access denied: SUBSCRIBE /topic/**")
        assert error.headers["message"] == "access denied: SUBSCRIBE /topic/**"

    def test_denied_send_reaches_nobody(self) -> None:
        env = make_env(authorizer=CHAT)
        listener = env.connected("root")
        alice = env.connected("alice")
        listener.subscribe("/topic/news")
        alice.publish("/topic/news", b"forbidden", receipt="r1")
        alice.expect_error(contains="access denied: SEND /topic/news")
        assert listener.frames() == []
        assert env.broker.stats.messages_published == 0

    def test_allowed_frames_go_through(self) -> None:
        env = make_env(authorizer=CHAT)
        alice = env.connected("alice")
        bob = env.connected("bob")
        bob.subscribe("/topic/c*", receipt="s")  # '/topic/*' would match /topic/admin
        bob.receipt("s")
        bob.subscribe("/user/queue/inbox", sub_id="1", receipt="u")
        bob.receipt("u")
        alice.publish("/topic/chat", b"hi")
        alice.publish("/user/alice/queue/inbox", b"note to self")
        assert bob.bodies() == [b"hi"]

    def test_only_ones_own_user_destination(self) -> None:
        env = make_env(authorizer=CHAT)
        alice = env.connected("alice")
        alice.publish("/user/bob/queue/inbox", b"x")
        alice.expect_error(contains="access denied: SEND /user/bob/queue/inbox")

    def test_a_denied_send_in_a_transaction_fails_on_arrival(self) -> None:
        env = make_env(authorizer=CHAT)
        alice = env.connected("alice")
        alice.send("BEGIN", {"transaction": "t"})
        alice.publish("/topic/admin/x", b"x", transaction="t")
        alice.expect_error(contains="access denied: SEND /topic/admin/x")

    def test_roles_from_the_config(self) -> None:
        env = make_env(authorizer=CHAT, roles={"root": frozenset({"admin"})})
        root = env.connected("root")
        root.subscribe("/topic/**", receipt="s")
        root.receipt("s")
        root.publish("/topic/admin/x", b"ok")
        assert root.bodies() == [b"ok"]


def token(claims: dict[str, object]) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


class TestJwt:
    def authenticator(self) -> JwtAuthenticator:
        return JwtAuthenticator(algorithm="HS256", key=SECRET, roles_claim="roles")

    @pytest.mark.parametrize("roles", [["admin"], "admin ops"])
    def test_roles_from_the_token(self, roles: object) -> None:
        now = time.time()
        env = make_env(self.authenticator(), authorizer=CHAT, clock=lambda: now)
        root = env.client()
        root.connect(login=None, passcode=token({"sub": "root", "exp": now + 60, "roles": roles}))
        root.subscribe("/topic/admin/x", receipt="s")
        root.receipt("s")

    def test_a_roles_claim_that_is_not_names_is_refused(self) -> None:
        env = make_env(self.authenticator())
        client = env.client()
        bad = token({"sub": "x", "exp": time.time() + 60, "roles": {"a": 1}})
        client.send("CONNECT", {"accept-version": "1.2", "passcode": bad})
        client.expect_error(CLOSE_POLICY, "claim 'roles' is not a list of role names")

    def test_the_session_ends_when_the_token_does(self) -> None:
        start = time.time()
        env = make_env(self.authenticator(), clock=lambda: start)
        alice = env.client()
        alice.connect(login=None, passcode=token({"sub": "alice", "exp": int(start) + 30}))
        left = int(start) + 30 - start
        env.clock.advance(left - 0.01)
        assert not alice.session.closed
        env.clock.advance(0.02)
        alice.expect_error(CLOSE_POLICY, "token expired")

    def test_a_new_token_on_any_frame_extends_the_session(self) -> None:
        start = time.time()
        env = make_env(self.authenticator(), clock=lambda: start)
        alice, bob = env.client(), env.client()
        alice.connect(login=None, passcode=token({"sub": "alice", "exp": int(start) + 30}))
        bob.connect(login=None, passcode=token({"sub": "bob", "exp": int(start) + 3600}))
        bob.subscribe("/topic/t")
        fresh = token({"sub": "alice", "exp": int(start) + 300})
        alice.publish("/topic/t", b"renewed", **{"refresh-token": fresh})
        message = bob.message()
        assert "refresh-token" not in message.headers  # a credential is never passed on
        env.clock.advance(int(start) + 60 - start)
        assert not alice.session.closed
        env.clock.advance(300)
        alice.expect_error(CLOSE_POLICY, "token expired")

    @pytest.mark.parametrize(
        ("claims", "why"),
        [
            ({"sub": "mallory", "exp": 10**10}, "token refresh failed: the token is for another user"),
            ({"sub": "alice", "exp": 1}, "token refresh failed: token expired"),
        ],
    )
    def test_a_bad_refresh_ends_the_session(self, claims: dict[str, object], why: str) -> None:
        env = make_env(self.authenticator())
        alice = env.client()
        alice.connect(login=None, passcode=token({"sub": "alice", "exp": time.time() + 60}))
        alice.send("SUBSCRIBE", {"destination": "/topic/t", "id": "1", "refresh-token": token(claims)})
        alice.expect_error(CLOSE_PROTOCOL_ERROR, why)

    def test_sessions_that_do_not_expire_ignore_it(self) -> None:
        env = make_env()
        alice = env.connected("alice")
        alice.subscribe("/topic/t", **{"refresh-token": "whatever", "receipt": "r"})
        alice.receipt("r")
