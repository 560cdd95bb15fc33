"""ReadGate: the pause/resume a transport's reader waits on (flow control, rate limits, a full turn)."""

from __future__ import annotations

import asyncio

from stompgate.wsio import ReadGate


async def test_open_until_paused_and_waiting_returns_at_once() -> None:
    gate = ReadGate()
    assert gate.is_open
    await asyncio.wait_for(gate.wait(), 1)


async def test_a_paused_reader_waits_until_resumed() -> None:
    gate = ReadGate()
    gate.pause()
    gate.pause()  # twice is once
    assert not gate.is_open
    reader = asyncio.ensure_future(gate.wait())
    await asyncio.sleep(0.01)
    assert not reader.done()
    gate.resume()
    await asyncio.wait_for(reader, 1)
    assert gate.is_open
    gate.resume()  # resuming an open gate does nothing


async def test_paused_again_before_the_reader_ran() -> None:
    """resume then pause in the same turn: the woken reader sees the gate closed again and
    waits on the new pause (as the transports' read loops check is_open after each wait)."""
    gate = ReadGate()
    gate.pause()
    reader = asyncio.ensure_future(gate.wait())
    await asyncio.sleep(0)
    gate.resume()
    gate.pause()
    await asyncio.wait_for(reader, 1)
    assert not gate.is_open
    second = asyncio.ensure_future(gate.wait())
    await asyncio.sleep(0.01)
    assert not second.done()
    gate.resume()
    await asyncio.wait_for(second, 1)
