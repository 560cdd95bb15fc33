"""The outbox's own bookkeeping: bytes, congestion watermarks, and "not draining"."""

from __future__ import annotations

import time

from stompgate.bus.outbox import Command, Outbox, TopicPublish


def entries(n: int, size: int = 100) -> list[Command]:
    return [TopicPublish(b"x", size=size) for _ in range(n)]


def test_a_batch_put_back_whole_is_not_draining() -> None:
    """The writer takes a batch off and puts it all back (Redis said "not now"): nothing moved,
    so the outbox counts as stalled once stall_s has passed, however often it retried."""
    outbox = Outbox(limit=100, max_bytes=10_000, stall_s=0.05, on_room=lambda: None)
    for entry in entries(3):
        assert outbox.put(entry)
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        outbox.requeue(outbox.pop(3))
        time.sleep(0.01)
    assert outbox.stalled() and outbox.oldest_age() >= 0.05
    assert outbox.bytes == 300 and len(outbox) == 3


def test_an_entry_leaving_resets_the_stall() -> None:
    outbox = Outbox(limit=100, max_bytes=10_000, stall_s=0.05, on_room=lambda: None)
    for entry in entries(3):
        outbox.put(entry)
    time.sleep(0.06)
    assert outbox.stalled()
    taken = outbox.pop(3)
    outbox.moved()
    outbox.requeue(taken[1:])
    assert not outbox.stalled() and len(outbox) == 2 and outbox.bytes == 200


def test_an_empty_outbox_never_stalls() -> None:
    outbox = Outbox(limit=100, max_bytes=10_000, stall_s=0.0, on_room=lambda: None)
    assert not outbox.stalled()
    outbox.put(entries(1)[0])
    outbox.pop(1)
    outbox.moved()
    time.sleep(0.01)
    assert not outbox.stalled() and outbox.oldest_age() == 0.0


def test_congestion_has_hysteresis_in_messages_and_bytes() -> None:
    rooms: list[int] = []
    outbox = Outbox(limit=10, max_bytes=10**9, stall_s=5, on_room=lambda: rooms.append(1))
    for entry in entries(10):
        assert outbox.put(entry)
    assert outbox.congested and outbox.full() and not outbox.put(entries(1)[0])
    outbox.pop(4)
    assert outbox.congested and not rooms  # still above the low watermark
    outbox.pop(6)
    assert not outbox.congested and rooms == [1]

    outbox = Outbox(limit=10**6, max_bytes=1000, stall_s=5, on_room=lambda: None)
    assert outbox.put(entries(1, size=1000)[0])
    assert outbox.congested and outbox.full()
