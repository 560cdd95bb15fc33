"""Application destinations in the session (Spring's application destination
prefixes): a SEND to one goes to the application, never to the broker; a
SUBSCRIBE to one gets the application's single reply and is not kept; the
RECEIPT waits for the application, and the call counts against the session's
in-flight share until then."""

from __future__ import annotations

from stompgate.broker.application import AppCall
from stompgate.broker.session import CLOSE_POLICY
from stompgate.broker.settings import DestinationSettings

from .harness import Env, make_env


class Recorder:
    """An application that keeps the calls for the test to finish."""

    def __init__(self) -> None:
        self.calls: list[AppCall] = []

    def handle(self, call: AppCall) -> None:
        self.calls.append(call)


def app_env() -> tuple[Env, Recorder]:
    env = make_env(destinations=DestinationSettings(application_prefixes=["/app"]))
    recorder = Recorder()
    env.broker.application = recorder
    return env, recorder


class TestSend:
    def test_goes_to_the_application_not_the_broker(self) -> None:
        env, app = app_env()
        alice, bob = env.connected("alice"), env.connected("bob")
        bob.subscribe("/topic/**")
        headers = {"content-type": "application/json", "sender": "x"}
        alice.publish("/app/chat/lobby", b'{"msg":"hi"}', **headers)
        (call,) = app.calls
        assert (call.frame, call.destination, call.path) == ("SEND", "/app/chat/lobby", "/chat/lobby")
        assert call.body == b'{"msg":"hi"}' and call.user == "alice" and call.session_id == alice.session.id
        assert call.headers == {"content-type": "application/json"}  # reserved ones left out
        assert bob.frames() == [] and env.broker.stats.messages_published == 0

    def test_the_receipt_waits_for_the_application(self) -> None:
        env, app = app_env()
        alice = env.connected("alice")
        alice.publish("/app/hello", b"x", receipt="r1")
        alice.send("SUBSCRIBE", {"destination": "/topic/t", "id": "s", "receipt": "r2"})
        assert alice.frames() == []  # r2 waits behind r1
        app.calls[0].finish()
        assert [f.headers["receipt-id"] for f in alice.frames()] == ["r1", "r2"]

    def test_an_application_error_is_an_error_frame(self) -> None:
        env, app = app_env()
        alice = env.connected("alice")
        alice.publish("/app/hello", b"x", receipt="r1")
        app.calls[0].finish("no handler for SEND /app/hello")
        error = alice.expect_error(CLOSE_POLICY, "no handler for SEND /app/hello")
        assert error.headers["receipt-id"] == "r1"

    def test_a_call_counts_until_it_is_done(self) -> None:
        env, app = app_env()
        alice = env.connected("alice")
        alice.publish("/app/hello", b"x" * 100)
        assert alice.session.inflight > 100
        app.calls[0].finish()
        assert alice.session.inflight == 0

    def test_prefix_is_a_whole_segment(self) -> None:
        env, app = app_env()
        alice = env.connected("alice")
        alice.publish("/application/x", b"")
        alice.expect_error(contains="matches no broker prefix")
        assert app.calls == []


class TestSubscribe:
    def test_one_reply_on_that_subscription_and_nothing_kept(self) -> None:
        env, app = app_env()
        alice = env.connected("alice")
        alice.subscribe("/app/rooms", sub_id="rooms", receipt="r")
        (call,) = app.calls
        assert (call.frame, call.subscription) == ("SUBSCRIBE", "rooms")
        call.reply(env.broker.message("/app/rooms", {"content-type": "application/json"}, b'["lobby"]'))
        call.finish()
        message, receipt = alice.frames()
        assert message.command == "MESSAGE" and message.headers["subscription"] == "rooms"
        assert message.headers["destination"] == "/app/rooms" and message.body == b'["lobby"]'
        assert receipt.headers["receipt-id"] == "r"
        assert alice.session.subscriptions == {}
        alice.send("UNSUBSCRIBE", {"id": "rooms"})  # harmless
        assert not alice.session.closed


class TestAuthorization:
    def test_rules_apply_to_application_destinations(self) -> None:
        from stompgate.broker.authz import SEND, Authorizer, Rule

        env, app = app_env()
        rule = Rule(frozenset({SEND}), "/app/public/**", "authenticated")
        env.broker.authorizer = Authorizer([rule], False)
        alice = env.connected("alice")
        alice.publish("/app/public/x", b"")
        assert len(app.calls) == 1
        alice.publish("/app/admin/x", b"")
        alice.expect_error(contains="access denied: SEND /app/admin/x")
        assert len(app.calls) == 1


class TestBound:
    def test_a_session_has_at_most_max_application_calls_open(self) -> None:
        env, app = app_env()
        env.broker.limits.max_application_calls = 2
        alice = env.connected("alice")
        for i in range(5):
            alice.publish("/app/slow", b"%d" % i)
        assert [c.body for c in app.calls] == [b"0", b"1"]  # the rest waits unread
        assert not alice.out.reading
        app.calls[0].finish()
        assert [c.body for c in app.calls] == [b"0", b"1", b"2"]
        for call in app.calls[1:]:
            call.finish()
        app.calls[3].finish()
        assert [c.body for c in app.calls] == [b"0", b"1", b"2", b"3", b"4"] and alice.out.reading
