"""A user subscription ended (and maybe made again) while its stored messages are fetched.

The first subscription of a node to a user destination subscribes the node to the
user's channel in Redis and fetches what was stored meanwhile; the subscription
goes live once the fetch is in. A tab that subscribes, unsubscribes and subscribes
again at once (a client framework re-rendering, a second tab) used to join the
fetch under way without subscribing again, while the UNSUBSCRIBE had already
unsubscribed the node in Redis: every message that followed was lost. The stored
messages went to the cancelled subscription. And an UNSUBSCRIBE that came before
the fetch had started left the node subscribed in Redis with no one to give the
messages to: they were neither stored nor delivered.

Each round stores a batch for bob, then plays one of these races with a different
delay, then publishes through the other node: every message must reach bob's
open subscription exactly once (or the cancelled one, before its UNSUBSCRIBE's
RECEIPT), none after that RECEIPT.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from harness.stompclient import WsStomp
from stompgate.stomp import Frame

from .kit import DEPLOYMENTS, started

pytestmark = pytest.mark.usefixtures("close_ws_clients")

STORED = 1500  # stored per round: enough that the fetch takes a while
LIVE = 50  # published after the race, through the other node
PAD = "x" * 2000  # each body: its number, then this (a larger store takes longer to fetch)
# Seconds between the first SUBSCRIBE and the UNSUBSCRIBE: from before the fetch
# has started to well into it.
DELAYS = [0.0, 0.0, 0.0005, 0.001, 0.002, 0.004]


@pytest.fixture(params=DEPLOYMENTS)
def bus(request) -> dict:
    config = request.getfixturevalue("bus_config_for")(*request.param)
    config["offline"] = {"max_messages": STORED + LIVE}
    config["server"] = {"max_outbound_buffer": 32 * 1024 * 1024}  # a replay is written at once
    # alice stores 3 MB a round: at the default 1 MB/s per session the test spent its time waiting.
    config["stomp"] = {"rate_limit": {"frames_per_s": 0, "bytes_per_s": 0}}
    return config


async def send_numbered(alice: WsStomp, destination: str, first: int, count: int) -> None:
    """``count`` messages numbered from ``first``; the last with a receipt (Redis has them all)."""
    for i in range(first, first + count - 1):
        await alice.send(Frame("SEND", {"destination": destination}, f"{i} {PAD}".encode()))
    await alice.publish(destination, f"{first + count - 1} {PAD}")


class Tab:
    """One of bob's sessions, read all along: what it got, per subscription id."""

    def __init__(self, client: WsStomp) -> None:
        self.client = client
        self.got: dict[str, Counter[int]] = {}
        self.late: list[tuple[str, int]] = []  # MESSAGEs for a subscription after its UNSUBSCRIBE's RECEIPT
        self.cancelled: set[str] = set()
        self.receipts: set[str] = set()
        self.changed = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            frame = await self.client.recv(3600)
            self.changed.set()
            if frame.command == "RECEIPT":
                receipt = frame.headers["receipt-id"]
                self.receipts.add(receipt)
                if receipt.startswith("unsub-"):
                    self.cancelled.add(receipt.removeprefix("unsub-"))
                continue
            assert frame.command == "MESSAGE", frame
            sub = frame.headers["subscription"]
            number = int(frame.body.split(b" ", 1)[0])
            if sub in self.cancelled:
                self.late.append((sub, number))
            self.got.setdefault(sub, Counter())[number] += 1

    async def until_receipt(self, receipt: str) -> None:
        while True:
            self.changed.clear()
            if receipt in self.receipts:
                return
            if self.reader.done():
                self.reader.result()  # what stopped it
            await asyncio.wait_for(self.changed.wait(), 5)

    def clear(self) -> None:
        self.got.clear()
        self.late.clear()


async def drain(tabs: list[Tab], total: int) -> None:
    """Until ``total`` distinct messages arrived at ``tabs``, or 3 s of silence."""
    while True:
        for tab in tabs:
            tab.changed.clear()
        if len({n for tab in tabs for c in tab.got.values() for n in c}) >= total:
            return
        waits = [asyncio.ensure_future(tab.changed.wait()) for tab in tabs]
        done, pending = await asyncio.wait(waits, timeout=3, return_when=asyncio.FIRST_COMPLETED)
        for wait in pending:
            wait.cancel()
        if not done:
            return


async def unsubscribe(tab: Tab, sub_id: str) -> None:
    await tab.client.send(Frame("UNSUBSCRIBE", {"id": sub_id, "receipt": f"unsub-{sub_id}"}))


async def subscribe(tab: Tab, sub_id: str, destination: str) -> None:
    await tab.client.send(
        Frame("SUBSCRIBE", {"id": sub_id, "destination": destination, "receipt": f"sub-{sub_id}"})
    )


def problems(tabs: list[Tab], expected: set[int], round_: str) -> list[str]:
    """What went wrong in one round (nothing: every message once, none after its UNSUBSCRIBE)."""
    out = []
    got: Counter[int] = Counter()
    for tab in tabs:
        if tab.late:
            out.append(f"{round_}: {len(tab.late)} delivered after UNSUBSCRIBE: {tab.late[:3]}")
        for counts in tab.got.values():
            got.update(counts)
    missing = sorted(expected - set(got))
    if missing:
        out.append(f"{round_}: {len(missing)} lost of {len(expected)}: {missing[:5]}...")
    twice = sorted(n for n, c in got.items() if c > 1)
    if twice:
        out.append(f"{round_}: {len(twice)} twice: {twice[:5]}")
    assert set(got) <= expected
    return out


async def test_resubscribing_during_the_fetch_of_stored_messages_loses_nothing(node_factory, bus) -> None:
    """UNSUBSCRIBE then SUBSCRIBE again (same session or another of bob's) mid-fetch."""
    here, there = started(node_factory, bus, 2)
    alice = await WsStomp.connect(there.ws_url, "alice")
    first = Tab(await WsStomp.connect(here.ws_url, "bob"))
    second = Tab(await WsStomp.connect(here.ws_url, "bob"))
    failed: list[str] = []
    for n, delay in enumerate(DELAYS * 2):
        same = n % 2 == 0
        round_ = f"round {n} ({'same session' if same else 'another session'}, {delay * 1000:.0f} ms)"
        destination = f"/queue/r{n}"
        await send_numbered(alice, f"/user/bob{destination}", 0, STORED)
        again = first if same else second
        await subscribe(first, f"a{n}", "/user" + destination)
        await asyncio.sleep(delay)
        await unsubscribe(first, f"a{n}")
        if not same:
            await first.until_receipt(f"unsub-a{n}")  # the other session's SUBSCRIBE comes after it
        await subscribe(again, f"b{n}", "/user" + destination)
        await again.until_receipt(f"sub-b{n}")  # live cluster-wide
        await send_numbered(alice, f"/user/bob{destination}", STORED, LIVE)
        expected = set(range(STORED + LIVE))
        await drain([first, second], len(expected))
        await first.until_receipt(f"unsub-a{n}")
        failed += problems([first, second], expected, round_)
        await unsubscribe(again, f"b{n}")
        await again.until_receipt(f"unsub-b{n}")
        first.clear()
        second.clear()
    first.reader.cancel()
    second.reader.cancel()
    assert not failed, "\n".join(failed)


async def test_unsubscribing_during_the_fetch_leaves_the_node_unsubscribed(node_factory, bus) -> None:
    """Nothing subscribes again: what comes next is stored (not routed to this node for
    no one), and the next subscription gets it with what was stored before."""
    here, there = started(node_factory, bus, 2)
    alice = await WsStomp.connect(there.ws_url, "alice")
    bob = Tab(await WsStomp.connect(here.ws_url, "bob"))
    failed: list[str] = []
    for n, delay in enumerate(DELAYS):
        round_ = f"round {n} ({delay * 1000:.0f} ms)"
        destination = f"/queue/u{n}"
        await send_numbered(alice, f"/user/bob{destination}", 0, STORED)
        await subscribe(bob, f"a{n}", "/user" + destination)
        await asyncio.sleep(delay)
        await unsubscribe(bob, f"a{n}")
        await bob.until_receipt(f"unsub-a{n}")
        await asyncio.sleep(0.3)  # the fetch is over (a wait, not a timed assert)
        await send_numbered(alice, f"/user/bob{destination}", STORED, LIVE)
        await subscribe(bob, f"c{n}", "/user" + destination)
        expected = set(range(STORED + LIVE))
        await drain([bob], len(expected))
        failed += problems([bob], expected, round_)
        await unsubscribe(bob, f"c{n}")
        await bob.until_receipt(f"unsub-c{n}")
        bob.clear()
    bob.reader.cancel()
    assert not failed, "\n".join(failed)
