"""The bus seam: a user subscription waits for stored messages; recovery after a bus gap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stompgate.broker.message import Message

from .harness import make_env


class HeldBus:
    """A bus whose stored-message fetches the test completes by hand."""

    congested = False

    def __init__(self) -> None:
        self.fetches: list[tuple[str, str, Callable[[list[Message]], None]]] = []
        self.published: list[Message] = []

    def publish(self, message: Message, delivered_here: int, done: Any, sender: Any = None) -> None:
        self.published.append(message)
        if done is not None:
            done(None)
        if sender is not None:
            sender.settle(message.size)

    def user_sessions(self, user: str, count: int) -> None:
        pass

    def user_subscribed(self, user: str, destination: str, replay: Callable[[list[Message]], None]) -> None:
        self.fetches.append((user, destination, replay))

    def user_unsubscribed(self, user: str, destination: str) -> None:
        pass


def test_user_subscription_receipt_waits_for_the_bus_then_stored_before_live() -> None:
    env = make_env()
    bus = env.broker.bus = HeldBus()
    bob = env.connected("bob")
    alice = env.connected("alice")
    bob.subscribe("/user/queue/in", receipt="r")
    assert bob.frames() == []  # not live cluster-wide yet: no RECEIPT
    alice.publish("/user/bob/queue/in", b"live")
    assert bob.frames() == []  # waits behind what was stored
    [(user, destination, replay)] = bus.fetches
    assert (user, destination) == ("bob", "/queue/in")
    replay([env.broker.message("/queue/in", {}, b"stored", "bob")])
    frames = bob.frames()
    assert [f.command for f in frames] == ["RECEIPT", "MESSAGE", "MESSAGE"]
    assert [f.body for f in frames[1:]] == [b"stored", b"live"]


def test_recovery_after_a_bus_gap_puts_stored_messages_before_live_ones() -> None:
    env = make_env()
    bus = env.broker.bus = HeldBus()
    bob = env.connected("bob")
    bob.subscribe("/user/queue/in")
    bus.fetches.pop()[2]([])
    assert env.broker.begin_recovery("carol", "/queue/in") is None  # nobody here to recover for
    recovered = env.broker.begin_recovery("bob", "/queue/in")
    assert recovered is not None
    env.broker.dispatch(env.broker.message("/queue/in", {}, b"live", "bob"))
    assert bob.frames() == []
    recovered([env.broker.message("/queue/in", {}, b"gap", "bob")])
    assert bob.bodies() == [b"gap", b"live"]
    env.broker.dispatch(env.broker.message("/queue/in", {}, b"after", "bob"))
    assert bob.bodies() == [b"after"]


def test_a_reply_to_one_session_waits_behind_its_stored_messages() -> None:
    """@SendToUser(broadcast=false) during a replay: after the stored messages, as every live one."""

    class SlowBus:
        """Hands the stored messages over when the test says so."""

        congested = False

        def __init__(self) -> None:
            self.replays: list[Any] = []

        def publish(self, message: Any, delivered_here: int, done: Any, sender: Any = None) -> None:
            if sender is not None:
                sender.settle(message.size)

        def user_sessions(self, user: str, count: int) -> None:
            pass

        def user_subscribed(self, user: str, destination: str, replay: Any) -> None:
            self.replays.append(replay)

        def user_unsubscribed(self, user: str, destination: str) -> None:
            pass

    env = make_env()
    bus = SlowBus()
    env.broker.bus = bus  # type: ignore[assignment]
    bob = env.connected("bob")
    bob.subscribe("/user/queue/me")
    reply = env.broker.message("/queue/me", {}, b"reply", "bob")
    assert env.broker.deliver_to_session(bob.session.id, reply) == 1
    assert bob.frames() == []  # held: the stored ones come first
    bus.replays.pop()([Message("/queue/me", {}, b"stored", user="bob", shown="/user/queue/me")])
    assert bob.bodies() == [b"stored", b"reply"]


class ResubscribeBus(HeldBus):
    """A HeldBus that also records what the broker asks it to subscribe and unsubscribe."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def user_subscribed(self, user: str, destination: str, replay: Callable[[list[Message]], None]) -> None:
        self.calls.append("subscribe")
        super().user_subscribed(user, destination, replay)

    def user_unsubscribed(self, user: str, destination: str) -> None:
        self.calls.append("unsubscribe")


def test_subscribing_again_during_the_fetch_subscribes_the_bus_again() -> None:
    """UNSUBSCRIBE then SUBSCRIBE while the stored messages are fetched: the bus was
    unsubscribed, so the new subscription must subscribe it again rather than join
    the fetch under way (it used to: the node heard nothing more). What the given-up
    fetch brings goes to the new subscription, none to the cancelled one."""
    env = make_env()
    bus = env.broker.bus = ResubscribeBus()
    bob = env.connected("bob")
    bob.subscribe("/user/queue/in", "a", receipt="ra")
    bob.send("UNSUBSCRIBE", {"id": "a", "receipt": "ua"})
    bob.subscribe("/user/queue/in", "b", receipt="rb")
    assert bus.calls == ["subscribe", "unsubscribe", "subscribe"]
    assert [f.headers["receipt-id"] for f in bob.frames()] == ["ra", "ua"]  # b waits for its fetch
    first, second = bus.fetches
    env.broker.dispatch(env.broker.message("/queue/in", {}, b"live", "bob"))
    first[2]([env.broker.message("/queue/in", {}, b"stored", "bob")])
    assert bob.frames() == []
    second[2]([])
    frames = bob.frames()
    assert [f.command for f in frames] == ["RECEIPT", "MESSAGE", "MESSAGE"]
    assert [(f.headers["subscription"], f.body) for f in frames[1:]] == [("b", b"stored"), ("b", b"live")]


def test_the_last_subscription_ending_during_the_fetch_gives_back_what_it_fetched() -> None:
    """Nothing subscribes again: the bus is unsubscribed, and what the fetch took from
    the store is published again (to be stored, or reach the user's other nodes)."""
    env = make_env()
    bus = env.broker.bus = ResubscribeBus()
    bob = env.connected("bob")
    bob.subscribe("/user/queue/in", "a")
    bob.send("UNSUBSCRIBE", {"id": "a"})
    assert bus.calls == ["subscribe", "unsubscribe"]
    stored = env.broker.message("/queue/in", {}, b"stored", "bob")
    bus.fetches.pop()[2]([stored])
    assert bob.frames() == []
    assert bus.published == [stored]
